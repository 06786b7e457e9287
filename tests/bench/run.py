"""``make bench``: the burst benchmarks of issue 11, written as JSON and a Markdown table.

Beside the emulators, one process runs the Fyers simulator at Fyers' real limits (10 a
second, 200 a minute) and the worker as Cloud Run will run it, fed by push delivery with
the deployed retry and dead-letter policy (tests/pipeline.py); the webhook runs in a
process of its own, over HTTP, with its deployed concurrency. In
order: the webhook's latency at 1, 10 and 50 in flight; each entry point's import and
first request; the three workloads of :data:`tests.bench.bench_pipeline.WORKLOADS` and the
mixed burst of exits and entries (:func:`tests.bench.bench_pipeline.run_mixed`), each after
a quiet minute so that no 60 s window holds two; Firestore operations per accepted alert,
counted at the client (tests/bench/firestore_ops.py).

Run: ``python -m tests.bench.run [--out DIR] [--quick]`` (``--quick``: a small smoke
run, for the test suite). Results go to ``DIR/bench-<time>.json`` and ``.md``
(default ``.local/bench``) and the table to stdout. About 9 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from tests.bench import bench_pipeline, bench_webhook, entry_points
from tests.bench.bench_pipeline import SECRET, Workload
from tests.bench.emulated import create_topics, emulated_project
from tests.bench.firestore_ops import PRICE_PER_100K, cost_per_1000, counting

ROOT = Path(__file__).resolve().parents[2]
APP_ID = "BENCHAPP01-100"
NIFTY = 24512.0
QUIET_SECONDS = 61.0  # between workloads: Fyers' minute window empties


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    return {"cores": os.cpu_count(), "cpu": model, "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "commit": commit.strip() + (" (with uncommitted changes)" if dirty else "")}


WEBHOOK_ONLY_TOPIC = "orders-webhook-bench"


def _webhook(stack: ExitStack, **env: str) -> str:
    """Serve the webhook as its own instance (a process behind the Cloud Run model); its URL."""
    from deploy.local.cloud_run import WEBHOOK
    from deploy.local.emulators import free_port

    port = free_port()
    webhook = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.cloud_run", "--target=webhook", f"--source={ROOT / 'main.py'}",
         "--signature-type=http", f"--port={port}", f"--concurrency={WEBHOOK.concurrency}",
         f"--max-instances={WEBHOOK.max_instances}"], cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(_stop, webhook)
    _wait_listening(port)
    return f"http://127.0.0.1:{port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5-alert workloads, no quiet minute")
    args = parser.parse_args()
    report = bench(quick=args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"\nwritten: {stem}.json, {stem}.md")


def bench(*, quick: bool = False) -> dict[str, Any]:
    """Everything, in one set of emulators and one simulator; the report as a dict."""
    from google.cloud import firestore

    from deploy.local.fyers_simulator import FyersSimulator
    from deploy.local.mastergen import generate_masters
    from tests.pipeline import pipeline_parts

    workloads = (tuple(Workload(w.name, 5, w.per_second) for w in bench_pipeline.WORKLOADS) if quick
                 else bench_pipeline.WORKLOADS)
    report: dict[str, Any] = {"machine": machine(), "started": datetime.now(timezone.utc).isoformat(),
                              "simulator_limits": {"per_second": 10, "per_minute": 200}}
    today = datetime.now(timezone.utc).date()
    masters = generate_masters(date(today.year, today.month, today.day))
    with ExitStack() as stack:
        sim = FyersSimulator(masters=list(masters.values()), apps={APP_ID: "bench-app-secret"},
                             rate_per_second=10, rate_per_minute=200).start()
        stack.callback(sim.stop)
        sim.set_price("NSE:NIFTY50-INDEX", NIFTY)
        project = stack.enter_context(emulated_project())
        create_topics(project, "orders", "notifications")
        db = firestore.Client(project=project)
        env = {"WEBHOOK_SECRET": SECRET, "OPERATOR_KEY": "bench-operator-key", "ENFORCE_MARKET_HOURS": "false",
               "LOG_LEVEL": "WARNING", "MAX_ORDERS_PER_DAY": "100000"}
        counts = stack.enter_context(counting())
        parts = stack.enter_context(pipeline_parts(project=project, db=db, sim=sim, app_id=APP_ID, masters=masters,
                                                   artifacts=Path(tempfile.mkdtemp(prefix="bench-")),
                                                   orders_topic="orders", env=env))
        # The webhook in its own process, as its own instance: not sharing this one's interpreter.
        url = _webhook(stack)

        def statuses(order_ids: list[str]) -> dict[str, str]:
            from common.records import ORDERS

            with counts.paused():
                refs = [db.collection(ORDERS).document(o) for o in order_ids]
                return {snap.id: (snap.to_dict() or {}).get("status") for snap in db.get_all(refs) if snap.exists}

        def claimed_at(order_ids: list[str]) -> dict[str, datetime]:
            """When a delivery first claimed each order (its first PLACING event)."""
            from common.records import EVENTS, ORDERS

            with counts.paused():
                first: dict[str, datetime] = {}
                for order_id in order_ids:
                    events = db.collection(ORDERS).document(order_id).collection(EVENTS).stream()
                    times = [e.get("at") for e in events if e.get("to_status") == "PLACING"]
                    if times:
                        first[order_id] = min(times)
                return first

        # Its latency is measured on a topic no worker consumes: deployed, the webhook's instance
        # does not share its CPU with the worker settling each alert (the emulators it does share).
        create_topics(project, WEBHOOK_ONLY_TOPIC)
        with ExitStack() as alone:
            report["webhook_ms"] = bench_webhook.run(_webhook(alone, ORDERS_TOPIC=WEBHOOK_ONLY_TOPIC))
        # Before the workloads: a fresh worker instance then finds the pacer lease free, as a
        # first instance does (after them it would wait out the bench worker's lease, a handover).
        report["entry_points"] = entry_points.run(project)
        _wait_idle(parts.delivery)
        report["workloads"] = []
        for n, workload in enumerate(workloads):
            if n or not quick:
                time.sleep(0 if quick else QUIET_SECONDS)
            before = counts.snapshot()
            result = bench_pipeline.run(workload, webhook_url=url, sim=sim, delivery=parts.delivery,
                                        admission=parts.admission, statuses=statuses)
            ops = {k: v - before[k] for k, v in counts.snapshot().items()}
            result["firestore"] = {**ops, **{f"{k}_per_accepted": round(v / max(1, result["accepted"]), 2)
                                             for k, v in ops.items()}}
            report["workloads"].append(result)
            print(f"{workload.name}: placed {result['placed']}/{result['accepted']}, expired {result['expired']}, "
                  f"dead-lettered {result['dead_lettered']}", flush=True)
        time.sleep(0 if quick else QUIET_SECONDS)
        report["mixed"] = bench_pipeline.run_mixed(webhook_url=url, sim=sim, delivery=parts.delivery,
                                                   statuses=statuses, claimed_at=claimed_at,
                                                   **({"quiet": 5.0, "holders": 4, "newcomers": 12} if quick
                                                      else {"quiet": QUIET_SECONDS}))
        print(f"{report['mixed']['workload']}: {report['mixed']['entries_placed_ahead_of_a_waiting_exit']} "
              "entries placed ahead of a waiting exit", flush=True)
        steady = report["workloads"][1]["firestore"]
        per_alert = {k: steady[f"{k}_per_accepted"] for k in PRICE_PER_100K}
        report["firestore_per_alert"] = {**per_alert, "workload": report["workloads"][1]["workload"],
                                         "usd_per_1000_alerts": round(cost_per_1000(per_alert), 5),
                                         "prices_usd_per_100k": PRICE_PER_100K}
        report["rate_breaches"] = sim.rate_breaches
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["finished"] = datetime.now(timezone.utc).isoformat()
    return report


def _wait_listening(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_idle(delivery: Any, timeout: float = 60.0) -> None:
    """Until every message pushed so far is acked or dead-lettered."""
    deadline = time.monotonic() + timeout
    while delivery.outstanding() and time.monotonic() < deadline:
        time.sleep(0.5)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"Measured {report['started'][:16]} UTC on {m['cores']} cores ({m['cpu']}), load average "
             f"{m['load_average'][0]} before, {m['load_average_after'][0]} after; commit {m['commit']}. "
             f"Simulator at Fyers' limits: 10/s, 200/min.", "",
             "| Workload | accepted | placed | expired | dead-lettered | alert→broker p50 / p95 / p99 | "
             "most broker requests in 1 s / 60 s | broker requests per placed | worker 429s | simulator 429s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in report["workloads"]:
        lat = w["alert_to_broker_s"]
        shown = f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['p99']:.2f} s" if lat else "-"
        lines.append(f"| {w['workload']} | {w['accepted']} | {w['placed']} | {w['expired']} | {w['dead_lettered']} | "
                     f"{shown} | {w['max_broker_requests_1s']} / {w['max_broker_requests_60s']} | "
                     f"{w['broker_requests_per_placed']} | {w['worker_429s']} | {w['simulator_429s']} |")
    if "mixed" in report:
        x = report["mixed"]
        lines += ["", f"Mixed burst ({x['workload'].split(': ', 1)[-1]}, three entries to one exit, after the exits' "
                      f"positions were opened and a quiet minute): {x['exits_placed']} exits and "
                      f"{x['entries_placed']} entries placed; the last exit {x['last_exit_after_first_placement_s']} s "
                      f"after the burst's first placement; {x['entries_placed_before_last_exit']} entries placed "
                      f"before it, **{x['entries_placed_ahead_of_a_waiting_exit']} of them ahead of an exit already "
                      "waiting** (claimed over 0.5 s before)."]
    lines += ["", "| Webhook, alerts in flight | p50 | p95 | p99 | requests | not accepted |", "|---|---|---|---|---|---|"]
    for level, s in report["webhook_ms"].items():
        lines.append(f"| {level} | {s['p50']} ms | {s['p95']} ms | {s['p99']} ms | {s['requests']} | {s['not_accepted']} |")
    lines += ["", "| Entry point | framework import | `main` import | first request | status |", "|---|---|---|---|---|"]
    for name, e in report["entry_points"].items():
        lines.append(f"| {name} | {e['framework_import_s'] * 1000:.0f} ms | {e['import_s'] * 1000:.0f} ms | "
                     f"{e['first_request_s'] * 1000:.0f} ms | {e['status']} |")
    f = report["firestore_per_alert"]
    prices = ", ".join(f"{k} ${v}" for k, v in f["prices_usd_per_100k"].items())
    lines += ["", f"Firestore per accepted alert ({f['workload']}): {f['reads']} reads, {f['writes']} writes, "
                  f"{f['deletes']} deletes; **${f['usd_per_1000_alerts']:.4f} per 1,000 alerts** at list prices "
                  f"per 100,000 ({prices}), beyond the free daily quota."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

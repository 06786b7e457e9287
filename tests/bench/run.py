"""``make bench``: the burst benchmarks of issue 11, written as JSON and a Markdown table.

Beside the emulators, one process runs the Fyers simulator at Fyers' real limits (10 a
second, 200 a minute) and the worker as Cloud Run will run it, fed by push delivery with
the deployed retry and dead-letter policy (tests/pipeline.py); the webhook runs in a
process of its own, over HTTP, with its deployed concurrency. The parts, in this order
(:data:`PARTS`): ``webhook``, its latency at 1, 10 and 50 in flight; ``entry-points``, each
entry point's import and first request; the workloads ``burst``, ``steady`` and
``ten-a-second`` (:data:`tests.bench.bench_pipeline.WORKLOADS`) and ``mixed``, the mixed
burst of exits and entries (:func:`tests.bench.bench_pipeline.run_mixed`), each once the
simulator has logged nothing for a quiet minute, so that no 60 s window holds two. With
``steady``, Firestore operations per accepted alert, counted at the client in both processes
(tests/bench/firestore_ops.py).

Run: ``python -m tests.bench.run [--out DIR] [--quick] [--only PART,...]`` (``--quick``: a
small smoke run, for the test suite; ``--only``: those parts, e.g. ``--only mixed``).
Results go to ``DIR/bench-<time>.json`` and ``.md`` (default ``.local/bench``) and the
table to stdout. About 9 minutes in all; ``--only mixed`` about 3.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from typing import Any, Callable

from tests.bench import bench_pipeline, bench_webhook, entry_points
from tests.bench.bench_pipeline import MIXED_PART, SECRET, WORKLOADS
from tests.bench.emulated import create_topics, emulated_project
from tests.bench.firestore_ops import PRICE_PER_100K, cost_per_1000, counting

ROOT = Path(__file__).resolve().parents[2]
APP_ID = "BENCHAPP01-100"
NIFTY = 24512.0
QUIET_SECONDS = 61.0  # between workloads: Fyers' minute window empties
QUICK_MIXED_QUIET_SECONDS = 5.0  # --quick: the positions' fills are read back meanwhile
PARTS = ("webhook", "entry-points", *(w.part for w in WORKLOADS), MIXED_PART)


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    return {"cores": os.cpu_count(), "cpu": model, "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "commit": commit.strip() + (" (with uncommitted changes)" if dirty else "")}


WEBHOOK_ONLY_TOPIC = "orders-webhook-bench"


def _webhook(stack: ExitStack, *, counted: bool = False, **env: str) -> str:
    """Serve the webhook as its own instance (a process behind the Cloud Run model); its URL.
    ``counted``: its Firestore operations are counted (:func:`_webhook_ops`)."""
    from deploy.local.cloud_run import WEBHOOK
    from deploy.local.emulators import free_port

    port = free_port()
    server = "tests.bench.counted_instance" if counted else "deploy.local.cloud_run"
    webhook = subprocess.Popen(
        [sys.executable, "-m", server, "--target=webhook", f"--source={ROOT / 'main.py'}",
         "--signature-type=http", f"--port={port}", f"--concurrency={WEBHOOK.concurrency}",
         f"--max-instances={WEBHOOK.max_instances}"], cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(_stop, webhook)
    _wait_listening(port)
    return f"http://127.0.0.1:{port}/"


def _webhook_ops(url: str) -> dict[str, int]:
    """The Firestore operations a counted webhook instance has made so far."""
    import urllib.request

    from tests.bench.counted_instance import OPS_PATH

    with urllib.request.urlopen(url.rstrip("/") + OPS_PATH, timeout=10) as answer:
        return json.loads(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 5-alert workloads, a mixed burst of 4 exits and 12 entries, no quiet minute")
    parser.add_argument("--only", type=parts, default=PARTS, metavar="PART,...",
                        help=f"run only these parts, comma-separated, of: {', '.join(PARTS)} (default: all)")
    args = parser.parse_args()
    report = bench(quick=args.quick, only=args.only)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"\nwritten: {stem}.json, {stem}.md")


def parts(text: str) -> tuple[str, ...]:
    """``--only``'s value: the named parts, in the order they run."""
    named = {p.strip() for p in text.split(",") if p.strip()}
    unknown = named - set(PARTS)
    if unknown or not named:
        raise argparse.ArgumentTypeError(f"unknown part {', '.join(sorted(unknown)) or '(none named)'}; "
                                         f"the parts are {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in named)


def bench(*, quick: bool = False, only: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """The parts ``only`` (all by default), in one set of emulators and one simulator; the report
    as a dict, without the keys of the parts not run."""
    from google.cloud import firestore

    from deploy.local.fyers_simulator import FyersSimulator
    from deploy.local.mastergen import generate_masters
    from tests.pipeline import pipeline_parts

    only = parts(",".join(only))
    workloads = [dataclasses.replace(w, alerts=5) if quick else w for w in WORKLOADS if w.part in only]
    quiet = 0.0 if quick else QUIET_SECONDS
    report: dict[str, Any] = {"machine": machine(), "started": datetime.now(timezone.utc).isoformat(),
                              "parts": list(only), "quick": quick,
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
        pipe = stack.enter_context(pipeline_parts(project=project, db=db, sim=sim, app_id=APP_ID, masters=masters,
                                                  artifacts=Path(tempfile.mkdtemp(prefix="bench-")),
                                                  orders_topic="orders", env=env))
        # The webhook in its own process, as its own instance: not sharing this one's interpreter.
        url = _webhook(stack, counted=True)

        def statuses(order_ids: list[str]) -> dict[str, bench_pipeline.Outcome]:
            from common.records import ORDERS

            with counts.paused():
                refs = [db.collection(ORDERS).document(o) for o in order_ids]
                return {snap.id: (doc.get("status"), doc.get("reason"), doc.get("message"))
                        for snap in db.get_all(refs) if snap.exists for doc in (snap.to_dict() or {},)}

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

        def held(strategies: list[str]) -> set[str]:
            """The strategies whose NIFTY position the ledger holds filled, nothing in flight."""
            from common.ledger import Ledger

            ledger = Ledger(db, timeout=30)
            with counts.paused():
                return {s for s in strategies
                        if (p := ledger.get(s, "NIFTY")) is not None and p.legs and not p.in_flight}

        def measured(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            """``run``'s result, with the Firestore operations it made (in all, and per accepted alert)."""
            before, webhook_before = counts.snapshot(), _webhook_ops(url)
            result = run()
            webhook_after = _webhook_ops(url)
            ops = {k: v - before[k] + webhook_after[k] - webhook_before[k] for k, v in counts.snapshot().items()}
            result["firestore"] = {**ops, **{f"{k}_per_accepted": round(v / max(1, result["accepted"]), 2)
                                             for k, v in ops.items()}}
            return result

        if "webhook" in only:
            # Its latency is measured on a topic no worker consumes: deployed, the webhook's instance
            # does not share its CPU with the worker settling each alert (the emulators it does share).
            create_topics(project, WEBHOOK_ONLY_TOPIC)
            with ExitStack() as alone:
                report["webhook_ms"] = bench_webhook.run(_webhook(alone, ORDERS_TOPIC=WEBHOOK_ONLY_TOPIC))
        if "entry-points" in only:
            # Before the workloads: a fresh worker instance then finds the pacer lease free, as a
            # first instance does (after them it would wait out the bench worker's lease, a handover).
            report["entry_points"] = entry_points.run(project)
            _wait_idle(pipe.delivery)
        if workloads:
            report["workloads"] = []
        for workload in workloads:
            _wait_quiet(sim, quiet)
            result = measured(lambda: bench_pipeline.run(workload, webhook_url=url, sim=sim, delivery=pipe.delivery,
                                                         admission=pipe.admission, statuses=statuses))
            report["workloads"].append(result)
            print(f"{workload.name}: placed {result['placed']}/{result['accepted']}, expired {result['expired']}, "
                  f"dead-lettered {result['dead_lettered']}", flush=True)
        if MIXED_PART in only:
            _wait_quiet(sim, quiet)
            sizes = {"holders": 4} if quick else {}
            holding = bench_pipeline.open_positions(webhook_url=url, delivery=pipe.delivery, statuses=statuses,
                                                    held=held, **sizes)
            _wait_quiet(sim, QUICK_MIXED_QUIET_SECONDS if quick else QUIET_SECONDS)
            x = report["mixed"] = measured(lambda: bench_pipeline.run_mixed(
                holding, webhook_url=url, sim=sim, delivery=pipe.delivery, admission=pipe.admission,
                statuses=statuses, held=held, claimed_at=claimed_at, **({"newcomers": 12} if quick else {})))
            print(f"{x['workload']}: exits placed {x['exits_placed']}/{x['exits']}, entries "
                  f"{x['entries_placed']}/{x['entries']}, {x['entries_placed_ahead_of_a_waiting_exit']} entries "
                  f"ahead of a waiting exit; criterion met: {x['criterion_met']}", flush=True)
        steady = next((w for w in report.get("workloads", []) if w["part"] == "steady"), None)
        if steady:
            per_alert = {k: steady["firestore"][f"{k}_per_accepted"] for k in PRICE_PER_100K}
            report["firestore_per_alert"] = {**per_alert, "workload": steady["workload"],
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


def _wait_quiet(sim: Any, seconds: float) -> None:
    """Until the simulator has logged no request for ``seconds`` (its clock): Fyers' windows are
    empty and the next workload starts on a full budget. Gives up after three times that."""
    give_up = time.monotonic() + 3 * seconds
    while time.monotonic() < give_up:
        log = sim.requests
        if not log:
            return
        left = seconds - (sim.now() - datetime.fromisoformat(log[-1]["time"])).total_seconds()
        if left <= 0:
            return
        time.sleep(left)


def _wait_idle(delivery: Any, timeout: float = 60.0) -> None:
    """Until every message pushed so far is acked or dead-lettered."""
    deadline = time.monotonic() + timeout
    while delivery.outstanding() and time.monotonic() < deadline:
        time.sleep(0.5)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def _latency(lat: dict[str, float] | None) -> str:
    return f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['p99']:.2f} s" if lat else "-"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a section per part that ran, none for the others."""
    m = report["machine"]
    ran = report.get("parts", list(PARTS))
    partial = "" if ran == list(PARTS) else f" Parts run: {', '.join(ran)} (`--only`)."
    lines = [f"Measured {report['started'][:16]} UTC on {m['cores']} cores ({m['cpu']}), load average "
             f"{m['load_average'][0]} before, {m['load_average_after'][0]} after; commit {m['commit']}. "
             f"Simulator at Fyers' limits: 10/s, 200/min.{partial}"
             + (" A `--quick` smoke run: its figures are not measurements." if report.get("quick") else "")]
    rows = report.get("workloads", []) + ([report["mixed"]] if "mixed" in report else [])
    if rows:
        lines += ["", *_table(
            ["Workload", "accepted", "placed", "expired", "dead-lettered", "alert→broker p50 / p95 / p99",
             "most broker requests in 1 s / 60 s", "broker requests per placed", "worker 429s", "simulator 429s"],
            [[w["workload"], w["accepted"], w["placed"], w["expired"], w["dead_lettered"], _latency(w["alert_to_broker_s"]),
              f"{w['max_broker_requests_1s']} / {w['max_broker_requests_60s']}", w["broker_requests_per_placed"],
              w["worker_429s"], w["simulator_429s"]] for w in rows])]
    if "mixed" in report:
        lines += ["", _mixed_paragraph(report["mixed"])]
    if "webhook_ms" in report:
        lines += ["", *_table(["Webhook, alerts in flight", "p50", "p95", "p99", "requests", "not accepted"],
                              [[level, f"{s['p50']} ms", f"{s['p95']} ms", f"{s['p99']} ms", s["requests"],
                                s["not_accepted"]] for level, s in report["webhook_ms"].items()])]
    if "entry_points" in report:
        lines += ["", *_table(["Entry point", "framework import", "`main` import", "first request", "status"],
                              [[name, f"{e['framework_import_s'] * 1000:.0f} ms", f"{e['import_s'] * 1000:.0f} ms",
                                f"{e['first_request_s'] * 1000:.0f} ms", e["status"]]
                               for name, e in report["entry_points"].items()])]
    if "firestore_per_alert" in report:
        f = report["firestore_per_alert"]
        prices = ", ".join(f"{k} ${v}" for k, v in f["prices_usd_per_100k"].items())
        lines += ["", f"Firestore per accepted alert ({f['workload']}): {f['reads']} reads, {f['writes']} writes, "
                      f"{f['deletes']} deletes; **${f['usd_per_1000_alerts']:.4f} per 1,000 alerts** at list prices "
                      f"per 100,000 ({prices}), beyond the free daily quota."]
    return "\n".join(lines) + "\n"


def _mixed_paragraph(x: dict[str, Any]) -> str:
    """The mixed burst's own figures, and whether it met its criterion."""
    wait = x["exit_claim_to_placement_s"]
    not_placed = ", ".join(f"{n} {why}" for why, n in x["not_placed"].items()) or "none"
    return (f"Mixed burst ({x['exits']} exits of positions opened beforehand, {x['positions_held']} of them held "
            f"in the ledger, and {x['entries']} entries, sent at once, entries first, the broker quiet "
            f"{x['broker_quiet_before_s']} s before): "
            f"**{x['exits_placed']} of {x['exits']} exits** and {x['entries_placed']} of {x['entries']} entries placed "
            f"(not placed: {not_placed}). The last exit placed {x['last_exit_placed_s']} s after the burst was sent, "
            f"the last entry {x['last_entry_placed_s']} s; an exit waited "
            + (f"{wait['p50']:.2f} s (p50), {wait['max']:.2f} s at most, " if wait else "- ")
            + f"from its claim to its placement. {x['entries_placed_before_last_exit']} entries placed before the "
            f"last exit, {x['entries_placed_before_first_exit_arrived']} of them before the first exit arrived "
            f"(claimed); **{x['entries_placed_ahead_of_a_waiting_exit']} placed ahead of an exit already waiting** "
            f"(claimed over {x['grace_s']} s before; {x['entries_placed_ahead_of_a_waiting_exit_no_grace']} "
            f"counting from the claim itself). Criterion, {x['criterion']}: "
            f"**{'met' if x['criterion_met'] else 'NOT met'}**.")


if __name__ == "__main__":
    main()

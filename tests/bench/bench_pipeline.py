"""Benchmark workloads through the whole local pipeline, judged by the simulator's log.

Alerts are POSTed over HTTP to the webhook, each on a new connection as TradingView
sends them; the worker runs as Cloud Run will (its concurrency, 429 beyond) behind
push delivery with the trigger's retry and dead-letter policy (tests/pipeline.py).

For each workload: placed, expired and dead-lettered; alert -> broker (the webhook's
POST sent, to the simulator's log of the order's placement) p50/p95/p99; the most
broker requests the simulator saw in any 1 s and any 60 s window (its own clock);
broker requests per placed order; the simulator's 429s; the worker's 429s.
Run by ``python -m tests.bench.run``.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import requests

from tests.bench.emulated import percentiles

SECRET = "bench-secret"
HTTP_TIMEOUT = 10.0
# After the last alert, how long its order may take at most: the age limit, an unclear
# placement's landing bound, and the book reads.
SETTLE_SECONDS = 100.0
TERMINAL = {"PLACED", "REJECTED", "FAILED", "BLOCKED", "EXPIRED", "DRY_RUN"}
AUTH_PATHS = ("/generate-authcode", "/validate-authcode", "/validate-refresh-token")


@dataclass(frozen=True)
class Workload:
    name: str
    alerts: int
    per_second: float | None  # None: all at once


WORKLOADS = (Workload("burst of 150", 150, None), Workload("2 a second for 2 minutes", 240, 2.0),
             Workload("10 a second for 10 seconds", 100, 10.0))
BURST_SENDERS = 50  # connections at once for a burst


def alert(tag: str) -> str:
    """A distinct NIFTY weekly ATM call, 1 lot, timed now."""
    return json.dumps({"secret": SECRET, "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM",
                       "optionType": "CE", "lots": 1, "strategy": tag,
                       "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})


def send(url: str, tag: str) -> tuple[datetime, int, dict]:
    """POST the alert ``tag``, timed as it leaves, on a new connection: (when sent, status, answer)."""
    body = alert(tag)
    sent = datetime.now(timezone.utc)
    answer = requests.post(url, data=body, headers={"Content-Type": "text/plain"}, timeout=HTTP_TIMEOUT)
    try:
        return sent, answer.status_code, answer.json()
    except ValueError:
        return sent, answer.status_code, {}


def run(workload: Workload, *, webhook_url: str, sim: Any, delivery: Any, admission: Any,
        statuses: Callable[[list[str]], dict[str, str]]) -> dict[str, Any]:
    """Send the workload, wait for its orders to settle, and measure it."""
    attempts_before, refused_before = len(delivery.attempts), admission.stats()["refused"]
    dead_before, log_before = len(delivery.dead_lettered), len(sim.requests)
    tag = workload.name.split()[0] + f"-{time.monotonic_ns()}"
    tags = [f"{tag}-{n}" for n in range(workload.alerts)]
    started = time.monotonic()
    if workload.per_second is None:
        with ThreadPoolExecutor(max_workers=BURST_SENDERS) as pool:
            answers = list(pool.map(lambda one: send(webhook_url, one), tags))
    else:
        answers = _paced(webhook_url, tags, workload.per_second)
    send_seconds = time.monotonic() - started
    accepted = {a[2]["order_id"]: a[0] for a in answers if a[1] == 200 and a[2].get("status") == "accepted"}
    deadline = time.monotonic() + SETTLE_SECONDS
    outcome: dict[str, str] = {}
    while time.monotonic() < deadline:
        outcome = statuses(list(accepted))
        if all(outcome.get(order_id) in TERMINAL for order_id in accepted) and delivery.outstanding() == 0:
            break
        time.sleep(1.0)
    log = sim.requests[log_before:]
    broker = [e for e in log if not e["path"].endswith(AUTH_PATHS)]
    times = sorted(datetime.fromisoformat(e["time"]).timestamp() for e in broker)
    placed_at = _placements(broker)
    latencies = [(placed_at[o] - sent).total_seconds() for o, sent in accepted.items() if o in placed_at]
    counts: dict[str, int] = {}
    for order_id in accepted:
        status = outcome.get(order_id, "NOT SETTLED")
        counts[status] = counts.get(status, 0) + 1
    placed = counts.get("PLACED", 0)
    pushes = delivery.attempts[attempts_before:]
    return {
        "workload": workload.name, "alerts": workload.alerts, "send_seconds": round(send_seconds, 2),
        "accepted": len(accepted), "webhook_refusals": sum(1 for a in answers if a[1] != 200),
        "webhook_answers": _answers(answers),
        "placed": placed, "expired": counts.get("EXPIRED", 0),
        "dead_lettered": len(delivery.dead_lettered) - dead_before, "outcomes": counts,
        "alert_to_broker_s": {k: round(v, 3) for k, v in percentiles(latencies).items()} if latencies else None,
        "broker_requests": len(broker), "max_broker_requests_1s": _most_within(times, 1.0),
        "max_broker_requests_60s": _most_within(times, 60.0),
        "broker_requests_per_placed": round(len(broker) / placed, 2) if placed else None,
        "broker_requests_by_path": _by_path(broker),
        "simulator_429s": sum(1 for e in broker if e["status"] == 429),
        "worker_429s": admission.stats()["refused"] - refused_before,
        "pushes": len(pushes), "redeliveries": sum(1 for p in pushes if p.number > 1),
    }


def _answers(answers: list[tuple[datetime, int, dict]]) -> dict[str, int]:
    """How many of each webhook answer: status and, for anything but acceptance, its reason."""
    counts: dict[str, int] = {}
    for _, status, body in answers:
        key = f"{status} {body.get('status') or body.get('error') or body.get('code') or ''}".strip()
        counts[key] = counts.get(key, 0) + 1
    return counts


def _paced(url: str, tags: list[str], per_second: float) -> list[tuple[datetime, int, dict]]:
    """Send one every ``1/per_second`` s on schedule, each from its own thread."""
    results: list[Any] = [None] * len(tags)
    threads = []
    start = time.monotonic()
    for n, tag in enumerate(tags):
        time.sleep(max(0.0, start + n / per_second - time.monotonic()))

        def one(n: int = n, tag: str = tag) -> None:
            results[n] = send(url, tag)

        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return results


def _placements(log: list[dict]) -> dict[str, datetime]:
    """Order id -> when the simulator first logged its placement (orderTag ``N:<order id>``)."""
    placed: dict[str, datetime] = {}
    for entry in log:
        if entry["method"] == "POST" and "/orders" in entry["path"]:
            tag = str((entry.get("body") or {}).get("orderTag") or "")
            order_id = tag.split(":", 1)[-1]
            if order_id and order_id not in placed:
                placed[order_id] = datetime.fromisoformat(entry["time"])
    return placed


def _most_within(times: list[float], window: float) -> int:
    """The most of ``times`` (sorted) in any half-open window of ``window`` seconds."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def _by_path(log: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in log:
        key = f"{entry['method']} {entry['path']}"
        counts[key] = counts.get(key, 0) + 1
    return counts

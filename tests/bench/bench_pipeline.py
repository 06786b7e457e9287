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


# --- the mixed burst: exits go before the entries still waiting ------------------------------

MIXED_HOLDERS = 40  # strategies holding a NIFTY call, each of which sends an exit in the burst
MIXED_NEWCOMERS = 120  # strategies entering in the same burst
# An exit counts as waiting once its delivery has claimed the order and this long has passed
# (its plan, the ledger and the position read come first).
MIXED_GRACE_S = 0.5


def position_alert(strategy: str, action: str, position: str, size: int, prev: str, prev_size: int) -> str:
    """README template A (options bought on the index's signal), rendered as TradingView renders it."""
    return json.dumps({"secret": SECRET, "strategy": strategy, "symbol": "NIFTY", "expiry": "WEEKLY",
                       "strike": "ATM", "options": "buy", "action": action, "position": position,
                       "position_size": size, "prev_position": prev, "prev_position_size": prev_size,
                       "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})


def _post(url: str, body: str) -> tuple[datetime, int, dict]:
    sent = datetime.now(timezone.utc)
    answer = requests.post(url, data=body, headers={"Content-Type": "text/plain"}, timeout=HTTP_TIMEOUT)
    try:
        return sent, answer.status_code, answer.json()
    except ValueError:
        return sent, answer.status_code, {}


def run_mixed(*, webhook_url: str, sim: Any, delivery: Any, statuses: Callable[[list[str]], dict[str, str]],
              claimed_at: Callable[[list[str]], dict[str, datetime]], quiet: float,
              holders: int = MIXED_HOLDERS, newcomers: int = MIXED_NEWCOMERS) -> dict[str, Any]:
    """Open ``holders`` positions, wait ``quiet`` s for a fresh broker budget, then send their
    exits and ``newcomers`` entries at once, interleaved (three entries, one exit).

    Judged on the simulator's log: an entry placed after an exit had been waiting
    (claimed ``MIXED_GRACE_S`` before) and before that exit was placed jumped the queue."""
    tag = f"mixed-{time.monotonic_ns()}"
    holding = [f"{tag}-hold-{n}" for n in range(holders)]
    opened = _send_all(webhook_url, [position_alert(s, "buy", "long", 1, "flat", 0) for s in holding])
    _settle([a[2]["order_id"] for a in opened if a[1] == 200], statuses, delivery)
    time.sleep(quiet)  # the positions' fills are read back meanwhile; Fyers' minute empties

    exits = [position_alert(s, "sell", "flat", 0, "long", 1) for s in holding]
    entries = [position_alert(f"{tag}-new-{n}", "buy", "long", 1, "flat", 0) for n in range(newcomers)]
    mixed = [(kind, body) for n, exit_body in enumerate(exits)
             for kind, body in (*(("entry", e) for e in entries[3 * n:3 * n + 3]), ("exit", exit_body))]
    log_before = len(sim.requests)
    started = time.monotonic()
    answers = _send_all(webhook_url, [body for _, body in mixed])
    kinds = {a[2].get("order_id"): kind for (kind, _), a in zip(mixed, answers) if a[1] == 200}
    outcome = _settle(list(kinds), statuses, delivery)
    placed_at = _placements(sim.requests[log_before:])
    claimed = claimed_at([o for o, kind in kinds.items() if kind == "exit"])
    exits_placed = {o: placed_at[o] for o, kind in kinds.items() if kind == "exit" and o in placed_at}
    entries_placed = {o: placed_at[o] for o, kind in kinds.items() if kind == "entry" and o in placed_at}
    jumped = {e for e, at in entries_placed.items() for x, x_at in exits_placed.items()
              if x in claimed and (at - claimed[x]).total_seconds() > MIXED_GRACE_S and at < x_at}
    last_exit = max(exits_placed.values(), default=None)
    counts: dict[str, int] = {}
    for status in outcome.values():
        counts[status] = counts.get(status, 0) + 1
    return {
        "workload": f"mixed burst: {holders} exits and {newcomers} entries at once",
        "seconds_to_settle": round(time.monotonic() - started, 2), "accepted": len(kinds), "outcomes": counts,
        "exits_placed": len(exits_placed), "entries_placed": len(entries_placed),
        "entries_placed_before_last_exit": sum(1 for at in entries_placed.values() if last_exit and at < last_exit),
        "entries_placed_ahead_of_a_waiting_exit": len(jumped),
        "last_exit_after_first_placement_s": round((last_exit - min(placed_at.values())).total_seconds(), 2)
        if last_exit else None,
    }


def _send_all(url: str, bodies: list[str]) -> list[tuple[datetime, int, dict]]:
    with ThreadPoolExecutor(max_workers=BURST_SENDERS) as pool:
        return list(pool.map(lambda body: _post(url, body), bodies))


def _settle(order_ids: list[str], statuses: Callable[[list[str]], dict[str, str]], delivery: Any) -> dict[str, str]:
    """Wait until every order has an outcome (or ``SETTLE_SECONDS``); their statuses."""
    deadline = time.monotonic() + SETTLE_SECONDS
    outcome: dict[str, str] = {}
    while time.monotonic() < deadline:
        outcome = statuses(order_ids)
        if all(outcome.get(o) in TERMINAL | {"SKIPPED"} for o in order_ids) and delivery.outstanding() == 0:
            break
        time.sleep(1.0)
    return outcome

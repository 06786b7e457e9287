"""Benchmark workloads through the whole local pipeline, judged by the simulator's log.

Alerts are POSTed over HTTP to the webhook, each on a new connection as TradingView
sends them; the worker runs as Cloud Run will (its concurrency, 429 beyond) behind
push delivery with the trigger's retry and dead-letter policy (tests/pipeline.py).

For each workload: placed, expired and dead-lettered; alert -> broker (the webhook's
POST sent, to the simulator's log of the order's placement) p50/p95/p99; the most
broker requests the simulator saw in any 1 s and any 60 s window (its own clock);
broker requests per placed order; the simulator's 429s; the worker's 429s. The mixed burst
(:func:`run_mixed`) adds whether its exits went before the entries still waiting.
Run by ``python -m tests.bench.run``.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import requests

from tests.bench.emulated import percentiles

SECRET = "bench-secret"
HTTP_TIMEOUT = 10.0
# After the last alert, how long its order may take at most: the age limit, an unclear
# placement's landing bound, and the book reads.
SETTLE_SECONDS = 100.0
TERMINAL = {"PLACED", "REJECTED", "FAILED", "BLOCKED", "EXPIRED", "DRY_RUN", "SKIPPED"}
AUTH_PATHS = ("/generate-authcode", "/validate-authcode", "/validate-refresh-token")


@dataclass(frozen=True)
class Workload:
    part: str  # its name for ``--only``
    name: str
    alerts: int
    per_second: float | None  # None: all at once


WORKLOADS = (Workload("burst", "burst of 150", 150, None), Workload("steady", "2 a second for 2 minutes", 240, 2.0),
             Workload("ten-a-second", "10 a second for 10 seconds", 100, 10.0))
BURST_SENDERS = 50  # connections at once for a burst

# Order id -> (status, reason, message) as the order documents say.
Outcome = tuple[str, str | None, str | None]
Outcomes = Callable[[list[str]], dict[str, Outcome]]
NOT_SETTLED: Outcome = ("NOT SETTLED", None, None)


@dataclass(frozen=True)
class Marks:
    """Where the simulator's log and the pipeline's counters stood when a workload began."""

    log: int
    attempts: int
    dead_lettered: int
    refused: int


def mark(sim: Any, delivery: Any, admission: Any) -> Marks:
    """Where they stand now."""
    return Marks(len(sim.requests), len(delivery.attempts), len(delivery.dead_lettered), admission.stats()["refused"])


def alert(tag: str) -> str:
    """A distinct NIFTY weekly ATM call, 1 lot, timed now."""
    return json.dumps({"secret": SECRET, "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM",
                       "optionType": "CE", "lots": 1, "strategy": tag,
                       "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})


def send(url: str, tag: str) -> tuple[datetime, int, dict]:
    """POST the alert ``tag``, timed as it leaves, on a new connection: (when sent, status, answer)."""
    return _post(url, alert(tag))


def _post(url: str, body: str) -> tuple[datetime, int, dict]:
    sent = datetime.now(timezone.utc)
    answer = requests.post(url, data=body, headers={"Content-Type": "text/plain"}, timeout=HTTP_TIMEOUT)
    try:
        return sent, answer.status_code, answer.json()
    except ValueError:
        return sent, answer.status_code, {}


def run(workload: Workload, *, webhook_url: str, sim: Any, delivery: Any, admission: Any,
        statuses: Outcomes) -> dict[str, Any]:
    """Send the workload, wait for its orders to settle, and measure it."""
    since = mark(sim, delivery, admission)
    tag = workload.name.split()[0] + f"-{time.monotonic_ns()}"
    tags = [f"{tag}-{n}" for n in range(workload.alerts)]
    started = time.monotonic()
    if workload.per_second is None:
        with ThreadPoolExecutor(max_workers=BURST_SENDERS) as pool:
            answers = list(pool.map(lambda one: send(webhook_url, one), tags))
    else:
        answers = _paced(webhook_url, tags, workload.per_second)
    send_seconds = time.monotonic() - started
    accepted = _accepted(answers)
    outcome = _settle(list(accepted), statuses, delivery)
    return {"part": workload.part, "workload": workload.name, "alerts": workload.alerts,
            "send_seconds": round(send_seconds, 2),
            **_figures(answers, accepted, outcome, since, sim=sim, delivery=delivery, admission=admission)}


def _accepted(answers: list[tuple[datetime, int, dict]]) -> dict[str, datetime]:
    """Order id -> when its alert was sent, for the alerts the webhook accepted."""
    return {a[2]["order_id"]: a[0] for a in answers if a[1] == 200 and a[2].get("status") == "accepted"}


def _figures(answers: list[tuple[datetime, int, dict]], accepted: dict[str, datetime],
             outcome: dict[str, Outcome], since: Marks, *, sim: Any, delivery: Any,
             admission: Any) -> dict[str, Any]:
    """The figures every workload reports, from its answers, its orders' outcomes and what the
    simulator and the pipeline logged since ``since``."""
    broker = [e for e in sim.requests[since.log:] if not e["path"].endswith(AUTH_PATHS)]
    times = sorted(datetime.fromisoformat(e["time"]).timestamp() for e in broker)
    placed_at = _placements(broker)
    latencies = [(placed_at[o] - sent).total_seconds() for o, sent in accepted.items() if o in placed_at]
    counts: dict[str, int] = {}
    not_placed: dict[str, int] = {}
    said: dict[str, str | None] = {}  # one message for each status and reason not placed
    for order_id in accepted:
        got = outcome.get(order_id, NOT_SETTLED)
        counts[got[0]] = counts.get(got[0], 0) + 1
        if got[0] != "PLACED":
            not_placed[_why(got)] = not_placed.get(_why(got), 0) + 1
            said.setdefault(_why(got), got[2])
    placed = counts.get("PLACED", 0)
    pushes = delivery.attempts[since.attempts:]
    return {
        "accepted": len(accepted), "webhook_refusals": sum(1 for a in answers if a[1] != 200),
        "webhook_answers": _answers(answers),
        "placed": placed, "expired": counts.get("EXPIRED", 0),
        "dead_lettered": len(delivery.dead_lettered) - since.dead_lettered, "outcomes": counts,
        "not_placed": not_placed, "not_placed_said": said,
        "alert_to_broker_s": {k: round(v, 3) for k, v in percentiles(latencies).items()} if latencies else None,
        "broker_requests": len(broker), "max_broker_requests_1s": _most_within(times, 1.0),
        "max_broker_requests_60s": _most_within(times, 60.0),
        "broker_requests_per_placed": round(len(broker) / placed, 2) if placed else None,
        "broker_requests_by_path": _by_path(broker),
        "simulator_429s": sum(1 for e in broker if e["status"] == 429),
        "worker_429s": admission.stats()["refused"] - since.refused,
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

MIXED_PART = "mixed"
MIXED_HOLDERS = 40  # strategies holding a NIFTY call, each of which sends an exit in the burst
MIXED_NEWCOMERS = 120  # strategies entering in the same burst
# An exit counts as waiting once its delivery has claimed the order and this long has passed:
# between the claim (the PLACING event, the first trace of it in the worker) and its place in
# the pacer's queue come the claim's transaction and the guards' reads. An entry already sending
# in that time was not waiting behind it. The count without this allowance is reported too.
MIXED_GRACE_S = 0.5
CRITERION = "every exit placed, each before any entry still waiting when the exit arrived"


def position_alert(strategy: str, action: str, position: str, size: int, prev: str, prev_size: int) -> str:
    """README template A (options bought on the index's signal), rendered as TradingView renders it."""
    return json.dumps({"secret": SECRET, "strategy": strategy, "symbol": "NIFTY", "expiry": "WEEKLY",
                       "strike": "ATM", "options": "buy", "action": action, "position": position,
                       "position_size": size, "prev_position": prev, "prev_position_size": prev_size,
                       "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})


def open_positions(*, webhook_url: str, delivery: Any, statuses: Outcomes, held: Callable[[list[str]], set[str]],
                   holders: int = MIXED_HOLDERS) -> list[str]:
    """Open ``holders`` strategies' positions, one lot of the NIFTY weekly ATM call each, and
    wait until the ledger holds each one's fill (read back from the book after placing), or
    ``SETTLE_SECONDS``; the strategies' names. :func:`run_mixed` reports how many were held."""
    tag = f"mixed-{time.monotonic_ns()}"
    holding = [f"{tag}-hold-{n}" for n in range(holders)]
    opened = _send_all(webhook_url, [position_alert(s, "buy", "long", 1, "flat", 0) for s in holding])
    _settle(list(_accepted(opened)), statuses, delivery)
    deadline = time.monotonic() + SETTLE_SECONDS
    while len(held(holding)) < len(holding) and time.monotonic() < deadline:
        time.sleep(1.0)
    return holding


def run_mixed(holding: list[str], *, webhook_url: str, sim: Any, delivery: Any, admission: Any,
              statuses: Outcomes, held: Callable[[list[str]], set[str]],
              claimed_at: Callable[[list[str]], dict[str, datetime]],
              newcomers: int = MIXED_NEWCOMERS) -> dict[str, Any]:
    """Send at once the exits of the strategies ``holding`` (flat after long 1) and ``newcomers``
    entries of other strategies, interleaved with the entries first; measure it.

    Judged on the simulator's log against :data:`CRITERION`: an entry placed after an exit had
    arrived (claimed more than ``MIXED_GRACE_S`` before) and before that exit was placed went
    ahead of a waiting exit."""
    positions_held = len(held(holding))
    tag = f"mixed-{time.monotonic_ns()}"
    exits = [("exit", position_alert(s, "sell", "flat", 0, "long", 1)) for s in holding]
    entries = [("entry", position_alert(f"{tag}-new-{n}", "buy", "long", 1, "flat", 0)) for n in range(newcomers)]
    mixed = _interleave(entries, exits)
    since = mark(sim, delivery, admission)
    log = sim.requests
    quiet = (sim.now() - datetime.fromisoformat(log[-1]["time"])).total_seconds() if log else None
    started, burst_sent = time.monotonic(), datetime.now(timezone.utc)
    answers = _send_all(webhook_url, [body for _, body in mixed])
    send_seconds = time.monotonic() - started
    accepted = _accepted(answers)
    kind = {a[2]["order_id"]: k for (k, _), a in zip(mixed, answers) if a[2].get("order_id") in accepted}
    outcome = _settle(list(accepted), statuses, delivery)
    figures = _figures(answers, accepted, outcome, since, sim=sim, delivery=delivery, admission=admission)
    placed_at = _placements(sim.requests[since.log:])
    exit_ids = [o for o in accepted if kind[o] == "exit"]
    claimed = claimed_at(exit_ids)
    exits_placed = {o: placed_at[o] for o in exit_ids if o in placed_at}
    entries_placed = {o: at for o, at in placed_at.items() if kind.get(o) == "entry"}
    last_exit = max(exits_placed.values(), default=None)
    first_arrival = min(claimed.values(), default=None)

    def ahead(grace: float) -> dict[str, tuple[str, datetime]]:
        """Each entry placed ahead of an exit waiting (for over ``grace``): the first such exit."""
        jumps: dict[str, tuple[str, datetime]] = {}
        for e, at in entries_placed.items():
            for x, x_at in sorted(exits_placed.items(), key=lambda item: claimed.get(item[0], item[1])):
                if x in claimed and (at - claimed[x]).total_seconds() > grace and at < x_at:
                    jumps[e] = (x, x_at)
                    break
        return jumps

    jumped, jumped_strict = ahead(MIXED_GRACE_S), ahead(0.0)
    waits = [(at - claimed[x]).total_seconds() for x, at in exits_placed.items() if x in claimed]
    return {
        "part": MIXED_PART, "workload": f"mixed burst: {len(exits)} exits and {newcomers} entries at once",
        "alerts": len(mixed), "send_seconds": round(send_seconds, 2), "positions_held": positions_held,
        "broker_quiet_before_s": round(quiet, 1) if quiet is not None else None,
        **figures,
        "exits": len(exit_ids), "exits_placed": len(exits_placed),
        "entries": len(accepted) - len(exit_ids), "entries_placed": len(entries_placed),
        "last_exit_placed_s": _after(burst_sent, last_exit),
        "last_entry_placed_s": _after(burst_sent, max(entries_placed.values(), default=None)),
        "exit_claim_to_placement_s": {k: round(v, 3) for k, v in percentiles(waits).items()} if waits else None,
        "entries_placed_before_last_exit": sum(1 for at in entries_placed.values() if last_exit and at < last_exit),
        "entries_placed_before_first_exit_arrived": sum(
            1 for at in entries_placed.values() if first_arrival and at <= first_arrival),
        "entries_placed_ahead_of_a_waiting_exit": len(jumped),
        "entries_placed_ahead_of_a_waiting_exit_no_grace": len(jumped_strict),
        # Who went ahead of whom, on the simulator's clock: the evidence behind the count.
        "ahead_of_a_waiting_exit": [
            {"entry": e, "exit": x, "placed_after_the_exit_claimed_s": round((at - claimed[x]).total_seconds(), 3),
             "placed_before_the_exit_s": round((x_at - at).total_seconds(), 3)}
            for e, (x, x_at) in sorted(jumped_strict.items(), key=lambda j: entries_placed[j[0]])
            for at in (entries_placed[e],)],
        "exits_not_placed": _counted(_why(outcome.get(x, NOT_SETTLED)) for x in exit_ids
                                     if x not in exits_placed),
        "grace_s": MIXED_GRACE_S, "criterion": CRITERION,
        "criterion_met": len(exits_placed) == len(exits) and not jumped,
    }


def _why(outcome: Outcome) -> str:
    """An outcome as counted: its status, and its reason unless placed (``EXPIRED RATE_BUDGET``)."""
    status, reason, _ = outcome
    return status if status == "PLACED" else f"{status} {reason or ''}".strip()


def _counted(keys: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


def _interleave(entries: list[tuple[str, str]], exits: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each exit after its share of the entries (three to one in the bench), entries first."""
    mixed: list[tuple[str, str]] = []
    for n, exit_alert in enumerate(exits):
        mixed += entries[n * len(entries) // len(exits):(n + 1) * len(entries) // len(exits)] + [exit_alert]
    return mixed or entries


def _after(start: datetime, at: datetime | None) -> float | None:
    return round((at - start).total_seconds(), 2) if at else None


def _send_all(url: str, bodies: list[str]) -> list[tuple[datetime, int, dict]]:
    with ThreadPoolExecutor(max_workers=BURST_SENDERS) as pool:
        return list(pool.map(lambda body: _post(url, body), bodies))


def _settle(order_ids: list[str], statuses: Outcomes, delivery: Any) -> dict[str, Outcome]:
    """Wait until every order has an outcome (or ``SETTLE_SECONDS``); their outcomes."""
    deadline = time.monotonic() + SETTLE_SECONDS
    outcome: dict[str, Outcome] = {}
    while time.monotonic() < deadline:
        outcome = statuses(order_ids)
        if all(outcome.get(o, ("",))[0] in TERMINAL for o in order_ids) and delivery.outstanding() == 0:
            break
        time.sleep(1.0)
    return outcome

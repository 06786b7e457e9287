"""Benchmark: the webhook's latency over HTTP at 1, 10 and 50 alerts in flight.

Each alert is a distinct dry-run order on a fixed strike, POSTed on a new connection
(as TradingView sends them) to the webhook, served as its own instance against the
emulators: accepted, recorded in Firestore and published, on a topic no worker
consumes (deployed, the webhook does not share its CPU with the worker; on this
machine it still shares it with the emulators). Target: p99 < 150 ms at 10.
Run by ``python -m tests.bench.run``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import requests

from tests.bench.bench_pipeline import HTTP_TIMEOUT, SECRET
from tests.bench.emulated import percentiles

LEVELS = (1, 10, 50)
REQUESTS_PER_LEVEL = 200
WARM_UP = 20


def run(webhook_url: str) -> dict[str, Any]:
    """{concurrency: {p50, p95, p99, max (ms), requests, refused}}."""
    for n in range(WARM_UP):
        _send(webhook_url, f"warm-{n}")
    report: dict[str, Any] = {}
    for level in LEVELS:
        def timed(n: int, level: int = level) -> tuple[float, int]:
            started = time.perf_counter()
            status, answer = _send(webhook_url, f"wh{level}-{n}")
            return time.perf_counter() - started, status if answer.get("status") == "accepted" else -status

        with ThreadPoolExecutor(max_workers=level) as pool:
            samples = list(pool.map(timed, range(REQUESTS_PER_LEVEL)))
        stats = percentiles([s for s, _ in samples])
        report[str(level)] = {**{k: round(v * 1000, 1) for k, v in stats.items()}, "requests": len(samples),
                              "not_accepted": sum(1 for _, status in samples if status != 200)}
    return report


def _send(url: str, tag: str) -> tuple[int, dict]:
    """POST a dry-run alert on a fixed strike (no broker call), timed as it leaves."""
    body = json.dumps({"secret": SECRET, "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": 24500,
                       "optionType": "CE", "lots": 1, "strategy": f"{tag}-{time.monotonic_ns()}", "dry_run": True,
                       "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    answer = requests.post(url, data=body, headers={"Content-Type": "text/plain"}, timeout=HTTP_TIMEOUT)
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, {}

"""Benchmark: the webhook's latency over HTTP at 1, 10 and 50 alerts in flight.

Each alert is a distinct dry-run order on a fixed strike, POSTed on a new connection
(as TradingView sends them) to the webhook served in this process against the
emulators: accepted, recorded in Firestore and published, while the worker settles each
one as DRY_RUN without a broker call. Target: p99 < 150 ms at 10.
Run by ``python -m tests.bench.run``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.bench.bench_pipeline import alert, send
from tests.bench.emulated import percentiles

LEVELS = (1, 10, 50)
REQUESTS_PER_LEVEL = 200
WARM_UP = 20


def run(webhook_url: str) -> dict[str, Any]:
    """{concurrency: {p50, p95, p99, max (ms), requests, refused}}."""
    for n in range(WARM_UP):
        send(webhook_url, _body(f"warm-{n}"))
    report: dict[str, Any] = {}
    for level in LEVELS:
        def timed(n: int, level: int = level) -> tuple[float, int]:
            started = time.perf_counter()
            _, status, answer = send(webhook_url, _body(f"wh{level}-{n}"))
            return time.perf_counter() - started, status if answer.get("status") == "accepted" else -status

        with ThreadPoolExecutor(max_workers=level) as pool:
            samples = list(pool.map(timed, range(REQUESTS_PER_LEVEL)))
        stats = percentiles([s for s, _ in samples])
        report[str(level)] = {**{k: round(v * 1000, 1) for k, v in stats.items()}, "requests": len(samples),
                              "not_accepted": sum(1 for _, status in samples if status != 200)}
    return report


def _body(tag: str) -> str:
    return alert(f"{tag}-{time.monotonic_ns()}", strike=24500, dry_run=True)

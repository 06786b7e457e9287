"""Fyers' per-app rate limits: sliding windows of 10 per second and 200 per minute.

Fyers blocks a user for the rest of the day after more than three per-minute
breaches (fyers-v3.md §5); the simulator blocks the app until :meth:`reset`.
A breach of the minute window counts once per episode (a new episode starts
a minute after the previous breach), not once per refused request.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict, deque
from typing import Callable

BLOCKED_RETRY_SECONDS = 3600.0


class RateLimiter:
    """Admits or refuses each request of an app. Thread-safe.

    Refused requests do not enter the windows: a client that backs off for the
    advertised time gets through.
    """

    def __init__(
        self,
        per_second: int = 10,
        per_minute: int = 200,
        *,
        block_after_minute_breaches: int | None = 3,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.per_minute = per_minute
        self.block_after = block_after_minute_breaches
        self._now = monotonic
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._calls: dict[str, deque[float]] = defaultdict(deque)
            self._last_minute_breach: dict[str, float] = {}
            self.breaches: dict[str, dict[str, int]] = defaultdict(lambda: {"second": 0, "minute": 0})
            self.blocked: set[str] = set()

    def snapshot(self) -> tuple[dict[str, dict[str, int]], list[str]]:
        """(breaches per app, blocked apps), copied under the lock."""
        with self._lock:
            return {app: dict(counts) for app, counts in self.breaches.items()}, sorted(self.blocked)

    def admit(self, app_id: str) -> float | None:
        """None if admitted (and counted), else the seconds to wait before retrying."""
        now = self._now()
        with self._lock:
            if app_id in self.blocked:
                return BLOCKED_RETRY_SECONDS
            calls = self._calls[app_id]
            while calls and calls[0] <= now - 60:
                calls.popleft()
            first_in_second = bisect.bisect_right(calls, now - 1)
            if len(calls) - first_in_second >= self.per_second:
                self.breaches[app_id]["second"] += 1
                return max(0.001, calls[len(calls) - self.per_second] + 1 - now)
            if len(calls) >= self.per_minute:
                return self._minute_breach(app_id, now, calls)
            calls.append(now)
            return None

    def _minute_breach(self, app_id: str, now: float, calls: deque[float]) -> float:
        last = self._last_minute_breach.get(app_id)
        if last is None or now - last >= 60:
            self.breaches[app_id]["minute"] += 1
        self._last_minute_breach[app_id] = now
        if self.block_after is not None and self.breaches[app_id]["minute"] > self.block_after:
            self.blocked.add(app_id)
            return BLOCKED_RETRY_SECONDS
        return max(0.001, calls[len(calls) - self.per_minute] + 60 - now)

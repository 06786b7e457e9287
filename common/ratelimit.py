"""An in-process limiter that keeps broker calls under Fyers' per-second and per-minute caps.

Fyers allows 10 requests a second and 200 a minute per app, across endpoints,
and blocks the account for the day after more than 3 per-minute breaches. The
worker is deployed with max instances 1, so an in-process limiter is the
account-wide limiter.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable


class RateLimitBudgetExceeded(Exception):
    """The next slot is later than the caller can wait."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"next broker slot in {wait:.2f} s")
        self.wait = wait


class SlidingWindowLimiter:
    """Grants at most ``per_second`` calls in any 1 s and ``per_minute`` in any 60 s. Thread-safe.

    Grants are also spaced ``1/per_second`` apart: a burst granted at the edge of a
    window would reach Fyers bunched up (thread scheduling, network jitter) and trip
    its own window even though ours was respected.
    """

    def __init__(self, per_second: int, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._limits = ((1.0, per_second), (60.0, per_minute))
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def _wait_needed(self, now: float) -> float:
        while self._calls and now - self._calls[0] >= 60.0:
            self._calls.popleft()
        wait = 0.0
        if self._calls:
            wait = self._calls[-1] + 1.0 / self._limits[0][1] - now
        for window, limit in self._limits:
            recent = [t for t in self._calls if now - t < window]
            if len(recent) >= limit:
                wait = max(wait, recent[-limit] + window - now)
        return wait

    def acquire(self, max_wait: float) -> float:
        """Take a slot, sleeping if needed; returns the seconds waited.

        Raises :class:`RateLimitBudgetExceeded` if the slot is more than ``max_wait`` away.
        """
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._calls.append(now)
                    return waited
            if waited + wait > max_wait:
                raise RateLimitBudgetExceeded(wait)
            self._sleep(wait)
            waited += wait

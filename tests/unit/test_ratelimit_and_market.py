"""The broker pace, and market hours."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest

from common.market import market_closed_reason
from common.ratelimit import RateLimitBudgetExceeded, SlidingWindowLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_grants_are_evenly_spaced_and_never_exceed_either_window():
    t = FakeTime()
    limiter = SlidingWindowLimiter(8, 20, clock=t.clock, sleep=t.sleep)
    grants = []
    for _ in range(40):
        with limiter.call(max_wait=120):
            grants.append(t.now)
    assert all(b - a >= 1 / 8 - 1e-9 for a, b in zip(grants, grants[1:]))
    for i, start in enumerate(grants):
        assert sum(1 for g in grants[i:] if g - start < 1.0) <= 8
        assert sum(1 for g in grants[i:] if g - start < 60.0) <= 20


def test_a_slot_beyond_the_budget_is_refused_without_waiting():
    t = FakeTime()
    limiter = SlidingWindowLimiter(10, 2, clock=t.clock, sleep=t.sleep)
    for _ in range(2):
        with limiter.call(max_wait=5):
            pass
    with pytest.raises(RateLimitBudgetExceeded):
        with limiter.call(max_wait=5):  # the minute window is full for ~60 s
            pass
    assert t.now < 5


@pytest.mark.parametrize("seed", range(20))
def test_the_broker_never_sees_more_than_the_limit_however_late_calls_arrive(seed):
    """Calls arrive at the broker anywhere between send and answer; its windows still hold the limit."""
    import random

    rng = random.Random(seed)
    t = FakeTime()
    limiter = SlidingWindowLimiter(8, 50, clock=t.clock, sleep=t.sleep)
    arrivals = []
    for _ in range(120):
        with limiter.call(max_wait=600):
            latency = rng.choice([0.01, 0.05, 0.3, 1.5])  # a busy machine or a slow network, now and then
            arrivals.append(t.now + rng.uniform(0, latency))
            t.now += latency
    arrivals.sort()
    for i, first in enumerate(arrivals):
        assert sum(1 for a in arrivals[i:] if a - first < 1.0) <= 8
        assert sum(1 for a in arrivals[i:] if a - first < 60.0) <= 50


def test_a_call_in_flight_keeps_its_place_until_it_is_answered():
    t = FakeTime()
    limiter = SlidingWindowLimiter(2, 100, clock=t.clock, sleep=t.sleep)
    with limiter.call(max_wait=5), limiter.call(max_wait=5):
        t.now += 3  # two slow calls, still unanswered
        with pytest.raises(RateLimitBudgetExceeded):
            with limiter.call(max_wait=0):
                pass


IST = timezone(timedelta(hours=5, minutes=30))
OPEN, CLOSE = time(9, 15), time(15, 30)


@pytest.mark.parametrize("moment, closed", [
    (datetime(2026, 11, 23, 9, 15, tzinfo=IST), False),
    (datetime(2026, 11, 23, 15, 29, tzinfo=IST), False),
    (datetime(2026, 11, 23, 15, 30, tzinfo=IST), True),
    (datetime(2026, 11, 23, 3, 44, tzinfo=timezone.utc), True),  # 09:14 IST
    (datetime(2026, 11, 22, 11, 0, tzinfo=IST), True),  # Sunday
    (datetime(2026, 11, 24, 11, 0, tzinfo=IST), True),  # a listed holiday
])
def test_market_hours_are_judged_in_ist(moment, closed):
    reason = market_closed_reason(moment, open_at=OPEN, close_at=CLOSE, holidays=["2026-11-24"])
    assert (reason is not None) == closed


def test_waiting_exits_take_the_next_slots_before_entries_and_the_oldest_signal_first():
    import threading

    limiter = SlidingWindowLimiter(4, 100)  # real time: a slot every 250 ms
    granted: list[str] = []
    with limiter.call(max_wait=5):
        pass  # the next slot is 250 ms away: everyone below waits for it
    callers = {"new entry": (1, 200.0), "old entry": (1, 100.0), "new exit": (0, 300.0), "old exit": (0, 50.0)}

    def take(name: str) -> None:
        with limiter.call(max_wait=5, priority=callers[name]):
            granted.append(name)

    threads = [threading.Thread(target=take, args=(name,)) for name in callers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert granted == ["old exit", "new exit", "old entry", "new entry"]


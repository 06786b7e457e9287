"""The pacer lease: two worker instances' limiters send as one, on one injected clock."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from common.pacer_lease import HANDOVER_GAP, LEASE_SECONDS, STOP_MARGIN, PacerLease, PacerLost, PacerRecord
from common.ratelimit import RateLimitBudgetExceeded, SendGateClosed, SlidingWindowLimiter

EPOCH = datetime(2026, 11, 23, 4, 0, tzinfo=timezone.utc)
LATENCY = 0.05  # each broker call takes this long to be answered


class FakeTime:
    """One clock for both instances: the limiters' monotonic seconds, and the lease's wall clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return EPOCH + timedelta(seconds=self.now)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeStore:
    """``system/broker_pacer`` in memory, with a switch for a Firestore outage."""

    def __init__(self) -> None:
        self.record: PacerRecord | None = None
        self.version: int | None = None
        self._versions = itertools.count(1)
        self.reads = self.writes = 0
        self.down = False

    def read(self) -> tuple[PacerRecord | None, Any]:
        if self.down:
            raise TimeoutError("Firestore is unreachable")
        self.reads += 1
        return self.record, self.version

    def replace(self, record: PacerRecord, version: Any) -> Any:
        if self.down:
            raise TimeoutError("Firestore is unreachable")
        if version != self.version:
            raise PacerLost("changed")
        self.writes += 1
        self.record, self.version = record, next(self._versions)
        return self.version


class Instance:
    """One worker instance: a limiter gated by its pacer lease, and the times it sent calls."""

    def __init__(self, t: FakeTime, store: FakeStore, holder: str, *, per_second: int = 9, per_minute: int = 190) -> None:
        self.t = t
        self.lease = PacerLease(store, holder, clock=t.wall, spawn=lambda job: job())
        self.limiter = SlidingWindowLimiter(per_second, per_minute, clock=t.clock, sleep=t.sleep, gate=self.lease)
        self.sent: list[float] = []

    def call(self, max_wait: float = 60.0) -> None:
        with self.limiter.call(max_wait=max_wait):
            self.sent.append(self.t.now)
            self.t.now += LATENCY

    def call_until(self, end: float, max_wait: float = 60.0) -> None:
        """Call again and again until ``end``, looking again 0.1 s after each refusal."""
        while self.t.now < end:
            try:
                self.call(max_wait)
            except RateLimitBudgetExceeded:
                self.t.sleep(0.1)


def most_within(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u - start < window) for i, start in enumerate(times)), default=0)


def test_the_first_call_takes_the_free_lease_and_is_sent_at_once():
    t, store = FakeTime(), FakeStore()
    a = Instance(t, store, "A")
    a.call()
    assert a.sent == [0.0]
    assert (store.reads, store.writes) == (1, 1)
    assert store.record.holder == "A" and store.record.until == EPOCH + timedelta(seconds=LEASE_SECONDS)


def test_the_holder_writes_once_every_3_s_while_calls_flow_and_never_pauses():
    t, store = FakeTime(), FakeStore()
    a = Instance(t, store, "A", per_minute=600)  # 30 s at full pace, without meeting the minute's cap
    a.call_until(30.0)
    assert store.reads == 1
    assert 10 <= store.writes <= 11  # the take, then a renewal every 3 s
    assert max(b - s for s, b in zip(a.sent, a.sent[1:])) < 0.2  # the pace alone spaces the calls
    assert store.record.answered_ago and store.record.unrecorded > 0


def test_an_idle_holder_writes_nothing_and_takes_its_lapsed_lease_back_at_once_with_one_write():
    t, store = FakeTime(), FakeStore()
    a = Instance(t, store, "A")
    a.call()
    t.now = 60.0
    assert store.writes == 1
    a.call(max_wait=0)
    assert a.sent == [0.0, 60.0]
    assert (store.reads, store.writes) == (1, 2)  # nobody wrote since: no read needed


def test_another_instance_waits_for_the_lease_and_refuses_a_caller_that_cannot_wait_that_long():
    t, store = FakeTime(), FakeStore()
    a, b = Instance(t, store, "A"), Instance(t, store, "B")
    a.call()
    with pytest.raises(RateLimitBudgetExceeded):
        b.call(max_wait=5)
    assert t.now < 1  # refused without waiting
    b.call(max_wait=30)
    assert b.sent and b.sent[0] >= LEASE_SECONDS + HANDOVER_GAP
    assert store.record.holder == "B"


@pytest.mark.parametrize("a_runs_for", [2.0, 10.0, 25.0])
def test_a_new_holder_counts_the_old_holders_calls_so_together_they_keep_fyers_limits(a_runs_for):
    t, store = FakeTime(), FakeStore()
    a, b = Instance(t, store, "A"), Instance(t, store, "B")
    a.call_until(a_runs_for)  # then A stops (or dies) without a word
    b.call_until(a_runs_for + 90)
    together = a.sent + b.sent
    assert most_within(together, 1.0) <= 9
    assert most_within(together, 60.0) <= 190
    assert b.sent[0] - a.sent[-1] >= STOP_MARGIN + HANDOVER_GAP  # never both at once


def test_after_a_quiet_holder_stops_the_other_instance_goes_on_within_seconds():
    t, store = FakeTime(), FakeStore()
    a, b = Instance(t, store, "A"), Instance(t, store, "B")
    for _ in range(5):
        a.call()
    b.call_until(t.now + 15)
    assert b.sent[0] <= a.sent[-1] + LEASE_SECONDS + HANDOVER_GAP + 0.1
    assert len(b.sent) > 60  # its windows hold A's 5 calls and the most A could have sent unseen, no more


def test_when_firestore_fails_the_holder_sends_only_until_its_lease_ends_and_resumes_after():
    t, store = FakeTime(), FakeStore()
    a = Instance(t, store, "A")
    a.call()
    store.down = True
    a.call_until(20.0, max_wait=0.5)
    assert max(a.sent) < LEASE_SECONDS - STOP_MARGIN
    assert max(a.sent) > LEASE_SECONDS - STOP_MARGIN - 0.5  # it did send while the lease held
    store.down = False
    resumed = t.now
    a.call(max_wait=2)
    assert a.sent[-1] - resumed < 1.5  # the next retry takes it again (nobody else did)


def test_without_firestore_an_instance_never_sends():
    t, store = FakeTime(), FakeStore()
    store.down = True
    a = Instance(t, store, "A")
    with pytest.raises(SendGateClosed) as refused:
        a.call(max_wait=5)
    assert a.sent == [] and t.now <= 5
    assert "Firestore could not be reached" in refused.value.why


def test_a_holder_whose_lapsed_lease_was_taken_sends_nothing_until_the_new_one_ends():
    t, store = FakeTime(), FakeStore()
    a, b = Instance(t, store, "A"), Instance(t, store, "B")
    a.call()
    t.now = 12.0
    b.call(max_wait=0)  # A's lease lapsed at 10 s: B takes it
    with pytest.raises(SendGateClosed) as refused:
        a.call(max_wait=5)  # A's renewal finds B's record: A waits for B's lease to end
    assert a.sent == [0.0] and "another worker instance (B)" in refused.value.why
    a.call(max_wait=30)
    assert a.sent[-1] >= 12.0 + LEASE_SECONDS + HANDOVER_GAP

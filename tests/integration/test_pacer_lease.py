"""The pacer lease on the Firestore emulator: two worker instances calling the Fyers simulator.

Real threads and real time (seconds): the lease is shortened so that a handover plays out
in a few seconds, and the per-minute limit lowered so that its window fills in them.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest

from common.broker import FyersBroker
from common.pacer_lease import PACER_DOC, FirestorePacerStore, PacerLease, PacerLost, PacerRecord
from common.ratelimit import RateLimitBudgetExceeded, SlidingWindowLimiter
from common.records import SYSTEM
from deploy.local.fyers_simulator import FyersSimulator
from tests.integration.conftest import APP_ID, APP_SECRET

# Fyers' limits as the simulator enforces them, the minute's lowered to fill in seconds; the
# instances pace below them as the router does (9 of 10 a second, 2 short of the minute's).
FYERS_PER_SECOND, FYERS_PER_MINUTE = 10, 40
PER_SECOND, PER_MINUTE = 9, 38
# A 1.5 s lease renewed every 0.4 s; the holder stops 0.5 s before it ends, and the next one
# starts 0.5 s after: a second between them, as in production (1 s + 1 s).
LEASE, RENEW, MARGIN, GAP = 1.5, 0.4, 0.5, 0.5


@pytest.fixture
def store(firestore_db: Any) -> Iterator[FirestorePacerStore]:
    """The pacer store on the emulator, without a lease left by another test, and leaving none."""
    ref = firestore_db.collection(SYSTEM).document(PACER_DOC)
    ref.delete()
    yield FirestorePacerStore(firestore_db, timeout=5)
    ref.delete()


def record(holder: str) -> PacerRecord:
    now = datetime.now(timezone.utc)
    return PacerRecord(holder=holder, until=now + timedelta(seconds=LEASE), written_at=now, answered_ago=[0.5, 2.0])


def test_only_a_writer_that_saw_the_latest_record_can_replace_it(store):
    first = store.replace(record("A"), None)
    with pytest.raises(PacerLost):
        store.replace(record("B"), None)  # B thought there was none
    second = store.replace(record("A"), first)  # A renews its own
    with pytest.raises(PacerLost):
        store.replace(record("B"), first)  # B read it before A's renewal
    current, version = store.read()
    assert current.holder == "A" and current.answered_ago == [0.5, 2.0] and version == second


class Instance:
    """A worker instance: its limiter under its own pacer lease, and threads calling Fyers."""

    def __init__(self, holder: str, store: FirestorePacerStore, sim: FyersSimulator, token: str) -> None:
        lease = PacerLease(store, holder, clock=lambda: datetime.now(timezone.utc),
                           lease=LEASE, renew=RENEW, margin=MARGIN, gap=GAP, retry=0.2)
        self.limiter = SlidingWindowLimiter(PER_SECOND, PER_MINUTE, gate=lease)
        self.broker = FyersBroker(APP_ID, lambda: token, api_base=sim.api_base, data_base=sim.data_base,
                                  connect_timeout=0.5, read_timeout=2.0)
        self.sent: list[float] = []  # when each call was let through (monotonic)
        self.errors: list[Exception] = []
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._hammer, name=f"{holder}-{n}") for n in range(4)]

    def _hammer(self) -> None:
        while not self.stop.is_set():
            try:
                with self.limiter.call(max_wait=2.0):
                    self.sent.append(time.monotonic())
                    self.broker.orders()
            except RateLimitBudgetExceeded:
                self.stop.wait(0.1)
            except Exception as exc:  # a 429 among them: the test fails on it
                self.errors.append(exc)

    def start(self) -> "Instance":
        for thread in self._threads:
            thread.start()
        return self

    def halt(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def wait_for(condition, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def most_within(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u - start < window) for i, start in enumerate(times)), default=0)


def test_two_instances_together_never_exceed_fyers_limits(store):
    sim = FyersSimulator(apps={APP_ID: APP_SECRET}, rate_per_second=FYERS_PER_SECOND,
                         rate_per_minute=FYERS_PER_MINUTE).start()
    arrivals: list[float] = []  # when Fyers admitted each call, by its own count
    admit = sim.limiter.admit

    def counted(app_id: str) -> float | None:
        wait = admit(app_id)
        if wait is None:
            arrivals.append(time.monotonic())
        return wait

    sim.limiter.admit = counted  # type: ignore[method-assign]
    token = sim.mint_token(APP_ID)
    a = Instance("instance-a", store, sim, token).start()
    b: Instance | None = None
    try:
        wait_for(lambda: len(a.sent) >= 1, timeout=10)
        b = Instance("instance-b", store, sim, token).start()  # both hammer Fyers from now on
        time.sleep(1.5)
        a.halt()  # the old revision's last delivery is done (or its instance is gone)
        a_stopped = time.monotonic()
        wait_for(lambda: len(b.sent) >= 5, timeout=LEASE + GAP + 3)
        time.sleep(3.0)  # long enough for B to fill what the minute's limit leaves it
    finally:
        a.halt()
        if b is not None:
            b.halt()
        sim.stop()

    assert a.errors == [] and b.errors == []
    assert [r for r in sim.requests if r["status"] == 429] == []
    assert sim.rate_breaches == {}
    assert most_within(arrivals, 1.0) <= FYERS_PER_SECOND
    assert len(arrivals) <= FYERS_PER_MINUTE  # all within one minute
    # One instance at a time: B's first call came after A's last, with the lease's second between
    # (less a thread's delay between its slot and noting the time, on a busy machine).
    assert min(b.sent) - max(a.sent) >= MARGIN + GAP - 0.25
    assert min(b.sent) - a_stopped < LEASE + GAP + 2
    # B counted A's calls: it stopped short of its own minute's worth.
    assert len(b.sent) < PER_MINUTE and len(a.sent) + len(b.sent) <= PER_MINUTE

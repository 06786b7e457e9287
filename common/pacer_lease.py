"""The pacer lease: only one worker instance at a time calls Fyers, whatever Cloud Run runs.

The worker runs with max instances 1, and its limiter (``common/ratelimit.py``) paces
that instance. Cloud Run may still run two for a while (a traffic spike; a deploy,
whose old revision finishes its deliveries while the new one takes new ones), and two
limiters would send twice the pace. So an instance calls Fyers only while it holds
this lease, kept in one document, ``system/broker_pacer``:

- The first call takes it when it is free or has lapsed (a read, then a write that
  succeeds only if the document did not change since the read). While calls flow, the
  holder rewrites it every ``renew`` seconds for ``lease`` seconds ahead (one write,
  conditional on the holder's own last write), with how long ago each call of its
  last minute was answered. An idle holder writes nothing; its lease lapses.
- The holder sends only until ``margin`` before its ``until``: the other instance's clock
  and the request's way to Fyers take some of it.
- An instance that finds another's lease waits, its callers in its limiter's line,
  until that lease's ``until`` + ``gap``. Then it takes the lease, and counts in its own
  windows the old holder's calls of the last minute, and as many more as the old
  holder could have had in flight or sent after its last write, as answered at its
  ``until``. So neither window of Fyers can see more than one limiter's worth.

When Firestore fails, the safe side is not to send: the holder sends while the lease it
last wrote is valid, and an instance that cannot take or confirm a lease sends nothing
(its callers wait within their ``max_wait``, then get ``RateLimitBudgetExceeded``).
Firestore calls run on a background thread, so a caller never waits for one while the
lease is held; they are bounded by the store's timeout and retried every ``retry`` seconds.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Protocol

from pydantic import BaseModel, ConfigDict

from common.clock import Clock
from common.logs import get_logger
from common.ratelimit import CallWindows
from common.system_doc import SystemDocument

log = get_logger(__name__)

PACER_DOC = "broker_pacer"
# A renewal every 3 s: one write per 3 s per document, well under Firestore's one a second.
RENEW_SECONDS = 3.0
# The lease outlives a renewal that fails once and is retried, and no more: a new holder
# counts all the calls the old one could have sent unseen (up to 5 s at 9 a second, on top
# of those it recorded), and waits for the lease to end.
LEASE_SECONDS = 6.0
STOP_MARGIN = 1.0
HANDOVER_GAP = 1.0
RETRY_SECONDS = 1.0
# How often callers look again while the lease is being taken or renewed.
_POLL = 0.02


class PacerRecord(BaseModel):
    """``system/broker_pacer``: who may call Fyers, until when, and what it sent."""

    model_config = ConfigDict(extra="ignore")

    holder: str
    until: datetime
    written_at: datetime
    # Seconds before ``written_at`` that each call of the holder's last minute was answered.
    answered_ago: list[float] = []
    # The most calls the holder may have sent that ``answered_ago`` does not show: those in
    # flight at ``written_at``, and all it could send before it stops (``until`` - margin).
    unrecorded: int = 0


class PacerLost(Exception):
    """The record changed since it was read or written: someone else wrote it."""


class PacerStore(Protocol):
    """Where the lease is kept: one record, replaced only by whoever saw its latest version."""

    def read(self) -> tuple[PacerRecord | None, Any]:
        """The record and its version; ``(None, None)`` when there is none."""

    def replace(self, record: PacerRecord, version: Any) -> Any:
        """Write ``record`` if the stored one is still at ``version`` (None: absent); returns the
        new version. Raises :class:`PacerLost` otherwise."""


class FirestorePacerStore(SystemDocument):
    """:class:`PacerStore` on ``system/broker_pacer``, its version the document's update time."""

    def __init__(self, db: Any, *, timeout: float) -> None:
        super().__init__(db, PACER_DOC, timeout=timeout)

    def read(self) -> tuple[PacerRecord | None, Any]:
        snap = self._ref.get(timeout=self._timeout, retry=self._retry)
        if not snap.exists:
            return None, None
        return PacerRecord.model_validate(snap.to_dict()), snap.update_time

    def replace(self, record: PacerRecord, version: Any) -> Any:
        from google.api_core import exceptions

        data = record.model_dump()
        try:
            if version is None:
                result = self._ref.create(data, timeout=self._timeout, retry=self._retry)
            else:
                # A precondition, not a transaction: one write, and the same guarantee for one document.
                result = self._ref.update(data, option=self._db.write_option(last_update_time=version),
                                          timeout=self._timeout, retry=self._retry)
        except (exceptions.AlreadyExists, exceptions.FailedPrecondition, exceptions.NotFound) as exc:
            raise PacerLost(str(exc)) from None
        return result.update_time


def _in_background(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="pacer-lease", daemon=True).start()


class PacerLease:
    """This instance's hold on the pacer lease: the ``SendGate`` of its limiter. Thread-safe.

    Nothing is read or written before the first broker call. ``spawn`` runs the Firestore
    work (a daemon thread by default; tests run it at once).
    """

    def __init__(self, store: PacerStore, holder: str, *, clock: Clock,
                 spawn: Callable[[Callable[[], None]], None] = _in_background,
                 lease: float = LEASE_SECONDS, renew: float = RENEW_SECONDS, margin: float = STOP_MARGIN,
                 gap: float = HANDOVER_GAP, retry: float = RETRY_SECONDS) -> None:
        self._store = store
        self._holder = holder
        self._clock = clock
        self._spawn = spawn
        self._lease = timedelta(seconds=lease)
        self._renew = timedelta(seconds=renew)
        self._margin = timedelta(seconds=margin)
        self._gap = timedelta(seconds=gap)
        self._retry = timedelta(seconds=retry)
        self._lock = threading.Lock()
        self._until: datetime | None = None  # the lease we hold, as we last wrote it
        self._version: Any = None
        self._next: datetime | None = None  # no Firestore work before then (None: whenever asked)
        self._busy = False
        self._blocked_by: str | None = None  # the other holder we wait for
        self._store_failed = False  # the last Firestore call failed

    def tend(self, windows: CallWindows) -> None:
        """Renew the lease, or try to take it, in the background when it is time to."""
        now = self._clock()
        with self._lock:
            if self._busy or (self._next is not None and now < self._next):
                return
            self._busy = True
        try:
            self._spawn(lambda: self._keep(windows))
        except BaseException:  # no thread to be had: the next caller tries again
            with self._lock:
                self._busy = False
            raise

    def wait_needed(self) -> float:
        """0 while we hold the lease (up to its ``until`` - margin), else the seconds to look again."""
        now = self._clock()
        with self._lock:
            if self._until is not None and now < self._until - self._margin:
                return 0.0
            if self._busy or self._next is None:
                return _POLL
            return max(_POLL, (self._next - now).total_seconds())

    def why_closed(self) -> str:
        with self._lock:
            if self._store_failed:
                return ("Firestore could not be reached to confirm this instance's pacer lease, and without it "
                        "no call to Fyers is safe from breaching its rate limit")
            if self._blocked_by is not None:
                return (f"another worker instance ({self._blocked_by}) held the pacer lease: Cloud Run was running "
                        "two, and only one may call Fyers at a time")
            return "the pacer lease was still being taken"

    def _keep(self, windows: CallWindows) -> None:
        with self._lock:
            held, version = self._until is not None, self._version
        try:
            if held:
                try:
                    return self._write(windows, version, carried=[])
                except PacerLost:
                    log.warning("pacer lease: our record was overwritten; reading it again")
                    with self._lock:
                        self._until = None
            self._take(windows)
        except Exception:
            log.warning("pacer lease: Firestore call failed; no broker call beyond the lease held",
                        exc_info=True)
            with self._lock:
                self._next = self._clock() + self._retry
                self._store_failed = True
        finally:
            with self._lock:
                self._busy = False

    def _take(self, windows: CallWindows) -> None:
        current, version = self._store.read()
        now = self._clock()
        carried: list[float] = []
        if current is not None and current.holder != self._holder:
            free_at = current.until + self._gap
            if now < free_at:
                with self._lock:
                    self._next = free_at
                    self._blocked_by, self._store_failed = current.holder, False
                return
            since = (now - current.written_at).total_seconds()
            ended = (now - current.until).total_seconds()
            carried = [ago + since for ago in current.answered_ago] + [ended] * current.unrecorded
            carried = [ago for ago in carried if ago < 60.0]
            log.info("pacer lease: taking over", extra={"fields": {
                "from": current.holder, "until": current.until.isoformat(), "carried_calls": len(carried)}})
        self._write(windows, version, carried=carried)

    def _write(self, windows: CallWindows, version: Any, *, carried: list[float]) -> None:
        """Write our record (our calls and ``carried``, another holder's) and hold the lease it says."""
        now = self._clock()
        recent = windows.recent()
        record = PacerRecord(
            holder=self._holder, until=now + self._lease, written_at=now,
            # Rounded down: a call looks answered later, never earlier, than it was.
            answered_ago=sorted(math.floor(ago * 1000) / 1000 for ago in (*recent.answered_ago, *carried)),
            unrecorded=recent.in_flight + windows.most_sends_within((self._lease - self._margin).total_seconds()))
        new_version = self._store.replace(record, version)
        # Counted before we may send: the old holder's calls are in our windows from the first call on.
        windows.seed(carried)
        with self._lock:
            self._until = record.until
            self._version = new_version
            self._next = now + self._renew
            self._blocked_by, self._store_failed = None, False

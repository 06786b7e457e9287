"""An in-process limiter that keeps broker calls under Fyers' per-second and per-minute caps.

Fyers allows 10 requests a second and 200 a minute per app, across endpoints,
and blocks the account for the day after more than 3 per-minute breaches. The
worker is deployed with max instances 1, so an in-process limiter is the
account-wide limiter.

Fyers counts a request when it arrives, which is some time between our send and
its answer: thread scheduling, a busy CPU and the network all move it. So a call
holds its place in our windows from the moment it is sent until it is answered.
Then any of Fyers' 1-second (or 60-second) windows can only hold calls that
held a place in ours at one moment, and our count bounds Fyers' count whatever
the delays (proof in :class:`SlidingWindowLimiter`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

# How often a caller re-checks when the windows are full of calls still in flight, or it is
# not yet its turn.
_IN_FLIGHT_POLL = 0.02
# A caller with something to do while it waits (``while_waiting``) wakes at least this often.
_WHILE_WAITING_EVERY = 1.0


class RateLimitBudgetExceeded(Exception):
    """The next slot is later than the caller can wait; ``ahead`` callers were waiting before it."""

    def __init__(self, wait: float, ahead: int = 0) -> None:
        super().__init__(f"next broker slot in {wait:.2f} s, behind {ahead} caller(s)")
        self.wait = wait
        self.ahead = ahead


class SendGateClosed(RateLimitBudgetExceeded):
    """The windows had room, but the gate (the pacer lease) did not open in time; ``why`` says
    why, in the trader's words."""

    def __init__(self, wait: float, ahead: int, why: str) -> None:
        super().__init__(wait, ahead)
        self.why = why


@dataclass(frozen=True)
class RecentCalls:
    """What a limiter's windows hold: how long ago each call of the last minute was answered, in
    seconds, and how many calls are in flight."""

    answered_ago: tuple[float, ...]
    in_flight: int


class CallWindows(Protocol):
    """A limiter's windows, as a :class:`SendGate` sees them."""

    def recent(self) -> RecentCalls: ...

    def seed(self, answered_ago: Iterable[float]) -> None: ...

    def most_sends_within(self, seconds: float) -> int: ...


class SendGate(Protocol):
    """Whether this instance may call the broker at all, asked before each call besides the windows."""

    def tend(self, windows: CallWindows) -> None:
        """Start whatever keeps or wins the permission, without waiting for it. Called outside the
        limiter's lock before each check of a waiting caller."""

    def wait_needed(self) -> float:
        """0 if a call may be sent now, else the seconds before it is worth asking again. From
        memory only: called under the limiter's lock."""

    def why_closed(self) -> str:
        """Why no call may be sent now, for a caller that cannot wait for it."""


class Hold:
    """A caller's hold on the slots ahead of a later class (:meth:`SlidingWindowLimiter.ahead`)."""

    def __init__(self, limiter: "SlidingWindowLimiter", level: int, until: float) -> None:
        self._limiter = limiter
        self.level = level
        self.until = until

    def release(self) -> None:
        """Let the later class through (idempotent)."""
        with self._limiter._lock:
            self._limiter._holds.discard(self)


class SlidingWindowLimiter:
    """At most ``per_second`` calls in any 1 s and ``per_minute`` in any 60 s, by the broker's clock.

    A new call is sent only when fewer than ``limit`` calls are in flight or were
    answered within the last ``window``. Why that suffices: if Fyers saw ``limit + 1``
    calls arrive within one window, take the last of them to be sent, at ``t``. Each
    of the others arrived at most ``window`` before the last one's arrival, so was
    answered after ``t - window`` (or not yet) and was counted when ``t``'s call
    was admitted: a contradiction.

    Sends are also spaced ``1/per_second`` apart, so a burst does not reach Fyers
    bunched up. Callers waiting for a slot take it in ``priority`` order (lowest
    first; the worker ranks exits before entries, then the oldest signal first),
    and in arrival order among equals. Thread-safe; use :meth:`call` around each
    broker request. With a ``gate``, a call is sent only when the gate allows it too.
    """

    def __init__(self, per_second: int, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, gate: SendGate | None = None) -> None:
        self._limits = ((1.0, per_second), (60.0, per_minute))
        self._answered: list[float] = []  # when each call of the last minute was answered
        self._in_flight = 0
        self._last_send: float | None = None
        self._waiting: list[tuple[Any, ...]] = []  # a heap of the tickets of callers waiting for a slot
        self._arrivals = itertools.count()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._gate = gate
        self._holds: set[Hold] = set()

    def _wait_needed(self, now: float) -> float:
        self._answered = [t for t in self._answered if now - t < 60.0]
        wait = 0.0
        if self._last_send is not None:
            wait = self._last_send + 1.0 / self._limits[0][1] - now
        for window, limit in self._limits:
            recent = sorted(t for t in self._answered if now - t < window)
            excess = self._in_flight + len(recent) - limit + 1
            if excess <= 0:
                continue
            if excess <= len(recent):
                wait = max(wait, recent[excess - 1] + window - now)
            else:  # the window is full of calls still in flight: one of them must be answered first
                wait = max(wait, _IN_FLIGHT_POLL)
        return wait

    @contextmanager
    def call(self, max_wait: float, *, priority: tuple[Any, ...] = (),
             while_waiting: Callable[[], None] | None = None) -> Iterator[float]:
        """Hold a slot for one broker request, sleeping for it if needed; yields the seconds waited.

        Raises :class:`RateLimitBudgetExceeded` if the slot is more than ``max_wait`` away.
        ``while_waiting`` runs at least every second while the caller waits, outside the lock
        (the worker renews its order's lease there); what it raises ends the wait and gives
        the place up.
        """
        ticket = (*priority, next(self._arrivals))
        with self._lock:
            heapq.heappush(self._waiting, ticket)
        try:
            waited = self._acquire(max_wait, ticket, while_waiting)
        finally:
            with self._lock:
                if ticket in self._waiting:  # it gave up: let the next one through
                    self._waiting.remove(ticket)
                    heapq.heapify(self._waiting)
        try:
            yield waited
        finally:
            with self._lock:
                self._in_flight -= 1
                self._answered.append(self._clock())

    @contextmanager
    def ahead(self, level: int, *, within: float) -> Iterator["Hold"]:
        """Keep callers of a later class (``priority[0] > level``) waiting while the caller prepares
        calls of class ``level``: between an exit's broker calls (its ledger, its plan) no entry
        takes the slot it is about to ask for. Released on :meth:`Hold.release` or on leaving,
        and lapses after ``within`` seconds whatever happens."""
        hold = Hold(self, level, self._clock() + within)
        with self._lock:
            self._holds.add(hold)
        try:
            yield hold
        finally:
            hold.release()

    def _held_back(self, ticket: tuple[Any, ...], now: float) -> bool:
        self._holds = {h for h in self._holds if h.until > now}
        return bool(ticket) and any(h.level < ticket[0] for h in self._holds)

    def _acquire(self, max_wait: float, ticket: tuple[Any, ...], while_waiting: Callable[[], None] | None) -> float:
        waited = 0.0
        while True:
            if self._gate is not None:
                self._gate.tend(self)
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if self._waiting[0] != ticket or self._held_back(ticket, now):  # another caller goes first
                    wait = max(wait, _IN_FLIGHT_POLL)
                gate_wait = self._gate.wait_needed() if self._gate is not None else 0.0
                wait = max(wait, gate_wait)
                if wait <= 0:
                    heapq.heappop(self._waiting)
                    self._in_flight += 1
                    self._last_send = now
                    return waited
            if waited + wait > max_wait:
                with self._lock:
                    ahead = sum(1 for other in self._waiting if other < ticket)
                if self._gate is not None and gate_wait >= wait:
                    raise SendGateClosed(wait, ahead, self._gate.why_closed())
                raise RateLimitBudgetExceeded(wait, ahead)
            if while_waiting is not None:
                wait = min(wait, _WHILE_WAITING_EVERY)
            self._sleep(wait)
            waited += wait
            if while_waiting is not None:
                while_waiting()

    def recent(self) -> RecentCalls:
        """The calls now in the windows, for another instance that may take over the pace."""
        with self._lock:
            now = self._clock()
            return RecentCalls(tuple(now - t for t in self._answered if now - t < 60.0), self._in_flight)

    def seed(self, answered_ago: Iterable[float]) -> None:
        """Count calls sent by another instance, each as answered that many seconds ago."""
        with self._lock:
            now = self._clock()
            self._answered.extend(now - ago for ago in answered_ago if ago < 60.0)

    def most_sends_within(self, seconds: float) -> int:
        """The most calls this limiter can send in ``seconds`` (its sends are spaced ``1/per_second``)."""
        return math.floor(max(0.0, seconds) * self._limits[0][1]) + 1

"""Broker reads shared by the deliveries in flight in one worker instance.

Fyers allows 200 requests a minute, and the placement itself is the one request an
order cannot do without. So the reads around it are shared:

* :class:`QuoteCache`: a last price is reused for ``ttl`` seconds, and concurrent
  askers for the same ticker wait for one request: a burst of NIFTY alerts costs
  one quote of the index per second, not one per alert.
* :class:`SharedRead`: one request serves every asker that joined it before it was
  sent, so each asker gets an answer as fresh as a read of its own:
  - after placing, an order's fills and an asynchronous RMS rejection come from one
    read of the whole order book. It gathers for ``gather`` seconds, or until
    ``batch`` orders have joined: in a burst it goes as soon as a batch is ready,
    and at a steady trickle one read still serves many orders;
  - an exit's read of the broker's positions goes at once (``gather`` 0), and the
    exits that ask while it waits for its broker slot share it.

Both are thread-safe. The reads themselves go through the caller's function, so
they count against the same pacer as placements.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Flight(Generic[T]):
    """One shared read: its askers wait on ``done``; ``value`` or ``error`` is its outcome."""

    done: threading.Event = field(default_factory=threading.Event)
    value: T | None = None
    error: BaseException | None = None
    started: float = 0.0  # when a quote was asked for: it serves for its ttl from then
    reading: bool = False  # once the request is sent, later askers start a new flight
    askers: int = 1
    full: threading.Event = field(default_factory=threading.Event)  # ``batch`` askers have joined


class QuoteCache:
    """Last prices reused for ``ttl`` seconds; one request per ticker at a time."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[float]] = {}

    def ltp(self, ticker: str, fetch: Callable[[str], float], *,
            while_waiting: Callable[[], None] | None = None) -> float:
        """The ticker's last price, from a read at most ``ttl`` old or from ``fetch`` (one at a time).
        ``while_waiting`` runs every second while this asker waits for another's read."""
        with self._lock:
            flight = self._flights.get(ticker)
            fresh = flight is not None and (not flight.done.is_set() or self._clock() - flight.started < self._ttl)
            if flight is None or not fresh or flight.error is not None:
                flight = _Flight(started=self._clock())
                self._flights[ticker] = flight
                leader = True
            else:
                leader = False
        if leader:
            try:
                flight.value = fetch(ticker)
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                flight.done.set()
            return flight.value
        _wait(flight.done, None, while_waiting)
        if flight.error is not None or flight.value is None:
            return fetch(ticker)  # the shared read failed: this asker tries on its own
        return flight.value


class SharedRead(Generic[T]):
    """One read for every asker that joins before its request is sent: it waits ``gather``
    seconds (or until ``batch`` have asked) before going to the broker."""

    def __init__(self, gather: float, *, batch: int | None = None) -> None:
        self._gather = gather
        self._batch = batch
        self._lock = threading.Lock()
        self._flight: _Flight[T] | None = None

    def read(self, fetch: Callable[[Callable[[], None]], T], timeout: float, *,
             while_waiting: Callable[[], None] | None = None) -> T | None:
        """The value of a read whose request was sent after this asker arrived; None for an
        asker whose shared read failed or came later than ``timeout`` (the caller decides
        whether to read alone). ``fetch(sending)`` makes the request, calling ``sending()``
        just before it goes out (once it has its broker slot): askers arriving after that
        start the next read. ``while_waiting`` runs every second while an asker waits for
        another's read."""
        with self._lock:
            flight = self._flight
            if flight is None or flight.reading:
                flight = self._flight = _Flight()
                leader = True
            else:
                leader = False
                flight.askers += 1
                if self._batch is not None and flight.askers >= self._batch:
                    flight.full.set()
        if not leader:
            if not _wait(flight.done, timeout, while_waiting) or flight.error is not None:
                return None
            return flight.value
        if self._gather > 0:
            flight.full.wait(self._gather)  # let the rest of the burst join this read

        def sending() -> None:
            with self._lock:
                flight.reading = True

        try:
            flight.value = fetch(sending)
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                flight.reading = True  # a failed read before its send: the next asker starts afresh
            flight.done.set()


def _wait(done: threading.Event, timeout: float | None, while_waiting: Callable[[], None] | None) -> bool:
    """Wait for ``done`` up to ``timeout`` seconds (None: for good), calling ``while_waiting``
    every second meanwhile (what it raises ends the wait); whether it was set."""
    until = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if until is None else until - time.monotonic()
        if left is not None and left <= 0:
            return done.is_set()
        if done.wait(1.0 if left is None else min(1.0, left)):
            return True
        if while_waiting is not None:
            while_waiting()

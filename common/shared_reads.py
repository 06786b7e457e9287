"""Broker reads shared by the deliveries in flight in one worker instance.

Fyers allows 200 requests a minute, and the placement itself is the one request an
order cannot do without. So the reads around it are shared:

* :class:`QuoteCache`: a last price is reused for ``ttl`` seconds, and concurrent
  askers for the same ticker wait for one request: a burst of NIFTY alerts costs
  one quote of the index per second, not one per alert.
* :class:`SharedBook`: after placing, an order's fills and an asynchronous RMS
  rejection are read from one read of the whole order book, which serves every
  order that asked for it while it was being gathered (and none reads alone). A
  read gathers for ``gather`` seconds, or until ``batch`` orders have joined it:
  in a burst it goes as soon as a batch is ready, and at a steady trickle one read
  still serves many orders.

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

    started: float
    done: threading.Event = field(default_factory=threading.Event)
    value: T | None = None
    error: BaseException | None = None
    reading: bool = False  # once the read has begun, later askers start a new flight
    askers: int = 1
    full: threading.Event = field(default_factory=threading.Event)  # ``batch`` askers have joined


class QuoteCache:
    """Last prices reused for ``ttl`` seconds; one request per ticker at a time."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[float]] = {}

    def ltp(self, ticker: str, fetch: Callable[[str], float]) -> float:
        """The ticker's last price, from a read at most ``ttl`` old or from ``fetch`` (one at a time)."""
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
        flight.done.wait()
        if flight.error is not None or flight.value is None:
            return fetch(ticker)  # the shared read failed: this asker tries on its own
        return flight.value


class SharedBook(Generic[T]):
    """One read of the order book for every order that asks within ``gather`` seconds (or
    until ``batch`` have asked)."""

    def __init__(self, gather: float, *, batch: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._gather = gather
        self._batch = batch
        self._clock = clock
        self._lock = threading.Lock()
        self._flight: _Flight[T] | None = None

    def read(self, fetch: Callable[[], T], timeout: float) -> T | None:
        """The book, read ``gather`` seconds after the first asker of this read arrived, or once
        ``batch`` askers have joined; None for an asker whose shared read failed or came later
        than ``timeout``. Askers never read on their own: in a burst that would multiply the
        very requests this saves, and the reconcile job reads the book anyway."""
        with self._lock:
            flight = self._flight
            if flight is None or flight.reading:
                flight = self._flight = _Flight(started=self._clock())
                leader = True
            else:
                leader = False
                flight.askers += 1
                if self._batch is not None and flight.askers >= self._batch:
                    flight.full.set()
        if not leader:
            if not flight.done.wait(timeout) or flight.error is not None:
                return None
            return flight.value
        flight.full.wait(self._gather)  # let the rest of the burst join this read
        with self._lock:
            flight.reading = True
        try:
            flight.value = fetch()
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            flight.done.set()

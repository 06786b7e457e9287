"""What a delivery works with: the injected parts (:class:`WorkerDeps`), the delivery in
progress (:class:`Job`), and :class:`Retry`, raised to nack."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from common.breaker import CircuitBreaker
from common.broker.models import BrokerOrder, Position
from common.broker.ports import Trading
from common.controls import ControlsReader
from common.ledger import Ledger
from common.notify import Notification
from common.orders import OrderStore
from common.outcome import Outcomes
from common.ratelimit import Hold, SlidingWindowLimiter
from common.records import OrderCommand, OrderRecord
from common.settings import Settings
from common.shared_reads import QuoteCache, SharedRead
from common.symbols import SymbolMaster


class Retry(Exception):
    """Raised to nack: Pub/Sub will redeliver. Only when the redelivery may start afresh: the
    order was released to QUEUED, or another delivery holds it now."""


@dataclass
class WorkerDeps:
    """What the worker needs, injected so tests can pass emulator- and simulator-backed parts."""

    settings: Settings
    store: OrderStore
    controls: ControlsReader
    breaker: CircuitBreaker
    master: Callable[[], SymbolMaster]
    broker: Trading
    invalidate_token: Callable[[], None]
    needs_login: Callable[[str, datetime], None]  # marks system/broker_session NEEDS_LOGIN
    notify: Callable[[Notification], Any]
    limiter: SlidingWindowLimiter
    ledger: Ledger
    worker_id: str
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    sleep: Callable[[float], None] = time.sleep
    # Reads shared by the deliveries in flight in this instance (common/shared_reads.py), so
    # that the placements get the broker's budget:
    # - a quote serves for 5 s: its one use is the ATM strike, and strikes are 50 or 100 points
    #   apart, so it picks another strike only when the index sits within its last 5 s move of
    #   a midpoint between two strikes;
    # - one book read serves the orders placed within 6 s of each other, or the next 18 (two
    #   seconds of placements at full pace), whichever comes first: an RMS rejection is known
    #   within seconds, and a steady 2 alerts a second costs under 1.2 requests an order
    #   (measured: make bench);
    # - one positions read serves the exits that ask while it waits for its broker slot: it
    #   still goes out after each of them asked, so none closes from a stale position.
    quotes: QuoteCache = field(default_factory=lambda: QuoteCache(ttl=5.0))
    book: SharedRead[list[BrokerOrder]] = field(default_factory=lambda: SharedRead(gather=6.0, batch=18))
    positions: SharedRead[list[Position]] = field(default_factory=lambda: SharedRead(gather=0.0))


@dataclass
class Job:
    """One delivery in progress."""

    command: OrderCommand
    record: OrderRecord
    deadline: datetime  # the order may not reach the broker after this
    lease_until: datetime | None  # this delivery sends nothing after this (renewed while it waits; None once placed)
    outcomes: Outcomes
    reduces: bool = False  # its signal says the strategy holds less after it (common.intent.signals_reduction)
    hold: Hold | None = None  # entries wait while this exit prepares (guards._exits_first)


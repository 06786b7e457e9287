"""Calls to Fyers from a delivery: through the rate limiter, in the order's time budget,
exits first; and the last prices shared by the deliveries in flight."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Callable, TypeVar

from common.broker.ports import Trading
from common.errors import BrokerTransient, RateLimited
from common.logs import get_logger
from common.shared_reads import SharedRead
from functions.order_worker.deps import Job, Retry, WorkerDeps

log = get_logger("order_worker")

T = TypeVar("T")


def call_broker(job: Job, deps: WorkerDeps, call: Callable[[Trading], T], *, budget: float | None = None,
                placement: bool = False) -> T:
    """Call the broker within Fyers' rate limits and the order's remaining time budget.

    A ``RateLimited`` answer is waited out and retried while the budget allows:
    the request was refused, so sending it again cannot duplicate anything. While it
    waits for its slot, the delivery keeps its lease (:func:`keep_lease`); a placement
    is never sent once the lease has run out: another delivery may own the order by then.
    """
    while True:
        remaining = (job.deadline - deps.clock()).total_seconds()
        try:
            with deps.limiter.call(max_wait=max(0.0, budget if budget is not None else remaining),
                                   priority=_priority(job), while_waiting=lambda: keep_lease(job, deps)):
                if placement and job.lease_until is not None and deps.clock() >= job.lease_until:
                    raise Retry("This delivery's lease ran out before the order was sent; another delivery owns it.")
                return call(deps.broker)
        except RateLimited as exc:
            if exc.retry_after >= (job.deadline - deps.clock()).total_seconds() - 1:
                raise
            log.warning("Fyers rate limit: waiting", extra={"fields": {"retry_after": exc.retry_after}})
            deps.sleep(exc.retry_after)


def keep_lease(job: Job, deps: WorkerDeps) -> None:
    """Renew this delivery's lease once half of it is gone. In a burst an order may wait for a
    broker slot (or for a read another delivery shares with it) longer than a lease: it keeps
    the order meanwhile, so that a redelivery does not take over an order that is only waiting
    its turn. Lost (taken over): nack."""
    if job.lease_until is None:
        return
    now, lease = deps.clock(), timedelta(seconds=deps.settings.lease_seconds)
    if job.lease_until - now > lease / 2:
        return
    renewed = deps.store.renew_lease(job.record.order_id, held=job.lease_until, now=now, lease=lease)
    if renewed is None:
        raise Retry("Another delivery took the order over while this one waited its turn.")
    job.lease_until = renewed


def _priority(job: Job) -> tuple[int, float]:
    """Exits and reductions take broker slots before entries; then the oldest signal first. Before
    its step is planned from the ledger, an order ranks by what its signal says."""
    closing = job.record.step.get("effect") == "CLOSE" if job.record.step else job.reduces
    return (0 if closing else 1, job.deadline.timestamp())


def shared_read(job: Job, deps: WorkerDeps, read: SharedRead[T], call: Callable[[Trading], T], *,
                timeout: float, budget: float | None = None) -> T | None:
    """``call``'s answer, from one request shared with the deliveries that ask before it is sent
    (:class:`SharedRead`); None when this one joined a read that failed or came too late."""
    def fetch(sending: Callable[[], None]) -> T:
        def send(broker: Trading) -> T:
            sending()
            return call(broker)
        return call_broker(job, deps, send, budget=budget)
    return read.read(fetch, timeout=timeout, while_waiting=lambda: keep_lease(job, deps))


def ltp(ticker: str, job: Job, deps: WorkerDeps) -> float:
    """The last price, shared with the other deliveries asking for it (``deps.quotes``)."""
    return deps.quotes.ltp(ticker, lambda wanted: _quote(wanted, job, deps),
                           while_waiting=lambda: keep_lease(job, deps))


def _quote(ticker: str, job: Job, deps: WorkerDeps) -> float:
    quotes = call_broker(job, deps, lambda broker: broker.quotes([ticker]))
    if ticker not in quotes or quotes[ticker].ltp <= 0:
        raise BrokerTransient(f"No last price for {ticker} from Fyers.")
    return quotes[ticker].ltp


def elapsed_ms(started: float | None) -> float | None:
    return None if started is None else round((time.monotonic() - started) * 1000, 1)


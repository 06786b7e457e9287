"""Calls to Fyers from a delivery: through the rate limiter, in the order's time budget,
exits first; and the last prices shared by the deliveries in flight."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from common.broker.ports import Trading
from common.errors import BrokerTransient, RateLimited
from common.logs import get_logger
from functions.order_worker.deps import Job, Retry, WorkerDeps

log = get_logger("order_worker")

T = TypeVar("T")


def call_broker(job: Job, deps: WorkerDeps, call: Callable[[Trading], T], *, budget: float | None = None,
                placement: bool = False) -> T:
    """Call the broker within Fyers' rate limits and the order's remaining time budget.

    A ``RateLimited`` answer is waited out and retried while the budget allows:
    the request was refused, so sending it again cannot duplicate anything. A
    placement is never sent once this delivery's lease has run out: another
    delivery may own the order by then.
    """
    while True:
        remaining = (job.deadline - deps.clock()).total_seconds()
        try:
            with deps.limiter.call(max_wait=max(0.0, budget if budget is not None else remaining),
                                   priority=_priority(job)):
                if placement and job.lease_until is not None and deps.clock() >= job.lease_until:
                    raise Retry("This delivery's lease ran out before the order was sent; another delivery owns it.")
                return call(deps.broker)
        except RateLimited as exc:
            if exc.retry_after >= (job.deadline - deps.clock()).total_seconds() - 1:
                raise
            log.warning("Fyers rate limit: waiting", extra={"fields": {"retry_after": exc.retry_after}})
            deps.sleep(exc.retry_after)


def _priority(job: Job) -> tuple[int, float]:
    """Exits and reductions take broker slots before entries; then the oldest signal first. Before
    its step is planned from the ledger, an order ranks by what its signal says."""
    closing = job.record.step.get("effect") == "CLOSE" if job.record.step else job.reduces
    return (0 if closing else 1, job.deadline.timestamp())


def ltp(ticker: str, job: Job, deps: WorkerDeps) -> float:
    """The last price, shared with the other deliveries asking for it (``deps.quotes``)."""
    return deps.quotes.ltp(ticker, lambda wanted: _quote(wanted, job, deps))


def _quote(ticker: str, job: Job, deps: WorkerDeps) -> float:
    quotes = call_broker(job, deps, lambda broker: broker.quotes([ticker]))
    if ticker not in quotes or quotes[ticker].ltp <= 0:
        raise BrokerTransient(f"No last price for {ticker} from Fyers.")
    return quotes[ticker].ltp


def elapsed_ms(started: float | None) -> float | None:
    return None if started is None else round((time.monotonic() - started) * 1000, 1)


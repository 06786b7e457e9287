"""Settling, from Fyers' order book, an order that an earlier request may have reached
Fyers with: it is placed again only once the book shows nothing sent can still land."""

from __future__ import annotations

from datetime import datetime

from common.broker.models import OrderRequest
from common.errors import BrokerError, BrokerRejected, TokenDead
from common.outcome import Book, BookView
from common.ratelimit import RateLimitBudgetExceeded
from common.records import IST, OrderEvent, OrderStatus
from functions.order_worker.broker_calls import call_broker
from functions.order_worker.deps import Job, Retry, WorkerDeps


def settled_by_book(job: Job, deps: WorkerDeps, may_land_until: datetime, *, current: OrderStatus,
                    request: OrderRequest | None) -> bool:
    """Settle an order that an earlier request may have reached Fyers with. True when settled.

    Found in the book: recorded as the book says. Absent: looked for again once nothing sent
    can still land (``may_land_until``); absent then, Fyers never booked it, and the order
    goes on to be placed if the signal is still fresh, else it ends NOT_PLACED. A failed
    look-up retries through Pub/Sub in budget, else leaves the order UNKNOWN: never place
    again without having seen the book.
    """
    if _found_in_book(job, deps, reason="BOOK_LOOKUP", current=current, request=request):
        return True
    wait = (may_land_until - deps.clock()).total_seconds()
    if wait > 0:
        deps.store.add_event(job.record.order_id, OrderEvent(
            at=deps.clock(), to_status=current.value, reason="AWAIT_LANDING", by=deps.worker_id,
            message=f"Not in the book yet; a request already sent may still be booked until "
                    f"{may_land_until.astimezone(IST):%H:%M:%S} IST. Looking again then."))
        deps.sleep(wait)
        if _found_in_book(job, deps, reason="BOOK_RECHECK", current=current, request=request):
            return True
    if deps.clock() > job.deadline:
        job.outcomes.not_placed(job.record, from_status=current)
        return True
    return False


def _found_in_book(job: Job, deps: WorkerDeps, *, reason: str, current: OrderStatus,
                   request: OrderRequest | None) -> bool:
    """Look for this order (now in ``current`` status) in the broker's book. True when settled."""
    try:
        view = _lookup(job, deps, request)
    except (BrokerError, RateLimitBudgetExceeded) as exc:
        message = getattr(exc, "message", str(exc))
        if deps.clock() < job.deadline and not isinstance(exc, (TokenDead, BrokerRejected)):
            deps.store.transition(job.record.order_id, OrderStatus.UNKNOWN, now=deps.clock(), by=deps.worker_id,
                                  from_status=current, reason="LOOKUP_FAILED",
                                  message=f"Order book look-up failed: {message}. Will retry.",
                                  fields={"lease_until": deps.clock()})
            raise Retry(message) from exc
        job.outcomes.finish(job.record, OrderStatus.UNKNOWN, "LOOKUP_FAILED", (
            f"Fyers may or may not have this order, and its order book could not be read ({message}). "
            f"Check the Fyers order book for tag {job.record.order_id} before acting; do not re-send the signal "
            "or place it by hand until you have."), from_status=current)
        return True
    deps.store.add_event(job.record.order_id, OrderEvent(
        at=deps.clock(), to_status=current.value, reason=reason, by=deps.worker_id,
        message=f"Order book look-up: {'found ' + ', '.join(view.ids) if view else 'not found'}."))
    if view is None:
        return False
    job.outcomes.apply_book(job.record, view, current)
    return True


def _lookup(job: Job, deps: WorkerDeps, request: OrderRequest | None) -> BookView | None:
    if request is None or request.tag is not None:
        return BookView.of(call_broker(job, deps, lambda broker: broker.orders_by_tag(job.record.order_id), budget=10.0))
    # CO/BO carry no tag: the same symbol, side and quantity, placed since this order arrived.
    book = Book(call_broker(job, deps, lambda broker: broker.orders(), budget=10.0))
    return BookView.of(book.signature_matches(request.symbol, request.side, request.qty, job.record.received_at)[:1])


"""Placing the order: sent again while it provably never reached Fyers, settled from the
book when it may have, read back once placed."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from common.broker.models import OrderRequest, PlaceResult
from common.errors import BrokerAmbiguous, BrokerError, BrokerTransient, RateLimited
from common.logs import get_logger
from common.notify import NotificationKind
from common.outcome import Book, BookView, describe
from common.ratelimit import RateLimitBudgetExceeded
from common.records import OrderEvent, OrderRecord, OrderStatus
from functions.order_worker.broker_calls import call_broker, elapsed_ms, shared_read
from functions.order_worker.deps import Job, WorkerDeps
from functions.order_worker.endings import broker_failure, out_of_time
from functions.order_worker.settling import settled_by_book

log = get_logger("order_worker")

# What provably never reached Fyers is sent again after this, doubling each time, while fresh.
RESEND_BACKOFF_SECONDS = 0.5
# Placements of one signal that may each have reached Fyers, at most: past that, a human decides.
MAX_PLACEMENTS = 3


def place(job: Job, request: OrderRequest, deps: WorkerDeps, attempt: int = 1) -> None:
    """Send the order. What provably never reached Fyers is sent again with backoff while the
    signal is fresh; what may have reached it is settled from the book before anything else."""
    backoff = RESEND_BACKOFF_SECONDS
    while True:
        started, sent_at = time.monotonic(), deps.clock()
        try:
            try:
                result = call_broker(job, deps, lambda broker: broker.place_order(request), placement=True)
            finally:
                if job.hold is not None:  # the exit's slot is taken: entries may go
                    job.hold.release()
        except BrokerAmbiguous as exc:
            return _ambiguous(job, request, deps, attempt, exc, sent_at, started)
        except BrokerTransient as exc:
            resend_at = deps.clock() + timedelta(seconds=backoff)
            if resend_at < min(job.deadline, job.lease_until or job.deadline) and not isinstance(exc, RateLimited):
                deps.store.add_event(job.record.order_id, OrderEvent(
                    at=deps.clock(), to_status=OrderStatus.PLACING.value, reason="RESEND", by=deps.worker_id,
                    message=f"{exc.message} Sending again in {backoff:g} s.", latency_ms=elapsed_ms(started)))
                deps.sleep(backoff)
                backoff *= 2
                continue
            return broker_failure(job, deps, exc, started=started)
        except BrokerError as exc:
            return broker_failure(job, deps, exc, started=started)
        except RateLimitBudgetExceeded as exc:
            return out_of_time(job, deps, exc)
        deps.breaker.record_success(deps.clock())
        return _placed(job, result, request, deps, started)


def _placed(job: Job, result: PlaceResult, request: OrderRequest, deps: WorkerDeps, started: float | None) -> None:
    now = deps.clock()
    deps.store.transition(job.record.order_id, OrderStatus.PLACED, now=now, by=deps.worker_id,
                          from_status=OrderStatus.PLACING, reason="PLACED",
                          message=f"Placed {describe_request(request)}: Fyers order {result.order_id}.",
                          broker_code=result.code, broker_message=result.message,
                          latency_ms=elapsed_ms(started) if started else None,
                          fields={"broker_order_id": result.order_id, "placed_at": now,
                                  "broker_order_ids": list(result.order_ids), "broker_request": request.to_fyers()})
    log.info("order placed", extra={"fields": {"broker_order_id": result.order_id}})
    if job.record.publish_failed_at is not None:
        # The trader saw TradingView's deliveries fail while the queue was down: tell them it went
        # through after all, before they place it by hand.
        late = (now - job.record.received_at).total_seconds()
        job.outcomes.notify_once(job.record, NotificationKind.ORDER_PLACED, title=f"PLACED {describe(job.record)}",
                                 text=(f"Placed {late:.0f} s after the alert, once the queue was back. "
                                       "Do not place it by hand."), fields={"broker_order_id": result.order_id})
    job.lease_until = None  # placed: a redelivery finds it done, so there is no lease left to keep
    placed = job.record.model_copy(update={"broker_order_id": result.order_id,
                                           "broker_order_ids": list(result.order_ids), "placed_at": now})
    deps.ledger.placed(placed, ticker=request.symbol, side=request.side, quantity=request.qty,
                       effect=(job.record.step or {}).get("effect", "OPEN"), broker_order_id=result.order_id, now=now)
    _read_back(job, placed, deps)


def _read_back(job: Job, record: OrderRecord, deps: WorkerDeps) -> None:
    """Catch an immediate RMS rejection (book status 5) and count the fills, from one read of
    the book shared with the other orders placed meanwhile. A clear placement needs no more."""
    try:
        if job.record.children:  # a later step waits on this one: read it now, not with the burst
            order = call_broker(job, deps, lambda broker: broker.order_by_id(record.broker_order_id or ""), budget=5.0)
            view = BookView.of([order]) if order is not None else None
        else:
            rows = shared_read(job, deps, deps.book, lambda broker: broker.orders(), budget=5.0, timeout=10.0)
            view = Book(rows).view(record) if rows is not None else None
    except (BrokerError, RateLimitBudgetExceeded):
        return  # the scheduler's reconcile job will read it later
    if view is not None:
        job.outcomes.apply_book(record, view, OrderStatus.PLACED)


def _ambiguous(job: Job, request: OrderRequest, deps: WorkerDeps, attempt: int, exc: BrokerAmbiguous,
               sent_at: datetime, started: float) -> None:
    """A placement that may still be booked: never send it again before its landing bound."""
    may_land_until = sent_at + timedelta(seconds=deps.settings.placement_landing_seconds)
    job.lease_until = may_land_until + timedelta(seconds=deps.settings.lease_seconds)  # hold it while we wait
    deps.store.transition(job.record.order_id, OrderStatus.UNKNOWN, now=deps.clock(), by=deps.worker_id,
                          from_status=OrderStatus.PLACING, reason="AMBIGUOUS", message=exc.message,
                          broker_code=exc.broker_code, broker_message=exc.broker_message, latency_ms=elapsed_ms(started),
                          fields={"broker_request": request.to_fyers(), "may_land_until": may_land_until,
                                  "lease_until": job.lease_until})
    if settled_by_book(job, deps, may_land_until, current=OrderStatus.UNKNOWN, request=request):
        return
    if attempt >= MAX_PLACEMENTS:
        return job.outcomes.finish(job.record, OrderStatus.FAILED, "NOT_PLACED", (
            f"Fyers answered none of {attempt} attempts and booked none of them (absent from the book "
            f"{deps.settings.placement_landing_seconds:g} s after each was sent). Nothing is open at Fyers from "
            "this signal: place it by hand only if you still want it."), from_status=OrderStatus.UNKNOWN)
    deps.store.transition(job.record.order_id, OrderStatus.PLACING, now=deps.clock(), by=deps.worker_id,
                          from_status=OrderStatus.UNKNOWN, reason="REPLACE",
                          message="Not in the book after its landing bound, and the signal is fresh: placing again.")
    place(job, request, deps, attempt + 1)


def describe_request(request: OrderRequest) -> str:
    side = "BUY" if request.side == 1 else "SELL"
    return f"{side} {request.qty} {request.symbol} {request.product}"


"""The ``order_worker`` CloudEvent function: place each queued order at most once.

Pub/Sub delivers at least once, sometimes twice at the same moment. The
Firestore claim (a transaction with a lease) lets one delivery proceed; a
takeover after a crash or an ambiguous answer reads the broker's book by tag
before anything is placed again. Every step is an event on the order.

Return = ack. Raise = nack, and Pub/Sub redelivers: only for retryable
failures still inside the order's age budget, and only after the order is
released to QUEUED, so the redelivery can claim it.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from pydantic import ValidationError

from common.alert import Alert
from common.breaker import CircuitBreaker
from common.broker.models import BrokerOrder, OrderRequest, PlaceResult
from common.controls import ControlsReader
from common.errors import (
    BrokerAmbiguous,
    BrokerError,
    BrokerRejected,
    BrokerTransient,
    RateLimited,
    RouterError,
    TokenDead,
)
from common.logs import get_logger, log_context
from common.market import market_closed_reason
from common.notify import Notification, NotificationKind, Severity
from common.orders import OrderStore, queued_record
from common.placement import Plan, plan_order
from common.ratelimit import RateLimitBudgetExceeded, SlidingWindowLimiter
from common.records import OrderCommand, OrderEvent, OrderRecord, OrderStatus, ist_day, today_ist
from common.settings import Settings

log = get_logger("order_worker")

_NOTIFY = {
    OrderStatus.REJECTED: (NotificationKind.ORDER_REJECTED, Severity.ERROR, "❌"),
    OrderStatus.FAILED: (NotificationKind.ORDER_FAILED, Severity.ERROR, "⛔"),
    OrderStatus.EXPIRED: (NotificationKind.ORDER_EXPIRED, Severity.WARNING, "⌛"),
    OrderStatus.BLOCKED: (NotificationKind.ORDER_BLOCKED, Severity.WARNING, "🚫"),
    OrderStatus.UNKNOWN: (NotificationKind.ORDER_UNKNOWN, Severity.CRITICAL, "❓"),
}


class Retry(Exception):
    """Raised to nack: Pub/Sub will redeliver (the order was released to QUEUED first)."""


@dataclass
class WorkerDeps:
    """What the worker needs, injected so tests can pass emulator- and simulator-backed parts."""

    settings: Settings
    store: OrderStore
    controls: ControlsReader
    breaker: CircuitBreaker
    master: Callable[[], Any]  # -> SymbolMaster
    broker: Any  # FyersBroker
    invalidate_token: Callable[[], None]
    needs_login: Callable[[str, datetime], None]  # marks system/broker_session NEEDS_LOGIN
    notify: Callable[[Notification], Any]
    limiter: SlidingWindowLimiter
    worker_id: str
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    sleep: Callable[[float], None] = time.sleep
    read_back_delay: float = 0.3  # Fyers' RMS answers within a few hundred ms
    recheck_delay: float = 1.0  # between the two book look-ups that must agree before a re-place


@dataclass
class _Job:
    """One delivery in progress."""

    command: OrderCommand
    record: OrderRecord
    deadline: datetime  # the order may not reach the broker after this


def handle(cloud_event: Any, deps: WorkerDeps) -> None:
    """Process one Pub/Sub delivery. Raises :class:`Retry` only for retryable cases."""
    message = (cloud_event.data or {}).get("message", {})
    command = _decode(message, deps)
    if command is None:
        return
    with log_context(request_id=command.request_id, order_id=command.order_id):
        _process(command, deps)


# --- decode and claim -----------------------------------------------------------


def _decode(message: dict[str, Any], deps: WorkerDeps) -> OrderCommand | None:
    try:
        payload = json.loads(base64.b64decode(message.get("data", "")).decode())
        return OrderCommand.model_validate(payload)
    except (ValueError, ValidationError, TypeError) as exc:
        # Never retried: a message that cannot be read now never will be.
        attributes = message.get("attributes") or {}
        log.error("unreadable order command", extra={"fields": {"message_id": message.get("messageId"),
                                                                "attributes": attributes, "error": type(exc).__name__}})
        deps.store.record_bad_message(message.get("messageId"), attributes, type(exc).__name__, deps.clock())
        deps.notify(Notification(kind=NotificationKind.ORDER_FAILED, severity=Severity.ERROR,
                                 title="Unreadable order message",
                                 text=f"Message {message.get('messageId')} could not be decoded and was dropped.",
                                 order_id=attributes.get("order_id")))
        return None


def _process(command: OrderCommand, deps: WorkerDeps) -> None:
    now = deps.clock()
    if not command.recorded or deps.store.get(command.order_id) is None:
        if not _record_for_webhook(command, deps, now):
            return
    claim = deps.store.claim(command.order_id, worker_id=deps.worker_id, now=now,
                             lease=timedelta(seconds=deps.settings.lease_seconds))
    if claim.outcome != "claimed":
        log.info("delivery skipped", extra={"fields": {"claim": claim.outcome}})
        return  # terminal, or another delivery holds a live lease: that one finishes the job
    signal_time = min(t for t in (command.alert_time, command.received_at) if t is not None)
    job = _Job(command, claim.record, signal_time + timedelta(seconds=deps.settings.max_order_age_seconds))
    if claim.previous in (OrderStatus.PLACING, OrderStatus.UNKNOWN):
        # A takeover: an earlier attempt may have reached the broker. Look before placing.
        if _found_in_book(job, deps, reason="TAKEOVER_LOOKUP", current=OrderStatus.PLACING):
            return
    _guard_and_place(job, deps)


def _record_for_webhook(command: OrderCommand, deps: WorkerDeps, now: datetime) -> bool:
    """The webhook could not write Firestore: create the record (and claims) here. False = duplicate."""
    duplicate = deps.store.accept(queued_record(command, recorded_by="worker", now=now), command.claims, None)
    if duplicate is not None and duplicate.order_id not in (None, command.order_id):
        log.info("duplicate of another order; dropped", extra={"fields": {"winner": duplicate.order_id}})
        return False
    return True


# --- guards ---------------------------------------------------------------------


def _guard_and_place(job: _Job, deps: WorkerDeps) -> None:
    settings, now = deps.settings, deps.clock()
    alert = Alert.model_validate(job.command.alert)
    if now > job.deadline:
        age = (now - job.deadline).total_seconds() + settings.max_order_age_seconds
        return _finish(job, deps, OrderStatus.EXPIRED, "STALE",
                       f"The signal is {age:.0f} s old (limit {settings.max_order_age_seconds} s); not placed.")
    controls = deps.controls.get()
    if not controls.trading_enabled:
        return _finish(job, deps, OrderStatus.BLOCKED, "KILL_SWITCH",
                       "Trading is switched off (system/controls.trading_enabled is false).")
    dry_run = settings.dry_run or controls.dry_run or alert.dry_run
    if settings.enforce_market_hours and not dry_run:
        closed = market_closed_reason(now, open_at=settings.market_open, close_at=settings.market_close,
                                      holidays=settings.market_holidays)
        if closed:
            return _finish(job, deps, OrderStatus.BLOCKED, "MARKET_CLOSED", closed)
    if settings.allowed_symbols and alert.underlying not in settings.allowed_symbols \
            and alert.symbol not in settings.allowed_symbols:
        return _finish(job, deps, OrderStatus.REJECTED, "NOT_ALLOWED", f"{alert.symbol} is not in the allowed symbols.")
    placed_today = deps.store.count_day(ist_day(now), [OrderStatus.PLACED, OrderStatus.UNKNOWN])
    if placed_today >= settings.max_orders_per_day and not dry_run:
        return _finish(job, deps, OrderStatus.REJECTED, "DAILY_LIMIT",
                       f"{placed_today} orders placed today: the daily limit is {settings.max_orders_per_day}.")
    if not dry_run and (open_until := deps.breaker.open_until(now)):
        return _finish(job, deps, OrderStatus.BLOCKED, "BREAKER_OPEN",
                       f"Broker calls paused after repeated failures, until {open_until:%H:%M:%S} UTC.")

    max_lots = min(settings.max_lots_per_alert, controls.max_lots or settings.max_lots_per_alert)
    try:
        plan = plan_order(alert, order_id=job.record.order_id, master=deps.master(), today=today_ist(now),
                          quote=lambda ticker: _ltp(ticker, job, deps), positions=lambda: _call(job, deps, "positions"),
                          cover_only=(alert.strategy or "").upper() in settings.cover_only_strategies,
                          max_lots=max_lots)
    except BrokerError as exc:
        return _broker_failure(job, deps, exc)
    except RateLimitBudgetExceeded as exc:
        return _release(job, deps, "RATE_BUDGET", f"Our own broker rate limit: next slot in {exc.wait:.1f} s.")
    except RouterError as exc:
        return _finish(job, deps, OrderStatus.REJECTED, exc.code, exc.message)
    deps.store.update_fields(job.record.order_id, _plan_fields(plan), now=deps.clock())

    if dry_run:
        return _finish(job, deps, OrderStatus.DRY_RUN, "DRY_RUN",
                       f"Dry run: would send {_describe(plan.request)}.", fields={"broker_request": plan.request.to_fyers()},
                       notify=False)
    _place(job, plan.request, deps)


# --- placing and outcomes ---------------------------------------------------------


def _place(job: _Job, request: OrderRequest, deps: WorkerDeps, attempt: int = 1) -> None:
    started = time.monotonic()
    try:
        result = _call(job, deps, "place_order", request)
    except BrokerAmbiguous as exc:
        deps.store.transition(job.record.order_id, OrderStatus.UNKNOWN, now=deps.clock(), by=deps.worker_id,
                              from_status=OrderStatus.PLACING, reason="AMBIGUOUS", message=exc.message,
                              broker_code=exc.broker_code, broker_message=exc.broker_message,
                              latency_ms=_ms(started), fields={"broker_request": request.to_fyers()})
        return _resolve_ambiguous(job, request, deps, attempt)
    except BrokerError as exc:
        return _broker_failure(job, deps, exc, started=started)
    except RateLimitBudgetExceeded as exc:
        return _release(job, deps, "RATE_BUDGET", f"Our own broker rate limit: next slot in {exc.wait:.1f} s.")
    deps.breaker.record_success(deps.clock())
    _placed(job, result, request, deps, started)


def _placed(job: _Job, result: PlaceResult, request: OrderRequest, deps: WorkerDeps, started: float | None) -> None:
    now = deps.clock()
    deps.store.transition(job.record.order_id, OrderStatus.PLACED, now=now, by=deps.worker_id,
                          from_status=OrderStatus.PLACING, reason="PLACED", message=f"Placed {_describe(request)}: Fyers order {result.order_id}.",
                          broker_code=result.code, broker_message=result.message,
                          latency_ms=_ms(started) if started else None,
                          fields={"broker_order_id": result.order_id, "placed_at": now,
                                  "broker_order_ids": list(result.order_ids), "broker_request": request.to_fyers()})
    log.info("order placed", extra={"fields": {"broker_order_id": result.order_id}})
    _read_back(job, result.order_id, deps)


def _read_back(job: _Job, broker_order_id: str, deps: WorkerDeps) -> None:
    """Read the order once, briefly, to catch an immediate RMS rejection (book status 5)."""
    deps.sleep(deps.read_back_delay)
    try:
        order = _call(job, deps, "order_by_id", broker_order_id, budget=5.0)
    except (BrokerError, RateLimitBudgetExceeded):
        return  # the scheduler's reconcile job will read it later
    if order is not None:
        _apply_book_order(job, deps, order, OrderStatus.PLACED)


def _resolve_ambiguous(job: _Job, request: OrderRequest, deps: WorkerDeps, attempt: int) -> None:
    """UNKNOWN: found in the book -> PLACED; absent twice -> place again (once, in budget)."""
    if _found_in_book(job, deps, reason="BOOK_LOOKUP", current=OrderStatus.UNKNOWN, request=request):
        return
    deps.sleep(deps.recheck_delay)
    if _found_in_book(job, deps, reason="BOOK_RECHECK", current=OrderStatus.UNKNOWN, request=request):
        return
    now = deps.clock()
    if attempt >= 2 or now > job.deadline:
        why = "after a second attempt" if attempt >= 2 else "and the signal is now too old to place again"
        _finish(job, deps, OrderStatus.UNKNOWN, "UNRESOLVED",
                f"Fyers did not confirm the order and it is not in the book {why}. Check Fyers before acting.",
                from_status=OrderStatus.UNKNOWN)
        return
    deps.store.transition(job.record.order_id, OrderStatus.PLACING, now=now, by=deps.worker_id,
                          from_status=OrderStatus.UNKNOWN, reason="REPLACE",
                          message="Absent from the book on two look-ups: placing again.")
    _place(job, request, deps, attempt + 1)


def _found_in_book(job: _Job, deps: WorkerDeps, *, reason: str, current: OrderStatus,
                   request: OrderRequest | None = None) -> bool:
    """Look for this order (now in ``current`` status) in the broker's book. True when settled.

    A failed look-up raises :class:`Retry` in budget, or leaves the order UNKNOWN: never
    place again without having seen the book.
    """
    try:
        order = _lookup(job, deps, request)
    except (BrokerError, RateLimitBudgetExceeded) as exc:
        message = getattr(exc, "message", str(exc))
        if deps.clock() < job.deadline and not isinstance(exc, (TokenDead, BrokerRejected)):
            deps.store.transition(job.record.order_id, OrderStatus.UNKNOWN, now=deps.clock(), by=deps.worker_id,
                                  from_status=current, reason="LOOKUP_FAILED",
                                  message=f"Order book look-up failed: {message}. Will retry.",
                                  fields={"lease_until": deps.clock()})
            raise Retry(message) from exc
        _finish(job, deps, OrderStatus.UNKNOWN, "LOOKUP_FAILED",
                f"Could not read the Fyers order book ({message}). Check Fyers before acting.", from_status=current)
        return True
    deps.store.add_event(job.record.order_id, OrderEvent(
        at=deps.clock(), to_status=current.value, reason=reason, by=deps.worker_id,
        message=f"Order book look-up: {'found ' + order.id if order else 'not found'}."))
    if order is None:
        return False
    _apply_book_order(job, deps, order, current)
    return True


def _apply_book_order(job: _Job, deps: WorkerDeps, order: BrokerOrder, current: OrderStatus) -> None:
    """Record what Fyers' book says of our order: rejected (status 5), else placed, with its fills."""
    fields = {"broker_order_id": order.id, **_fill_fields(order)}
    if order.status == 5:
        _finish(job, deps, OrderStatus.REJECTED, "BROKER_REJECTED", order.message or "Rejected by Fyers RMS.",
                fields=fields, broker_message=order.message, from_status=current)
    elif current == OrderStatus.PLACED:
        deps.store.update_fields(job.record.order_id, fields, now=deps.clock())
    else:
        deps.store.transition(job.record.order_id, OrderStatus.PLACED, now=deps.clock(), by=deps.worker_id,
                              from_status=current, reason="FOUND_IN_BOOK",
                              message=f"Fyers order {order.id} found in the book.",
                              fields={**fields, "placed_at": deps.clock()})


def _lookup(job: _Job, deps: WorkerDeps, request: OrderRequest | None) -> BrokerOrder | None:
    if request is None or request.tag is not None:
        orders = _call(job, deps, "orders_by_tag", job.record.order_id, budget=10.0)
        return orders[0] if orders else None
    # CO/BO carry no tag: the same symbol, side and quantity, placed since this order arrived.
    since = job.record.received_at - timedelta(seconds=5)
    matches = [o for o in _call(job, deps, "orders", budget=10.0) if o.symbol == request.symbol and o.side == request.side
               and o.qty == request.qty and not o.parent_id
               and (o.order_time is None or o.order_time >= since)]
    return matches[0] if matches else None


def _broker_failure(job: _Job, deps: WorkerDeps, exc: BrokerError, *, started: float | None = None) -> None:
    """Map a broker failure class (other than ambiguity) to the order's outcome, or to a retry."""
    if isinstance(exc, TokenDead):
        deps.invalidate_token()
        deps.needs_login(exc.message, deps.clock())
        return _finish(job, deps, OrderStatus.FAILED, "NEEDS_LOGIN",
                       "The Fyers session has expired: log in again (daily 2FA), then re-send the signal if still valid.",
                       broker_code=exc.broker_code, broker_message=exc.broker_message)
    if isinstance(exc, BrokerRejected):
        return _finish(job, deps, OrderStatus.REJECTED, "BROKER_REJECTED", exc.broker_message or exc.message,
                       broker_code=exc.broker_code, broker_message=exc.broker_message)
    if isinstance(exc, RateLimited):
        return _release(job, deps, "RATE_LIMITED", f"Fyers rate limit: retry in {exc.retry_after:.1f} s.")
    if isinstance(exc, BrokerTransient):
        if deps.breaker.record_failure(deps.clock(), exc.message):
            log.error("circuit breaker opened")
        return _release(job, deps, "BROKER_TRANSIENT", exc.message, _ms(started))
    return _finish(job, deps, OrderStatus.FAILED, exc.code, exc.message)


def _release(job: _Job, deps: WorkerDeps, reason: str, message: str, latency: float | None = None) -> None:
    """Hand the order back to QUEUED and nack, if the budget allows; else EXPIRED."""
    if deps.clock() >= job.deadline:
        return _finish(job, deps, OrderStatus.EXPIRED, reason, f"{message} The signal is now too old to retry.")
    deps.store.transition(job.record.order_id, OrderStatus.QUEUED, now=deps.clock(), by=deps.worker_id,
                          from_status=OrderStatus.PLACING, reason=reason, message=f"{message} Will retry.",
                          latency_ms=latency, fields={"lease_until": None})
    raise Retry(message)


def _finish(job: _Job, deps: WorkerDeps, status: OrderStatus, reason: str, message: str, *,
            fields: dict[str, Any] | None = None, broker_code: int | None = None, broker_message: str | None = None,
            from_status: OrderStatus = OrderStatus.PLACING, notify: bool = True) -> None:
    """Record a final (or parked UNKNOWN) outcome, and tell the trader when it needs attention."""
    deps.store.transition(job.record.order_id, status, now=deps.clock(), by=deps.worker_id, from_status=from_status,
                          reason=reason, message=message, fields=fields, broker_code=broker_code,
                          broker_message=broker_message)
    log.info("order finished", extra={"fields": {"status": status.value, "reason": reason}})
    if notify and status in _NOTIFY:
        kind, severity, icon = _NOTIFY[status]
        record = job.record
        deps.notify(Notification(kind=kind, severity=severity, order_id=record.order_id,
                                 title=f"{icon} {status.value} {record.symbol} {record.action} {record.lots} lot(s)",
                                 text=message, fields={"strategy": record.strategy, "reason": reason}))


# --- helpers --------------------------------------------------------------------


def _call(job: _Job, deps: WorkerDeps, method: str, *args: Any, budget: float | None = None) -> Any:
    """Call the broker within Fyers' rate limits and the order's remaining time budget.

    A ``RateLimited`` answer is waited out and retried while the budget allows:
    the request was refused, so sending it again cannot duplicate anything.
    """
    while True:
        remaining = (job.deadline - deps.clock()).total_seconds()
        try:
            with deps.limiter.call(max_wait=max(0.0, budget if budget is not None else remaining)):
                return getattr(deps.broker, method)(*args)
        except RateLimited as exc:
            if exc.retry_after >= (job.deadline - deps.clock()).total_seconds() - 1:
                raise
            log.warning("Fyers rate limit: waiting", extra={"fields": {"retry_after": exc.retry_after}})
            deps.sleep(exc.retry_after)


def _ltp(ticker: str, job: _Job, deps: WorkerDeps) -> float:
    quotes = _call(job, deps, "quotes", [ticker])
    if ticker not in quotes or quotes[ticker].ltp <= 0:
        raise BrokerTransient(f"No last price for {ticker} from Fyers.")
    return quotes[ticker].ltp


def _plan_fields(plan: Plan) -> dict[str, Any]:
    c = plan.contract
    return {
        "contract": {"ticker": c.ticker, "underlying": c.underlying, "kind": c.kind, "exchange": c.exchange,
                     "lot_size": c.lot_size, "tick_size": c.tick_size, "strike": c.strike,
                     "expiry": c.expiry.isoformat() if c.expiry else None},
        "quantity": plan.request.qty, "ltp": plan.ltp, "underlying_ltp": plan.underlying_ltp,
        "sl_price": plan.sl_price, "tp_price": plan.tp_price, "broker_request": plan.request.to_fyers(),
    }


def _fill_fields(order: BrokerOrder) -> dict[str, Any]:
    return {"broker_status": order.status_name, "filled_qty": order.filled_qty,
            "avg_price": order.traded_price or None, "broker_message": order.message or None}


def _describe(request: OrderRequest) -> str:
    side = "BUY" if request.side == 1 else "SELL"
    return f"{side} {request.qty} {request.symbol} {request.product}"


def _ms(started: float | None) -> float | None:
    return None if started is None else round((time.monotonic() - started) * 1000, 1)

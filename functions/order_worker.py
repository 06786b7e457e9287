"""The ``order_worker`` CloudEvent function: place each queued order at most once.

Pub/Sub delivers at least once, sometimes twice at the same moment. The
Firestore claim (a transaction with a lease) lets one delivery proceed; another
that finds the lease live waits for the holder to finish or its lease to end,
never acks itself away. Every step is an event on the order.

Never twice: each placement failure is classed by what Fyers can still do.

* Never reached Fyers (connection refused, DNS, TLS, connect timeout, the
  gateway's 503 page): sent again with backoff while the signal is fresh.
* Refused by Fyers: REJECTED with its reason.
* May still land (read timeout, reset after sending, a JSON 5xx, 201): UNKNOWN
  with ``may_land_until`` = sent + ``PLACEMENT_LANDING_SECONDS``. The book is
  read at once, and again at that bound; only an order still absent then is
  placed again, and only while the signal is fresh. A takeover after a crash
  honours the same bound, counted from the lease it broke.

Outcomes and notices go through :class:`common.outcome.Outcomes`, shared with the
reconcile job. Return = ack. Raise = nack, and Pub/Sub redelivers: only for
retryable failures still inside the order's age budget.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, TypeVar

from pydantic import ValidationError

from common.alert import Alert
from common.breaker import CircuitBreaker
from common.broker.models import BrokerOrder, OrderRequest, PlaceResult
from common.broker.ports import Trading
from common.controls import ControlsReader
from common.errors import (
    BrokerAmbiguous,
    BrokerError,
    BrokerRejected,
    BrokerTransient,
    NoPosition,
    RateLimited,
    RouterError,
    StoreUnavailable,
    TokenDead,
)
from common.intent import (
    Step,
    derive,
    instrument_of_alert,
    names_one_contract,
    step_alert,
)
from common.ledger import Ledger, Position
from common.logs import get_logger, log_context
from common.market import market_closed_reason
from common.notify import Notification, NotificationKind, Severity
from common.orders import Claim, OrderStore, queued_record
from common.outcome import Book, BookView, Outcomes, describe, landing_deadline, signal_deadline
from common.placement import Plan, plan_order
from common.ratelimit import RateLimitBudgetExceeded, SlidingWindowLimiter
from common.records import (
    IST,
    OrderCommand,
    OrderEvent,
    OrderRecord,
    OrderStatus,
    contract_doc,
    ist_day,
    today_ist,
)
from common.settings import Settings
from common.shared_reads import QuoteCache, SharedBook

log = get_logger("order_worker")

# A delivery that finds another's live lease looks again this often.
LEASE_POLL_SECONDS = 1.0
# What provably never reached Fyers is sent again after this, doubling each time, while fresh.
RESEND_BACKOFF_SECONDS = 0.5
# Placements of one signal that may each have reached Fyers, at most: past that, a human decides.
MAX_PLACEMENTS = 3

T = TypeVar("T")


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
    #   (measured: make bench).
    quotes: QuoteCache = field(default_factory=lambda: QuoteCache(ttl=5.0))
    book: SharedBook[list[BrokerOrder]] = field(default_factory=lambda: SharedBook(gather=6.0, batch=18))


@dataclass
class _Job:
    """One delivery in progress."""

    command: OrderCommand
    record: OrderRecord
    deadline: datetime  # the order may not reach the broker after this
    lease_until: datetime | None  # this delivery sends nothing after this
    outcomes: Outcomes


def handle(cloud_event: Any, deps: WorkerDeps) -> None:
    """Process one Pub/Sub delivery. Raises :class:`Retry` only for retryable cases."""
    message = (cloud_event.data or {}).get("message", {})
    command = _decode(message, deps)
    if command is None:
        return
    with log_context(request_id=command.request_id, order_id=command.order_id):
        try:
            _process(command, deps)
        except StoreUnavailable as exc:
            # Nothing was decided that Firestore did not record: the redelivery starts afresh.
            log.warning("Firestore unavailable; Pub/Sub will redeliver", extra={"fields": {"error": exc.message}})
            raise Retry(exc.message) from exc


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
    claim = _claim(command, deps)
    if claim is None or claim.record is None:
        return
    job = _Job(command, claim.record, signal_deadline(command.alert_time, command.received_at, deps.settings),
               claim.record.lease_until, Outcomes(deps.store, deps.notify, deps.clock, deps.worker_id, ledger=deps.ledger))
    if claim.outcome == "terminal":
        return _next_steps(job, deps)  # an earlier delivery settled it; its later steps may remain
    if claim.previous in (OrderStatus.PLACING, OrderStatus.UNKNOWN):
        # A takeover: an earlier attempt may have reached Fyers, or may still.
        may_land_until = landing_deadline(claim.previous_lease_until, claim.record.may_land_until, deps.settings,
                                          default=now)
        if _settled_by_book(job, deps, may_land_until, current=OrderStatus.PLACING, request=None):
            return _next_steps(job, deps)
    _guard_and_place(job, deps)
    _next_steps(job, deps)


def _claim(command: OrderCommand, deps: WorkerDeps) -> Claim | None:
    """Take the order, waiting out another delivery's live lease: the claim (``claimed``, or
    ``terminal`` when an earlier delivery settled it), or None when there is no such order.

    A delivery that finds a live lease is never acked away: it waits until the holder
    finishes (then there is nothing to do) or its lease ends (then this one takes over),
    and past that wait it nacks, so Pub/Sub brings it back.
    """
    settings = deps.settings
    give_up = deps.clock() + timedelta(seconds=settings.lease_seconds + settings.placement_landing_seconds + 5)
    while True:
        now = deps.clock()
        claim = deps.store.claim(command.order_id, worker_id=deps.worker_id, now=now,
                                 lease=timedelta(seconds=settings.lease_seconds))
        if claim.outcome in ("claimed", "terminal"):
            return claim
        if claim.outcome != "leased":
            log.info("delivery skipped", extra={"fields": {"claim": claim.outcome}})
            return None
        if now >= give_up:
            raise Retry("Another delivery still holds the order; Pub/Sub will bring this one back.")
        lease_left = (claim.record.lease_until - now).total_seconds()  # type: ignore[union-attr]  # leased
        deps.sleep(min(LEASE_POLL_SECONDS, max(0.05, lease_left)))


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
    if not settings.symbol_allowed(alert.underlying, alert.symbol):
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
        steps = _intent_steps(job, alert, deps, now, dry_run)
        if not steps:
            return
        step, step_alert = steps[0]
        plan = _plan(job, step, step_alert, deps, now, max_lots)
    except BrokerError as exc:
        return _broker_failure(job, deps, exc)
    except RateLimitBudgetExceeded as exc:
        return _out_of_time(job, deps, exc)
    except RouterError as exc:
        return _finish(job, deps, OrderStatus.REJECTED, exc.code, exc.message)
    _record_plan(job, plan, deps)

    if dry_run:
        return _finish(job, deps, OrderStatus.DRY_RUN, "DRY_RUN",
                       f"Dry run: would send {_describe(plan.request)}.", fields={"broker_request": plan.request.to_fyers()},
                       notify=False)
    _place(job, plan.request, deps)


# --- the position: what the signal means, in orders -----------------------------------


def _intent_steps(job: _Job, alert: Alert, deps: WorkerDeps, now: datetime,
                  dry_run: bool) -> list[tuple[Step | None, Alert]]:
    """The orders the signal means for the strategy's position, first to last; [] when the order
    was finished here (nothing to do). Later steps become child orders, recorded now."""
    if job.record.parent_order_id is not None and job.record.step:  # a later step, planned with the first
        step = Step(**job.record.step)
        return [(step, step_alert(alert, step))]
    instrument = instrument_of_alert(alert, deps.master())
    held = deps.ledger.get(alert.strategy, instrument)
    intent = derive(alert, held)
    cancelled: list[str] = []
    closing = intent.kind in ("EXIT", "REDUCE", "REVERSE") or alert.position == "flat" or alert.action == "EXIT"
    if closing:  # its broker calls from here on go before entries' (see _priority)
        job.record = job.record.model_copy(update={"step": {"effect": "CLOSE"}})
    if held is not None and held.in_flight and closing and not dry_run:
        cancelled = _cancel_working_entries(job, held, deps)
        if cancelled:  # what they filled is in the ledger now: decide again
            held = deps.ledger.get(alert.strategy, instrument)
            intent = derive(alert, held)
    summary = {"kind": intent.kind, "reason": intent.reason, "steps": [s.describe() for s in intent.steps],
               "held": held.summary() if held else "flat", **({"cancelled": cancelled} if cancelled else {})}
    if not intent.steps:
        if cancelled:
            _finish(job, deps, OrderStatus.SKIPPED, "ENTRY_CANCELLED", (
                f"Cancelled the working entry {', '.join(cancelled)}: nothing of it was filled, so nothing is "
                "left to close."), fields={"intent": summary}, notify=False)
            return []
        if intent.kind == "NONE":
            _finish(job, deps, OrderStatus.SKIPPED, "NO_CHANGE", f"Nothing to do: {intent.reason}.",
                    fields={"intent": summary}, notify=False)
            return []
        if intent.kind == "EXIT" and names_one_contract(alert):
            # A position opened by hand: the broker's net position in the named contract decides.
            return [(None, alert)]
        raise NoPosition(f"No position to close: {intent.reason}.")
    steps = _held_at_broker(job, deps, alert, instrument, intent.steps) if not dry_run else intent.steps
    if not steps:
        _finish(job, deps, OrderStatus.SKIPPED, "NOT_AT_BROKER", (
            f"The ledger held {summary['held']}, but Fyers holds none of it (closed outside the router?). "
            "Nothing was sent; the ledger now says so."), fields={"intent": summary}, notify=True)
        return []
    intent = replace(intent, steps=steps)
    children = deps.store.add_children(job.record, [s.__dict__ for s in intent.steps[1:]], now=now)
    first = intent.steps[0].__dict__
    deps.store.update_fields(job.record.order_id, {"intent": summary, "step": first,
                                                   **({"children": children} if children else {})}, now=now)
    job.record = job.record.model_copy(update={"children": children or None, "step": first})
    return [(step, step_alert(alert, step)) for step in intent.steps]


def _held_at_broker(job: _Job, deps: WorkerDeps, alert: Alert, instrument: str,
                    steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """Closing steps cut to what Fyers holds: a close never sells what is not there (a leg
    closed by hand, outside the router), so it can never open the other way."""
    if not any(s.effect == "CLOSE" for s in steps):
        return steps
    net: dict[str, int] = {}
    for position in _call(job, deps, lambda broker: broker.positions()):
        net[position.symbol] = net.get(position.symbol, 0) + position.net_qty
    kept: list[Step] = []
    for step in steps:
        if step.effect != "CLOSE" or not step.ticker or not step.quantity:
            kept.append(step)
            continue
        lot = max(1, step.quantity // max(1, step.lots))
        there = max(0, net.get(step.ticker, 0) * -step.side)  # closing a long needs a long at Fyers
        quantity = min(step.quantity, there) // lot * lot
        net[step.ticker] = net.get(step.ticker, 0) + step.side * quantity
        if quantity < step.quantity:
            deps.ledger.not_at_broker(alert.strategy, instrument, step.ticker, step.quantity - quantity,
                                      order_id=job.record.order_id, now=deps.clock())
        if quantity:
            kept.append(replace(step, quantity=quantity, lots=quantity // lot))
    return tuple(kept)


def _cancel_working_entries(job: _Job, held: Position, deps: WorkerDeps) -> list[str]:
    """An exit while entries still work: cancel them at Fyers and count what they filled.
    Returns the broker ids cancelled."""
    working = [f for f in held.in_flight if f.effect == "OPEN" and f.quantity > 0 and f.broker_order_id]
    for item in working:
        broker_id = item.broker_order_id or ""
        try:
            _call(job, deps, lambda broker: broker.cancel_order(broker_id), budget=10.0)
        except BrokerRejected:
            pass  # it filled or ended meanwhile: the book below says which
        entry = deps.store.get(item.order_id)
        order = _call(job, deps, lambda broker: broker.order_by_id(broker_id), budget=10.0)
        if entry is not None and order is not None and (view := BookView.of([order])) is not None:
            job.outcomes.apply_book(entry, view, OrderStatus(entry.status))
        deps.store.add_event(job.record.order_id, OrderEvent(
            at=deps.clock(), to_status=OrderStatus.PLACING.value, reason="ENTRY_CANCELLED", by=deps.worker_id,
            message=f"Cancelled the working entry {item.order_id} (Fyers {broker_id}) before closing."))
    return [f.broker_order_id or f.order_id for f in working]


def _plan(job: _Job, step: Step | None, alert: Alert, deps: WorkerDeps, now: datetime, max_lots: int) -> Plan:
    closing = step is not None and step.effect == "CLOSE"
    return plan_order(alert, order_id=job.record.order_id, master=deps.master(), today=today_ist(now),
                      quote=lambda ticker: _ltp(ticker, job, deps),
                      positions=lambda: _call(job, deps, lambda broker: broker.positions()),
                      cover_only=(alert.strategy or "").upper() in deps.settings.cover_only_strategies and not closing,
                      # Closing what the strategy holds is never refused for size: it lowers the risk.
                      max_lots=None if closing else max_lots)


def _record_plan(job: _Job, plan: Plan, deps: WorkerDeps) -> None:
    fields = _plan_fields(plan)
    deps.store.update_fields(job.record.order_id, fields, now=deps.clock())
    job.record = OrderRecord.model_validate({**job.record.model_dump(), **fields})


def _next_steps(job: _Job, deps: WorkerDeps) -> None:
    """Place this order's later steps, in order, once it is settled; skip them if it did not go through."""
    if not job.record.children:
        return
    current = deps.store.get(job.record.order_id)
    for child_id in job.record.children:
        claim = deps.store.claim(child_id, worker_id=deps.worker_id, now=deps.clock(),
                                 lease=timedelta(seconds=deps.settings.lease_seconds))
        if claim.outcome != "claimed":
            continue  # done by an earlier delivery, or in another's hands
        child = _Job(job.command, claim.record, job.deadline, claim.record.lease_until, job.outcomes)
        if current is None or current.status != OrderStatus.PLACED.value:
            _finish(child, deps, OrderStatus.SKIPPED, "PREVIOUS_STEP_FAILED",
                    f"Not placed: the step before it ({job.record.order_id}) ended {current.status if current else 'unrecorded'}.",
                    notify=False)
            continue
        _guard_and_place(child, deps)


# --- placing and outcomes ---------------------------------------------------------


def _place(job: _Job, request: OrderRequest, deps: WorkerDeps, attempt: int = 1) -> None:
    """Send the order. What provably never reached Fyers is sent again with backoff while the
    signal is fresh; what may have reached it is settled from the book before anything else."""
    backoff = RESEND_BACKOFF_SECONDS
    while True:
        started, sent_at = time.monotonic(), deps.clock()
        try:
            result = _call(job, deps, lambda broker: broker.place_order(request), placement=True)
        except BrokerAmbiguous as exc:
            return _ambiguous(job, request, deps, attempt, exc, sent_at, started)
        except BrokerTransient as exc:
            resend_at = deps.clock() + timedelta(seconds=backoff)
            if resend_at < min(job.deadline, job.lease_until or job.deadline) and not isinstance(exc, RateLimited):
                deps.store.add_event(job.record.order_id, OrderEvent(
                    at=deps.clock(), to_status=OrderStatus.PLACING.value, reason="RESEND", by=deps.worker_id,
                    message=f"{exc.message} Sending again in {backoff:g} s.", latency_ms=_ms(started)))
                deps.sleep(backoff)
                backoff *= 2
                continue
            return _broker_failure(job, deps, exc, started=started)
        except BrokerError as exc:
            return _broker_failure(job, deps, exc, started=started)
        except RateLimitBudgetExceeded as exc:
            return _out_of_time(job, deps, exc)
        deps.breaker.record_success(deps.clock())
        return _placed(job, result, request, deps, started)


def _placed(job: _Job, result: PlaceResult, request: OrderRequest, deps: WorkerDeps, started: float | None) -> None:
    now = deps.clock()
    deps.store.transition(job.record.order_id, OrderStatus.PLACED, now=now, by=deps.worker_id,
                          from_status=OrderStatus.PLACING, reason="PLACED", message=f"Placed {_describe(request)}: Fyers order {result.order_id}.",
                          broker_code=result.code, broker_message=result.message,
                          latency_ms=_ms(started) if started else None,
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
    placed = job.record.model_copy(update={"broker_order_id": result.order_id,
                                           "broker_order_ids": list(result.order_ids), "placed_at": now})
    deps.ledger.placed(placed, ticker=request.symbol, side=request.side, quantity=request.qty,
                       effect=(job.record.step or {}).get("effect", "OPEN"), broker_order_id=result.order_id, now=now)
    _read_back(job, placed, deps)


def _read_back(job: _Job, record: OrderRecord, deps: WorkerDeps) -> None:
    """Catch an immediate RMS rejection (book status 5) and count the fills, from one read of
    the book shared with the other orders placed meanwhile. A clear placement needs no more."""
    try:
        if job.record.children:  # a later step waits on this one: read it now, not with the burst
            order = _call(job, deps, lambda broker: broker.order_by_id(record.broker_order_id or ""), budget=5.0)
            view = BookView.of([order]) if order is not None else None
        else:
            rows = deps.book.read(lambda: _call(job, deps, lambda broker: broker.orders(), budget=5.0), timeout=10.0)
            view = Book(rows).view(record) if rows is not None else None
    except (BrokerError, RateLimitBudgetExceeded):
        return  # the scheduler's reconcile job will read it later
    if view is not None:
        job.outcomes.apply_book(record, view, OrderStatus.PLACED)


def _ambiguous(job: _Job, request: OrderRequest, deps: WorkerDeps, attempt: int, exc: BrokerAmbiguous,
               sent_at: datetime, started: float) -> None:
    """A placement that may still be booked: never send it again before its landing bound."""
    may_land_until = sent_at + timedelta(seconds=deps.settings.placement_landing_seconds)
    job.lease_until = may_land_until + timedelta(seconds=deps.settings.lease_seconds)  # hold it while we wait
    deps.store.transition(job.record.order_id, OrderStatus.UNKNOWN, now=deps.clock(), by=deps.worker_id,
                          from_status=OrderStatus.PLACING, reason="AMBIGUOUS", message=exc.message,
                          broker_code=exc.broker_code, broker_message=exc.broker_message, latency_ms=_ms(started),
                          fields={"broker_request": request.to_fyers(), "may_land_until": may_land_until,
                                  "lease_until": job.lease_until})
    if _settled_by_book(job, deps, may_land_until, current=OrderStatus.UNKNOWN, request=request):
        return
    if attempt >= MAX_PLACEMENTS:
        return job.outcomes.finish(job.record, OrderStatus.FAILED, "NOT_PLACED", (
            f"Fyers answered none of {attempt} attempts and booked none of them (absent from the book "
            f"{deps.settings.placement_landing_seconds:g} s after each was sent). Nothing is open at Fyers from "
            "this signal: place it by hand only if you still want it."), from_status=OrderStatus.UNKNOWN)
    deps.store.transition(job.record.order_id, OrderStatus.PLACING, now=deps.clock(), by=deps.worker_id,
                          from_status=OrderStatus.UNKNOWN, reason="REPLACE",
                          message="Not in the book after its landing bound, and the signal is fresh: placing again.")
    _place(job, request, deps, attempt + 1)


def _settled_by_book(job: _Job, deps: WorkerDeps, may_land_until: datetime, *, current: OrderStatus,
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


def _found_in_book(job: _Job, deps: WorkerDeps, *, reason: str, current: OrderStatus,
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


def _lookup(job: _Job, deps: WorkerDeps, request: OrderRequest | None) -> BookView | None:
    if request is None or request.tag is not None:
        return BookView.of(_call(job, deps, lambda broker: broker.orders_by_tag(job.record.order_id), budget=10.0))
    # CO/BO carry no tag: the same symbol, side and quantity, placed since this order arrived.
    book = Book(_call(job, deps, lambda broker: broker.orders(), budget=10.0))
    return BookView.of(book.signature_matches(request.symbol, request.side, request.qty, job.record.received_at)[:1])


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


def _out_of_time(job: _Job, deps: WorkerDeps, exc: RateLimitBudgetExceeded) -> None:
    """No broker slot before the signal grows too old: EXPIRED, saying what it waited behind.
    The trader hears of it once per burst, not once per order: each is in the console."""
    settings = deps.settings
    message = (f"Not placed: it waited behind {exc.ahead} order(s) for Fyers' rate limit "
               f"({settings.orders_per_second}/s, {settings.orders_per_minute}/min), and the signal would be over "
               f"{settings.max_order_age_seconds} s old by its turn.")
    _finish(job, deps, OrderStatus.EXPIRED, "RATE_BUDGET", message, notify=False)
    job.outcomes.notify_once_per_burst(NotificationKind.ORDER_EXPIRED, severity=Severity.WARNING,
                                       title="Orders are expiring: Fyers' rate limit is the bottleneck",
                                       text=f"{message} Every expired order is in the console with its reason; "
                                            "more expiries in this burst are not told one by one.")


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
    """Record an outcome of this delivery (see :meth:`Outcomes.finish`)."""
    job.outcomes.finish(job.record, status, reason, message, from_status=from_status, fields=fields,
                        broker_code=broker_code, broker_message=broker_message, notify=notify)


# --- helpers --------------------------------------------------------------------


def _call(job: _Job, deps: WorkerDeps, call: Callable[[Trading], T], *, budget: float | None = None,
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


def _priority(job: _Job) -> tuple[int, float]:
    """Exits and reductions take broker slots before entries; then the oldest signal first."""
    closing = (job.record.step or {}).get("effect") == "CLOSE"
    return (0 if closing else 1, job.deadline.timestamp())


def _ltp(ticker: str, job: _Job, deps: WorkerDeps) -> float:
    """The last price, shared with the other deliveries asking for it (``deps.quotes``)."""
    return deps.quotes.ltp(ticker, lambda wanted: _quote(wanted, job, deps))


def _quote(ticker: str, job: _Job, deps: WorkerDeps) -> float:
    quotes = _call(job, deps, lambda broker: broker.quotes([ticker]))
    if ticker not in quotes or quotes[ticker].ltp <= 0:
        raise BrokerTransient(f"No last price for {ticker} from Fyers.")
    return quotes[ticker].ltp


def _plan_fields(plan: Plan) -> dict[str, Any]:
    return {
        "contract": contract_doc(plan.contract),
        "quantity": plan.request.qty, "ltp": plan.ltp, "underlying_ltp": plan.underlying_ltp,
        "sl_price": plan.sl_price, "tp_price": plan.tp_price, "broker_request": plan.request.to_fyers(),
    }


def _describe(request: OrderRequest) -> str:
    side = "BUY" if request.side == 1 else "SELL"
    return f"{side} {request.qty} {request.symbol} {request.product}"


def _ms(started: float | None) -> float | None:
    return None if started is None else round((time.monotonic() - started) * 1000, 1)

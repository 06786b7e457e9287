"""The position: what the signal means for the strategy's position, in orders (intent steps,
cut to what Fyers holds, working entries cancelled before an exit), and the first one planned."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from common.alert import Alert
from common.errors import BrokerRejected, NoPosition
from common.intent import Step, derive, instrument_of_alert, names_one_contract, step_alert
from common.ledger import Position
from common.outcome import BookView
from common.placement import Plan, plan_order
from common.records import OrderEvent, OrderRecord, OrderStatus, contract_doc, today_ist
from functions.order_worker.broker_calls import call_broker, ltp, shared_read
from functions.order_worker.deps import Job, WorkerDeps
from functions.order_worker.endings import finish


def intent_steps(job: Job, alert: Alert, deps: WorkerDeps, now: datetime,
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
    if closing:  # its broker calls from here on go before entries' (see broker_calls._priority)
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
            finish(job, deps, OrderStatus.SKIPPED, "ENTRY_CANCELLED", (
                f"Cancelled the working entry {', '.join(cancelled)}: nothing of it was filled, so nothing is "
                "left to close."), fields={"intent": summary}, notify=False)
            return []
        if intent.kind == "NONE":
            finish(job, deps, OrderStatus.SKIPPED, "NO_CHANGE", f"Nothing to do: {intent.reason}.",
                   fields={"intent": summary}, notify=False)
            return []
        if intent.kind == "EXIT" and names_one_contract(alert):
            # A position opened by hand: the broker's net position in the named contract decides.
            return [(None, alert)]
        raise NoPosition(f"No position to close: {intent.reason}.")
    steps = _held_at_broker(job, deps, alert, instrument, intent.steps) if not dry_run else intent.steps
    if not steps:
        finish(job, deps, OrderStatus.SKIPPED, "NOT_AT_BROKER", (
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


def _held_at_broker(job: Job, deps: WorkerDeps, alert: Alert, instrument: str,
                    steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """Closing steps cut to what Fyers holds: a close never sells what is not there (a leg
    closed by hand, outside the router), so it can never open the other way."""
    if not any(s.effect == "CLOSE" for s in steps):
        return steps
    positions = shared_read(job, deps, deps.positions, lambda broker: broker.positions(),
                            timeout=max(0.0, (job.deadline - deps.clock()).total_seconds()))
    if positions is None:  # the shared read failed: read alone
        positions = call_broker(job, deps, lambda broker: broker.positions())
    net: dict[str, int] = {}
    for position in positions:
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


def _cancel_working_entries(job: Job, held: Position, deps: WorkerDeps) -> list[str]:
    """An exit while entries still work: cancel them at Fyers and count what they filled.
    Returns the broker ids cancelled."""
    working = [f for f in held.in_flight if f.effect == "OPEN" and f.quantity > 0 and f.broker_order_id]
    for item in working:
        broker_id = item.broker_order_id or ""
        try:
            call_broker(job, deps, lambda broker: broker.cancel_order(broker_id), budget=10.0)
        except BrokerRejected:
            pass  # it filled or ended meanwhile: the book below says which
        entry = deps.store.get(item.order_id)
        order = call_broker(job, deps, lambda broker: broker.order_by_id(broker_id), budget=10.0)
        if entry is not None and order is not None and (view := BookView.of([order])) is not None:
            job.outcomes.apply_book(entry, view, OrderStatus(entry.status))
        deps.store.add_event(job.record.order_id, OrderEvent(
            at=deps.clock(), to_status=OrderStatus.PLACING.value, reason="ENTRY_CANCELLED", by=deps.worker_id,
            message=f"Cancelled the working entry {item.order_id} (Fyers {broker_id}) before closing."))
    return [f.broker_order_id or f.order_id for f in working]


def plan_step(job: Job, step: Step | None, alert: Alert, deps: WorkerDeps, now: datetime, max_lots: int) -> Plan:
    closing = step is not None and step.effect == "CLOSE"
    return plan_order(alert, order_id=job.record.order_id, master=deps.master(), today=today_ist(now),
                      quote=lambda ticker: ltp(ticker, job, deps),
                      positions=lambda: call_broker(job, deps, lambda broker: broker.positions()),
                      cover_only=(alert.strategy or "").upper() in deps.settings.cover_only_strategies and not closing,
                      # Closing what the strategy holds is never refused for size: it lowers the risk.
                      max_lots=None if closing else max_lots)


def record_plan(job: Job, plan: Plan, deps: WorkerDeps) -> None:
    fields = _plan_fields(plan)
    deps.store.update_fields(job.record.order_id, fields, now=deps.clock())
    job.record = OrderRecord.model_validate({**job.record.model_dump(), **fields})


def _plan_fields(plan: Plan) -> dict[str, Any]:
    return {
        "contract": contract_doc(plan.contract),
        "quantity": plan.request.qty, "ltp": plan.ltp, "underlying_ltp": plan.underlying_ltp,
        "sl_price": plan.sl_price, "tp_price": plan.tp_price, "broker_request": plan.request.to_fyers(),
    }


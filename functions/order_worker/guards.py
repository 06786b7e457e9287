"""The guards an order passes before it is planned and placed: age, kill switch, market
hours, allowed symbols, the daily limit, the circuit breaker."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Iterator

from common.alert import Alert
from common.controls import Controls
from common.errors import BrokerError, RouterError
from common.intent import signals_reduction
from common.market import market_closed_reason
from common.ratelimit import RateLimitBudgetExceeded
from common.records import OrderStatus, ist_day
from functions.order_worker.deps import Job, WorkerDeps
from functions.order_worker.endings import broker_failure, finish, out_of_time
from functions.order_worker.placing import describe_request, place
from functions.order_worker.position import intent_steps, plan_step, record_plan

# The most an exit keeps entries waiting while it prepares: its guards, ledger read and plan take
# well under a second, and a hold that outlived a stuck delivery must not stall the entries for long.
EXIT_HOLD_SECONDS = 5.0


def guard_and_place(job: Job, deps: WorkerDeps) -> None:
    """Guard the order, plan it from the strategy's position, and place it. An exit holds the
    entries back from here on (``_exits_first``): its guards' reads, its ledger and its plan all
    come before any entry's next broker slot."""
    alert = Alert.model_validate(job.command.alert)
    job.reduces = signals_reduction(alert)
    with _exits_first(job, deps):
        now = deps.clock()
        passed = _guards(job, deps, alert, now)
        if passed is None:
            return
        controls, dry_run = passed
        max_lots = min(deps.settings.max_lots_per_alert, controls.max_lots or deps.settings.max_lots_per_alert)
        try:
            steps = intent_steps(job, alert, deps, now, dry_run)
            if not steps:
                return
            step, step_alert = steps[0]
            plan = plan_step(job, step, step_alert, deps, now, max_lots)
        except BrokerError as exc:
            return broker_failure(job, deps, exc)
        except RateLimitBudgetExceeded as exc:
            return out_of_time(job, deps, exc)
        except RouterError as exc:
            return finish(job, deps, OrderStatus.REJECTED, exc.code, exc.message)
        record_plan(job, plan, deps)

        if dry_run:
            return finish(job, deps, OrderStatus.DRY_RUN, "DRY_RUN",
                          f"Dry run: would send {describe_request(plan.request)}.",
                          fields={"broker_request": plan.request.to_fyers()}, notify=False)
        place(job, plan.request, deps)


def _guards(job: Job, deps: WorkerDeps, alert: Alert, now: datetime) -> tuple[Controls, bool] | None:
    """The controls and whether this is a dry run, once every guard has passed; None when one
    finished the order."""
    settings = deps.settings
    if now > job.deadline:
        age = (now - job.deadline).total_seconds() + settings.max_order_age_seconds
        return finish(job, deps, OrderStatus.EXPIRED, "STALE",
                      f"The signal is {age:.0f} s old (limit {settings.max_order_age_seconds} s); not placed.")
    controls = deps.controls.get()
    if not controls.trading_enabled:
        return finish(job, deps, OrderStatus.BLOCKED, "KILL_SWITCH",
                      "Trading is switched off (system/controls.trading_enabled is false).")
    dry_run = settings.dry_run or controls.dry_run or alert.dry_run
    if settings.enforce_market_hours and not dry_run:
        closed = market_closed_reason(now, open_at=settings.market_open, close_at=settings.market_close,
                                      holidays=settings.market_holidays)
        if closed:
            return finish(job, deps, OrderStatus.BLOCKED, "MARKET_CLOSED", closed)
    if not settings.symbol_allowed(alert.underlying, alert.symbol):
        return finish(job, deps, OrderStatus.REJECTED, "NOT_ALLOWED", f"{alert.symbol} is not in the allowed symbols.")
    placed_today = deps.store.count_day(ist_day(now), [OrderStatus.PLACED, OrderStatus.UNKNOWN])
    if placed_today >= settings.max_orders_per_day and not dry_run:
        return finish(job, deps, OrderStatus.REJECTED, "DAILY_LIMIT",
                      f"{placed_today} orders placed today: the daily limit is {settings.max_orders_per_day}.")
    if not dry_run and (open_until := deps.breaker.open_until(now)):
        return finish(job, deps, OrderStatus.BLOCKED, "BREAKER_OPEN",
                      f"Broker calls paused after repeated failures, until {open_until:%H:%M:%S} UTC.")
    return controls, dry_run


@contextmanager
def _exits_first(job: Job, deps: WorkerDeps) -> Iterator[None]:
    """While an exit passes its guards, reads its ledger and plans, entries wait for the broker
    slot it will ask for; released once its placement is answered (``place``), once it ends
    otherwise, or after ``EXIT_HOLD_SECONDS``."""
    if not job.reduces:
        yield
        return
    with deps.limiter.ahead(0, within=EXIT_HOLD_SECONDS) as hold:
        job.hold = hold
        try:
            yield
        finally:
            job.hold = None


"""How a delivery ends: an outcome recorded on the order, or the order handed back to
QUEUED for Pub/Sub to redeliver while the signal is fresh."""

from __future__ import annotations

from typing import Any

from common.errors import BrokerError, BrokerRejected, BrokerTransient, RateLimited, TokenDead
from common.logs import get_logger
from common.notify import NotificationKind, Severity
from common.ratelimit import RateLimitBudgetExceeded, SendGateClosed
from common.records import OrderStatus
from functions.order_worker.broker_calls import elapsed_ms
from functions.order_worker.deps import Job, Retry, WorkerDeps

log = get_logger("order_worker")


def broker_failure(job: Job, deps: WorkerDeps, exc: BrokerError, *, started: float | None = None) -> None:
    """Map a broker failure class (other than ambiguity) to the order's outcome, or to a retry."""
    if isinstance(exc, TokenDead):
        deps.invalidate_token()
        deps.needs_login(exc.message, deps.clock())
        return finish(job, deps, OrderStatus.FAILED, "NEEDS_LOGIN",
                      "The Fyers session has expired: log in again (daily 2FA), then re-send the signal if still valid.",
                      broker_code=exc.broker_code, broker_message=exc.broker_message)
    if isinstance(exc, BrokerRejected):
        return finish(job, deps, OrderStatus.REJECTED, "BROKER_REJECTED", exc.broker_message or exc.message,
                      broker_code=exc.broker_code, broker_message=exc.broker_message)
    if isinstance(exc, RateLimited):
        return _release(job, deps, "RATE_LIMITED", f"Fyers rate limit: retry in {exc.retry_after:.1f} s.")
    if isinstance(exc, BrokerTransient):
        if deps.breaker.record_failure(deps.clock(), exc.message):
            log.error("circuit breaker opened")
        return _release(job, deps, "BROKER_TRANSIENT", exc.message, elapsed_ms(started))
    return finish(job, deps, OrderStatus.FAILED, exc.code, exc.message)


def out_of_time(job: Job, deps: WorkerDeps, exc: RateLimitBudgetExceeded) -> None:
    """No broker slot before the signal grows too old: EXPIRED, saying what it waited behind
    (Fyers' rate limit, or the pacer lease). The trader hears of it once per burst, not once
    per order: each is in the console."""
    settings = deps.settings
    age = f"the signal would be over {settings.max_order_age_seconds} s old by its turn."
    if isinstance(exc, SendGateClosed):
        reason, title = "PACER_LEASE", "Orders are expiring: no worker instance could take Fyers' pace"
        message = f"Not placed: {exc.why}, and {age}"
    else:
        reason, title = "RATE_BUDGET", "Orders are expiring: Fyers' rate limit is the bottleneck"
        message = (f"Not placed: it waited behind {exc.ahead} order(s) for Fyers' rate limit "
                   f"({settings.orders_per_second}/s, {settings.orders_per_minute}/min), and {age}")
    finish(job, deps, OrderStatus.EXPIRED, reason, message, notify=False)
    job.outcomes.notify_once_per_burst(NotificationKind.ORDER_EXPIRED, severity=Severity.WARNING, title=title,
                                       text=f"{message} Every expired order is in the console with its reason; "
                                            "more expiries in this burst are not told one by one.")


def _release(job: Job, deps: WorkerDeps, reason: str, message: str, latency: float | None = None) -> None:
    """Hand the order back to QUEUED and nack, if the budget allows; else EXPIRED."""
    if deps.clock() >= job.deadline:
        return finish(job, deps, OrderStatus.EXPIRED, reason, f"{message} The signal is now too old to retry.")
    deps.store.transition(job.record.order_id, OrderStatus.QUEUED, now=deps.clock(), by=deps.worker_id,
                          from_status=OrderStatus.PLACING, reason=reason, message=f"{message} Will retry.",
                          latency_ms=latency, fields={"lease_until": None})
    raise Retry(message)


def finish(job: Job, deps: WorkerDeps, status: OrderStatus, reason: str, message: str, *,
           fields: dict[str, Any] | None = None, broker_code: int | None = None, broker_message: str | None = None,
           from_status: OrderStatus = OrderStatus.PLACING, notify: bool = True) -> None:
    """Record an outcome of this delivery (see :meth:`Outcomes.finish`)."""
    job.outcomes.finish(job.record, status, reason, message, from_status=from_status, fields=fields,
                        broker_code=broker_code, broker_message=broker_message, notify=notify)


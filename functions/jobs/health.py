"""The ``health`` job: one look at everything that stops orders from flowing.

Checks, each a named problem when wrong:

* ``SESSION_*``: the Fyers session (``system/broker_session``) is not authenticated
  or its token has expired. Only while the market is open: tokens die at 06:00 IST
  every day and the ``session`` job already asks for the morning login;
* ``MASTER_MISSING`` / ``MASTER_STALE``: no symbol master, or the source has not
  confirmed it for ``master_max_age``;
* ``BREAKER_OPEN``: the broker circuit breaker (``system/breaker``) is open;
* ``KILL_SWITCH``: trading is disabled in ``system/controls`` (deliberate, but a
  reminder that alerts are being refused is worth having);
* ``ORDER_STUCK``: an order of today or yesterday (IST) has sat in ``QUEUED``,
  ``PLACING`` or ``UNKNOWN`` for more than ``stuck_after``.

It also counts yesterday's and today's orders by status. When something is wrong
the trader gets a ``HEALTH`` notification, at most once per ``notify_every`` for
the same set of problems: the decision is a Firestore transaction on
``system/health``, so two runs at once send one notice.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.breaker import CircuitBreaker
from common.controls import ControlsReader
from common.logs import get_logger
from common.market import market_closed_reason
from common.master_store import MasterRepository
from common.notify import Notification, NotificationKind, Notifier, Severity
from common.orders import OrderStore
from common.records import IST, SYSTEM, OrderRecord, OrderStatus, ist_day
from common.session import SessionStatus, SessionStore
from common.settings import Settings

log = get_logger("jobs.health")

HEALTH_DOC = "health"
STUCK_STATUSES = (OrderStatus.QUEUED, OrderStatus.PLACING, OrderStatus.UNKNOWN)
MAX_LISTED_ORDERS = 20


@dataclass
class HealthDeps:
    """What the health job needs; ``timeout`` applies to each Firestore call."""

    settings: Settings
    db: Any  # Firestore client
    masters: MasterRepository
    notifier: Notifier
    timeout: float = 10.0
    stuck_after: timedelta = timedelta(minutes=5)
    master_max_age: timedelta = timedelta(hours=26)  # a daily refresh, plus slack
    notify_every: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    subject: str = ""  # what it is about (an order id), when there can be several

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, **({"subject": self.subject} if self.subject else {})}


def run_health(deps: HealthDeps, now: datetime) -> dict[str, Any]:
    """Check once; a JSON-able report with ``ok`` and ``problems``. Firestore failures raise."""
    problems: list[Problem] = []
    report: dict[str, Any] = {"checked_at": now.isoformat()}
    report["session"] = _session(deps, now, problems)
    report["master"] = _master(deps, now, problems)
    report["breaker"] = _breaker(deps, now, problems)
    report["controls"] = _controls(deps, problems)
    days = {"today": ist_day(now), "yesterday": ist_day(now - timedelta(days=1))}
    store = OrderStore(deps.db, timeout=deps.timeout)
    orders = {label: store.orders_of_day(day) for label, day in days.items()}
    report["counts"] = {label: {"day": days[label], **_counts(records)} for label, records in orders.items()}
    report["stuck_orders"] = _stuck(orders["yesterday"] + orders["today"], deps.stuck_after, now, problems)
    report["ok"] = not problems
    report["problems"] = [p.as_dict() for p in problems]
    report["notified"] = _notify(deps, problems, now)
    log.info("health checked", extra={"fields": {"ok": report["ok"], "problems": [p.code for p in problems]}})
    return report


def _session(deps: HealthDeps, now: datetime, problems: list[Problem]) -> dict[str, Any]:
    session = SessionStore(deps.db, timeout=deps.timeout).get()
    expired = session.expires_at is not None and session.expires_at <= now
    settings = deps.settings
    closed = market_closed_reason(now, open_at=settings.market_open, close_at=settings.market_close,
                                  holidays=settings.market_holidays)
    if closed is None:
        if session.status == SessionStatus.NEEDS_LOGIN:
            problems.append(Problem("SESSION_NEEDS_LOGIN", "The Fyers session is dead"
                                    + (f" ({session.reason})" if session.reason else "") + ": log in."))
        elif session.status != SessionStatus.AUTHENTICATED:
            problems.append(Problem("SESSION_UNKNOWN", "No Fyers session is recorded: log in."))
        elif expired:
            when = session.expires_at.astimezone(IST)  # type: ignore[union-attr]  # expired implies a time
            problems.append(Problem("SESSION_EXPIRED", f"The Fyers token expired at {when:%d %b %H:%M} IST: log in."))
    return {"status": session.status, "expires_at": _iso(session.expires_at), "expired": expired,
            "checked_at": _iso(session.checked_at), "market_open": closed is None}


def _master(deps: HealthDeps, now: datetime, problems: list[Problem]) -> dict[str, Any]:
    pointer = deps.masters.pointer()
    if pointer is None:
        problems.append(Problem("MASTER_MISSING", "No symbol master has been published: run the symbols job."))
        return {"version": None}
    confirmed = pointer.checked_at or pointer.refreshed_at
    age = now - confirmed
    if age > deps.master_max_age:
        problems.append(Problem("MASTER_STALE", f"The symbol master was last confirmed "
                                f"{age.total_seconds() / 3600:.0f} h ago (version {pointer.version})."))
    return {"version": pointer.version, "refreshed_at": _iso(pointer.refreshed_at), "checked_at": _iso(confirmed),
            "age_hours": round(age.total_seconds() / 3600, 2), "data_date": pointer.data_date}


def _breaker(deps: HealthDeps, now: datetime, problems: list[Problem]) -> dict[str, Any]:
    settings = deps.settings
    breaker = CircuitBreaker(deps.db, threshold=settings.breaker_threshold,
                             cooldown=timedelta(seconds=settings.breaker_cooldown_seconds), timeout=deps.timeout)
    state = breaker.state()
    open_now = state.state == "OPEN" and state.open_until is not None and state.open_until > now
    if open_now:
        until = state.open_until.astimezone(IST)  # type: ignore[union-attr]  # open_now implies a time
        problems.append(Problem("BREAKER_OPEN", f"Broker calls are paused until {until:%H:%M:%S} IST "
                                f"after repeated failures ({state.last_error or 'no detail'})."))
    return {"state": state.state, "open": open_now, "open_until": _iso(state.open_until),
            "consecutive_failures": state.consecutive_failures}


def _controls(deps: HealthDeps, problems: list[Problem]) -> dict[str, Any]:
    controls = ControlsReader(deps.db, ttl=0, timeout=deps.timeout).get()
    if not controls.trading_enabled:
        problems.append(Problem("KILL_SWITCH", "Trading is disabled (system/controls trading_enabled is false)."))
    return {"trading_enabled": controls.trading_enabled, "dry_run": controls.dry_run,
            "max_lots": controls.max_lots}


def _counts(records: list[OrderRecord]) -> dict[str, Any]:
    by_status = Counter(OrderStatus(r.status).value for r in records)
    return {"total": len(records), "by_status": dict(sorted(by_status.items()))}


def _stuck(records: list[OrderRecord], after: timedelta, now: datetime,
           problems: list[Problem]) -> list[dict[str, Any]]:
    stuck = sorted((r for r in records if r.status in STUCK_STATUSES and now - r.updated_at > after),
                   key=lambda r: r.updated_at)
    for record in stuck:
        minutes = (now - record.updated_at).total_seconds() / 60
        status = OrderStatus(record.status).value
        problems.append(Problem("ORDER_STUCK", f"{record.action} {record.symbol} has been {status} "
                                f"for {minutes:.0f} min.", subject=record.order_id))
    return [{"order_id": r.order_id, "status": OrderStatus(r.status).value, "since": _iso(r.updated_at),
             "symbol": r.symbol} for r in stuck[:MAX_LISTED_ORDERS]]


def _notify(deps: HealthDeps, problems: list[Problem], now: datetime) -> bool:
    """Record this check on ``system/health``; notify if the problem set is new or an hour old."""
    from google.cloud import firestore

    key = hashlib.sha256("\n".join(sorted(f"{p.code}:{p.subject}" for p in problems)).encode()).hexdigest()[:16]
    ref = deps.db.collection(SYSTEM).document(HEALTH_DOC)

    @firestore.transactional
    def claim(transaction: Any) -> bool:
        snap = ref.get(transaction=transaction, timeout=deps.timeout)
        doc = (snap.to_dict() or {}) if snap.exists else {}
        update: dict[str, Any] = {"checked_at": now, "ok": not problems, "problems": sorted({p.code for p in problems})}
        last = doc.get("notified_at")
        due = bool(problems) and (doc.get("problem_key") != key or last is None or now - last >= deps.notify_every)
        if due:
            update.update(problem_key=key, notified_at=now)
        elif not problems:
            update.update(problem_key=None, notified_at=None)  # a recurrence is news again
        transaction.set(ref, update, merge=True)
        return due

    if not claim(deps.db.transaction()):
        return False
    shown = problems[:8]
    text = "; ".join(p.message for p in shown) + (f"; and {len(problems) - len(shown)} more" if problems[8:] else "")
    urgent = any(p.code.startswith(("SESSION", "BREAKER")) for p in problems)
    severity = Severity.CRITICAL if urgent else Severity.WARNING
    result = deps.notifier.send(Notification(
        kind=NotificationKind.HEALTH, severity=severity, at=now,
        title=f"Router health: {len(problems)} problem{'s' if len(problems) != 1 else ''}", text=text))
    if "sent" not in (result.pubsub.status, result.telegram.status, result.webhook.status):
        # Nobody heard it: let the next run try again instead of waiting out the hour.
        ref.update({"notified_at": None}, timeout=deps.timeout)
        return False
    return True


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None

"""The ``reconcile`` job: bring today's orders in line with Fyers' order book.

One read of the whole order book per run, whatever the number of orders. Why not
one ``orders_by_tag`` call per order: Fyers allows 200 requests a minute per app,
shared with the worker's placements, and more than three per-minute breaches in a
day block the app until the next day; a single call cannot breach. And only the
whole book shows orders carrying our tag format that we have no record of.

For today's (IST) orders:

* ``PLACED``: fills (``filled_qty``, ``avg_price``), ``broker_status`` (FILLED,
  PENDING, CANCELLED...) and ``reconciled_at`` are written when they change; a
  book status 5 moves the order to ``REJECTED`` with Fyers' message and notifies
  ``ORDER_REJECTED``. Orders whose broker status is final are not looked at again.
* ``UNKNOWN`` (a placement without a clear answer): found in the book -> ``PLACED``
  with its ``broker_order_id`` (or ``REJECTED``); not found -> it stays ``UNKNOWN``,
  is reported, and ``ORDER_UNKNOWN`` is notified once.
* ``PLACING`` with an expired lease (a worker died mid-placement): reported only,
  with whether the book has it; the worker's redelivery re-checks the book itself.

Orders are matched by tag (the order id is the ``orderTag``) or by the broker
order ids recorded at placement. A status change re-reads the order first and is
skipped if someone else changed it meanwhile. Notifications are sent once per
order and kind: a ``create()`` of ``orders/{id}/notices/{kind}`` decides, so two
runs at once notify once.

A dead token is not a crash: the report says ``NEEDS_LOGIN``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from common.broker.models import FINAL_STATUSES, STATUS_NAMES, BrokerOrder
from common.errors import TokenDead
from common.logs import get_logger
from common.notify import Notification, NotificationKind, Notifier, Severity
from common.orders import OrderStore
from common.records import ORDERS, OrderRecord, OrderStatus, ist_day
from common.settings import Settings

log = get_logger("jobs.reconcile")

BY = "reconcile"
NOTICES = "notices"  # subcollection of an order: one document per notification kind sent
OUR_TAG = re.compile(r"^tv[0-9a-f]{24}$")  # common.idempotency.order_id_for
FINAL_NAMES = frozenset(STATUS_NAMES[s] for s in FINAL_STATUSES)
REJECTED = STATUS_NAMES[5]


class OrderBook(Protocol):
    """The part of the broker adapter this job uses."""

    def orders(self) -> list[BrokerOrder]: ...


@dataclass
class ReconcileDeps:
    """What the reconcile job needs. ``broker`` is called once per run (it may raise TokenDead)."""

    settings: Settings
    store: OrderStore
    broker: Callable[[], OrderBook]
    notifier: Notifier
    timeout: float = 10.0  # per Firestore call made here (the store has its own)


@dataclass(frozen=True)
class BrokerView:
    """What the book says about one of our orders (several rows when it was sliced)."""

    orders: tuple[BrokerOrder, ...]

    @property
    def ids(self) -> list[str]:
        return [o.id for o in self.orders]

    @property
    def filled_qty(self) -> int:
        return sum(o.filled_qty for o in self.orders)

    @property
    def avg_price(self) -> float | None:
        filled = self.filled_qty
        return round(sum(o.traded_price * o.filled_qty for o in self.orders) / filled, 6) if filled else None

    @property
    def status(self) -> str:
        """The common status name; ``PENDING`` while any slice is live; ``MIXED`` for mixed final ones."""
        names = {o.status_name for o in self.orders}
        if len(names) == 1:
            return names.pop()
        return "MIXED" if names <= FINAL_NAMES else "PENDING"

    @property
    def message(self) -> str | None:
        rejected = [o.message for o in self.orders if o.status_name == REJECTED and o.message]
        return (rejected or [o.message for o in self.orders if o.message] or [None])[0]

    def fields(self, now: datetime) -> dict[str, Any]:
        fields: dict[str, Any] = {"broker_status": self.status, "filled_qty": self.filled_qty,
                                  "avg_price": self.avg_price, "reconciled_at": now}
        if self.message:
            fields["broker_message"] = self.message
        return fields


def run_reconcile(deps: ReconcileDeps, now: datetime) -> dict[str, Any]:
    """Reconcile today's orders once; a JSON-able report. Transient broker failures raise."""
    day = ist_day(now)
    records = deps.store.orders_of_day(day)
    report: dict[str, Any] = {"day": day, "orders_today": len(records)}
    try:
        book = deps.broker().orders()
    except TokenDead as exc:
        log.warning("reconcile skipped: the Fyers session is dead")
        return {**report, "ok": False, "status": "NEEDS_LOGIN", "reason": exc.message}
    by_tag: dict[str, list[BrokerOrder]] = defaultdict(list)
    by_id: dict[str, BrokerOrder] = {}
    for order in book:
        by_id[order.id] = order
        if order.tag:
            by_tag[order.tag].append(order)

    outcome: dict[str, list[Any]] = defaultdict(list)
    for record in records:
        view = _view(record, by_tag, by_id)
        status = OrderStatus(record.status)
        if status == OrderStatus.PLACED and record.broker_status not in FINAL_NAMES:
            _reconcile_placed(deps, record, view, now, outcome)
        elif status == OrderStatus.UNKNOWN:
            _reconcile_unknown(deps, record, view, now, outcome)
        elif status == OrderStatus.PLACING and (record.lease_until is None or record.lease_until <= now):
            outcome["stale_placing"].append({"order_id": record.order_id, "in_book": view is not None})

    known = {r.order_id for r in records}
    foreign = [_describe(orders) for tag, orders in sorted(by_tag.items())
               if OUR_TAG.match(tag) and tag not in known and deps.store.get(tag) is None]
    if foreign:
        log.warning("orders with our tag format have no record", extra={"fields": {"orders": foreign}})
    report.update({"book_orders": len(book), **{key: outcome.get(key, []) for key in (
        "filled", "updated", "placed", "rejected", "unknown", "missing", "stale_placing", "skipped")}})
    report["foreign"] = foreign
    report["ok"] = not (report["unknown"] or report["missing"] or report["stale_placing"] or foreign)
    report["status"] = "OK" if report["ok"] else "ATTENTION"
    return report


def _view(record: OrderRecord, by_tag: dict[str, list[BrokerOrder]],
          by_id: dict[str, BrokerOrder]) -> BrokerView | None:
    """The book rows of one of our orders: by tag, else by the ids recorded at placement."""
    rows = {o.id: o for o in by_tag.get(record.order_id, ())}
    for order_id in [record.broker_order_id, *(record.broker_order_ids or [])]:
        if order_id and order_id in by_id:
            rows.setdefault(order_id, by_id[order_id])
    rows = {i: o for i, o in rows.items() if o.parent_id is None or o.parent_id not in rows}  # BO/CO legs
    return BrokerView(tuple(sorted(rows.values(), key=lambda o: o.id))) if rows else None


def _reconcile_placed(deps: ReconcileDeps, record: OrderRecord, view: BrokerView | None, now: datetime,
                      outcome: dict[str, list[Any]]) -> None:
    if view is None:
        # Placed, yet absent from today's book: a human must look.
        outcome["missing"].append(record.order_id)
        return
    if view.status == REJECTED:
        _reject(deps, record, view, now, outcome)
        return
    fields = view.fields(now)
    if all(getattr(record, key) == value for key, value in fields.items() if key != "reconciled_at"):
        return
    deps.store.update_fields(record.order_id, fields, now=now)
    outcome["filled" if view.status == "FILLED" else "updated"].append(record.order_id)


def _reconcile_unknown(deps: ReconcileDeps, record: OrderRecord, view: BrokerView | None, now: datetime,
                       outcome: dict[str, list[Any]]) -> None:
    if view is None:
        outcome["unknown"].append(record.order_id)
        _notify_once(deps, record, NotificationKind.ORDER_UNKNOWN, now, severity=Severity.ERROR,
                     title=f"UNKNOWN {_what(record)}",
                     text="The broker's order book has no such order; check the Fyers app before re-sending.")
        return
    if view.status == REJECTED:
        _reject(deps, record, view, now, outcome)
        return
    if not _still(deps, record):
        outcome["skipped"].append(record.order_id)
        return
    placed_at = min((o.order_time for o in view.orders if o.order_time), default=None)
    fields = {**view.fields(now), "broker_order_id": view.ids[0], "broker_order_ids": view.ids,
              **({"placed_at": placed_at} if placed_at and record.placed_at is None else {})}
    deps.store.transition(record.order_id, OrderStatus.PLACED, now=now, by=BY, from_status=OrderStatus.UNKNOWN,
                          reason="FOUND_IN_BOOK", message=f"Found in the broker's order book ({view.status}).",
                          fields=fields)
    outcome["placed"].append(record.order_id)
    _notify_once(deps, record, NotificationKind.ORDER_PLACED, now, title=f"PLACED {_what(record)}",
                 text=f"Found in the broker's order book after an unclear placement ({view.status}).",
                 fields={"broker_order_id": view.ids[0]})


def _reject(deps: ReconcileDeps, record: OrderRecord, view: BrokerView, now: datetime,
            outcome: dict[str, list[Any]]) -> None:
    if not _still(deps, record):
        outcome["skipped"].append(record.order_id)
        return
    message = view.message or "Rejected by the broker."
    fields = {**view.fields(now), "broker_order_id": record.broker_order_id or view.ids[0]}
    deps.store.transition(record.order_id, OrderStatus.REJECTED, now=now, by=BY,
                          from_status=OrderStatus(record.status), reason="BROKER_REJECTED", message=message,
                          fields=fields, broker_message=view.message)
    outcome["rejected"].append(record.order_id)
    _notify_once(deps, record, NotificationKind.ORDER_REJECTED, now, severity=Severity.ERROR,
                 title=f"REJECTED {_what(record)}", text=message)


def _still(deps: ReconcileDeps, record: OrderRecord) -> bool:
    """Whether the order still has the status we read (a worker may have moved it since)."""
    current = deps.store.get(record.order_id)
    return current is not None and current.status == record.status


def _notify_once(deps: ReconcileDeps, record: OrderRecord, kind: NotificationKind, now: datetime, *,
                 title: str, text: str, severity: Severity = Severity.INFO,
                 fields: dict[str, str] | None = None) -> None:
    from google.api_core.exceptions import AlreadyExists

    ref = deps.store.db.collection(ORDERS).document(record.order_id).collection(NOTICES).document(kind.value)
    try:
        ref.create({"at": now, "by": BY}, timeout=deps.timeout)
    except AlreadyExists:
        return
    result = deps.notifier.send(Notification(kind=kind, severity=severity, title=title, text=text,
                                             order_id=record.order_id, fields=fields or {}, at=now))
    if "sent" not in (result.pubsub.status, result.telegram.status, result.webhook.status):
        ref.delete(timeout=deps.timeout)  # nobody heard it: the next run tries again


def _what(record: OrderRecord) -> str:
    ticker = record.contract.ticker if record.contract else record.symbol
    quantity = record.quantity if record.quantity is not None else f"{record.lots} lot(s)"
    return f"{ticker} {record.action} {quantity}"


def _describe(orders: list[BrokerOrder]) -> dict[str, Any]:
    first = orders[0]
    return {"tag": first.tag, "broker_order_ids": [o.id for o in orders], "symbol": first.symbol,
            "status": first.status_name, "qty": first.qty}

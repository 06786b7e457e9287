"""The ``reconcile`` job: bring today's orders in line with Fyers' order book.

One read of the whole order book per run, whatever the number of orders. Why not
one ``orders_by_tag`` call per order: Fyers allows 200 requests a minute per app,
shared with the worker's placements, and more than three per-minute breaches in a
day block the app until the next day; a single call cannot breach. And only the
whole book shows orders carrying our tag format that we have no record of.

For today's (IST) orders, through :class:`common.outcome.Outcomes` (the worker's
own outcome rules and notify-once):

* ``PLACED``: fills, ``broker_status`` and ``reconciled_at`` are written when they
  change; a book status 5 makes it ``REJECTED`` with Fyers' message. Orders whose
  broker status is final are not looked at again.
* ``UNKNOWN``, and ``PLACING`` whose lease has expired (a worker died mid-way):
  found in the book -> ``PLACED`` with its broker ids and fills (or ``REJECTED``),
  and the trader is told. Absent: while a request already sent may still land
  (``may_land_until``, or the broken lease plus ``PLACEMENT_LANDING_SECONDS``) it
  is left alone; after that, a still-fresh signal is released to ``QUEUED`` for
  Pub/Sub's redelivery, and an old one ends ``FAILED`` (``NOT_PLACED``), told.
* ``QUEUED`` but never published (Pub/Sub was down at ingest): told once as
  ``ORDER_NOT_QUEUED`` while fresh, ``EXPIRED`` (``NOT_QUEUED``) once too old.
* Duplicates at the broker: rows with an order's tag beyond its quantity are
  written on the order (``broker_duplicates``) and told as
  ``DUPLICATE_AT_BROKER``, naming every broker id. Orders with our tag format and
  no record are told as ``UNRECORDED_AT_BROKER`` (once, through ``anomalies``).

A status change re-reads the order first and is skipped if someone else changed
it meanwhile. A dead token is not a crash: the report says ``NEEDS_LOGIN``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from common.broker.models import BrokerOrder
from common.broker.ports import OrderBook
from common.errors import TokenDead
from common.idempotency import is_order_id
from common.ledger import Ledger
from common.logs import get_logger
from common.notify import Notification, NotificationKind, Notifier, Severity
from common.orders import OrderStore
from common.outcome import (
    FINAL_NAMES,
    Book,
    BookView,
    Outcomes,
    describe,
    landing_deadline,
    signal_deadline,
)
from common.records import OrderEvent, OrderRecord, OrderStatus, ist_day
from common.settings import Settings

log = get_logger("jobs.reconcile")

BY = "reconcile"
ANOMALIES = "anomalies"  # one document per broker order we have no record of, created once


@dataclass
class ReconcileDeps:
    """What the reconcile job needs. ``broker`` is called once per run (it may raise TokenDead)."""

    settings: Settings
    store: OrderStore
    broker: Callable[[], OrderBook]
    notifier: Notifier
    ledger: Ledger  # the strategies' positions: fills found here count there, once
    timeout: float = 10.0  # per Firestore call made here (the store has its own)


def run_reconcile(deps: ReconcileDeps, now: datetime) -> dict[str, Any]:
    """Reconcile today's orders once; a JSON-able report. Transient broker failures raise."""
    day = ist_day(now)
    records = deps.store.orders_of_day(day)
    report: dict[str, Any] = {"day": day, "orders_today": len(records)}
    try:
        book = Book(deps.broker().orders())
    except TokenDead as exc:
        log.warning("reconcile skipped: the Fyers session is dead")
        return {**report, "ok": False, "status": "NEEDS_LOGIN", "reason": exc.message}
    run = _Run(deps, now, Outcomes(deps.store, deps.notifier.send, lambda: now, BY, ledger=deps.ledger,
                                                timeout=deps.timeout))
    # Which broker order each record owns: an untagged (BO/CO) order matched by its signature is
    # another record's when that record holds its id, or, unheld, the earliest signal's that matches.
    owners = {i: r.order_id for r in records for i in (r.broker_order_id, *(r.broker_order_ids or [])) if i}
    for record in sorted(records, key=lambda r: r.received_at):
        view = book.view(record, owners)
        owners.update({i: record.order_id for i in (view.ids if view else [])})
        run.reconcile(record, view)
    known = {r.order_id for r in records}
    for tag, rows in sorted(book.by_tag.items()):
        if is_order_id(tag) and tag not in known and deps.store.get(tag) is None:
            run.unrecorded(tag, rows)

    report.update({"book_orders": len(book.rows), **{key: run.outcome.get(key, []) for key in (
        "filled", "updated", "placed", "rejected", "missing", "landing", "released", "not_placed", "not_queued",
        "skipped", "duplicates", "unrecorded")}})
    report["ok"] = not (report["missing"] or report["not_placed"] or report["duplicates"] or report["unrecorded"])
    report["status"] = "OK" if report["ok"] else "ATTENTION"
    return report


class _Run:
    """One run's decisions, gathered into its report."""

    def __init__(self, deps: ReconcileDeps, now: datetime, outcomes: Outcomes) -> None:
        self.deps, self.now, self.outcomes = deps, now, outcomes
        self.outcome: dict[str, list[Any]] = defaultdict(list)

    def reconcile(self, record: OrderRecord, view: BookView | None) -> None:
        status = OrderStatus(record.status)
        if view is not None:
            view, extra = view.split(record.quantity)
            if extra:
                self._duplicates(record, view, extra)
        if status == OrderStatus.PLACED and record.broker_status not in FINAL_NAMES:
            self._placed(record, view)
        elif status == OrderStatus.UNKNOWN or (
                status == OrderStatus.PLACING and (record.lease_until is None or record.lease_until <= self.now)):
            self._unsettled(record, status, view)
        elif status == OrderStatus.QUEUED and record.publish_failed_at is not None and (
                record.published_at is None or record.published_at < record.publish_failed_at):
            self._unqueued(record)

    def _placed(self, record: OrderRecord, view: BookView | None) -> None:
        if view is None:
            self.outcome["missing"].append(record.order_id)  # placed, yet absent from today's book: a human must look
            return
        before = (record.broker_status, record.filled_qty, record.avg_price)
        if view.rejected and not self._still(record):
            return
        after = self.outcomes.apply_book(record, view, OrderStatus.PLACED)
        if after == OrderStatus.REJECTED:
            self.outcome["rejected"].append(record.order_id)
        elif before != (view.status, view.filled_qty, view.avg_price):
            self.outcome["filled" if view.status == "FILLED" else "updated"].append(record.order_id)

    def _unsettled(self, record: OrderRecord, status: OrderStatus, view: BookView | None) -> None:
        """UNKNOWN or stale PLACING: the book decides, once nothing sent can still land."""
        if not self._still(record):
            return
        if view is not None:
            after = self.outcomes.apply_book(record, view, status, announce=True)
            self.outcome["placed" if after == OrderStatus.PLACED else "rejected"].append(record.order_id)
            return
        if self.now < landing_deadline(record.lease_until, record.may_land_until, self.deps.settings,
                                       default=self.now):
            self.outcome["landing"].append(record.order_id)
        elif self.now < signal_deadline(record.alert_time, record.received_at, self.deps.settings):
            self.deps.store.transition(record.order_id, OrderStatus.QUEUED, now=self.now, by=BY, from_status=status,
                                       reason="RELEASED", fields={"lease_until": None},
                                       message="Not in Fyers' book after every request could have landed, and the "
                                               "signal is fresh: released for the next delivery to place.")
            self.outcome["released"].append(record.order_id)
        else:
            self.outcomes.not_placed(record, from_status=status)
            self.outcome["not_placed"].append(record.order_id)

    def _unqueued(self, record: OrderRecord) -> None:
        """Recorded, but never on the queue (Pub/Sub was down): told once; expired once too old."""
        if self.now >= signal_deadline(record.alert_time, record.received_at, self.deps.settings):
            if self._still(record):
                self.outcomes.finish(record, OrderStatus.EXPIRED, "NOT_QUEUED", (
                    "Never queued: Pub/Sub was unreachable on every delivery from TradingView, and the signal is "
                    "now too old. Nothing was sent to Fyers."), from_status=OrderStatus.QUEUED)
                self.outcome["not_queued"].append(record.order_id)
            return
        self.outcomes.notify_once(record, NotificationKind.ORDER_NOT_QUEUED, severity=Severity.WARNING,
                                  title=f"NOT QUEUED {describe(record)}", text=(
                                      "Pub/Sub was unreachable when TradingView sent it. TradingView re-sends for "
                                      "about 20 s; if the queue is back in time it is placed and you are told, "
                                      "otherwise it expires and you are told. Do not place it by hand."))
        self.outcome["not_queued"].append(record.order_id)

    def _duplicates(self, record: OrderRecord, own: BookView, extra: list[BrokerOrder]) -> None:
        ids = [o.id for o in extra]
        self.outcome["duplicates"].append({"order_id": record.order_id, "broker_order_ids": own.ids,
                                           "duplicates": ids})
        if record.broker_duplicates == ids:
            return
        message = (f"Fyers holds {len(extra)} more order(s) with this order's tag than it placed: "
                   f"{', '.join(ids)} beyond {', '.join(own.ids)}. Your position may be larger than the "
                   "strategy means: check the Fyers positions and close the excess by hand.")
        self.deps.store.update_fields(record.order_id, {"broker_duplicates": ids}, now=self.now)
        self.deps.store.add_event(record.order_id, OrderEvent(at=self.now, to_status=record.status,
                                                               reason="DUPLICATE_AT_BROKER", message=message, by=BY))
        self.outcomes.notify_once(record, NotificationKind.DUPLICATE_AT_BROKER, severity=Severity.CRITICAL,
                                  title=f"DUPLICATE AT FYERS {describe(record)}", text=message,
                                  fields={"broker_order_ids": ", ".join(own.ids + ids)})

    def unrecorded(self, tag: str, rows: list[BrokerOrder]) -> None:
        first = rows[0]
        seen = {"tag": tag, "broker_order_ids": [o.id for o in rows], "symbol": first.symbol,
                "status": first.status_name, "qty": first.qty}
        self.outcome["unrecorded"].append(seen)
        self.outcomes.tell_once(
            self.deps.store.db.collection(ANOMALIES).document(f"UNRECORDED_AT_BROKER-{tag}"),
            {**seen, "kind": "UNRECORDED_AT_BROKER", "seen_at": self.now},
            Notification(kind=NotificationKind.UNRECORDED_AT_BROKER, severity=Severity.CRITICAL,
                         title=f"UNRECORDED AT FYERS {first.symbol} {first.qty}", at=self.now, fields={"tag": tag},
                         text=(f"Fyers holds order(s) {', '.join(seen['broker_order_ids'])} with our tag format and "
                               "no record here. Check the Fyers positions: it may be an order placed twice.")))

    def _still(self, record: OrderRecord) -> bool:
        """Whether the order still has the status we read (a worker may have moved it since)."""
        current = self.deps.store.get(record.order_id)
        if current is None or current.status != record.status:
            self.outcome["skipped"].append(record.order_id)
            return False
        return True

"""An order's outcome: what Fyers' book says of it, how that moves the record, and who is told.

One home for the mapping "book rows -> status and fills", and for "tell the
trader once". The order worker (read-back, look-ups, takeovers) and the
reconcile job both go through :class:`Outcomes`, so an order reads the same in
the console whichever of them saw the book first, and a notice goes out once per
order and kind however many deliveries, retries and runs see the same outcome.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from common.broker.models import FINAL_STATUSES, STATUS_NAMES, BrokerOrder
from common.clock import Clock
from common.ledger import Ledger
from common.logs import get_logger
from common.notify import Notification, NotificationKind, Severity
from common.orders import OrderStore
from common.records import IST, ORDERS, OrderRecord, OrderStatus
from common.settings import Settings

log = get_logger(__name__)

NOTICES = "notices"  # one document per notice sent: under an order per kind, and top-level per burst
BURST_MINUTES = 5
FINAL_NAMES = frozenset(STATUS_NAMES[s] for s in FINAL_STATUSES)
REJECTED = STATUS_NAMES[5]

# The statuses the trader hears of when an order ends in them (PLACED is told only when it
# follows an UNKNOWN the trader was already told of: a normal placement is not news).
_NOTICE = {
    OrderStatus.REJECTED: (NotificationKind.ORDER_REJECTED, Severity.ERROR),
    OrderStatus.FAILED: (NotificationKind.ORDER_FAILED, Severity.ERROR),
    OrderStatus.EXPIRED: (NotificationKind.ORDER_EXPIRED, Severity.WARNING),
    OrderStatus.BLOCKED: (NotificationKind.ORDER_BLOCKED, Severity.WARNING),
    OrderStatus.UNKNOWN: (NotificationKind.ORDER_UNKNOWN, Severity.CRITICAL),
}


@dataclass(frozen=True)
class BookView:
    """What the book says about one of our orders (several rows when it was sliced)."""

    orders: tuple[BrokerOrder, ...]

    @classmethod
    def of(cls, rows: Iterable[BrokerOrder]) -> "BookView | None":
        """The view of these rows, BO/CO child legs left out; None when there are none."""
        by_id = {o.id: o for o in rows}
        kept = [o for o in by_id.values() if o.parent_id is None or o.parent_id not in by_id]
        return cls(tuple(sorted(kept, key=lambda o: o.id))) if kept else None

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
    def rejected(self) -> bool:
        return self.status == REJECTED

    @property
    def message(self) -> str | None:
        rejected = [o.message for o in self.orders if o.status_name == REJECTED and o.message]
        return (rejected or [o.message for o in self.orders if o.message] or [None])[0]

    def split(self, quantity: int | None) -> tuple["BookView", list[BrokerOrder]]:
        """This order's own rows, and the rows beyond its quantity: duplicates placed at Fyers.

        Rows count in the order Fyers booked them; slices of one placement add up to the
        quantity, so only a second placement spills over.
        """
        if not quantity:
            return self, []
        own: list[BrokerOrder] = []
        booked = sorted(self.orders, key=lambda o: (o.order_time is None, o.order_time.timestamp() if o.order_time else 0, o.id))
        for order in booked:
            if sum(o.qty for o in own) < quantity:
                own.append(order)
        extra = [o for o in self.orders if o not in own]
        return BookView(tuple(own)), extra

    @property
    def placed_at(self) -> datetime | None:
        return min((o.order_time for o in self.orders if o.order_time), default=None)

    def fields(self) -> dict[str, Any]:
        """The record's broker fields, as the console shows them."""
        fields: dict[str, Any] = {"broker_status": self.status, "filled_qty": self.filled_qty,
                                  "avg_price": self.avg_price, "broker_order_ids": self.ids}
        if self.message:
            fields["broker_message"] = self.message
        return fields


class Book:
    """A whole order book, indexed for finding our orders in it."""

    def __init__(self, rows: Iterable[BrokerOrder]) -> None:
        self.rows = list(rows)
        self.by_id = {o.id: o for o in self.rows}
        self.by_tag: dict[str, list[BrokerOrder]] = defaultdict(list)
        for order in self.rows:
            if order.tag:
                self.by_tag[order.tag].append(order)

    def view(self, record: OrderRecord, owners: dict[str, str] | None = None) -> BookView | None:
        """The rows of one of our orders: by tag, by the ids recorded at placement, and for an
        untagged (BO/CO) request by its signature, less the rows ``owners`` (broker id -> order
        id) gives to other orders. Rows beyond the order's quantity are duplicates (:meth:`BookView.split`)."""
        rows = list(self.by_tag.get(record.order_id, ()))
        rows += [self.by_id[i] for i in (record.broker_order_id, *(record.broker_order_ids or [])) if i in self.by_id]
        request = record.broker_request
        if request and not request.get("orderTag"):
            rows += [o for o in self.signature_matches(request.get("symbol"), request.get("side"), request.get("qty"),
                                                       record.received_at)
                     if (owners or {}).get(o.id, record.order_id) == record.order_id]
        return BookView.of(rows)

    def signature_matches(self, symbol: Any, side: Any, qty: Any, since: datetime) -> list[BrokerOrder]:
        """Untagged parent orders with this symbol, side and quantity, placed since ``since`` (less
        a little clock skew): how a BO/CO order, which cannot carry a tag, is recognised."""
        earliest = since - timedelta(seconds=5)
        return [o for o in self.rows if o.symbol == symbol and o.side == side and o.qty == qty
                and not o.parent_id and not o.tag and (o.order_time is None or o.order_time >= earliest)]


def signal_deadline(alert_time: datetime | None, received_at: datetime, settings: Settings) -> datetime:
    """The last moment an order may reach Fyers: ``MAX_ORDER_AGE_SECONDS`` after its signal
    (the alert's own time, or its arrival when earlier or absent)."""
    signal = min(t for t in (alert_time, received_at) if t is not None)
    return signal + timedelta(seconds=settings.max_order_age_seconds)


def landing_deadline(lease_until: datetime | None, may_land_until: datetime | None, settings: Settings,
                     *, default: datetime) -> datetime:
    """Until when a request already sent for an order may still be booked by Fyers: the bound
    recorded with an unclear placement, or the end of a holder's lease (it sends nothing after)
    plus ``PLACEMENT_LANDING_SECONDS``; ``default`` when neither is known."""
    landing = timedelta(seconds=settings.placement_landing_seconds)
    broken = lease_until + landing if lease_until else None
    return max((t for t in (broken, may_land_until) if t), default=default)


def describe(record: OrderRecord) -> str:
    """``NSE:NIFTY26NOV24500CE BUY 130``: what the trader recognises an order by."""
    ticker = record.contract.ticker if record.contract else record.symbol
    quantity = record.quantity if record.quantity is not None else f"{record.lots} lot(s)"
    return f"{ticker} {record.action} {quantity}"


class Outcomes:
    """Moves orders to their outcomes, and tells the trader once per order and kind."""

    def __init__(self, store: OrderStore, notify: Callable[[Notification], Any], clock: Clock, by: str,
                 *, ledger: Ledger | None = None, timeout: float = 10.0) -> None:
        self.store = store
        self._notify = notify
        self._clock = clock
        self._by = by
        self._ledger = ledger
        self._timeout = timeout

    def finish(self, record: OrderRecord, status: OrderStatus, reason: str, message: str, *,
               from_status: OrderStatus, fields: dict[str, Any] | None = None, broker_code: int | None = None,
               broker_message: str | None = None, notify: bool = True) -> None:
        """Record an outcome (final, or UNKNOWN parked for a human) and tell the trader when it needs attention."""
        self.store.transition(record.order_id, status, now=self._clock(), by=self._by, from_status=from_status,
                              reason=reason, message=message, fields=fields, broker_code=broker_code,
                              broker_message=broker_message)
        log.info("order finished", extra={"fields": {"status": status.value, "reason": reason}})
        if notify and status in _NOTICE:
            kind, severity = _NOTICE[status]
            self.notify_once(record, kind, title=f"{status.value} {describe(record)}", text=message,
                             severity=severity, fields={"strategy": record.strategy, "reason": reason})

    def not_placed(self, record: OrderRecord, *, from_status: OrderStatus) -> None:
        """FAILED ``NOT_PLACED``: absent from the book once nothing sent could still land, and too
        old to place again. Told, since the trader may be waiting for it."""
        self.finish(record, OrderStatus.FAILED, "NOT_PLACED", (
            "Fyers did not book the order (absent from the book after every request could have landed), and the "
            "signal is now too old to place again. Nothing is open at Fyers from this signal."), from_status=from_status)

    def apply_book(self, record: OrderRecord, view: BookView, current: OrderStatus, *,
                   announce: bool = False) -> OrderStatus:
        """Record what Fyers' book says of the order, now in ``current`` status; returns the new status.

        A rejected row (status 5) makes the order REJECTED with Fyers' message. Otherwise the
        order is PLACED with its broker ids and fills (fields only, when it already was). An
        order found after an unclear placement is announced when ``announce`` is set or the
        trader was told it was UNKNOWN.
        """
        now = self._clock()
        fields = {**view.fields(), "broker_order_id": record.broker_order_id or view.ids[0], "reconciled_at": now}
        self._count_fills(record, view, now)
        if view.rejected:
            self.finish(record, OrderStatus.REJECTED, "BROKER_REJECTED", view.message or "Rejected by Fyers RMS.",
                        from_status=current, fields=fields, broker_message=view.message)
            return OrderStatus.REJECTED
        if current == OrderStatus.PLACED:
            if any(getattr(record, key, None) != value for key, value in fields.items() if key != "reconciled_at"):
                self.store.update_fields(record.order_id, fields, now=now)
            return OrderStatus.PLACED
        if record.placed_at is None:
            fields["placed_at"] = view.placed_at or now
        self.store.transition(record.order_id, OrderStatus.PLACED, now=now, by=self._by, from_status=current,
                              reason="FOUND_IN_BOOK",
                              message=f"Fyers order {view.ids[0]} found in the book ({view.status}).", fields=fields)
        if announce or (current == OrderStatus.UNKNOWN and self.was_told(record, NotificationKind.ORDER_UNKNOWN)):
            self.notify_once(record, NotificationKind.ORDER_PLACED, title=f"PLACED {describe(record)}",
                             text=f"Found in Fyers' order book after an unclear placement ({view.status}).",
                             fields={"broker_order_id": view.ids[0]})
        return OrderStatus.PLACED

    def _count_fills(self, record: OrderRecord, view: BookView, now: datetime) -> None:
        """Bring the strategy's ledger up to the book's fills (each counted once), and tell the
        trader what a fill closed, with its P&L."""
        if self._ledger is None:
            return
        effect = self._ledger.filled(record, filled_qty=view.filled_qty, avg_price=view.avg_price,
                                     final=view.status in FINAL_NAMES, now=now)
        if effect is not None and effect.closed:
            pnl = sum(t.realised_pnl for t in effect.closed)
            self._notify(Notification(kind=NotificationKind.POSITION_CLOSED, title=f"{record.strategy or 'Position'}: "
                                      f"{effect.text()}", text=f"Realised P&L {pnl:+,.2f}.", order_id=record.order_id,
                                      fields={"strategy": record.strategy}, at=now))

    def notify_once(self, record: OrderRecord, kind: NotificationKind, *, title: str, text: str,
                    severity: Severity = Severity.INFO, fields: dict[str, Any] | None = None) -> bool:
        """Tell the trader, unless this order was already told of this kind. True when sent now.

        A ``create()`` of ``orders/{id}/notices/{kind}`` decides, so two deliveries or two runs
        at once send one notice. When no channel took it, the mark is removed and the next
        sighting tries again.
        """
        now = self._clock()
        return self.tell_once(self._notice(record.order_id, kind), {"at": now, "by": self._by, "title": title},
                              Notification(kind=kind, severity=severity, title=title, text=text,
                                           order_id=record.order_id, fields=fields or {}, at=now),
                              retry_unheard=True)

    def notify_once_per_burst(self, kind: NotificationKind, *, title: str, text: str,
                              severity: Severity = Severity.INFO) -> bool:
        """Tell the trader once per five-minute bucket of this kind: one notice for a burst of
        like outcomes (``notices/{kind}-{bucket}`` decides). True when sent now."""
        now = self._clock()
        local = now.astimezone(IST)
        bucket = f"{local:%Y%m%dT%H}{local.minute // BURST_MINUTES * BURST_MINUTES:02d}"
        return self.tell_once(self.store.db.collection(NOTICES).document(f"{kind.value}-{bucket}"),
                              {"at": now, "by": self._by, "title": title},
                              Notification(kind=kind, severity=severity, title=title, text=text, at=now))

    def tell_once(self, marker: Any, record: dict[str, Any], notification: Notification, *,
                  retry_unheard: bool = False) -> bool:
        """Send ``notification`` if creating the ``marker`` document with ``record`` succeeds: two
        deliveries or two runs at once send it once. With ``retry_unheard``, a notice no channel
        took removes its marker, so the next sighting tries again. True when sent now."""
        from google.api_core.exceptions import AlreadyExists

        try:
            marker.create(record, timeout=self._timeout)
        except AlreadyExists:
            return False
        result = self._notify(notification)
        channels = [getattr(result, name, None) for name in ("pubsub", "telegram", "webhook")]
        if retry_unheard and result is not None and all(c is not None and c.status != "sent" for c in channels):
            marker.delete(timeout=self._timeout)
            return False
        return True

    def was_told(self, record: OrderRecord, kind: NotificationKind) -> bool:
        return self._notice(record.order_id, kind).get(timeout=self._timeout).exists

    def _notice(self, order_id: str, kind: NotificationKind) -> Any:
        return self.store.db.collection(ORDERS).document(order_id).collection(NOTICES).document(kind.value)

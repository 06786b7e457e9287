"""The strategy position ledger: what each strategy holds at Fyers, built only from confirmed fills.

``positions/{id}``: one document per strategy and instrument (the underlying for
option and future alerts, the ticker otherwise). It holds the open ``legs`` (the
exact ticker, side, quantity in units and lots, average price, product, and the
orders that built it), the quantity still ``in_flight`` (placed, not yet filled,
apart from what is filled), and the ``realised_pnl`` so far.

``trades/{id}``: each closed round trip, with entry and exit prices, quantity and
realised P&L.

Every change runs in a Firestore transaction. A fill counts once however often it
is seen: the position keeps, per order, the quantity and value already counted
(``fills_counted``), and only the difference from the book's cumulative figures is
applied. Exits close these legs, never a contract resolved afresh (common/intent.py).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from common.records import IST, OrderRecord

POSITIONS = "positions"
TRADES = "trades"
NO_STRATEGY = "(no strategy)"

Side = Literal["LONG", "SHORT"]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Leg(_Doc):
    """One open contract of a strategy's position."""

    ticker: str
    side: Side
    quantity: int  # units
    lot_size: int = 1
    avg_price: float
    product: str
    option_type: str | None = None  # CE/PE for options: how the leg expresses the strategy's view
    orders: list[str] = Field(default_factory=list)
    opened_at: datetime

    @computed_field  # type: ignore[prop-decorator]  # stored too, so the console shows it
    @property
    def lots(self) -> int:
        return self.quantity // (self.lot_size or 1)

    @property
    def exposure(self) -> int:
        """The strategy's view in lots: + long, - short. A long put or a short call is a short view."""
        sign = 1 if self.side == "LONG" else -1
        return sign * self.lots * (-1 if self.option_type == "PE" else 1)


class InFlight(_Doc):
    """Quantity placed and not yet filled (or finally unfilled)."""

    order_id: str
    ticker: str
    side: Literal["BUY", "SELL"]
    quantity: int  # units still unfilled
    effect: Literal["OPEN", "CLOSE"]
    broker_order_id: str | None = None


class Counted(_Doc):
    quantity: int = 0
    value: float = 0.0  # sum of price x quantity already applied


class Position(_Doc):
    """``positions/{id}``."""

    strategy: str
    instrument: str
    legs: list[Leg] = Field(default_factory=list)
    in_flight: list[InFlight] = Field(default_factory=list)
    fills_counted: dict[str, Counted] = Field(default_factory=dict)
    realised_pnl: float = 0.0
    adjustments: list[dict[str, Any]] = Field(default_factory=list)  # legs found gone at Fyers, dropped
    updated_at: datetime | None = None

    @property
    def exposure(self) -> int:
        """The strategy's held view in lots (+ long, - short), from the filled legs."""
        return sum(leg.exposure for leg in self.legs)

    def summary(self) -> str:
        """``long 2 lots: NSE:NIFTY26NOV24500CE x130 @ 101.5`` (or ``flat``), for messages."""
        if not self.legs:
            return "flat"
        view = "long" if self.exposure > 0 else "short" if self.exposure < 0 else "hedged"
        legs = ", ".join(f"{leg.side} {leg.ticker} x{leg.quantity} @ {leg.avg_price:g}" for leg in self.legs)
        return f"{view} {abs(self.exposure)} lot(s): {legs}"


class Trade(_Doc):
    """``trades/{id}``: one closed round trip (or the closed part of one)."""

    strategy: str
    instrument: str
    ticker: str
    side: Side
    quantity: int
    lots: int
    entry_price: float
    exit_price: float
    realised_pnl: float
    opened_at: datetime
    closed_at: datetime
    day: str
    entry_orders: list[str]
    exit_order: str


@dataclass(frozen=True)
class Effect:
    """What one batch of fills did to a position: for the trader's notification."""

    opened: list[tuple[str, int]]  # (ticker, units)
    closed: list[Trade]

    def text(self) -> str:
        parts = [f"opened {_short(t)} x{q}" for t, q in self.opened]
        parts += [f"closed {_short(t.ticker)} x{t.quantity}, P&L {t.realised_pnl:+,.2f}" for t in self.closed]
        return "; ".join(parts)


def _short(ticker: str) -> str:
    return ticker.split(":", 1)[-1]


def instrument_of(record: OrderRecord) -> str:
    """The underlying for option and future orders, the ticker otherwise."""
    contract = record.contract
    if contract is not None and contract.kind in ("CE", "PE", "FUT") and contract.underlying:
        return contract.underlying
    return contract.ticker if contract is not None else record.symbol


def position_id(strategy: str | None, instrument: str) -> str:
    """A readable, safe document id: ``nifty-atm-breakout__NIFTY__1a2b3c``."""
    name = strategy or NO_STRATEGY
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "strategy"
    digest = hashlib.sha256(f"{name}\n{instrument}".encode()).hexdigest()[:6]
    return f"{slug}__{re.sub(r'[^A-Za-z0-9-]+', '-', instrument)}__{digest}"


class Ledger:
    """Reads and changes ``positions`` and ``trades``, each change in one transaction."""

    def __init__(self, db: Any, *, timeout: float) -> None:
        self._db = db
        self._timeout = timeout

    def get(self, strategy: str | None, instrument: str) -> Position | None:
        snap = self._ref(strategy, instrument).get(timeout=self._timeout)
        return Position.model_validate(snap.to_dict()) if snap.exists else None

    def all(self) -> list[Position]:
        return [Position.model_validate(d.to_dict()) for d in self._db.collection(POSITIONS).stream(timeout=self._timeout)]

    def trades_of_day(self, day: str) -> list[Trade]:
        """The trades closed on an IST day (``YYYY-MM-DD``), oldest first."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._db.collection(TRADES).where(filter=FieldFilter("day", "==", day))
        return sorted((Trade.model_validate(d.to_dict()) for d in query.stream(timeout=self._timeout)),
                      key=lambda trade: trade.closed_at)

    def placed(self, record: OrderRecord, *, ticker: str, side: int, quantity: int, effect: str,
               broker_order_id: str | None, now: datetime) -> None:
        """Note an order placed for the strategy: its quantity is in flight until it fills."""
        item = InFlight(order_id=record.order_id, ticker=ticker, side="BUY" if side == 1 else "SELL",
                        quantity=quantity, effect=effect, broker_order_id=broker_order_id)

        def change(position: Position, closed: list[Trade]) -> None:
            position.in_flight = [f for f in position.in_flight if f.order_id != record.order_id] + [item]

        self._change(record.strategy, instrument_of(record), record.order_id, now, change)

    def filled(self, record: OrderRecord, *, filled_qty: int, avg_price: float | None, final: bool,
               now: datetime) -> Effect | None:
        """Apply the book's cumulative fill of an order (counted once); ``final``: nothing more will fill.

        Returns what changed, or None when nothing new was filled.
        """
        if record.contract is None or not record.broker_request:
            return None
        side = 1 if record.broker_request.get("side") == 1 else -1
        effects: list[Effect] = []

        def change(position: Position, closed: list[Trade]) -> None:
            effects.clear()
            counted = position.fills_counted.get(record.order_id, Counted())
            new_qty = filled_qty - counted.quantity
            if new_qty > 0 and avg_price:
                total_value = avg_price * filled_qty
                price = (total_value - counted.value) / new_qty
                effects.append(self._apply(position, record, side, new_qty, price, now, closed))
                position.fills_counted[record.order_id] = Counted(quantity=filled_qty, value=total_value)
            for item in position.in_flight:
                if item.order_id == record.order_id:
                    item.quantity = max(0, item.quantity - max(new_qty, 0))
            if final:
                position.in_flight = [f for f in position.in_flight if f.order_id != record.order_id]

        self._change(record.strategy, instrument_of(record), record.order_id, now, change)
        return effects[0] if effects else None

    def not_at_broker(self, strategy: str | None, instrument: str, ticker: str, quantity: int, *,
                      order_id: str, now: datetime) -> None:
        """Drop ``quantity`` of a leg that Fyers no longer holds (closed outside the router), and
        say so in ``adjustments``: an exit must never sell what is not there."""

        def change(position: Position, closed: list[Trade]) -> None:
            left = quantity
            for leg in position.legs:
                if leg.ticker == ticker and left:
                    gone = min(left, leg.quantity)
                    leg.quantity -= gone
                    left -= gone
            position.legs = [g for g in position.legs if g.quantity > 0]
            position.adjustments.append({"at": now, "ticker": ticker, "quantity": quantity - left, "order_id": order_id,
                                         "why": "Fyers does not hold it: closed outside the router"})

        self._change(strategy, instrument, order_id, now, change, create=False)

    # --- internals ----------------------------------------------------------------

    def _ref(self, strategy: str | None, instrument: str) -> Any:
        return self._db.collection(POSITIONS).document(position_id(strategy, instrument))

    def _change(self, strategy: str | None, instrument: str, order_id: str, now: datetime,
                change: Callable[[Position, list[Trade]], None], *, create: bool = True) -> None:
        """Run ``change`` on the position in a transaction, with the trades it closes (a position
        not yet recorded is made, unless ``create`` is off)."""
        from google.cloud import firestore

        ref = self._ref(strategy, instrument)
        trades = self._db.collection(TRADES)

        @firestore.transactional
        def attempt(transaction: Any) -> None:
            snap = ref.get(transaction=transaction, timeout=self._timeout)
            if not snap.exists and not create:
                return
            position = (Position.model_validate(snap.to_dict()) if snap.exists
                        else Position(strategy=strategy or NO_STRATEGY, instrument=instrument))
            closed: list[Trade] = []
            change(position, closed)
            position.updated_at = now
            transaction.set(ref, position.model_dump(mode="python"))
            for trade in closed:
                # Unique per closing: fills_counted already makes each fill count once.
                trade_id = f"{trade.day}__{ref.id}__{order_id}__{uuid.uuid4().hex[:6]}"
                transaction.set(trades.document(trade_id), trade.model_dump(mode="python"))

        attempt(self._db.transaction())

    @staticmethod
    def _apply(position: Position, record: OrderRecord, side: int, quantity: int, price: float,
               now: datetime, closed_trades: list[Trade]) -> Effect:
        """Trade ``quantity`` at ``price`` against the position: close opposite legs first (oldest
        first), then open or add with the rest."""
        contract = record.contract
        assert contract is not None  # checked by the caller
        lot_size = contract.lot_size or 1
        option_type = contract.kind if contract.kind in ("CE", "PE") else None
        opened: list[tuple[str, int]] = []
        closing_side: Side = "SHORT" if side == 1 else "LONG"
        remaining = quantity
        for leg in [g for g in position.legs if g.ticker == contract.ticker and g.side == closing_side]:
            if remaining == 0:
                break
            closed = min(remaining, leg.quantity)
            pnl = (price - leg.avg_price) * closed * (1 if leg.side == "LONG" else -1)
            closed_trades.append(Trade(
                strategy=position.strategy, instrument=position.instrument, ticker=leg.ticker, side=leg.side,
                quantity=closed, lots=closed // lot_size, entry_price=leg.avg_price, exit_price=round(price, 4),
                realised_pnl=round(pnl, 2), opened_at=leg.opened_at, closed_at=now,
                day=now.astimezone(IST).date().isoformat(), entry_orders=leg.orders, exit_order=record.order_id))
            position.realised_pnl = round(position.realised_pnl + pnl, 2)
            leg.quantity -= closed
            remaining -= closed
        position.legs = [g for g in position.legs if g.quantity > 0]
        if remaining:
            opening_side: Side = "LONG" if side == 1 else "SHORT"
            leg = next((g for g in position.legs if g.ticker == contract.ticker and g.side == opening_side), None)
            if leg is None:
                leg = Leg(ticker=contract.ticker, side=opening_side, quantity=0, lot_size=lot_size,
                          avg_price=0.0, product=record.product, option_type=option_type, opened_at=now)
                position.legs.append(leg)
            leg.avg_price = round((leg.avg_price * leg.quantity + price * remaining) / (leg.quantity + remaining), 4)
            leg.quantity += remaining
            if record.order_id not in leg.orders:
                leg.orders.append(record.order_id)
            opened.append((contract.ticker, remaining))
        return Effect(opened=opened, closed=list(closed_trades))


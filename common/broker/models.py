"""Typed values crossing the broker boundary: what we send to Fyers and what we read back.

Readers (``from_fyers``) are lenient about shapes Fyers leaves loose (numbers as
strings, ``tt`` as int or text, missing keys) and strict about nothing else:
the classification of answers happens in ``common.broker.outcome``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from common.errors import ValidationFailed
from common.records import IST


STATUS_NAMES = {1: "CANCELLED", 2: "FILLED", 4: "TRANSIT", 5: "REJECTED", 6: "PENDING", 7: "EXPIRED"}
FINAL_STATUSES = frozenset({1, 2, 5, 7})
PRODUCTS = frozenset({"CNC", "INTRADAY", "MARGIN", "CO", "BO", "MTF"})
ORDER_TAG = re.compile(r"^[A-Za-z0-9]{1,30}$")


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def strip_tag(raw: Any) -> str | None:
    """``"1:tv1"`` -> ``"tv1"``; ``"2:Untagged"``, empty or missing -> None."""
    if not isinstance(raw, str) or not raw:
        return None
    prefix, sep, rest = raw.partition(":")
    tag = rest if sep and prefix.isdigit() else raw
    return None if not tag or tag.lower() == "untagged" else tag


@dataclass(frozen=True)
class OrderRequest:
    """One order as the router means it. Invalid combinations fail here, before Fyers.

    ``tag`` is the router's idempotency key at the broker (``orderTag``): 1-30
    letters and digits, not allowed on CO/BO orders (fyers-v3.md §7).
    """

    symbol: str
    qty: int
    side: int  # 1 buy, -1 sell
    type: int  # 1 limit, 2 market, 3 stop (SL-M), 4 stop-limit (SL-L)
    product: str
    limit_price: float = 0.0
    stop_price: float = 0.0
    stop_loss: float = 0.0
    take_profit: float = 0.0
    validity: str = "DAY"
    tag: str | None = None
    slice: bool = False

    def __post_init__(self) -> None:
        errors = []

        def bad(name: str, message: str) -> None:
            errors.append({"field": name, "message": message})

        if not isinstance(self.symbol, str) or ":" not in self.symbol:
            bad("symbol", "a full Fyers ticker such as NSE:SBIN-EQ")
        if isinstance(self.qty, bool) or not isinstance(self.qty, int) or self.qty <= 0:
            bad("qty", "a positive whole number of units")
        if self.side not in (1, -1):
            bad("side", "1 (buy) or -1 (sell)")
        if self.type not in (1, 2, 3, 4):
            bad("type", "1 limit, 2 market, 3 stop or 4 stop-limit")
        if self.product not in PRODUCTS:
            bad("product", f"one of {sorted(PRODUCTS)}")
        if self.validity not in ("DAY", "IOC"):
            bad("validity", "DAY or IOC")
        for name in ("limit_price", "stop_price", "stop_loss", "take_profit"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                bad(name, "a finite number, zero or more")
        if not errors and self.type in (1, 4) and self.limit_price <= 0:
            bad("limit_price", "required for limit and stop-limit orders")
        if not errors and self.type in (3, 4) and self.stop_price <= 0:
            bad("stop_price", "required for stop orders")
        if self.tag is not None:
            if self.product in ("CO", "BO"):
                bad("tag", "Fyers forbids order tags on CO and BO orders")
            elif not isinstance(self.tag, str) or not ORDER_TAG.match(self.tag) or self.tag.lower() == "untagged":
                bad("tag", "1-30 letters and digits")
        if errors:
            raise ValidationFailed(errors, "The order request is invalid.")

    def to_fyers(self) -> dict[str, Any]:
        """The ``place_order`` body. Prices are rounded to 6 places to drop float noise."""
        body: dict[str, Any] = {
            "symbol": self.symbol,
            "qty": self.qty,
            "type": self.type,
            "side": self.side,
            "productType": self.product,
            "limitPrice": round(float(self.limit_price), 6),
            "stopPrice": round(float(self.stop_price), 6),
            "validity": self.validity,
            "disclosedQty": 0,
            "offlineOrder": False,
        }
        if self.product in ("CO", "BO") or self.stop_loss or self.take_profit:
            body["stopLoss"] = round(float(self.stop_loss), 6)
            body["takeProfit"] = round(float(self.take_profit), 6)
        if self.tag is not None:
            body["orderTag"] = self.tag
        if self.slice:
            body["isSliceOrder"] = True
        return body


@dataclass(frozen=True)
class PlaceResult:
    """Fyers accepted the order. ``order_ids`` lists every slice (one id if not sliced)."""

    order_id: str
    code: int
    message: str
    order_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.order_ids:
            object.__setattr__(self, "order_ids", (self.order_id,))


@dataclass(frozen=True)
class BrokerOrder:
    """One row of Fyers' order book. ``tag`` is stripped of its ``1:`` prefix."""

    id: str
    symbol: str
    qty: int
    filled_qty: int
    remaining_qty: int
    traded_price: float
    limit_price: float
    stop_price: float
    side: int
    type: int
    product: str
    status: int
    message: str
    tag: str | None
    order_time: datetime | None
    parent_id: str | None = None

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, f"UNKNOWN_{self.status}")

    @property
    def is_final(self) -> bool:
        """Cancelled, filled, rejected or expired: the order will not change again."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_fyers(cls, row: Mapping[str, Any]) -> "BrokerOrder":
        return cls(
            id=str(row.get("id", "")),
            symbol=str(row.get("symbol", "")),
            qty=_int(row.get("qty")),
            filled_qty=_int(row.get("filledQty")),
            remaining_qty=_int(row.get("remainingQuantity")),
            traded_price=_float(row.get("tradedPrice")),
            limit_price=_float(row.get("limitPrice")),
            stop_price=_float(row.get("stopPrice")),
            side=_int(row.get("side")),
            type=_int(row.get("type")),
            product=str(row.get("productType", "")),
            status=_int(row.get("status"), -1),
            message=str(row.get("message") or ""),
            tag=strip_tag(row.get("orderTag")),
            order_time=_order_time(row.get("orderDateTime")),
            parent_id=str(row["parentId"]) if row.get("parentId") else None,
        )


def _order_time(text: Any) -> datetime | None:
    """``"09-Mar-2023 09:34:38"`` (IST) -> aware datetime; None if absent or unparseable."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S").replace(tzinfo=IST)
    except ValueError:
        return None


@dataclass(frozen=True)
class Trade:
    """One row of the trade book."""

    order_id: str
    trade_id: str
    symbol: str
    side: int
    qty: int
    price: float
    product: str
    tag: str | None

    @classmethod
    def from_fyers(cls, row: Mapping[str, Any]) -> "Trade":
        return cls(
            order_id=str(row.get("orderNumber", "")),
            trade_id=str(row.get("tradeNumber", "")),
            symbol=str(row.get("symbol", "")),
            side=_int(row.get("side")),
            qty=_int(row.get("tradedQty")),
            price=_float(row.get("tradePrice")),
            product=str(row.get("productType", "")),
            tag=strip_tag(row.get("orderTag")),
        )


@dataclass(frozen=True)
class Position:
    """One net position. ``net_qty`` is signed: negative when short."""

    id: str
    symbol: str
    product: str
    net_qty: int
    buy_qty: int
    sell_qty: int
    net_avg: float
    pl: float
    ltp: float

    @classmethod
    def from_fyers(cls, row: Mapping[str, Any]) -> "Position":
        return cls(
            id=str(row.get("id", "")),
            symbol=str(row.get("symbol", "")),
            product=str(row.get("productType", "")),
            net_qty=_int(row.get("netQty")),
            buy_qty=_int(row.get("buyQty")),
            sell_qty=_int(row.get("sellQty")),
            net_avg=_float(row.get("netAvg")),
            pl=_float(row.get("pl")),
            ltp=_float(row.get("ltp")),
        )


@dataclass(frozen=True)
class Quote:
    """A ticker's quote. ``at`` is the exchange time (``tt``) when Fyers gives one."""

    ticker: str
    ltp: float
    bid: float
    ask: float
    open: float
    high: float
    low: float
    prev_close: float
    volume: int
    at: datetime | None

    @classmethod
    def from_fyers(cls, ticker: str, v: Mapping[str, Any]) -> "Quote":
        tt = _int(v.get("tt"), 0)
        return cls(
            ticker=ticker,
            ltp=_float(v.get("lp")),
            bid=_float(v.get("bid")),
            ask=_float(v.get("ask")),
            open=_float(v.get("open_price")),
            high=_float(v.get("high_price")),
            low=_float(v.get("low_price")),
            prev_close=_float(v.get("prev_close_price")),
            volume=_int(v.get("volume")),
            at=datetime.fromtimestamp(tt, timezone.utc) if tt > 0 else None,
        )


@dataclass(frozen=True)
class Profile:
    """The account behind the token (Fyers masks the PII)."""

    fy_id: str
    name: str


@dataclass(frozen=True)
class TokenPair:
    """The result of a login. ``repr`` hides both tokens so they never reach a log."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime | None = None

"""The simulated broker back end: order validation, book, trades, positions, quotes.

Answers follow fyers-v3.md §6–8. Where Fyers' real wording is unknown (lot
multiple, bad tag, cancelling a filled order) the message is the simulator's
own and the code is -50, as the contract allows.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from deploy.local.fyers_sim.instruments import Instrument, Prices, is_tick_multiple
from deploy.local.fyers_sim.tokens import IST

ORDER_TAG = re.compile(r"^[A-Za-z0-9]{1,30}$")
PRODUCTS = {"CNC", "INTRADAY", "MARGIN", "CO", "BO", "MTF"}
MARGIN_SHORTFALL = "RED:Margin Shortfall:INR 12345.00 Available:INR 100.00 for C-XY12345 [FYERS_RISK_CUG]"
CANCELLED, FILLED, REJECTED, PENDING = 1, 2, 5, 6
INVALID_SYMBOL = "The input symbol is invalid."
MAX_SLICES = 10


class Refusal(Exception):
    """A Fyers error answer: HTTP status, body code and message."""

    def __init__(self, http_status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.http_status, self.code, self.message = http_status, code, message


def _invalid(message: str) -> Refusal:
    return Refusal(400, -50, message)


def _number(body: dict, key: str) -> float:
    value = body.get(key, 0) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _invalid(f"Invalid {key}")
    return float(value)


@dataclass
class _Position:
    symbol: str
    product: str
    fytoken: str
    buy_qty: int = 0
    sell_qty: int = 0
    buy_val: float = 0.0
    sell_val: float = 0.0
    net_qty: int = 0
    avg: float = 0.0
    realized: float = 0.0

    def fill(self, side: int, qty: int, price: float) -> None:
        if side == 1:
            self.buy_qty, self.buy_val = self.buy_qty + qty, self.buy_val + qty * price
        else:
            self.sell_qty, self.sell_val = self.sell_qty + qty, self.sell_val + qty * price
        held = abs(self.net_qty)
        if self.net_qty == 0 or (self.net_qty > 0) == (side == 1):
            self.avg = (self.avg * held + price * qty) / (held + qty)
        else:
            closed = min(qty, held)
            self.realized += closed * (price - self.avg) * (1 if self.net_qty > 0 else -1)
            if qty > held:
                self.avg = price
            elif qty == held:
                self.avg = 0.0
        self.net_qty += side * qty

    def as_fyers(self, ltp: float) -> dict[str, Any]:
        unrealized = (ltp - self.avg) * self.net_qty if self.net_qty else 0.0
        return {
            "id": f"{self.symbol}-{self.product}",
            "symbol": self.symbol,
            "fyToken": self.fytoken,
            "productType": self.product,
            "netQty": self.net_qty,
            "qty": abs(self.net_qty),
            "side": (self.net_qty > 0) - (self.net_qty < 0),
            "buyQty": self.buy_qty,
            "buyAvg": round(self.buy_val / self.buy_qty, 4) if self.buy_qty else 0.0,
            "buyVal": round(self.buy_val, 2),
            "sellQty": self.sell_qty,
            "sellAvg": round(self.sell_val / self.sell_qty, 4) if self.sell_qty else 0.0,
            "sellVal": round(self.sell_val, 2),
            "netAvg": round(self.avg, 4),
            "ltp": ltp,
            "realized_profit": round(self.realized, 2),
            "unrealized_profit": round(unrealized, 2),
            "pl": round(self.realized + unrealized, 2),
        }


class Exchange:
    """One client's book at the simulated broker. Thread-safe (one re-entrant lock)."""

    def __init__(self, instruments: dict[str, Instrument], prices: Prices, clock: Callable[[], datetime]) -> None:
        self.instruments = instruments
        self.prices = prices
        self._clock = clock
        self._lock = threading.RLock()
        self.capital = 1_000_000.0
        self.freeze_qty: dict[str, int] = {}  # underlying -> the most units one order may carry
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._orders: dict[str, dict[str, Any]] = {}
            self._trades: list[dict[str, Any]] = []
            self._positions: dict[tuple[str, str], _Position] = {}
            self._seq = 0

    # --- reading ------------------------------------------------------------

    def orders(self, *, order_id: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if order_id is not None:
                if order_id not in self._orders:
                    raise Refusal(400, -51, "Invalid order id")
                return [dict(self._orders[order_id])]
            return [dict(o) for o in self._orders.values() if tag is None or o["orderTag"] == tag]

    def trades(self, *, tag: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self._trades if tag is None or t["orderTag"] == tag]

    def positions(self) -> dict[str, Any]:
        with self._lock:
            items = [p.as_fyers(self.prices.ltp(p.symbol) or 0.0) for p in self._positions.values()]
        realized = sum(i["realized_profit"] for i in items)
        unrealized = sum(i["unrealized_profit"] for i in items)
        return {
            "netPositions": items,
            "overall": {
                "count_total": len(items),
                "count_open": sum(1 for i in items if i["netQty"]),
                "pl_realized": round(realized, 2),
                "pl_unrealized": round(unrealized, 2),
                "pl_total": round(realized + unrealized, 2),
            },
        }

    def funds(self) -> list[dict[str, Any]]:
        realized = self.positions()["overall"]["pl_realized"]
        rows = [
            ("Total Balance", self.capital + realized), ("Utilized Amount", 0.0),
            ("Clear Balance", self.capital + realized), ("Realized Profit and Loss", realized),
            ("Collaterals", 0.0), ("Fund Transfer", 0.0), ("Receivables", 0.0), ("Adhoc Limit", 0.0),
            ("Limit at start of the day", self.capital), ("Available Balance", self.capital + realized),
        ]
        return [
            {"id": n, "title": title, "equityAmount": round(amount, 2), "commodityAmount": 0.0}
            for n, (title, amount) in enumerate(rows, start=1)
        ]

    def quotes(self, symbols: list[str], now: datetime) -> list[dict[str, Any]]:
        items = []
        for symbol in symbols:
            inst = self.instruments.get(symbol)
            ltp = self.prices.ltp(symbol)
            if inst is None or ltp is None:
                items.append({"n": symbol, "s": "error", "v": {"code": -300, "errmsg": "Invalid symbol"}})
                continue
            items.append({"n": symbol, "s": "ok", "v": {
                "ch": 0.0, "chp": 0.0, "lp": ltp, "spread": round(2 * inst.tick, 4),
                "ask": round(ltp + inst.tick, 4), "bid": round(max(inst.tick, ltp - inst.tick), 4),
                "open_price": ltp, "high_price": ltp, "low_price": ltp, "prev_close_price": ltp,
                "volume": 0, "short_name": symbol.split(":", 1)[1], "exchange": inst.exchange,
                "description": symbol, "original_name": symbol, "symbol": symbol,
                "fyToken": inst.fytoken, "tt": int(now.timestamp()),
            }})
        return items

    # --- orders -------------------------------------------------------------

    def place(self, body: dict[str, Any], *, reject_message: str | None = None) -> list[dict[str, Any]]:
        """Validate and book an order (several if sliced); returns the booked orders. Raises :class:`Refusal`."""
        inst, order = self._validate(body)
        chunks = self._slices(inst, order["qty"], body.get("isSliceOrder") is True)
        with self._lock:
            return [self._book(inst, {**order, "qty": qty}, reject_message) for qty in chunks]

    def _slices(self, inst: Instrument, qty: int, slicing: bool) -> list[int]:
        """Quantities to book: one, or freeze-sized slices (at most 10) when slicing is asked."""
        freeze = self.freeze_qty.get(inst.underlying)
        if not freeze or qty <= freeze:
            return [qty]
        if not slicing:
            raise _invalid(f"Quantity {qty} exceeds the freeze limit of {freeze}")
        step = max(inst.lot, freeze // inst.lot * inst.lot)
        chunks = [step] * (qty // step) + ([qty % step] if qty % step else [])
        if len(chunks) > MAX_SLICES:
            raise _invalid(f"Quantity {qty} needs more than {MAX_SLICES} slices")
        return chunks

    def _book(self, inst: Instrument, order: dict[str, Any], reject_message: str | None) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            now = self._clock().astimezone(IST)
            order.update({
                "id": f"{now:%y%m%d}{self._seq:08d}",
                "exchOrdId": "",
                "fyToken": inst.fytoken,
                "description": inst.description,
                "remainingQuantity": order["qty"],
                "filledQty": 0,
                "tradedPrice": 0.0,
                "status": PENDING,
                "message": "",
                "orderDateTime": now.strftime("%d-%b-%Y %H:%M:%S"),
                "parentId": "",
                "source": "API",
                "slNo": self._seq,
            })
            self._orders[order["id"]] = order
            if reject_message is not None:
                order.update(status=REJECTED, message=reject_message)
            else:
                self._try_fill(order)
                if order["status"] == PENDING and order["orderValidity"] == "IOC":
                    order.update(status=CANCELLED, message="IOC order cancelled: not marketable")
            return dict(order)

    def cancel(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            order = self._pending(order_id)
            order.update(status=CANCELLED, message="Cancelled by user")
            return dict(order)

    def modify(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            order = self._pending(str(body.get("id", "")))
            merged = {**order, **{k: v for k, v in body.items() if k in ("type", "qty", "limitPrice", "stopPrice")}}
            merged["orderTag"] = ""  # the tag is fixed at placement; do not re-validate the prefixed form
            _, checked = self._validate(merged)
            for key in ("type", "qty", "limitPrice", "stopPrice"):
                order[key] = checked[key]
            order["remainingQuantity"] = order["qty"]
            self._try_fill(order)
            return dict(order)

    def exit_positions(self, position_id: str | None) -> int:
        """Place market counter-orders for open positions; returns how many."""
        with self._lock:
            targets = [
                p for p in self._positions.values()
                if p.net_qty and (position_id is None or f"{p.symbol}-{p.product}" == position_id)
            ]
            if not targets:
                raise Refusal(400, -352, "No position to exit")
            for p in targets:
                self.place({
                    "symbol": p.symbol, "qty": abs(p.net_qty), "type": 2, "side": -1 if p.net_qty > 0 else 1,
                    "productType": p.product, "validity": "DAY", "isSliceOrder": True,
                })
            return len(targets)

    def on_price(self, ticker: str) -> None:
        """A price moved: pending orders on it may now fill."""
        with self._lock:
            for order in self._orders.values():
                if order["symbol"] == ticker and order["status"] == PENDING:
                    self._try_fill(order)

    def _pending(self, order_id: str) -> dict[str, Any]:
        order = self._orders.get(order_id)
        if order is None:
            raise Refusal(400, -51, "Invalid order id")
        if order["status"] != PENDING:
            raise _invalid(f"Order {order_id} is not pending")
        return order

    def _try_fill(self, order: dict[str, Any]) -> None:
        ltp = self.prices.ltp(order["symbol"])
        buy = order["side"] == 1
        kind, limit, stop = order["type"], order["limitPrice"], order["stopPrice"]
        marketable = ltp <= limit if buy else ltp >= limit
        triggered = ltp >= stop if buy else ltp <= stop
        fills = kind == 2 or (kind == 1 and marketable) or (kind == 3 and triggered) or (
            kind == 4 and triggered and marketable
        )
        if not fills:
            return
        self._fill(order, order["remainingQuantity"], ltp)

    def fill_partly(self, order_id: str, qty: int) -> dict[str, Any]:
        """Fill ``qty`` of a resting order at the current LTP: the exchange matched only part of it."""
        with self._lock:
            order = self._pending(order_id)
            if not 0 < qty < order["remainingQuantity"]:
                raise ValueError(f"a partial fill needs 0 < qty < {order['remainingQuantity']}")
            self._fill(order, qty, self.prices.ltp(order["symbol"]))
            return dict(order)

    def _fill(self, order: dict[str, Any], qty: int, price: float) -> None:
        """Trade ``qty`` of an order at ``price``: its average, the trade book and the position."""
        self._seq += 1
        filled = order["filledQty"] + qty
        average = (order["tradedPrice"] * order["filledQty"] + price * qty) / filled
        order.update(filledQty=filled, remainingQuantity=order["qty"] - filled, tradedPrice=round(average, 4),
                     exchOrdId=order["exchOrdId"] or f"1100000{self._seq:09d}")
        if filled == order["qty"]:
            order["status"] = FILLED
        self._trades.append({
            "orderNumber": order["id"], "tradeNumber": f"{self._seq:08d}", "exchangeOrderNo": order["exchOrdId"],
            "symbol": order["symbol"], "fyToken": order["fyToken"], "side": order["side"],
            "productType": order["productType"], "tradedQty": qty, "tradePrice": price,
            "tradeValue": round(price * qty, 2), "orderTag": order["orderTag"],
            "orderDateTime": self._clock().astimezone(IST).strftime("%d-%b-%Y %H:%M:%S"),
            "row": len(self._trades) + 1,
        })
        key = (order["symbol"], order["productType"])
        position = self._positions.setdefault(key, _Position(order["symbol"], order["productType"], order["fyToken"]))
        position.fill(order["side"], qty, price)

    def _validate(self, body: dict[str, Any]) -> tuple[Instrument, dict[str, Any]]:
        """Check an order body against the master and Fyers' field rules (§7)."""
        symbol = body.get("symbol")
        inst = self.instruments.get(symbol) if isinstance(symbol, str) else None
        if inst is None or inst.is_index:
            raise _invalid(INVALID_SYMBOL)
        side, kind, product = body.get("side"), body.get("type"), body.get("productType")
        if side not in (1, -1) or isinstance(side, bool):
            raise _invalid("Invalid side: must be 1 (buy) or -1 (sell)")
        if kind not in (1, 2, 3, 4) or isinstance(kind, bool):
            raise _invalid("Invalid order type: must be 1, 2, 3 or 4")
        if product not in PRODUCTS:
            raise _invalid(f"Invalid productType {product!r}")
        validity = body.get("validity") or "DAY"
        if validity not in ("DAY", "IOC"):
            raise _invalid(f"Invalid validity {validity!r}")
        qty = body.get("qty")
        if isinstance(qty, float) and qty.is_integer():
            qty = int(qty)
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
            raise _invalid("Invalid qty: must be a positive whole number")
        if qty % inst.lot:
            raise _invalid(f"Invalid qty {qty}: not a multiple of lot size {inst.lot}")
        limit, stop = _number(body, "limitPrice"), _number(body, "stopPrice")
        stop_loss, take_profit = _number(body, "stopLoss"), _number(body, "takeProfit")
        if kind in (1, 4) and limit <= 0:
            raise _invalid("Invalid limitPrice: required for limit and stop-limit orders")
        if kind in (3, 4) and stop <= 0:
            raise _invalid("Invalid stopPrice: required for stop orders")
        for name, value in (("LimitPrice", limit), ("StopPrice", stop), ("StopLoss", stop_loss),
                            ("TakeProfit", take_profit)):
            if value and not is_tick_multiple(value, inst.tick):
                raise _invalid(f"{name} not a multiple of tick size {inst.tick:.4f}")
        if kind in (3, 4):
            ltp = self.prices.ltp(inst.ticker) or 0.0
            if (side == 1 and stop < ltp) or (side == -1 and stop > ltp):
                raise _invalid("StopPrice must not be below LTP for buy or above LTP for sell orders")
            if kind == 4 and ((side == 1 and stop > limit) or (side == -1 and stop < limit)):
                raise _invalid("StopPrice must not be beyond LimitPrice")
        tag = body.get("orderTag")
        if tag not in (None, ""):
            if product in ("CO", "BO"):
                raise _invalid("orderTag is not allowed for CO and BO orders")
            if not isinstance(tag, str) or not ORDER_TAG.match(tag) or tag.lower() == "untagged":
                raise _invalid("Invalid orderTag: 1-30 letters and digits")
        return inst, {
            "symbol": inst.ticker, "qty": qty, "side": side, "type": kind, "productType": product,
            "limitPrice": limit, "stopPrice": stop, "stopLoss": stop_loss, "takeProfit": take_profit,
            "orderValidity": validity, "disclosedQty": body.get("disclosedQty", 0) or 0,
            "offlineOrder": bool(body.get("offlineOrder", False)),
            "orderTag": f"1:{tag}" if tag else "2:Untagged",
        }

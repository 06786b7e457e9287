"""From a validated alert to the exact broker request: contract, quantity, side, prices.

Pure decisions over injected look-ups (the symbol master, a quote function,
a positions function), so every rule here is testable without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Callable

from common.alert import Alert
from common.broker.models import OrderRequest, Position
from common.errors import InvalidPriceLevel, NoPosition
from common.indices import INDICES
from common.pricing import bracket_offsets, exit_levels, round_to_tick
from common.selectors import ExpirySelector, parse_continuous_future
from common.symbols import Contract, SymbolMaster

_ORDER_TYPES = {"LIMIT": 1, "MARKET": 2, "SL-M": 3, "SL": 4}



@dataclass(frozen=True)
class Plan:
    """What the worker will send, and the facts it was computed from (all recorded)."""

    contract: Contract
    request: OrderRequest
    ltp: float | None
    underlying_ltp: float | None
    sl_price: float | None
    tp_price: float | None


@dataclass
class _Prices:
    """Quotes fetched lazily, each at most once."""

    quote: Callable[[str], float]
    underlying: float | None = None
    contract: float | None = None

    def underlying_price(self, ticker: str) -> float:
        self.underlying = self.quote(ticker)
        return self.underlying


def resolve_contract(alert: Alert, master: SymbolMaster, today: date,
                     underlying_price: Callable[[str], float]) -> Contract:
    """The listed contract the alert names."""
    kind = alert.kind
    if kind == "TICKER":
        return master.lookup(alert.symbol)
    if kind == "EQUITY":
        return master.equity(alert.symbol, alert.exchange)
    continuous = parse_continuous_future(alert.symbol)
    if continuous is not None:
        return master.resolve_future(continuous[0], continuous[1], today, exchange=_fo_exchange(alert))
    return master.resolve(alert.underlying, option_type=alert.option_type if kind == "OPTION" else None,
                          expiry=alert.expiry or (ExpirySelector("WEEKLY") if kind == "OPTION" else None),
                          strike=alert.strike, today=today, price_of=underlying_price,
                          exchange=_fo_exchange(alert))


def plan_order(alert: Alert, *, order_id: str, master: SymbolMaster, today: date,
               quote: Callable[[str], float], positions: Callable[[], list[Position]],
               cover_only: bool = False, max_lots: int | None = None) -> Plan:
    """Decide the broker request for ``alert``. Raises the router's failure classes on bad input."""
    prices = _Prices(quote)
    contract = resolve_contract(alert, master, today, prices.underlying_price)
    side, qty = _side_and_quantity(alert, contract, positions, cover_only, max_lots)
    needs_ltp = alert.order_type != "MARKET" or alert.product in ("CO", "BO")
    ltp = quote(contract.ticker) if needs_ltp else None
    tick = contract.tick_size
    side_name = "BUY" if side == 1 else "SELL"

    limit_price = round_to_tick(alert.price, tick) if alert.price else 0.0
    stop_price = round_to_tick(alert.trigger_price, tick) if alert.trigger_price else 0.0
    if stop_price and ltp is not None:
        _check_trigger(side_name, stop_price, ltp)

    sl_price = tp_price = None
    stop_loss = take_profit = 0.0
    if alert.product in ("CO", "BO") and ltp is not None:
        reference = limit_price or ltp
        levels = exit_levels(side_name, reference, tick=tick, sl_points=alert.sl, tp_points=alert.tp)
        offsets = bracket_offsets(side_name, reference, tick=tick, sl_points=alert.sl, tp_points=alert.tp)
        sl_price, tp_price = levels.stop_loss, levels.take_profit
        stop_loss, take_profit = offsets.stop_loss or 0.0, offsets.take_profit or 0.0

    index = INDICES.get(contract.underlying or "")
    freeze = index.freeze_qty if index else None
    request = OrderRequest(
        symbol=contract.ticker, qty=qty, side=side, type=_ORDER_TYPES[alert.order_type], product=alert.product,
        limit_price=limit_price, stop_price=stop_price, stop_loss=stop_loss, take_profit=take_profit,
        # Fyers forbids tags on CO/BO: those are found again by symbol, side, quantity and time.
        tag=None if alert.product in ("CO", "BO") else order_id,
        slice=bool(freeze and qty > freeze and contract.kind != "EQ"),
    )
    return Plan(contract, request, ltp, prices.underlying, sl_price, tp_price)


def _side_and_quantity(alert: Alert, contract: Contract, positions: Callable[[], list[Position]],
                       cover_only: bool, max_lots: int | None) -> tuple[int, int]:
    if alert.action == "EXIT":
        net = _net_position(contract.ticker, alert.product, positions())
        if net == 0:
            raise NoPosition(f"No open {alert.product} position in {contract.ticker} to exit.")
        return (-1 if net > 0 else 1), abs(net)
    if max_lots is not None and alert.lots > max_lots:
        from common.errors import LimitExceeded

        raise LimitExceeded(f"{alert.lots} lots is above the limit of {max_lots} per order.")
    qty = alert.lots * contract.lot_size
    if alert.action == "BUY" and cover_only:
        net = _net_position(contract.ticker, alert.product, positions())
        if net >= 0:
            raise NoPosition(f"Cover-only strategy: BUY only closes a short, and there is no short "
                             f"{alert.product} position in {contract.ticker}.")
        qty = min(qty, -net)
    return (1 if alert.action == "BUY" else -1), qty


def _net_position(ticker: str, product: str, positions: list[Position]) -> int:
    return sum(p.net_qty for p in positions if p.symbol == ticker and p.product == product)


def _check_trigger(side: str, trigger: float, ltp: float) -> None:
    # Fyers: a buy stop triggers above the market, a sell stop below (fyers-v3.md §7).
    if side == "BUY" and trigger < ltp:
        raise InvalidPriceLevel(f"A BUY stop's trigger {trigger} is below the last price {ltp}.")
    if side == "SELL" and trigger > ltp:
        raise InvalidPriceLevel(f"A SELL stop's trigger {trigger} is above the last price {ltp}.")


def _fo_exchange(alert: Alert) -> str | None:
    # TradingView names the chart's exchange (NSE/BSE); derivatives trade on the same venue.
    return alert.exchange if alert.exchange in ("NSE", "BSE") else None

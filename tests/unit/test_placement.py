"""From alert to broker request: contract, side, quantity, prices, tags."""

from __future__ import annotations

from datetime import date

import pytest

from common.alert import parse_alert
from common.broker.models import Position
from common.errors import InvalidPriceLevel, LimitExceeded, NoPosition, StrikeNotListed
from common.placement import plan_order
from common.symbols import SymbolMaster
from deploy.local.mastergen import generate_masters

TODAY = date(2026, 11, 23)
ATM_CE = "NSE:NIFTY26NOV24500CE"


@pytest.fixture(scope="module")
def master() -> SymbolMaster:
    return SymbolMaster.from_csv(*generate_masters(TODAY).values())


def plan(master, positions=(), cover_only=False, max_lots=None, **fields):
    quotes = {"NSE:NIFTY50-INDEX": 24512.0, ATM_CE: 101.0, "NSE:SBIN-EQ": 810.0}
    asked: list[str] = []

    def quote(ticker: str) -> float:
        asked.append(ticker)
        return quotes.get(ticker, 100.0)

    alert = parse_alert({"secret": "s", "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM",
                         "optionType": "CE", "lots": 2, **fields})
    result = plan_order(alert, order_id="tvabc", master=master, today=TODAY, quote=quote,
                        positions=lambda: list(positions), cover_only=cover_only, max_lots=max_lots)
    return result, asked


def position(qty: int, symbol: str = ATM_CE, product: str = "INTRADAY") -> Position:
    return Position(id=f"{symbol}-{product}", symbol=symbol, product=product, net_qty=qty, buy_qty=max(qty, 0),
                    sell_qty=max(-qty, 0), net_avg=100.0, pl=0.0, ltp=100.0)


def test_an_atm_market_buy_is_lots_times_lot_size_tagged_with_the_order_id(master):
    result, asked = plan(master)
    request = result.request
    assert (request.symbol, request.qty, request.side, request.type, request.tag) == (ATM_CE, 130, 1, 2, "tvabc")
    assert asked == ["NSE:NIFTY50-INDEX"]  # a market order needs no contract quote
    assert result.underlying_ltp == 24512.0 and result.contract.lot_size == 65


def test_exit_squares_off_the_net_position_whatever_the_lots(master):
    result, _ = plan(master, positions=[position(195), position(65, product="MARGIN")], action="EXIT", lots=1)
    assert (result.request.side, result.request.qty) == (-1, 195)


def test_exit_without_a_position_is_refused(master):
    with pytest.raises(NoPosition):
        plan(master, action="EXIT")


def test_cover_only_buys_close_at_most_the_short(master):
    result, _ = plan(master, positions=[position(-65)], cover_only=True, lots=3)
    assert result.request.qty == 65
    with pytest.raises(NoPosition):
        plan(master, positions=[position(65)], cover_only=True)


def test_a_bracket_order_carries_offsets_and_no_tag(master):
    result, asked = plan(master, product="BO", sl=20, tp=40.03)
    request = result.request
    assert request.tag is None and (request.stop_loss, request.take_profit) == (20.0, 40.0)
    assert (result.sl_price, result.tp_price) == (81.0, 141.0) and ATM_CE in asked


def test_a_buy_stop_below_the_market_is_refused(master):
    with pytest.raises(InvalidPriceLevel):
        plan(master, orderType="SL-M", triggerPrice=90)


def test_limit_prices_are_rounded_to_the_tick(master):
    result, _ = plan(master, orderType="LIMIT", price=100.03)
    assert result.request.limit_price == 100.05


def test_the_controls_lot_cap_applies(master):
    with pytest.raises(LimitExceeded):
        plan(master, max_lots=1)


def test_above_the_freeze_quantity_the_order_is_sliced(master):
    result, _ = plan(master, lots=30)  # 1950 units > NIFTY's 1800
    assert result.request.slice is True


def test_an_unlisted_strike_names_the_nearest(master):
    with pytest.raises(StrikeNotListed, match="24500"):
        plan(master, strike=24510)


def test_a_fyers_ticker_is_looked_up_as_it_is(master):
    result, _ = plan(master, symbol="NSE:SBIN-EQ", expiry=None, strike=None, optionType=None, lots=10,
                     product="CNC")
    assert (result.request.symbol, result.request.qty) == ("NSE:SBIN-EQ", 10)

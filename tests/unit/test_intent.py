"""What a signal means for a held position: the intent rules, without a broker."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from common.alert import Alert
from common.errors import IntentConflict
from common.intent import derive, names_one_contract
from common.ledger import Leg, Position

AT = datetime(2026, 11, 23, 4, 30, tzinfo=timezone.utc)
CE, PE, FUT = "NSE:NIFTY26NOV24500CE", "NSE:NIFTY26NOV24500PE", "NSE:NIFTY26NOVFUT"


def leg(ticker: str, side: str, lots: int, option_type: str | None = None, minute: int = 0) -> Leg:
    return Leg(ticker=ticker, side=side, quantity=lots * 65, lots=lots, lot_size=65, avg_price=100.0,
               product="INTRADAY", option_type=option_type, opened_at=AT.replace(minute=minute))


def held(*legs: Leg) -> Position:
    return Position(strategy="s", instrument="NIFTY", legs=list(legs))


def option_alert(**fields) -> Alert:
    body = {"action": "BUY", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM", "optionType": "CE", **fields}
    return Alert.model_validate(body)


def steps(intent) -> list[tuple[str, int, str | None, int | None]]:
    return [(s.effect, s.side, s.ticker or s.option_type, s.quantity or s.lots) for s in intent.steps]


@pytest.mark.parametrize(("position", "size", "legs", "kind", "expected"), [
    ("long", 1, [], "ENTER", [("OPEN", 1, "CE", 1)]),
    ("long", 2, [leg(CE, "LONG", 2, "CE")], "NONE", []),
    ("long", 3, [leg(CE, "LONG", 2, "CE")], "ADD", [("OPEN", 1, CE, 1)]),
    ("long", 1, [leg(CE, "LONG", 2, "CE")], "REDUCE", [("CLOSE", -1, CE, 65)]),
    ("flat", 0, [leg(CE, "LONG", 2, "CE")], "EXIT", [("CLOSE", -1, CE, 130)]),
    ("short", 1, [leg(CE, "LONG", 1, "CE")], "REVERSE", [("CLOSE", -1, CE, 65), ("OPEN", 1, "PE", 1)]),
    ("flat", 0, [], "NONE", []),
])
def test_the_placeholders_set_the_target_and_the_ledger_the_difference(position, size, legs, kind, expected):
    alert = option_alert(position=position, position_size=size, optionType=None, options="buy")

    intent = derive(alert, held(*legs))

    assert (intent.kind, steps(intent)) == (kind, expected)


def test_option_selling_expresses_long_as_a_sold_put_and_short_as_a_sold_call():
    sell_mode = dict(optionType=None, options="sell")
    assert steps(derive(option_alert(position="long", position_size=1, **sell_mode), None)) == [("OPEN", -1, "PE", 1)]
    assert steps(derive(option_alert(position="short", position_size=1, **sell_mode), None)) == [("OPEN", -1, "CE", 1)]
    # A sold put is a long view: going flat buys it back.
    short_put = held(leg(PE, "SHORT", 1, "PE"))
    assert steps(derive(option_alert(position="flat", position_size=0, **sell_mode), short_put)) == [
        ("CLOSE", 1, PE, 65)]


def test_a_reduction_closes_the_oldest_leg_first_and_never_more_than_is_held():
    two_legs = held(leg(CE, "LONG", 1, "CE", minute=1), leg("NSE:NIFTY26NOV24600CE", "LONG", 2, "CE", minute=5))

    intent = derive(option_alert(position="long", position_size=1, optionType=None), two_legs)

    assert steps(intent) == [("CLOSE", -1, CE, 65), ("CLOSE", -1, "NSE:NIFTY26NOV24600CE", 65)]


def test_without_placeholders_a_sell_of_a_held_long_option_closes_it_and_never_opens_a_leg():
    long_call = held(leg(CE, "LONG", 2, "CE"))

    partial = derive(option_alert(action="SELL", lots=1), long_call)
    too_many = derive(option_alert(action="SELL", lots=5), long_call)
    a_put = derive(option_alert(action="SELL", optionType="PE"), long_call)  # writing a put: a new leg

    assert (partial.kind, steps(partial)) == ("REDUCE", [("CLOSE", -1, CE, 65)])
    assert (too_many.kind, steps(too_many)) == ("EXIT", [("CLOSE", -1, CE, 130)])
    assert (a_put.kind, steps(a_put)) == ("ORDER", [("OPEN", -1, "PE", 1)])


def test_exit_alone_on_the_index_closes_everything_the_strategy_holds_there():
    alert = Alert.model_validate({"action": "EXIT", "symbol": "NIFTY"})
    mixed = held(leg(CE, "LONG", 1, "CE"), leg(FUT, "SHORT", 1))

    assert steps(derive(alert, mixed)) == [("CLOSE", -1, CE, 65), ("CLOSE", 1, FUT, 65)]


def test_an_exit_with_nothing_held_says_what_the_ledger_holds():
    intent = derive(Alert.model_validate({"action": "EXIT", "symbol": "NIFTY"}), None)

    assert intent.steps == () and "nothing" in intent.reason


def test_an_option_type_that_contradicts_the_position_is_refused():
    with pytest.raises(IntentConflict, match="contradicts"):
        derive(option_alert(position="short", position_size=1, optionType="CE", options="buy"), None)


def test_only_a_full_ticker_or_a_dated_numeric_strike_names_one_contract_for_good():
    assert names_one_contract(Alert.model_validate({"action": "EXIT", "symbol": CE}))
    assert names_one_contract(option_alert(action="EXIT", strike=24500, expiry="2026-11-24"))
    assert not names_one_contract(option_alert(action="EXIT"))
    assert not names_one_contract(Alert.model_validate({"action": "EXIT", "symbol": "NIFTY1!"}))


def test_the_ledger_instrument_of_an_alert_is_named_as_its_contracts_underlying():
    from common.intent import instrument_of_alert

    master = None  # not consulted for options, futures or an index alone
    assert instrument_of_alert(option_alert(symbol="NIFTY50"), master) == "NIFTY"
    assert instrument_of_alert(Alert.model_validate({"action": "BUY", "symbol": "NIFTY1!"}), master) == "NIFTY"
    assert instrument_of_alert(Alert.model_validate({"action": "EXIT", "symbol": "NIFTY"}), master) == "NIFTY"

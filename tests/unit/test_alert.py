"""What an alert may say, and how it is normalised."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common.alert import parse_alert
from common.errors import ValidationFailed
from common.idempotency import identify, order_id_for

BASE = {"secret": "s", "action": "buy", "symbol": "nifty", "expiry": "weekly", "strike": "atm", "optionType": "CE"}


def errors_of(payload: dict) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        parse_alert(payload)
    return {e["field"]: e["message"] for e in caught.value.errors}


def test_tradingview_spellings_are_normalised():
    alert = parse_alert({"token": "s", "action": "sell", "symbol": " banknifty ", "expiry": "monthly",
                         "strikeprice": "otm2", "optionType": "PUT", "qty": "2.0", "exchange": "NSE_DL"})
    assert (alert.action, alert.symbol, alert.option_type, alert.lots, alert.exchange) == ("SELL", "BANKNIFTY", "PE", 2, "NSE")
    assert (str(alert.expiry), str(alert.strike), alert.kind) == ("MONTHLY", "OTM2", "OPTION")


@pytest.mark.parametrize("symbol, kind, underlying", [
    ("NIFTY1!", "FUTURE", "NIFTY"), ("NSE:SBIN-EQ", "TICKER", "NSE:SBIN-EQ"), ("SBIN", "EQUITY", "SBIN"),
])
def test_the_symbol_says_what_kind_of_instrument_it_is(symbol, kind, underlying):
    alert = parse_alert({"secret": "s", "action": "buy", "symbol": symbol})
    assert (alert.kind, alert.underlying) == (kind, underlying)


def test_an_index_alone_is_refused_with_a_hint():
    assert "NIFTY1!" in errors_of({"secret": "s", "action": "buy", "symbol": "NIFTY"})["alert"]


def test_stops_are_only_accepted_where_fyers_holds_them():
    assert "BO" in errors_of({**BASE, "sl": 20})["alert"]
    assert parse_alert({**BASE, "product": "CO", "sl": 20}).sl == 20
    assert "tp" in errors_of({**BASE, "product": "BO", "sl": 20})["alert"]


@pytest.mark.parametrize("fields, needed", [
    ({"orderType": "LIMIT"}, "price"), ({"orderType": "SL", "price": 10}, "triggerPrice"),
    ({"orderType": "SL-M"}, "triggerPrice"), ({"strike": None}, "strike"), ({"optionType": None}, "optionType"),
])
def test_order_types_and_options_name_what_they_need(fields, needed):
    assert needed in " ".join(errors_of({**BASE, **fields}).values())


def test_each_bad_field_is_listed_and_the_secret_never_echoed():
    errors = errors_of({"secret": "hunter2", "action": "hold", "symbol": "NIFTY", "strike": "ATMX",
                        "optionType": "XE", "lots": 1.5, "orderType": "ICEBERG"})
    assert {"action", "strike", "optionType", "lots", "orderType"} <= set(errors)
    assert "hunter2" not in str(errors)


README = Path(__file__).resolve().parents[2] / "README.md"
# What TradingView puts in place of each placeholder the README's templates use.
RENDERED = {"strategy.order.action": "sell", "strategy.order.contracts": "2", "timenow": "2026-11-23T04:30:00Z",
            "ticker": "NIFTY1!", "strategy.market_position": "long", "strategy.market_position_size": "1",
            "strategy.prev_market_position": "long", "strategy.prev_market_position_size": "2",
            "strategy.order.id": "Long"}


# A long-short strategy's moments, as the position placeholders render them: a reduction, a
# close to flat, a reversal to short.
MOMENTS = [("long", "1", "long", "2"), ("flat", "0", "long", "1"), ("short", "2", "long", "1")]


def readme_templates(rendered: dict[str, str] | None = None) -> list[str]:
    values = {**RENDERED, **(rendered or {})}
    text = README.read_text()
    rendered_text = re.sub(r"\{\{([^{}]+)\}\}", lambda m: values.get(m.group(1), m.group(0)), text)
    decoder = json.JSONDecoder()
    return [json.dumps(decoder.raw_decode(rendered_text, m.start())[0])
            for m in re.finditer(r'\{"secret"', rendered_text)]


@pytest.mark.parametrize("position, size, prev, prev_size", MOMENTS)
def test_every_readme_template_renders_to_a_valid_alert(position, size, prev, prev_size):
    templates = readme_templates({"strategy.market_position": position, "strategy.market_position_size": size,
                                  "strategy.prev_market_position": prev, "strategy.prev_market_position_size": prev_size})
    assert len(templates) >= 5
    for template in templates:
        parse_alert(json.loads(template))


def test_the_readmes_option_selling_template_is_the_option_buying_one_with_options_sell():
    [buying] = [t for t in map(json.loads, readme_templates()) if t.get("options") == "buy"]
    assert parse_alert({**buying, "options": "sell"}).options == "sell"


def test_free_text_belongs_under_comment_and_travels_with_the_order():
    alert = parse_alert({**BASE, "comment": "Long on 5"})
    assert alert.order_fields()["comment"] == "Long on 5" and "secret" not in alert.order_fields()


# --- strict alerts ------------------------------------------------------------------


def test_a_typo_is_refused_naming_the_field_and_the_nearest_known_one():
    errors = errors_of({"secret": "s", "symbol": "NIFTY", "expiry": "WEEKLY", "strik": "ATM", "optType": "CE",
                        "action": "SELL"})
    assert errors["strik"] == "unknown field `strik`: did you mean `strike`?"
    assert errors["optType"] == "unknown field `optType`: did you mean `optionType`?"


def test_an_unknown_field_like_nothing_known_points_to_comment():
    assert "comment" in errors_of({**BASE, "note": "hello"})["note"]


def test_every_legacy_alias_is_still_a_known_field():
    alert = parse_alert({"token": "s", "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY",
                         "strikePrice": 24500, "option_type": "CE", "quantity": 2, "productType": "BO",
                         "type": "LIMIT", "limitPrice": 100, "stopLoss": 10, "takeProfit": 20, "idempotencyKey": "k1"})
    assert (alert.lots, alert.product, alert.order_type, alert.price, alert.sl, alert.tp) == (2, "BO", "LIMIT", 100, 10, 20)
    for trigger in ("triggerPrice", "trigger_price", "stopPrice"):
        assert parse_alert({**BASE, trigger: 5, "order_type": "SL-M"}).trigger_price == 5


def test_two_spellings_of_one_field_are_refused():
    assert "give only one" in errors_of({**BASE, "lots": 1, "qty": 2})["qty"]


def test_an_unrendered_placeholder_is_refused_as_not_rendered_not_as_missing():
    errors = errors_of({**BASE, "action": "{{strategy.order.action}}", "lots": " {{strategy.order.contracts}}"})
    assert set(errors) == {"action", "lots"}
    assert errors["action"].startswith("{{strategy.order.action}} was not rendered by TradingView")


@pytest.mark.parametrize("value", ["2026-11-23T10:00:00", "2026-11-23"])
def test_a_time_without_a_zone_is_refused_with_a_hint(value):
    assert "{{timenow}}" in errors_of({**BASE, "time": value})["time"]


@pytest.mark.parametrize("value", ["2026-11-23T04:30:00Z", "2026-11-23T10:00:00+05:30"])
def test_a_time_with_a_zone_is_read_in_that_zone(value):
    assert parse_alert({**BASE, "time": value}).time == datetime(2026, 11, 23, 4, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("fields, hint", [
    ({"symbol": "NIFTY1!", "strike": "ATM", "optionType": "CE"}, "do not apply"),
    ({"symbol": "NSE:SBIN-EQ", "options": "sell"}, "option alerts only"),
    ({"symbol": "NIFTY", "expiry": "WEEKLY"}, "NIFTY1!"),
    ({"symbol": "NIFTY1!", "expiry": "MONTHLY"}, "NIFTY1!"),
    ({"symbol": "NSE:SBIN-EQ", "expiry": "MONTHLY"}, "strike and optionType"),
])
def test_option_fields_need_an_option_and_an_index_expiry_needs_a_strike(fields, hint):
    assert hint in errors_of({"secret": "s", "action": "buy", **fields})["alert"]


def test_a_stock_with_an_expiry_is_its_future():
    assert parse_alert({"secret": "s", "action": "buy", "symbol": "SBIN", "expiry": "MONTHLY"}).kind == "FUTURE"


def test_position_placeholders_are_validated_and_carried_with_the_order():
    alert = parse_alert({**BASE, "position": "Long", "position_size": "2.0", "prev_position": "flat",
                         "prev_position_size": 0, "options": "SELL"})
    fields = alert.order_fields()
    assert (fields["position"], fields["position_size"], fields["prev_position"], fields["prev_position_size"],
            fields["options"]) == ("long", 2, "flat", 0, "sell")


@pytest.mark.parametrize("fields, field", [
    ({"position": "sideways", "position_size": 1}, "position"),
    ({"position": "short", "position_size": -2}, "position_size"),
    ({"position": "long", "position_size": 1.5}, "position_size"),
    ({"position": "flat", "position_size": 2}, "alert"),
    ({"prev_position": "long", "prev_position_size": 0}, "alert"),
    ({"position_size": 1}, "alert"),
    ({"options": "write"}, "options"),
])
def test_inconsistent_or_invalid_position_fields_are_refused(fields, field):
    assert field in errors_of({**BASE, **fields})


@pytest.mark.parametrize("fields", [
    {"strike": 10 ** 400}, {"lots": "1e400"}, {"lots": 10 ** 400}, {"price": float("inf"), "orderType": "LIMIT"},
    {"lots": "nan"}, {"position": "long", "position_size": float("nan")}, {"time": 10 ** 30},
])
def test_extreme_numbers_are_field_errors(fields):
    assert errors_of({**BASE, **fields})


# --- identity ---------------------------------------------------------------------


NOW = datetime(2026, 11, 23, 4, 30, 50, tzinfo=timezone.utc)


def test_re_sends_of_one_trigger_share_an_order_id_and_triggers_differ():
    at = NOW.isoformat()
    first = identify(parse_alert({**BASE, "time": at}), header_key=None, now=NOW, window_seconds=60)
    resend = identify(parse_alert({**BASE, "time": at}), header_key=None, now=NOW + timedelta(seconds=15),
                      window_seconds=60)
    later = identify(parse_alert({**BASE, "time": (NOW + timedelta(minutes=5)).isoformat()}), header_key=None,
                     now=NOW, window_seconds=60)
    assert first.order_id == resend.order_id != later.order_id
    assert first.source == "time" and len(first.claims) == 1


def test_without_time_an_alert_claims_its_window_and_the_next():
    ident = identify(parse_alert(BASE), header_key=None, now=NOW, window_seconds=60)
    retry = identify(parse_alert(BASE), header_key=None, now=NOW + timedelta(seconds=20), window_seconds=60)
    assert ident.source == "window" and len(ident.claims) == 2
    assert set(ident.claims) & set(retry.claims)  # straddling the bucket edge still collides


def test_an_explicit_key_is_scoped_to_the_strategy():
    a = identify(parse_alert({**BASE, "strategy": "a"}), header_key="1", now=NOW, window_seconds=60)
    b = identify(parse_alert({**BASE, "strategy": "b"}), header_key="1", now=NOW, window_seconds=60)
    assert a.source == "explicit" and a.order_id != b.order_id


def test_order_ids_are_valid_fyers_order_tags():
    order_id = order_id_for("anything at all / with : symbols")
    assert order_id.isalnum() and len(order_id) <= 30 and order_id.startswith("tv")

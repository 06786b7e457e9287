"""What an alert may say, and how it is normalised."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

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


def test_unknown_fields_are_kept_for_the_audit_but_not_in_the_order():
    alert = parse_alert({**BASE, "comment": "from Pine"})
    assert alert.unknown_fields() == {"comment": "from Pine"}
    assert "comment" not in alert.order_fields() and "secret" not in alert.order_fields()


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

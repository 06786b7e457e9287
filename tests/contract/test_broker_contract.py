"""Contract: the real fyers_apiv3 SDK, through common.broker, against the Fyers simulator.

One scenario per outcome class: placed, ambiguous, rejected, token dead, rate
limited, transient; then reading the book, quotes, positions, the login, and
the adapter's hygiene (deadlines, no files in the working directory, no secrets
in logs, threads).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import urllib.parse
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from common.broker import (
    OrderRequest,
    exchange_auth_code,
    login_url,
    refresh_access_token,
    token_expiry,
)
from common.errors import (
    BrokerAmbiguous,
    BrokerRejected,
    BrokerTransient,
    ConfigError,
    RateLimited,
    TokenDead,
    ValidationFailed,
)
from deploy.local.fyers_sim import ORDERBOOK, PLACE, POSITIONS, PROFILE, QUOTES
from tests.contract.conftest import (
    APP_ID,
    APP_SECRET,
    EQ,
    FUT,
    INDEX,
    IST,
    NOW,
    OPT,
    make_broker,
    market,
)

HANG_SECONDS = 3.0
MARGIN_SHORTFALL = "RED:Margin Shortfall:INR 12345.00 Available:INR 100.00 for C-XY12345 [FYERS_RISK_CUG]"


def placements(sim) -> list[dict]:
    return [r for r in sim.requests if f"{r['method']} {r['path']}" == PLACE]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- placed ---------------------------------------------------------------------


def test_a_market_order_is_placed_and_the_broker_books_its_ticker_qty_and_tag(broker, sim):
    result = broker.place_order(market(FUT, qty=130, tag="tv1"))

    assert result.code == 1101
    assert len(result.order_id) == 14 and result.order_id.startswith("261123")
    assert result.order_ids == (result.order_id,)
    (booked,) = sim.orders
    assert (booked["id"], booked["symbol"], booked["qty"], booked["orderTag"]) == (result.order_id, FUT, 130, "1:tv1")
    assert placements(sim)[0]["app_id"] == APP_ID


def test_a_sliced_order_returns_every_slice_id(broker, sim, monkeypatch):
    monkeypatch.setattr(sim.exchange, "freeze_qty", {"NIFTY": 1755})

    result = broker.place_order(market(FUT, qty=65 * 60, tag="big1", slice=True))

    assert len(result.order_ids) == 3
    assert sorted(o["qty"] for o in sim.orders) == [390, 1755, 1755]
    assert {o.id for o in broker.orders_by_tag("big1")} == set(result.order_ids)


# --- ambiguous ------------------------------------------------------------------


def test_no_ack_with_the_order_booked_is_ambiguous_and_the_tag_lookup_finds_it(broker, sim):
    sim.add_fault("no_ack", route=PLACE, record=True)

    with pytest.raises(BrokerAmbiguous) as caught:
        broker.place_order(market(tag="noack1"))

    assert caught.value.broker_code == 201
    (found,) = broker.orders_by_tag("noack1")
    assert (found.symbol, found.qty, found.tag, found.status_name) == (FUT, 65, "noack1", "FILLED")


def test_no_ack_without_booking_is_ambiguous_and_the_tag_lookup_is_empty(broker, sim):
    sim.add_fault("no_ack", route=PLACE, record=False)

    with pytest.raises(BrokerAmbiguous):
        broker.place_order(market(tag="noack2"))

    assert broker.orders_by_tag("noack2") == []


def test_a_hang_past_the_read_timeout_is_cut_off_as_ambiguous_and_the_order_exists(broker, sim):
    sim.add_fault("hang", route=PLACE, seconds=HANG_SECONDS, record=True)

    with pytest.raises(BrokerAmbiguous) as caught:
        broker.place_order(market(tag="hang1"))

    assert "ReadTimeout" in caught.value.message
    assert [o["orderTag"] for o in sim.orders] == ["1:hang1"]


def test_a_connection_reset_after_sending_is_ambiguous(broker, sim):
    sim.add_fault("reset_connection", route=PLACE, record=True)

    with pytest.raises(BrokerAmbiguous):
        broker.place_order(market(tag="reset1"))

    assert len(sim.orders) == 1


def test_the_gateways_503_page_on_placement_is_transient_as_nothing_was_booked(broker, sim):
    sim.add_fault("http_503_html", route=PLACE)

    with pytest.raises(BrokerTransient) as caught:
        broker.place_order(market())

    assert "HTTP 503" in caught.value.message and "nothing was booked" in caught.value.message
    assert sim.orders == []


def test_a_json_5xx_on_placement_is_ambiguous():
    from common.broker.outcome import CallRecord, check

    with pytest.raises(BrokerAmbiguous):
        check({"s": "error", "code": -500, "message": "Internal error"}, CallRecord("POST", "/orders/sync", status=500),
              synthetic=False, placement=True, what="place_order")


# --- rejected -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (market("NSE:NOSUCH26NOVFUT"), "The input symbol is invalid."),
        (market("NSE:NIFTY26NOV24510CE"), "The input symbol is invalid."),
        (market(FUT, qty=64), "not a multiple of lot size 65"),
        (OrderRequest(symbol=FUT, qty=65, side=1, type=1, product="MARGIN", limit_price=24500.03),
         "LimitPrice not a multiple of tick size 0.1000"),
        (OrderRequest(symbol=OPT, qty=65, side=-1, type=4, product="MARGIN", limit_price=90.0, stop_price=100.02),
         "StopPrice not a multiple of tick size 0.0500"),
    ],
    ids=["unknown-symbol", "unlisted-strike", "off-lot", "limit-off-tick", "stop-off-tick"],
)
def test_invalid_orders_are_rejected_with_fyers_message_kept(broker, sim, request_, message):
    with pytest.raises(BrokerRejected) as caught:
        broker.place_order(request_)

    assert caught.value.broker_code == -50
    assert message in caught.value.broker_message
    assert sim.orders == []


def test_the_algo_restriction_is_a_rejection_with_fyers_words(broker, sim):
    sim.add_fault("algo_not_allowed", route=PLACE)

    with pytest.raises(BrokerRejected) as caught:
        broker.place_order(market())

    assert caught.value.broker_code == -50
    assert caught.value.broker_message == (
        f"Request rejected: Order placement restricted. Algo orders are not allowed from this app {APP_ID}"
    )


def test_a_real_99_rejection_keeps_its_reason(broker, sim):
    sim.add_fault("reject", route=PLACE, message="Order value exceeds the RMS limit")

    with pytest.raises(BrokerRejected) as caught:
        broker.place_order(market())

    assert (caught.value.broker_code, caught.value.broker_message) == (-99, "Order value exceeds the RMS limit")


@pytest.mark.parametrize(
    "kwargs",
    [dict(tag="tv-1"), dict(tag="x" * 31), dict(tag="Untagged"), dict(tag="tv1", product="BO")],
    ids=["dash", "too-long", "reserved", "on-bracket-order"],
)
def test_a_bad_tag_is_refused_before_anything_reaches_fyers(broker, sim, kwargs):
    with pytest.raises(ValidationFailed):
        broker.place_order(market(**kwargs))

    assert sim.requests == []


# --- token dead -----------------------------------------------------------------


def test_an_unknown_token_is_dead_with_16(sim, log_dir):
    broker = make_broker(sim, lambda: "not-a-token", log_dir)

    with pytest.raises(TokenDead) as caught:
        broker.profile()

    assert caught.value.broker_code == -16


def test_an_expired_token_is_dead_with_8(sim, log_dir):
    stale = sim.mint_token(APP_ID, expires_at=NOW - timedelta(seconds=1))
    broker = make_broker(sim, lambda: stale, log_dir)

    with pytest.raises(TokenDead) as caught:
        broker.place_order(market())

    assert caught.value.broker_code == -8
    assert sim.orders == []


def test_tokens_expiring_mid_day_are_dead_on_the_next_call(broker, sim):
    broker.profile()
    sim.add_fault("expire_tokens")

    with pytest.raises(TokenDead) as caught:
        broker.positions()

    assert caught.value.broker_code == -8


def test_a_dead_token_on_quotes_is_dead_with_15(sim, log_dir):
    broker = make_broker(sim, lambda: "not-a-token", log_dir)

    with pytest.raises(TokenDead) as caught:
        broker.quotes([FUT])

    assert caught.value.broker_code == -15


def test_no_token_at_all_is_dead_without_calling_fyers(sim, log_dir):
    with pytest.raises(TokenDead):
        make_broker(sim, lambda: "", log_dir).profile()

    assert sim.requests == []


def test_a_new_token_from_the_provider_takes_effect_on_the_next_call(sim, log_dir):
    current = [sim.mint_token(APP_ID)]
    broker = make_broker(sim, lambda: current[0], log_dir)
    broker.profile()
    sim.add_fault("expire_tokens")
    with pytest.raises(TokenDead):
        broker.profile()

    current[0] = sim.mint_token(APP_ID)  # the daily login stored a new token

    assert broker.profile().fy_id == "XY12345"


# --- rate limited ---------------------------------------------------------------


def test_a_429_gives_the_wait_from_the_millisecond_header(broker, sim):
    sim.add_fault("rate_limit", route=PLACE, retry_after_ms=2500)

    with pytest.raises(RateLimited) as caught:
        broker.place_order(market())

    assert caught.value.retry_after == 2.5
    assert caught.value.broker_code == -429
    assert sim.orders == []


def test_the_real_limit_refuses_the_call_over_the_window(broker, sim):
    sim.set_rate_limits(per_second=3, per_minute=100)
    for _ in range(3):
        broker.profile()

    with pytest.raises(RateLimited) as caught:
        broker.profile()

    assert 0 < caught.value.retry_after <= 1.0
    assert sim.rate_breaches[APP_ID]["second"] == 1


# --- transient ------------------------------------------------------------------


def test_a_503_page_on_a_read_is_transient(broker, sim):
    sim.add_fault("http_503_html", route=POSITIONS)

    with pytest.raises(BrokerTransient):
        broker.positions()


def test_a_hang_on_a_read_is_transient(broker, sim):
    sim.add_fault("hang", route=ORDERBOOK, seconds=HANG_SECONDS)

    with pytest.raises(BrokerTransient):
        broker.orders_by_tag("tv1")


@pytest.mark.parametrize("call", ["profile", "place_order"])
def test_a_refused_connection_is_transient_even_for_a_placement(sim, token, log_dir, call):
    port = closed_port()
    broker = make_broker(sim, lambda: token, log_dir, api_base=f"http://127.0.0.1:{port}/api/v3",
                         data_base=f"http://127.0.0.1:{port}/data")

    with pytest.raises(BrokerTransient) as caught:
        broker.profile() if call == "profile" else broker.place_order(market())

    assert "could not be reached" in caught.value.message
    assert not isinstance(caught.value, BrokerAmbiguous)


# --- reading the book -----------------------------------------------------------


def test_an_async_margin_rejection_shows_as_status_5_with_the_red_message(broker, sim):
    sim.add_fault("async_reject", route=PLACE)

    placed = broker.place_order(market(tag="margin1"))
    order = broker.order_by_id(placed.order_id)

    assert (order.status, order.status_name, order.is_final) == (5, "REJECTED", True)
    assert order.message == MARGIN_SHORTFALL


def test_an_unknown_order_id_reads_as_none(broker):
    assert broker.order_by_id("26112399999999") is None


def test_order_by_id_reads_a_pending_limit_order(broker, sim):
    sim.set_price(OPT, 100.0)
    placed = broker.place_order(OrderRequest(symbol=OPT, qty=65, side=1, type=1, product="MARGIN",
                                             limit_price=95.5, tag="lim1"))

    order = broker.order_by_id(placed.order_id)

    assert (order.status_name, order.is_final, order.filled_qty, order.remaining_qty) == ("PENDING", False, 0, 65)
    assert (order.limit_price, order.type, order.side, order.product, order.tag) == (95.5, 1, 1, "MARGIN", "lim1")
    assert order.order_time == NOW


def test_orders_by_tag_strips_the_prefix_and_ignores_other_orders(broker, sim):
    first = broker.place_order(market(tag="strat7"))
    broker.place_order(market(tag="strat8"))
    broker.place_order(market(tag=None))

    (order,) = broker.orders_by_tag("strat7")

    assert (order.id, order.tag, order.filled_qty, order.traded_price) == (first.order_id, "strat7", 65, 24500.0)
    untagged = [o for o in sim.orders if o["orderTag"] == "2:Untagged"]
    assert len(untagged) == 1


def test_the_whole_book_lists_untagged_orders_too(broker, sim):
    tagged = broker.place_order(market(tag="strat9"))
    untagged = broker.place_order(market(tag=None, side=-1))

    book = {o.id: o for o in broker.orders()}

    assert book[tagged.order_id].tag == "strat9"
    assert book[untagged.order_id].tag is None and book[untagged.order_id].side == -1


def test_quotes_are_matched_by_name_not_position(broker, sim):
    sim.set_price(FUT, 24510.3)
    sim.set_price(EQ, 812.45)
    sim.add_fault("shuffle", route=QUOTES)

    quotes = broker.quotes([FUT, EQ, INDEX, "NSE:NOSUCH-EQ"])

    assert {t: q.ltp for t, q in quotes.items()} == {FUT: 24510.3, EQ: 812.45, INDEX: 24500.0}
    assert quotes[EQ].at == NOW


def test_more_than_50_quotes_are_asked_50_at_a_time(broker, sim):
    tickers = [t for t in sim.instruments if t.startswith("NSE:NIFTY26D01")][:70]

    quotes = broker.quotes(tickers)

    assert set(quotes) == set(tickers)
    asked = [r["query"]["symbols"].split(",") for r in sim.requests if f"{r['method']} {r['path']}" == QUOTES]
    assert [len(batch) for batch in asked] == [50, 20]


def test_fills_show_up_as_signed_positions_and_trades(broker, sim):
    broker.place_order(market(FUT, qty=130, side=1))
    broker.place_order(market(FUT, qty=195, side=-1))

    (position,) = broker.positions()
    trades = broker.tradebook()

    assert (position.id, position.net_qty, position.buy_qty, position.sell_qty) == (f"{FUT}-MARGIN", -65, 130, 195)
    assert position.net_avg == 24500.0
    assert [(t.side, t.qty, t.price, t.tag) for t in trades] == [(1, 130, 24500.0, "tv1"), (-1, 195, 24500.0, "tv1")]


def test_profile_and_funds_read_the_account(broker):
    assert broker.profile().fy_id == "XY12345"
    assert broker.funds()["Clear Balance"] == 1_000_000.0


# --- the daily login ------------------------------------------------------------


def login(sim, state: str = "st4te") -> str:
    """Follow the login URL as the trader's browser would; return the redirect's auth code."""
    url = login_url(APP_ID, "https://auth.example/callback", state, api_base=sim.api_base)
    answer = requests.get(url, allow_redirects=False, timeout=2)
    assert answer.status_code == 302
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer.headers["Location"]).query))
    assert (query["s"], query["state"]) == ("ok", state)
    return query["auth_code"]


def test_an_auth_code_exchange_gives_a_working_session_until_6am(sim, log_dir):
    pair = exchange_auth_code(APP_ID, APP_SECRET, login(sim), api_base=sim.api_base)

    assert pair.expires_at == datetime(2026, 11, 24, 6, 0, tzinfo=IST)
    assert pair.refresh_token and pair.access_token not in repr(pair)
    assert make_broker(sim, lambda: pair.access_token, log_dir).profile().fy_id == "XY12345"


def test_a_reused_auth_code_is_rejected_with_437(sim):
    code = login(sim)
    exchange_auth_code(APP_ID, APP_SECRET, code, api_base=sim.api_base)

    with pytest.raises(BrokerRejected) as caught:
        exchange_auth_code(APP_ID, APP_SECRET, code, api_base=sim.api_base)

    assert (caught.value.broker_code, caught.value.broker_message) == (-437, "invalid auth code")


def test_a_wrong_app_secret_is_rejected_with_371(sim):
    with pytest.raises(BrokerRejected) as caught:
        exchange_auth_code(APP_ID, "wrong-secret", login(sim), api_base=sim.api_base)

    assert caught.value.broker_code == -371


def test_a_missing_auth_code_is_rejected_with_441(sim):
    with pytest.raises(BrokerRejected) as caught:
        exchange_auth_code(APP_ID, APP_SECRET, "", api_base=sim.api_base)

    assert caught.value.broker_code == -441


def test_refresh_is_disabled_and_means_a_fresh_login(sim):
    pair = exchange_auth_code(APP_ID, APP_SECRET, login(sim), api_base=sim.api_base)

    with pytest.raises(TokenDead) as caught:
        refresh_access_token(APP_ID, APP_SECRET, pair.refresh_token, "1234", api_base=sim.api_base)

    assert caught.value.broker_code == -16
    assert "disabled" in caught.value.message


def test_token_expiry_reads_the_jwt_and_tolerates_garbage(sim):
    assert token_expiry(sim.mint_token(APP_ID)) == datetime(2026, 11, 24, 6, 0, tzinfo=IST)
    assert token_expiry("not.a-jwt") is None
    assert token_expiry("") is None


# --- hygiene --------------------------------------------------------------------


def test_the_sdk_writes_nothing_in_a_read_only_working_directory(sim, token, tmp_path, monkeypatch):
    cwd = tmp_path / "read-only-cwd"
    cwd.mkdir()
    cwd.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    monkeypatch.chdir(cwd)
    log_dir = tmp_path / "tmpdir" / "fyers-sdk-logs"

    broker = make_broker(sim, lambda: token, log_dir)
    broker.profile()
    broker.place_order(market())

    assert os.listdir(cwd) == []
    assert sorted(os.listdir(log_dir)) == ["fyersApi.log", "fyersRequests.log"]


def test_no_token_or_secret_reaches_any_log(sim, log_dir, caplog):
    caplog.set_level(logging.DEBUG)
    pair = exchange_auth_code(APP_ID, APP_SECRET, login(sim), api_base=sim.api_base)
    broker = make_broker(sim, lambda: pair.access_token, log_dir)
    broker.place_order(market())
    sim.add_fault("reject", route=PLACE, message="RMS says no")
    with pytest.raises(BrokerRejected) as caught:
        broker.place_order(market())

    sdk_files = [Path(h.baseFilename) for name in ("FyersAPI", "FyersAPIRequest")
                 for h in logging.getLogger(name).handlers if hasattr(h, "baseFilename")]
    texts = [caplog.text, str(caught.value), repr(caught.value), *(p.read_text() for p in sdk_files)]
    assert sdk_files
    for secret in (pair.access_token, pair.refresh_token, APP_SECRET):
        assert not any(secret in text for text in texts)


def test_threads_share_one_adapter_safely(broker, sim):
    ids: list[str] = []
    errors: list[BaseException] = []

    def place_three(n: int) -> None:
        try:
            for k in range(3):
                ids.append(broker.place_order(market(tag=f"t{n}k{k}")).order_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=place_three, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(set(ids)) == 24 == len(sim.orders)
    assert broker.orders_by_tag("t5k2")[0].id in ids


def test_a_changed_sdk_base_url_fails_closed(broker, sim, monkeypatch):
    from fyers_apiv3 import fyersModel

    monkeypatch.setattr(fyersModel.Config, "API", "https://elsewhere.example/api/v3")

    with pytest.raises(ConfigError):
        broker.profile()

    assert [r for r in sim.requests if f"{r['method']} {r['path']}" == PROFILE] == []

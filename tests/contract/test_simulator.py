"""The Fyers simulator on its own, over raw HTTP: what it promises beyond the adapter's view."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
import requests

from deploy.local.fyers_sim import PLACE, PROFILE
from deploy.local.fyers_sim.ratelimit import RateLimiter
from deploy.local.fyers_sim.tokens import session_expiry
from deploy.local.fyers_simulator import FyersSimulator
from tests.contract.conftest import APP_ID, EQ, FUT, IST, NOW, OPT, OTHER_APP_ID

MASTER_ROWS = (
    "101126112435001,NIFTY 24 Nov 26 FUT,11,65,0.1,,0915-1540|1815-1915:,2026-11-23,1795514400,"
    "NSE:NIFTY26NOVFUT,10,11,35001,NIFTY,26000,-1.0,XX,101000000026000,None,0,0.0\n"
)


class Client:
    """Raw HTTP against the simulator, authorised as one app."""

    def __init__(self, sim: FyersSimulator, token: str, app_id: str = APP_ID) -> None:
        self.sim, self.headers = sim, {"Authorization": f"{app_id}:{token}"}

    def get(self, path: str, **params) -> requests.Response:
        base = self.sim.data_base if path.startswith("/quotes") or path == "/marketStatus" else self.sim.api_base
        return requests.get(base + path, params=params, headers=self.headers, timeout=2)

    def send(self, method: str, path: str, body: object) -> requests.Response:
        return requests.request(method, self.sim.api_base + path, json=body, headers=self.headers, timeout=2)

    def place(self, **fields) -> requests.Response:
        body = {"symbol": FUT, "qty": 65, "type": 2, "side": 1, "productType": "MARGIN", **fields}
        return self.send("POST", "/orders/sync", body)


@pytest.fixture
def client(sim, token) -> Client:
    return Client(sim, token)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- rate limits ----------------------------------------------------------------


def test_ten_calls_a_second_pass_and_the_eleventh_gets_429_with_retry_headers():
    clock = FakeMonotonic()
    with FyersSimulator([MASTER_ROWS], {APP_ID: "s"}, lambda: NOW, monotonic=clock) as sim:
        client = Client(sim, sim.mint_token(APP_ID))
        statuses = []
        for _ in range(10):
            statuses.append(client.get("/profile").status_code)
            clock.now += 0.05
        refused = client.get("/profile")
        clock.now += 0.6  # the first call leaves the one-second window
        again = client.get("/profile")

    assert statuses == [200] * 10
    assert refused.status_code == 429
    assert refused.json() == {"s": "error", "code": -429, "message": "Request limit reached"}
    assert (refused.headers["Retry-After"], refused.headers["X-Retry-After-Ms"]) == ("1", "500")
    assert again.status_code == 200
    assert sim.rate_breaches == {APP_ID: {"second": 1, "minute": 0}}


def test_the_limits_are_per_app():
    clock = FakeMonotonic()
    with FyersSimulator([MASTER_ROWS], {APP_ID: "s", OTHER_APP_ID: "t"}, lambda: NOW, monotonic=clock) as sim:
        mine, other = Client(sim, sim.mint_token(APP_ID)), Client(sim, sim.mint_token(OTHER_APP_ID), OTHER_APP_ID)
        for _ in range(10):
            mine.get("/profile")

        assert mine.get("/profile").status_code == 429
        assert other.get("/profile").status_code == 200


def test_more_than_three_minute_breaches_block_the_app():
    clock = FakeMonotonic()
    limiter = RateLimiter(per_second=1000, per_minute=2, monotonic=clock)
    waits = []
    for _ in range(4):  # four episodes, a minute apart: two calls pass, the third breaches
        waits.append([limiter.admit("A") for _ in range(3)])
        clock.now += 61

    assert [w[:2] for w in waits] == [[None, None]] * 3 + [[None, None]]
    assert all(w[2] is not None for w in waits)
    assert limiter.breaches["A"]["minute"] == 4 and "A" in limiter.blocked
    assert limiter.admit("A") == 3600.0


# --- orders ---------------------------------------------------------------------


def test_an_accepted_order_answers_1101_with_a_dated_14_digit_id(client):
    answer = client.place(orderTag="abc123").json()

    assert answer["s"] == "ok" and answer["code"] == 1101
    assert answer["message"] == f"Order submitted successfully. Your Order Ref. No.{answer['id']}"
    assert answer["id"].startswith("261123") and len(answer["id"]) == 14 and answer["id"].isdigit()


def test_tags_come_back_prefixed_and_untagged_orders_say_so(client):
    client.place(orderTag="abc123")
    client.place()

    book = client.get("/orders").json()["orderBook"]
    by_tag = client.get("/orders", order_tag="1:abc123").json()["orderBook"]

    assert [o["orderTag"] for o in book] == ["1:abc123", "2:Untagged"]
    assert [o["orderTag"] for o in by_tag] == ["1:abc123"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(qty=100), "not a multiple of lot size 65"),
        (dict(type=1, limitPrice=24500.05), "LimitPrice not a multiple of tick size 0.1000"),
        (dict(symbol=OPT, type=4, side=1, stopPrice=400.0, limitPrice=400.02),
         "LimitPrice not a multiple of tick size 0.0500"),
        (dict(symbol="NIFTY26NOVFUT"), "The input symbol is invalid."),
        (dict(symbol="NSE:NIFTY50-INDEX"), "The input symbol is invalid."),
        (dict(orderTag="has space"), "Invalid orderTag"),
        (dict(orderTag="x" * 31), "Invalid orderTag"),
        (dict(orderTag="ok1", productType="BO", stopLoss=10.0, takeProfit=20.0), "not allowed for CO and BO"),
        (dict(type=3, side=1, stopPrice=24000.0), "StopPrice must not be below LTP"),
    ],
    ids=["lot", "tick", "stop-limit-tick", "no-exchange", "index", "tag-space", "tag-long", "tag-on-bo", "stop-side"],
)
def test_invalid_orders_are_refused_with_50(client, sim, fields, message):
    answer = client.place(**fields)

    assert answer.status_code == 400
    assert answer.json()["code"] == -50 and message in answer.json()["message"]
    assert sim.orders == []


def test_an_unknown_order_id_answers_51(client):
    answer = client.get("/orders", id="26112399999999")

    assert (answer.status_code, answer.json()["code"]) == (400, -51)


def test_a_resting_limit_order_fills_when_the_price_reaches_it(client, sim):
    sim.set_price(EQ, 800.0)
    order_id = client.place(symbol=EQ, qty=10, type=1, limitPrice=795.0, productType="INTRADAY").json()["id"]
    assert client.get("/orders", id=order_id).json()["orderBook"][0]["status"] == 6

    sim.set_price(EQ, 794.5)

    (order,) = client.get("/orders", id=order_id).json()["orderBook"]
    assert (order["status"], order["filledQty"], order["tradedPrice"]) == (2, 10, 794.5)


def test_a_stop_order_triggers_and_can_be_cancelled_before(client, sim):
    sim.set_price(EQ, 800.0)
    stop = client.place(symbol=EQ, qty=5, type=3, side=-1, stopPrice=790.0, productType="INTRADAY").json()["id"]
    kept = client.place(symbol=EQ, qty=5, type=3, side=-1, stopPrice=780.0, productType="INTRADAY").json()["id"]
    cancelled = client.send("DELETE", "/orders/sync", {"id": kept}).json()

    sim.set_price(EQ, 789.0)

    statuses = {o["id"]: o["status"] for o in client.get("/orders").json()["orderBook"]}
    assert cancelled["code"] == 1103
    assert statuses == {stop: 2, kept: 1}


def test_positions_net_signed_quantities_and_keep_closed_ones(client, sim):
    sim.set_price(EQ, 800.0)
    client.place(symbol=EQ, qty=10, side=1, productType="INTRADAY")
    sim.set_price(EQ, 810.0)
    client.place(symbol=EQ, qty=10, side=-1, productType="INTRADAY")
    client.place(qty=65, side=-1)

    positions = {p["id"]: p for p in client.get("/positions").json()["netPositions"]}

    closed, short = positions[f"{EQ}-INTRADAY"], positions[f"{FUT}-MARGIN"]
    assert (closed["netQty"], closed["buyQty"], closed["sellQty"], closed["realized_profit"]) == (0, 10, 10, 100.0)
    assert (short["netQty"], short["side"], short["netAvg"]) == (-65, -1, 24500.0)
    trades = client.get("/tradebook").json()["tradeBook"]
    assert [(t["symbol"], t["tradedQty"], t["side"]) for t in trades] == [(EQ, 10, 1), (EQ, 10, -1), (FUT, 65, -1)]


def test_exit_all_closes_open_positions(client):
    client.place(qty=130)

    answer = client.send("DELETE", "/positions", {"exit_all": 1})

    (position,) = client.get("/positions").json()["netPositions"]
    assert answer.json()["s"] == "ok" and position["netQty"] == 0
    assert client.send("DELETE", "/positions", {"exit_all": 1}).json()["code"] == -352


# --- quotes and market status ---------------------------------------------------


def test_quotes_decode_the_query_and_answer_per_symbol(client, sim):
    sim.set_price(EQ, 812.45)

    answer = client.get("/quotes", symbols=f"{EQ},NSE:NIFTY50-INDEX,NSE:NOPE-EQ").json()

    assert answer["s"] == "ok"
    items = {item["n"]: item for item in answer["d"]}
    assert items[EQ]["v"]["lp"] == 812.45 and items["NSE:NIFTY50-INDEX"]["s"] == "ok"
    assert items["NSE:NOPE-EQ"]["s"] == "error"


def test_quotes_refuse_more_than_50_symbols_and_all_bad_batches(client, sim):
    many = ",".join(list(sim.instruments)[:51])

    assert client.get("/quotes", symbols=many).json()["code"] == -50
    assert client.get("/quotes", symbols="NSE:NOPE-EQ").json()["code"] == -300


def test_option_defaults_follow_the_underlying(client, sim):
    sim.set_price("NSE:NIFTY50-INDEX", 25000.0)

    ltp = client.get("/quotes", symbols=OPT).json()["d"][0]["v"]["lp"]

    assert 500.0 < ltp < 600.0  # 500 intrinsic for the 24500 call, plus time value


def test_market_status_follows_the_clock(client, sim):
    assert {m["status"] for m in client.get("/marketStatus").json()["marketStatus"]} == {"OPEN"}
    sim.set_clock(NOW.replace(hour=16))
    assert {m["status"] for m in client.get("/marketStatus").json()["marketStatus"]} == {"CLOSED"}


# --- auth -----------------------------------------------------------------------


def test_trading_routes_answer_16_for_unknown_and_8_for_expired_tokens(sim):
    expired = sim.mint_token(APP_ID, expires_at=NOW - timedelta(minutes=1))

    unknown = Client(sim, "bogus").get("/profile")
    stale = Client(sim, expired).get("/profile")
    data = Client(sim, expired).get("/quotes", symbols=EQ)

    assert (unknown.status_code, unknown.json()["code"]) == (401, -16)
    assert (stale.status_code, stale.json()["code"]) == (401, -8)
    assert (data.status_code, data.json()["code"]) == (401, -15)


def test_a_token_of_another_app_is_unknown(sim):
    other = sim.mint_token(OTHER_APP_ID)

    assert Client(sim, other, APP_ID).get("/profile").json()["code"] == -16


def test_tokens_are_jwts_expiring_at_6am_ist(sim):
    token = sim.mint_token(APP_ID)
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    assert datetime.fromtimestamp(claims["exp"], IST) == datetime(2026, 11, 24, 6, 0, tzinfo=IST)
    assert session_expiry(datetime(2026, 11, 24, 0, 50, tzinfo=IST)) == datetime(2026, 11, 24, 6, 0, tzinfo=IST)


def test_logout_kills_the_token(client):
    assert client.send("POST", "/logout", None).json()["s"] == "ok"
    assert client.get("/profile").json()["code"] == -16


def test_the_login_page_asks_for_approval_unless_auto_approving(sim):
    url = f"{sim.api_base}/generate-authcode"
    params = {"client_id": APP_ID, "redirect_uri": "http://cb.local/x?a=1", "response_type": "code", "state": "s1"}
    sim.auto_approve = False
    try:
        page = requests.get(url, params=params, timeout=2)
        approved = requests.get(url, params={**params, "approve": "1"}, allow_redirects=False, timeout=2)
    finally:
        sim.auto_approve = True
    unknown = requests.get(url, params={**params, "client_id": "NOPE-100"}, timeout=2)

    assert page.status_code == 200 and "Approve" in page.text and 'value="s1"' in page.text
    assert approved.status_code == 302
    assert approved.headers["Location"].startswith("http://cb.local/x?a=1&s=ok&code=200&auth_code=")
    assert approved.headers["Location"].endswith("&state=s1")
    assert unknown.json()["code"] == -352


def test_refresh_is_always_refused(sim):
    answer = requests.post(f"{sim.api_base}/validate-refresh-token", json={"grant_type": "refresh_token"}, timeout=2)

    assert answer.status_code == 400
    assert answer.json() == {
        "s": "error", "code": -16,
        "message": "Refresh token API is currently disabled to comply with SEBI regulations.",
    }


# --- faults and controls over HTTP ------------------------------------------------


def test_faults_prices_tokens_and_orders_are_controllable_over_http(sim):
    base = sim.base_url
    token = requests.post(f"{base}/_sim/token", json={"app_id": APP_ID}, timeout=2).json()["access_token"]
    client = Client(sim, token)
    requests.post(f"{base}/_sim/prices", json={"prices": {FUT: 24600.0}}, timeout=2)
    requests.post(f"{base}/_sim/faults", json={"kind": "no_ack", "route": PLACE, "record": True}, timeout=2)

    answer = client.place(orderTag="ctl1").json()

    orders = requests.get(f"{base}/_sim/orders", timeout=2).json()["orders"]
    assert answer["code"] == 201
    assert [(o["orderTag"], o["tradedPrice"]) for o in orders] == [("1:ctl1", 24600.0)]
    log = requests.get(f"{base}/_sim/requests", timeout=2).json()["requests"]
    assert [(r["method"], r["path"], r["app_id"], r["status"]) for r in log] == [
        ("POST", "/api/v3/orders/sync", APP_ID, 200)
    ]
    assert requests.post(f"{base}/_sim/faults", json={"kind": "nonsense"}, timeout=2).status_code == 400


def test_faults_strike_the_next_n_calls_of_their_route_only(client, sim):
    sim.add_fault("http_503_html", route=PROFILE, count=2)

    statuses = [client.get("/profile").status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert client.get("/funds").status_code == 200


def test_a_reset_connection_gets_no_answer(client, sim):
    sim.add_fault("reset_connection", route=PROFILE)

    with pytest.raises(requests.ConnectionError):
        client.get("/profile")


def test_the_cli_serves_until_terminated(tmp_path):
    master = tmp_path / "NSE_FO.csv"
    master.write_text(MASTER_ROWS)
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.fyers_simulator", "--port", "0", "--master", str(master),
         "--app-id", APP_ID, "--app-secret", "s"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        banner = process.stdout.readline()
        base = banner.split(" on ")[1].split(" ")[0]
        stats = requests.get(f"{base}/_sim/stats", timeout=2).json()
    finally:
        process.terminate()
        process.wait(timeout=5)

    assert "instruments" in banner and stats["orders"] == 0

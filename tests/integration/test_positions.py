"""Trade like a strategy: exits close exactly what entries opened.

Each scenario sends TradingView's alerts through the real webhook, delivers them to
the worker on the emulators and the simulator, and judges by the simulator's order
log and net positions, and by the ledger (``positions``, ``trades``).
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from common.ledger import POSITIONS, TRADES
from common.symbols import SymbolMaster
from deploy.local.mastergen import generate_masters
from functions.order_worker import handle
from tests.integration.conftest import (
    MARKET_NOW,
    SECRET,
    TODAY,
    Clock,
    cloud_event,
    make_client,
    order,
    order_id_of,
    real_time_worker,
    sim_orders,
)

pytestmark = pytest.mark.emulators

INDEX = "NSE:NIFTY50-INDEX"
CE_24500, CE_24600 = "NSE:NIFTY26NOV24500CE", "NSE:NIFTY26NOV24600CE"
PE_24500 = "NSE:NIFTY26NOV24500PE"


class Strategy:
    """A TradingView strategy's alerts, rendered as the README's template renders them."""

    def __init__(self, name: str, deps_factory: Any, topics: Any, clock: Clock, **template: Any) -> None:
        self.name, self.topics, self.clock = name, topics, clock
        self.client = make_client(deps_factory(clock=clock))
        self.template = {"symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM", "optionType": "CE", **template}

    def signal(self, action: str, position: str | None = None, size: int | None = None, **fields: Any) -> Any:
        """Send one alert (a new {{timenow}} each) and return its Pub/Sub message."""
        self.clock.advance(1)
        body = {"secret": SECRET, "strategy": self.name, "action": action, "lots": max(size or 1, 1),
                **self.template, "time": self.clock.now.isoformat(), **fields}
        if position is not None:
            body.update(position=position, position_size=size or 0)
        answer = self.client.post("/", data=json.dumps(body), content_type="application/json")
        assert answer.status_code == 200, answer.get_json()
        [message] = self.topics.pull(self.topics.orders)
        return message


def net(sim: Any) -> dict[str, int]:
    """The simulator's open net positions by ticker."""
    return {p["symbol"]: p["netQty"] for p in sim.exchange.positions()["netPositions"] if p["netQty"]}


def legs(db: Any, strategy: str) -> list[dict[str, Any]]:
    docs = [d.to_dict() for d in db.collection(POSITIONS).where(filter=FieldFilter("strategy", "==", strategy)).stream()]
    return [leg for doc in docs for leg in doc["legs"]]


def trades(db: Any, strategy: str) -> list[dict[str, Any]]:
    return [d.to_dict() for d in db.collection(TRADES).where(filter=FieldFilter("strategy", "==", strategy)).stream()]


@pytest.fixture
def desk(worker_factory, deps_factory, topics):
    """``desk(name, **template)``: a strategy's alerts and the worker they go to, on one clock."""

    def open_desk(name: str, **template: Any) -> tuple[Strategy, Any]:
        clock = Clock(MARKET_NOW)
        return Strategy(name, deps_factory, topics, clock, **template), worker_factory(clock=clock)

    return open_desk


@pytest.fixture
def market(sim):
    """Option prices for the scenarios; the index at 24,512 (ATM 24500)."""
    for ticker, price in ((CE_24500, 101.0), (CE_24600, 60.0), (PE_24500, 95.0)):
        sim.set_price(ticker, price)
    return sim


def test_atm_drift_the_exit_sells_the_call_that_was_bought_and_the_broker_is_flat(desk, market, firestore_db):
    strategy, deps = desk("drift")

    handle(cloud_event(strategy.signal("buy", "long", 1)), deps)
    market.set_price(INDEX, 24612.0)  # two strikes up: ATM is now 24600
    market.set_price(CE_24500, 130.5)
    exit_message = strategy.signal("sell", "flat", 0)
    handle(cloud_event(exit_message), deps)

    entry, close = sim_orders(market)
    assert (entry["symbol"], entry["side"], close["symbol"], close["side"]) == (CE_24500, 1, CE_24500, -1)
    assert net(market) == {}
    assert legs(firestore_db, "drift") == []
    [trade] = trades(firestore_db, "drift")
    assert trade["ticker"] == CE_24500 and trade["quantity"] == 65
    assert trade["realised_pnl"] == pytest.approx((close["tradedPrice"] - entry["tradedPrice"]) * 65)
    assert order(firestore_db, order_id_of(exit_message))["intent"]["kind"] == "EXIT"


def test_the_exit_without_placeholders_closes_the_held_call_not_todays_atm(desk, market, firestore_db):
    strategy, deps = desk("plain")

    handle(cloud_event(strategy.signal("buy")), deps)
    market.set_price(INDEX, 24612.0)
    handle(cloud_event(strategy.signal("sell")), deps)  # a SELL of a held long closes it: never a new leg
    handle(cloud_event(strategy.signal("EXIT")), deps)  # nothing left: refused, nothing sent

    assert [o["symbol"] for o in sim_orders(market)] == [CE_24500, CE_24500]
    assert net(market) == {}


def test_reversal_long_call_to_short_sells_the_call_then_buys_the_put(desk, market, firestore_db):
    strategy, deps = desk("reversal", options="buy")
    strategy.template.pop("optionType")

    handle(cloud_event(strategy.signal("buy", "long", 1)), deps)
    reverse = strategy.signal("sell", "short", 1)
    handle(cloud_event(reverse), deps)

    assert [(o["symbol"], o["side"]) for o in sim_orders(market)] == [(CE_24500, 1), (CE_24500, -1), (PE_24500, 1)]
    assert net(market) == {PE_24500: 65}
    parent = order(firestore_db, order_id_of(reverse))
    [child_id] = parent["children"]
    child = order(firestore_db, child_id)
    assert (parent["status"], child["status"], child["parent_order_id"]) == ("PLACED", "PLACED", parent["order_id"])
    assert [leg["ticker"] for leg in legs(firestore_db, "reversal")] == [PE_24500]


def test_partial_exit_from_2_lots_to_1_sells_one_lot(desk, market, firestore_db):
    strategy, deps = desk("partial")

    handle(cloud_event(strategy.signal("buy", "long", 2)), deps)
    handle(cloud_event(strategy.signal("sell", "long", 1)), deps)

    assert [(o["side"], o["qty"]) for o in sim_orders(market)] == [(1, 130), (-1, 65)]
    assert net(market) == {CE_24500: 65}
    [leg] = legs(firestore_db, "partial")
    assert (leg["ticker"], leg["lots"], leg["quantity"]) == (CE_24500, 1, 65)


def test_two_strategies_on_nifty_hold_different_strikes_and_each_exit_closes_its_own(
        worker_factory, deps_factory, topics, market, firestore_db):
    clock = Clock(MARKET_NOW)
    first = Strategy("first", deps_factory, topics, clock)
    second = Strategy("second", deps_factory, topics, clock)
    deps = worker_factory(clock=clock)

    handle(cloud_event(first.signal("buy", "long", 1)), deps)
    market.set_price(INDEX, 24612.0)
    handle(cloud_event(second.signal("buy", "long", 1)), deps)
    handle(cloud_event(first.signal("sell", "flat", 0)), deps)

    assert net(market) == {CE_24600: 65}
    assert legs(firestore_db, "first") == [] and [g["ticker"] for g in legs(firestore_db, "second")] == [CE_24600]
    handle(cloud_event(second.signal("sell", "flat", 0)), deps)
    assert net(market) == {}


def test_an_exit_while_the_entry_limit_rests_cancels_it_and_sells_nothing(desk, market, firestore_db):
    strategy, deps = desk("resting")

    handle(cloud_event(strategy.signal("buy", "long", 1, orderType="LIMIT", price=90.0)), deps)  # rests below 101
    exit_message = strategy.signal("sell", "flat", 0)
    handle(cloud_event(exit_message), deps)

    [entry] = sim_orders(market)
    assert entry["status"] == 1  # cancelled
    assert net(market) == {}
    done = order(firestore_db, order_id_of(exit_message))
    assert (done["status"], done["reason"]) == ("SKIPPED", "ENTRY_CANCELLED")


def test_an_exit_while_the_entry_is_partly_filled_cancels_the_rest_and_closes_the_filled_part(
        desk, market, firestore_db):
    strategy, deps = desk("partfill")

    handle(cloud_event(strategy.signal("buy", "long", 2, orderType="LIMIT", price=90.0)), deps)
    [entry] = sim_orders(market)
    market.exchange.fill_partly(entry["id"], 65)
    handle(cloud_event(strategy.signal("sell", "flat", 0)), deps)

    cancelled, close = sim_orders(market)
    assert (cancelled["status"], cancelled["filledQty"]) == (1, 65)
    assert (close["symbol"], close["side"], close["qty"]) == (CE_24500, -1, 65)
    assert net(market) == {}


def test_an_exit_redelivered_5_times_and_resent_by_tradingview_is_one_exit_order(
        desk, worker_factory, market, firestore_db):
    strategy, deps = desk("redelivered")
    handle(cloud_event(strategy.signal("buy", "long", 1)), deps)

    exit_message = strategy.signal("sell", "flat", 0)
    resend = strategy.client.post("/", data=json.dumps({  # TradingView's re-send: the same body
        "secret": SECRET, "strategy": "redelivered", "action": "sell", "lots": 1, **strategy.template,
        "time": strategy.clock.now.isoformat(), "position": "flat", "position_size": 0}),
        content_type="application/json")
    assert resend.get_json()["status"] == "duplicate"
    deliveries = real_time_worker(worker_factory, ENFORCE_MARKET_HOURS="false")
    threads = [threading.Thread(target=handle, args=(cloud_event(exit_message), deliveries)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handle(cloud_event(exit_message), deps)
    handle(cloud_event(exit_message), deps)

    assert [o["side"] for o in sim_orders(market)] == [1, -1]
    assert net(market) == {}


def test_a_worker_killed_mid_exit_leaves_one_exit_order(worker_factory, deps_factory, topics, market, firestore_db):
    from common.records import OrderStatus
    from tests.integration.test_faults import DyingStore, Killed

    clock = Clock(MARKET_NOW)
    strategy = Strategy("crash", deps_factory, topics, clock)
    handle(cloud_event(strategy.signal("buy", "long", 1)), worker_factory(clock=clock))
    exit_message = strategy.signal("sell", "flat", 0)
    dying = worker_factory(clock=clock)
    dying.store = DyingStore(dying.store, lambda name, args, kw: name == "transition" and args[1] == OrderStatus.PLACED)

    with pytest.raises(Killed):
        handle(cloud_event(exit_message), dying)
    handle(cloud_event(exit_message), worker_factory(clock=Clock(clock.now + timedelta(seconds=10))))

    assert [o["side"] for o in sim_orders(market)] == [1, -1]
    assert net(market) == {} and order(firestore_db, order_id_of(exit_message))["status"] == "PLACED"


def test_nifty1_across_a_roll_the_exit_closes_the_contract_that_was_held(
        worker_factory, deps_factory, topics, market, firestore_db):
    november = "NSE:NIFTY26NOVFUT"
    market.set_price(november, 24530.0)
    market.set_price("NSE:NIFTY26DECFUT", 24610.0)
    clock = Clock(MARKET_NOW)
    strategy = Strategy("rolling", deps_factory, topics, clock, symbol="NIFTY1!", product="MARGIN")
    for key in ("expiry", "strike", "optionType"):
        strategy.template.pop(key)
    handle(cloud_event(strategy.signal("buy", "long", 1)), worker_factory(clock=clock))

    # Two days on, NIFTY1! means December; November is still held (and, in this master, listed).
    later = MARKET_NOW + timedelta(days=2)
    rolled = generate_masters(TODAY + timedelta(days=2))
    rolled["NSE_FO"] += "".join(line + "\n" for line in generate_masters(TODAY)["NSE_FO"].splitlines()
                                if november.split(":")[1] in line)
    clock.now = later
    after_roll = worker_factory(clock=clock)
    after_roll.master = lambda: SymbolMaster.from_csv(*rolled.values())
    handle(cloud_event(strategy.signal("sell", "flat", 0)), after_roll)

    assert [(o["symbol"], o["side"]) for o in sim_orders(market)] == [(november, 1), (november, -1)]
    assert net(market) == {}


def test_everything_closed_is_in_trades_with_the_pnl_of_the_simulators_fills(desk, market, firestore_db):
    strategy, deps = desk("ledger")

    handle(cloud_event(strategy.signal("buy", "long", 2)), deps)
    market.set_price(CE_24500, 111.0)
    handle(cloud_event(strategy.signal("sell", "long", 1)), deps)
    market.set_price(CE_24500, 96.5)
    handle(cloud_event(strategy.signal("sell", "flat", 0)), deps)

    fills = sim_orders(market)
    expected = sum((o["tradedPrice"] - fills[0]["tradedPrice"]) * o["filledQty"] for o in fills[1:])
    closed = trades(firestore_db, "ledger")
    assert sum(t["quantity"] for t in closed) == 130
    assert sum(t["realised_pnl"] for t in closed) == pytest.approx(expected)
    [position] = [d.to_dict() for d in firestore_db.collection(POSITIONS).where(
        filter=FieldFilter("strategy", "==", "ledger")).stream()]
    assert position["realised_pnl"] == pytest.approx(expected) and position["legs"] == []



def test_a_leg_closed_by_hand_at_fyers_is_not_sold_again_and_the_ledger_is_corrected(
        desk, market, firestore_db):
    from common.broker import OrderRequest

    strategy, deps = desk("by-hand")
    handle(cloud_event(strategy.signal("buy", "long", 1)), deps)
    deps.broker.place_order(OrderRequest(symbol=CE_24500, qty=65, side=-1, type=2, product="INTRADAY"))  # the trader

    exit_message = strategy.signal("sell", "flat", 0)
    handle(cloud_event(exit_message), deps)

    assert len(sim_orders(market)) == 2 and net(market) == {}  # nothing more was sold: no short opened
    done = order(firestore_db, order_id_of(exit_message))
    assert (done["status"], done["reason"]) == ("SKIPPED", "NOT_AT_BROKER")
    [position] = [d.to_dict() for d in firestore_db.collection(POSITIONS).where(
        filter=FieldFilter("strategy", "==", "by-hand")).stream()]
    assert position["legs"] == [] and position["adjustments"][0]["ticker"] == CE_24500


def test_a_mixed_burst_places_the_exits_before_the_entries_still_waiting(
        desk, worker_factory, deps_factory, topics, market, firestore_db):
    holders = [desk(f"holder-{n}") for n in range(3)]
    for strategy, deps in holders:
        handle(cloud_event(strategy.signal("buy", "long", 1)), deps)
    exits = [strategy.signal("sell", "flat", 0) for strategy, _ in holders]
    entries = [desk(f"newcomer-{n}")[0].signal("buy", "long", 1) for n in range(6)]
    slow = real_time_worker(worker_factory, ORDERS_PER_SECOND="2", ENFORCE_MARKET_HOURS="false")
    start = threading.Barrier(len(entries) + len(exits))

    def deliver(message: Any) -> None:
        start.wait()
        handle(cloud_event(message), slow)

    threads = [threading.Thread(target=deliver, args=(m,)) for m in entries + exits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    burst = sim_orders(market)[3:]  # after the holders' own entries
    sides = [o["side"] for o in burst]
    assert sorted(sides) == [-1] * 3 + [1] * 6
    last_exit = max(i for i, side in enumerate(sides) if side == -1)
    assert sides[:last_exit].count(1) <= 2  # at most those already sending when the exits were ready

"""The ``reconcile`` job, specified by what the order book at Fyers says and what our
records must then say.

Real parts: the Firestore and Pub/Sub emulators, the broker adapter on the real
``fyers_apiv3`` SDK, and the Fyers simulator. Orders are placed through the adapter
with ``orderTag`` = our order id, as the worker does, and their ``orders/{id}``
documents are written as the webhook and worker leave them.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from common.broker import FyersBroker, OrderRequest
from common.idempotency import order_id_for
from common.ledger import Ledger
from common.notify import Notifier
from common.orders import OrderStore
from common.pubsub import Publisher
from common.records import ORDERS, OrderRecord, OrderStatus, ist_day
from common.secrets import InMemorySecretStore
from common.settings import load_settings
from common.symbols import Contract
from deploy.local.fyers_sim import ORDERBOOK
from deploy.local.fyers_sim.exchange import MARGIN_SHORTFALL
from functions.jobs.reconcile import ReconcileDeps, run_reconcile
from tests.integration.conftest import APP_ID, MARKET_NOW

pytestmark = pytest.mark.emulators

CALL = "NSE:NIFTY26NOV24500CE"
PUT = "NSE:NIFTY26NOV24500PE"
NOW = MARKET_NOW + timedelta(minutes=5)


@pytest.fixture
def broker(sim) -> FyersBroker:
    token = sim.mint_token(APP_ID)
    return FyersBroker(APP_ID, lambda: token, api_base=sim.api_base, data_base=sim.data_base,
                       connect_timeout=0.5, read_timeout=2.0)


@pytest.fixture
def store(emulators, clean_firestore, firestore_db) -> OrderStore:
    return OrderStore(firestore_db, timeout=5)


@pytest.fixture
def deps(store, broker, topics, gcp_project) -> ReconcileDeps:
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": gcp_project, **topics.env()})
    notifier = Notifier(settings, Publisher(gcp_project, timeout=5).publish, InMemorySecretStore())
    return ReconcileDeps(settings=settings, store=store, broker=lambda: broker, notifier=notifier,
                         ledger=Ledger(store.db, timeout=5))


def new_order_id() -> str:
    return order_id_for(f"k:test:{uuid.uuid4().hex}")


def place(broker: FyersBroker, order_id: str | None, *, ticker: str = CALL, order_type: int = 2,
          limit: float = 0.0) -> str:
    """Place a one-lot NIFTY option buy through the adapter; the broker's order id."""
    request = OrderRequest(symbol=ticker, qty=65, side=1, type=order_type, product="INTRADAY",
                           limit_price=limit, tag=order_id)
    return broker.place_order(request).order_id


def record(db, order_id: str, status: OrderStatus, *, ticker: str = CALL, at: datetime = MARKET_NOW,
           **fields: Any) -> None:
    """Write ``orders/{order_id}`` as the webhook and the worker leave it."""
    doc = OrderRecord(
        order_id=order_id, status=status, action="BUY", symbol="NIFTY", lots=1, product="INTRADAY",
        order_type="MARKET", idempotency_key=f"k:test:{order_id}", key_source="explicit",
        received_at=at, created_at=at, created_day=ist_day(at), updated_at=at, attempts=1,
        contract=Contract(ticker=ticker, underlying="NIFTY", kind="CE", exchange="NSE", lot_size=65, tick_size=0.05,
                          expiry=date(2026, 11, 24), strike=24500.0),
        quantity=65, **fields)
    db.collection(ORDERS).document(order_id).set(doc.to_firestore())


def notifications(topics) -> list[dict[str, Any]]:
    return [json.loads(m.data) for m in topics.pull(topics.notifications)]


def book_reads(sim) -> int:
    return sum(1 for r in sim.requests if f"{r['method']} {r['path']}" == ORDERBOOK)


# --- fills --------------------------------------------------------------------------


def test_a_filled_order_gets_its_quantity_price_and_status(deps, store, sim, broker, firestore_db, topics):
    order_id = new_order_id()
    sim.set_price(CALL, 132.45)
    broker_id = place(broker, order_id)
    record(firestore_db, order_id, OrderStatus.PLACED, broker_order_id=broker_id, placed_at=MARKET_NOW)

    report = run_reconcile(deps, NOW)

    assert report["filled"] == [order_id] and report["ok"] is True
    order = store.get(order_id)
    assert order.status == "PLACED" and order.broker_status == "FILLED"
    assert order.filled_qty == 65 and order.avg_price == 132.45
    assert order.reconciled_at == NOW
    assert notifications(topics) == []


def test_a_pending_order_is_followed_until_it_fills(deps, store, sim, broker, firestore_db):
    order_id = new_order_id()
    sim.set_price(CALL, 140.0)
    broker_id = place(broker, order_id, order_type=1, limit=120.0)
    record(firestore_db, order_id, OrderStatus.PLACED, broker_order_id=broker_id)

    first = run_reconcile(deps, NOW)
    pending = store.get(order_id)
    again = run_reconcile(deps, NOW + timedelta(minutes=5))
    sim.set_price(CALL, 119.5)
    filled = run_reconcile(deps, NOW + timedelta(minutes=10))

    assert first["updated"] == [order_id]
    assert (pending.broker_status, pending.filled_qty, pending.avg_price) == ("PENDING", 0, None)
    assert again["updated"] == [] and again["filled"] == []  # nothing changed: nothing written
    assert filled["filled"] == [order_id]
    order = store.get(order_id)
    assert (order.broker_status, order.filled_qty, order.avg_price) == ("FILLED", 65, 119.5)
    assert order.reconciled_at == NOW + timedelta(minutes=10)


def test_a_final_order_is_not_looked_at_again(deps, store, sim, broker, firestore_db):
    order_id = new_order_id()
    sim.set_price(CALL, 100.0)
    broker_id = place(broker, order_id)
    record(firestore_db, order_id, OrderStatus.PLACED, broker_order_id=broker_id)
    run_reconcile(deps, NOW)
    reconciled = store.get(order_id).updated_at

    report = run_reconcile(deps, NOW + timedelta(minutes=5))

    assert report["filled"] == [] and store.get(order_id).updated_at == reconciled


def test_the_whole_book_is_read_once_per_run_whatever_the_number_of_orders(deps, sim, broker, firestore_db):
    sim.set_price(CALL, 100.0)
    ids = [new_order_id() for _ in range(6)]
    for order_id in ids:
        record(firestore_db, order_id, OrderStatus.PLACED, broker_order_id=place(broker, order_id))
    before = book_reads(sim)

    report = run_reconcile(deps, NOW)

    assert sorted(report["filled"]) == sorted(ids)
    assert book_reads(sim) - before == 1 and report["book_orders"] == 6


# --- rejections ---------------------------------------------------------------------


def test_a_margin_rejection_in_the_book_rejects_the_order_with_the_brokers_message(
        deps, store, sim, broker, firestore_db, topics):
    order_id = new_order_id()
    sim.set_price(CALL, 150.0)
    sim.add_fault("async_reject", route="POST /api/v3/orders/sync")
    broker_id = place(broker, order_id)  # accepted (1101), then status 5 in the book
    record(firestore_db, order_id, OrderStatus.PLACED, broker_order_id=broker_id)

    report = run_reconcile(deps, NOW)
    again = run_reconcile(deps, NOW + timedelta(minutes=5))

    assert report["rejected"] == [order_id] and again["rejected"] == []
    order = store.get(order_id)
    assert order.status == "REJECTED" and order.reason == "BROKER_REJECTED"
    assert order.message == MARGIN_SHORTFALL and order.broker_message == MARGIN_SHORTFALL
    assert order.broker_status == "REJECTED" and order.filled_qty == 0
    last = store.events(order_id)[-1]
    assert (last.from_status, last.to_status, last.by) == ("PLACED", "REJECTED", "reconcile")
    sent = notifications(topics)
    assert [(n["kind"], n["order_id"], n["text"]) for n in sent] == [("ORDER_REJECTED", order_id, MARGIN_SHORTFALL)]
    assert sent[0]["title"] == f"REJECTED {CALL} BUY 65"


# --- orders whose placement had no clear answer -------------------------------------------


def test_an_unknown_order_found_in_the_book_becomes_placed(deps, store, sim, broker, firestore_db, topics):
    order_id = new_order_id()
    sim.set_price(CALL, 101.0)
    broker_id = place(broker, order_id)
    record(firestore_db, order_id, OrderStatus.UNKNOWN, reason="BROKER_AMBIGUOUS")

    report = run_reconcile(deps, NOW)

    assert report["placed"] == [order_id] and report["not_placed"] == []
    order = store.get(order_id)
    assert order.status == "PLACED" and order.broker_order_id == broker_id
    assert order.broker_order_ids == [broker_id]
    assert (order.broker_status, order.filled_qty, order.avg_price) == ("FILLED", 65, 101.0)
    assert order.placed_at is not None and order.reason == "FOUND_IN_BOOK"
    last = store.events(order_id)[-1]
    assert (last.from_status, last.to_status, last.by) == ("UNKNOWN", "PLACED", "reconcile")
    assert [n["kind"] for n in notifications(topics)] == ["ORDER_PLACED"]


def test_an_unknown_order_rejected_in_the_book_becomes_rejected(deps, store, sim, broker, firestore_db):
    order_id = new_order_id()
    sim.set_price(CALL, 101.0)
    sim.add_fault("async_reject", route="POST /api/v3/orders/sync", message="RED:Insufficient funds")
    place(broker, order_id)
    record(firestore_db, order_id, OrderStatus.UNKNOWN)

    report = run_reconcile(deps, NOW)

    assert report["rejected"] == [order_id]
    order = store.get(order_id)
    assert order.status == "REJECTED" and order.message == "RED:Insufficient funds"


def test_an_unknown_order_absent_after_its_landing_bound_and_too_old_is_not_placed_and_told_once(
        deps, store, sim, broker, firestore_db, topics):
    order_id = new_order_id()
    record(firestore_db, order_id, OrderStatus.UNKNOWN, reason="AMBIGUOUS", may_land_until=MARKET_NOW)

    first = run_reconcile(deps, NOW)
    second = run_reconcile(deps, NOW + timedelta(minutes=5))

    assert first["not_placed"] == [order_id] and second["not_placed"] == []
    assert first["ok"] is False and first["status"] == "ATTENTION"
    order = store.get(order_id)
    assert (order.status, order.reason) == ("FAILED", "NOT_PLACED") and "Nothing is open" in order.message
    sent = notifications(topics)
    assert [(n["kind"], n["order_id"]) for n in sent] == [("ORDER_FAILED", order_id)]
    assert sim.orders == []


def test_an_unknown_order_is_left_alone_while_its_request_may_still_land(deps, store, sim, firestore_db, topics):
    order_id = new_order_id()
    record(firestore_db, order_id, OrderStatus.UNKNOWN, at=NOW, may_land_until=NOW + timedelta(seconds=10))

    report = run_reconcile(deps, NOW)

    assert report["landing"] == [order_id] and report["ok"] is True
    assert store.get(order_id).status == "UNKNOWN" and notifications(topics) == []


def test_a_fresh_unknown_order_absent_after_its_landing_bound_is_released_for_a_retry(deps, store, firestore_db):
    order_id = new_order_id()
    record(firestore_db, order_id, OrderStatus.UNKNOWN, at=NOW - timedelta(seconds=30),
           may_land_until=NOW - timedelta(seconds=5), lease_until=NOW - timedelta(seconds=30))

    report = run_reconcile(deps, NOW)

    assert report["released"] == [order_id]
    order = store.get(order_id)
    assert (order.status, order.reason, order.lease_until) == ("QUEUED", "RELEASED", None)


def test_a_placing_order_whose_worker_died_is_settled_from_the_book(deps, store, sim, broker, firestore_db, topics):
    in_book, lost, live = new_order_id(), new_order_id(), new_order_id()
    sim.set_price(CALL, 99.0)
    broker_id = place(broker, in_book)
    record(firestore_db, in_book, OrderStatus.PLACING, lease_until=NOW - timedelta(minutes=1))
    record(firestore_db, lost, OrderStatus.PLACING, lease_until=NOW - timedelta(minutes=1))
    record(firestore_db, live, OrderStatus.PLACING, lease_until=NOW + timedelta(seconds=20))

    report = run_reconcile(deps, NOW)

    assert report["placed"] == [in_book] and report["not_placed"] == [lost]
    assert (store.get(in_book).status, store.get(in_book).broker_order_id) == ("PLACED", broker_id)
    assert store.get(in_book).filled_qty == 65
    assert store.get(lost).status == "FAILED" and store.get(live).status == "PLACING"
    assert sorted(n["kind"] for n in notifications(topics)) == ["ORDER_FAILED", "ORDER_PLACED"]


def test_a_duplicate_cover_order_is_caught_by_its_signature_and_another_orders_is_not(
        deps, store, sim, broker, firestore_db, topics):
    sim.set_price(CALL, 120.0)
    cover = OrderRequest(symbol=CALL, qty=65, side=1, type=2, product="CO", stop_loss=10.0)  # CO/BO carry no tag
    ours, other = new_order_id(), new_order_id()
    first = broker.place_order(cover).order_id
    second = broker.place_order(cover).order_id  # the same signal placed twice
    record(firestore_db, ours, OrderStatus.PLACED, broker_order_id=first, broker_request=cover.to_fyers())
    third = broker.place_order(cover).order_id  # a later, separate signal with the same shape, recorded
    record(firestore_db, other, OrderStatus.PLACED, at=MARKET_NOW + timedelta(seconds=1), broker_order_id=third,
           broker_request=cover.to_fyers())

    report = run_reconcile(deps, NOW)

    assert report["duplicates"] == [{"order_id": ours, "broker_order_ids": [first], "duplicates": [second]}]
    assert store.get(ours).broker_duplicates == [second] and store.get(other).broker_duplicates is None


def test_an_order_the_queue_never_took_is_told_while_fresh_and_expired_once_old(deps, store, firestore_db, topics):
    order_id = new_order_id()
    record(firestore_db, order_id, OrderStatus.QUEUED, at=NOW - timedelta(seconds=10),
           publish_failed_at=NOW - timedelta(seconds=9), publish_error="ServiceUnavailable")

    fresh = run_reconcile(deps, NOW)
    old = run_reconcile(deps, NOW + timedelta(minutes=5))

    assert fresh["not_queued"] == old["not_queued"] == [order_id]
    order = store.get(order_id)
    assert (order.status, order.reason) == ("EXPIRED", "NOT_QUEUED")
    sent = notifications(topics)
    assert [n["kind"] for n in sent] == ["ORDER_NOT_QUEUED", "ORDER_EXPIRED"]
    assert "Do not place it by hand" in sent[0]["text"]


# --- the book beyond our records ------------------------------------------------------


def test_broker_orders_with_our_tag_format_and_no_record_are_told_once(deps, sim, broker, firestore_db, topics):
    ours, stranger = new_order_id(), new_order_id()
    sim.set_price(PUT, 88.0)
    record(firestore_db, ours, OrderStatus.PLACED, ticker=PUT, broker_order_id=place(broker, ours, ticker=PUT))
    orphan_id = place(broker, stranger, ticker=PUT)
    place(broker, "manualorder1", ticker=PUT)  # a tag that is not ours
    place(broker, None, ticker=PUT)  # untagged

    report = run_reconcile(deps, NOW)
    again = run_reconcile(deps, NOW + timedelta(minutes=5))

    assert report["unrecorded"] == [{"tag": stranger, "broker_order_ids": [orphan_id], "symbol": PUT,
                                     "status": "FILLED", "qty": 65}]
    assert report["ok"] is False and again["unrecorded"] == report["unrecorded"]
    sent = notifications(topics)
    assert [n["kind"] for n in sent] == ["UNRECORDED_AT_BROKER"] and orphan_id in sent[0]["text"]


def test_a_duplicate_placed_at_the_broker_is_written_on_the_order_and_told_once(
        deps, store, sim, broker, firestore_db, topics):
    order_id = new_order_id()
    sim.set_price(CALL, 120.0)
    first = place(broker, order_id)
    record(firestore_db, order_id, OrderStatus.PLACED, broker_order_id=first, broker_order_ids=[first])
    second = place(broker, order_id)  # the same tag again: placed by hand, or by a bug

    report = run_reconcile(deps, NOW)
    run_reconcile(deps, NOW + timedelta(minutes=5))

    assert report["duplicates"] == [{"order_id": order_id, "broker_order_ids": [first], "duplicates": [second]}]
    assert report["ok"] is False
    order = store.get(order_id)
    assert order.broker_duplicates == [second] and order.filled_qty == 65  # its own fill, not the duplicate's
    sent = notifications(topics)
    assert [n["kind"] for n in sent] == ["DUPLICATE_AT_BROKER"]
    assert first in sent[0]["text"] and second in sent[0]["text"]


def test_yesterdays_orders_are_left_alone(deps, store, sim, broker, firestore_db):
    order_id = new_order_id()
    record(firestore_db, order_id, OrderStatus.UNKNOWN, at=MARKET_NOW - timedelta(days=1))

    report = run_reconcile(deps, NOW)

    assert report["orders_today"] == 0 and report["not_placed"] == []
    assert store.get(order_id).updated_at == MARKET_NOW - timedelta(days=1)


def test_a_dead_token_reports_needs_login_instead_of_crashing(deps, store, sim, broker, firestore_db):
    order_id = new_order_id()
    record(firestore_db, order_id, OrderStatus.UNKNOWN)
    sim.expire_tokens()

    report = run_reconcile(deps, NOW)

    assert report["ok"] is False and report["status"] == "NEEDS_LOGIN"
    assert "expired" in report["reason"].lower() or "login" in report["reason"].lower()
    assert store.get(order_id).status == "UNKNOWN"

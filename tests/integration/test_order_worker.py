"""The order worker, specified by scenario: one order per signal, whatever Pub/Sub and Fyers do.

Real parts: the webhook (to make the exact Pub/Sub message), the Firestore and
Pub/Sub emulators, the real Fyers SDK through the adapter, and the simulator,
whose order log is the ground truth for "how many orders reached Fyers".
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from common.controls import Controls, write_controls
from functions.order_worker import Retry, handle
from tests.integration.conftest import (
    MARKET_NOW,
    Clock,
    alert,
    cloud_event,
    events,
    make_client,
    order,
    order_id_of,
    real_time_worker,
    sim_orders,
)

pytestmark = pytest.mark.emulators

ATM_CE = "NSE:NIFTY26NOV24500CE"  # weekly expiry 24 Nov 2026 is the month's last: monthly form


# --- the happy path ----------------------------------------------------------


def test_nifty_weekly_atm_ce_becomes_one_tagged_order(worker_factory, queue, sim, firestore_db):
    message = queue()
    deps = worker_factory(clock=queue.clock)  # one clock for webhook and worker: events in order
    handle(cloud_event(message), deps)

    [placed] = sim_orders(sim)
    assert placed["symbol"] == ATM_CE and placed["qty"] == 2 * 65 and placed["side"] == 1
    assert placed["orderTag"] == "1:" + order_id_of(message)
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "PLACED" and doc["broker_order_id"] == placed["id"]
    assert doc["contract"]["ticker"] == ATM_CE and doc["contract"]["lot_size"] == 65
    assert doc["quantity"] == 130 and doc["underlying_ltp"] == 24512.0
    assert doc["broker_status"] == "FILLED" and doc["filled_qty"] == 130
    assert [e["to_status"] for e in events(firestore_db, order_id_of(message))] == ["QUEUED", "PLACING", "PLACED"]
    # The claim noted the message that brought it: the order is known to have been queued.
    assert doc["message_id"] == message.message_id and doc["published_at"] == message.publish_time


def test_dry_run_records_the_exact_request_and_sends_nothing(worker_factory, queue, sim, firestore_db):
    message = queue(dry_run=True)
    handle(cloud_event(message), worker_factory())
    assert sim_orders(sim) == []
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "DRY_RUN"
    assert doc["broker_request"]["symbol"] == ATM_CE and doc["broker_request"]["qty"] == 130
    assert doc["broker_request"]["orderTag"] == order_id_of(message)


# --- at most once --------------------------------------------------------------


def test_redelivery_5_times_3_concurrently_places_one_order(worker_factory, queue, sim, firestore_db):
    message = queue()
    deps = real_time_worker(worker_factory)
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def deliver() -> None:
        start.wait()
        try:
            handle(cloud_event(message), deps)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handle(cloud_event(message), deps)
    handle(cloud_event(message), deps)

    assert errors == []
    assert len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id_of(message))["status"] == "PLACED"


def test_no_ack_201_with_the_order_booked_is_found_by_tag(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("no_ack", route="POST /api/v3/orders/sync", record=True)
    handle(cloud_event(message), worker_factory())
    assert len(sim_orders(sim)) == 1
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "PLACED" and doc["broker_order_id"] == sim_orders(sim)[0]["id"]
    reasons = [e.get("reason") for e in events(firestore_db, order_id_of(message))]
    assert "AMBIGUOUS" in reasons and "FOUND_IN_BOOK" in reasons


def test_no_ack_201_without_the_order_is_placed_again_after_two_lookups(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("no_ack", route="POST /api/v3/orders/sync", record=False)
    handle(cloud_event(message), worker_factory())
    assert len(sim_orders(sim)) == 1
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "PLACED"
    reasons = [e.get("reason") for e in events(firestore_db, order_id_of(message))]
    assert reasons.count("AMBIGUOUS") == 1 and "BOOK_RECHECK" in reasons and "REPLACE" in reasons


def test_broker_hang_past_the_timeout_does_not_double_place(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("hang", route="POST /api/v3/orders/sync", seconds=2.0, record=True)
    handle(cloud_event(message), worker_factory(read_timeout=0.5))
    assert len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id_of(message))["status"] == "PLACED"


def test_broker_503_is_retried_by_pubsub_and_places_once(worker_factory, queue, sim, firestore_db):
    message = queue()
    deps = worker_factory()
    sim.add_fault("http_503_html", route="GET /data/quotes")
    with pytest.raises(Retry):
        handle(cloud_event(message), deps)
    assert order(firestore_db, order_id_of(message))["status"] == "QUEUED"  # released for the redelivery
    handle(cloud_event(message), deps)  # Pub/Sub redelivers
    assert len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id_of(message))["status"] == "PLACED"


# --- guards --------------------------------------------------------------------


def test_a_message_older_than_the_age_limit_expires_unplaced(worker_factory, queue, sim, firestore_db):
    message = queue()
    clock = Clock(MARKET_NOW + timedelta(seconds=61))
    handle(cloud_event(message), worker_factory(clock=clock))
    assert sim_orders(sim) == []
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "EXPIRED" and doc["reason"] == "STALE"


def test_kill_switch_blocks_without_calling_the_broker(worker_factory, queue, sim, firestore_db, topics):
    write_controls(firestore_db, Controls(trading_enabled=False))
    message = queue()
    handle(cloud_event(message), worker_factory())
    assert sim_orders(sim) == []
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "BLOCKED" and doc["reason"] == "KILL_SWITCH"
    [note] = topics.pull(topics.notifications)
    assert json.loads(note.data)["kind"] == "ORDER_BLOCKED"


def test_market_closed_blocks(worker_factory, queue, sim, firestore_db):
    message = queue()
    evening = Clock(MARKET_NOW.replace(hour=15, minute=45) - timedelta(seconds=0))
    deps = worker_factory(clock=evening, MAX_ORDER_AGE_SECONDS="86400")
    handle(cloud_event(message), deps)
    assert sim_orders(sim) == []
    assert order(firestore_db, order_id_of(message))["reason"] == "MARKET_CLOSED"


def test_dead_token_fails_needing_login_and_notifies(worker_factory, queue, sim, firestore_db, topics):
    message = queue()
    deps = worker_factory()
    sim.expire_tokens()
    handle(cloud_event(message), deps)
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "FAILED" and doc["reason"] == "NEEDS_LOGIN"
    assert deps.tokens.invalidations == 1 and deps.needs_login_calls
    [note] = topics.pull(topics.notifications)
    assert json.loads(note.data)["kind"] == "ORDER_FAILED"


def test_async_margin_rejection_is_reported_with_the_brokers_message(worker_factory, queue, sim, firestore_db, topics):
    message = queue()
    sim.add_fault("async_reject", route="POST /api/v3/orders/sync")
    handle(cloud_event(message), worker_factory())
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "REJECTED"
    assert doc["message"].startswith("RED:Margin Shortfall")
    [note] = topics.pull(topics.notifications)
    assert json.loads(note.data)["kind"] == "ORDER_REJECTED"


def test_algo_not_allowed_is_rejected_with_the_brokers_words(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("algo_not_allowed", route="POST /api/v3/orders/sync")
    handle(cloud_event(message), worker_factory())
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "REJECTED" and "Algo orders are not allowed" in doc["message"]


def test_strike_not_listed_is_rejected_with_nearest_strikes(worker_factory, queue, sim, firestore_db):
    message = queue(strike=24510)
    handle(cloud_event(message), worker_factory())
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "REJECTED" and doc["reason"] == "STRIKE_NOT_LISTED"
    assert "24500" in doc["message"]


def test_exit_squares_off_the_net_position(worker_factory, queue, sim, firestore_db):
    deps = worker_factory()
    handle(cloud_event(queue(lots=3)), deps)
    exit_message = queue(action="EXIT", lots=1, time=(MARKET_NOW + timedelta(seconds=5)).isoformat())
    handle(cloud_event(exit_message), deps)
    buy, sell = sim_orders(sim)[-2:] if sim_orders(sim)[0]["side"] == 1 else sim_orders(sim)[::-1][-2:]
    assert sell["side"] == -1 and sell["qty"] == 3 * 65 and sell["symbol"] == ATM_CE
    assert order(firestore_db, order_id_of(exit_message))["status"] == "PLACED"


def test_an_unreadable_message_is_recorded_notified_and_acked(worker_factory, topics, firestore_db):
    class Garbage:
        data = b"{not json"
        attributes = {"order_id": "tvdeadbeef"}
        message_id = "999"

    handle(cloud_event(Garbage()), worker_factory())  # returns: acked, never retried
    [note] = topics.pull(topics.notifications)
    assert json.loads(note.data)["kind"] == "ORDER_FAILED"


def test_a_burst_of_30_alerts_is_placed_within_fyers_rate_limits(worker_factory, deps_factory, topics, sim,
                                                                   firestore_db):
    sim.set_rate_limits(10, 200)  # Fyers' real limits
    clock = Clock(MARKET_NOW)
    client = make_client(deps_factory(clock=clock))
    for n in range(30):
        answer = client.post("/", data=alert(strategy=f"burst-{n}"), content_type="application/json")
        assert answer.status_code == 200
    messages = topics.pull(topics.orders, rounds=5)
    assert len(messages) == 30
    deps = worker_factory()
    threads = [threading.Thread(target=handle, args=(cloud_event(m), deps)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    docs = [order(firestore_db, order_id_of(m)) for m in messages]
    assert [(d["status"], d.get("reason"), d.get("message")) for d in docs if d["status"] != "PLACED"] == []
    assert len(sim_orders(sim)) == 30
    assert sim.rate_breaches == {}  # Fyers never had to refuse us
    statuses = {order(firestore_db, order_id_of(m))["status"] for m in messages}
    assert statuses == {"PLACED"}


def test_an_unknown_command_version_is_recorded_notified_and_acked(worker_factory, queue, topics, firestore_db, sim):
    message = queue()
    command = json.loads(message.data)
    command["version"] = 99

    class FromTheFuture:
        data = json.dumps(command).encode()
        attributes = dict(message.attributes)
        message_id = "1001"

    handle(cloud_event(FromTheFuture()), worker_factory())
    assert sim_orders(sim) == []
    assert order(firestore_db, order_id_of(message))["status"] == "QUEUED"  # untouched
    [note] = topics.pull(topics.notifications)
    assert json.loads(note.data)["order_id"] == order_id_of(message)


def test_repeated_broker_outages_open_the_breaker_and_block_without_calling_fyers(worker_factory, queue, sim,
                                                                                     firestore_db):
    deps = worker_factory(BREAKER_THRESHOLD="2")
    sim.add_fault("http_503_html", route="GET /data/quotes", count=2)
    for n in range(2):
        with pytest.raises(Retry):
            handle(cloud_event(queue(strategy=f"outage-{n}")), deps)
    calls_before = len(sim.requests)
    blocked = queue(strategy="after-outage")
    handle(cloud_event(blocked), deps)
    doc = order(firestore_db, order_id_of(blocked))
    assert doc["status"] == "BLOCKED" and doc["reason"] == "BREAKER_OPEN"
    assert len(sim.requests) == calls_before  # Fyers was left alone


def test_duplicate_storm_50_concurrent_alerts_make_one_broker_order(worker_factory, deps_factory, topics, sim,
                                                                     firestore_db):
    """Fifty copies at once, however slow Firestore is: whatever the answers, Fyers gets one order."""
    client = make_client(deps_factory(clock=Clock(MARKET_NOW)))
    body, start, answers = alert(strategy="storm"), threading.Barrier(50), []

    def send() -> None:
        start.wait()
        answers.append(client.application.test_client().post("/", data=body, content_type="application/json"))

    run_all([threading.Thread(target=send) for _ in range(50)])
    assert {a.status_code for a in answers} <= {200, 503}  # 503: TradingView re-sends; never a 500
    messages = topics.pull(topics.orders, rounds=5)
    assert messages and len({order_id_of(m) for m in messages}) == 1

    deps = real_time_worker(worker_factory)
    run_all([threading.Thread(target=deliver, args=(m, deps)) for m in messages for _ in range(2)])

    [placed] = sim_orders(sim)
    doc = order(firestore_db, order_id_of(messages[0]))
    assert doc["status"] == "PLACED" and doc["broker_order_id"] == placed["id"]


def run_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def deliver(message, deps) -> None:
    """One Pub/Sub delivery: a Retry is Pub/Sub's to redeliver later, not a failure here."""
    try:
        handle(cloud_event(message), deps)
    except Retry:
        pass


def test_orders_that_cannot_get_a_broker_slot_in_time_expire_saying_why_and_the_trader_is_told_once(
        worker_factory, queue, sim, firestore_db, topics):
    deps = worker_factory(ORDERS_PER_MINUTE="2")  # room for one order's quote and placement this minute
    old = (MARKET_NOW - timedelta(seconds=50)).strftime("%Y-%m-%dT%H:%M:%S%z")  # 10 s of life left
    messages = [queue(strategy=f"late-{n}", time=old) for n in range(3)]
    for message in messages:
        handle(cloud_event(message), deps)

    docs = [order(firestore_db, order_id_of(m)) for m in messages]
    assert [d["status"] for d in docs] == ["PLACED", "EXPIRED", "EXPIRED"]
    assert docs[1]["reason"] == "RATE_BUDGET" and "waited behind" in docs[1]["message"]
    assert len(sim_orders(sim)) == 1
    told = [json.loads(n.data)["kind"] for n in topics.pull(topics.notifications)]
    assert told.count("ORDER_EXPIRED") == 1


def _slow_pacer(deps, clock: Clock, *, busy_for: float, on_sleep=None):
    """A limiter on the worker's clock whose minute is full for ``busy_for`` more seconds."""
    from common.ratelimit import SlidingWindowLimiter

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if on_sleep is not None:
            on_sleep()

    limiter = SlidingWindowLimiter(10, 3, clock=lambda: clock.now.timestamp(), sleep=sleep)
    limiter.seed([60.0 - busy_for] * 3)
    return limiter


def test_an_order_waiting_longer_than_its_lease_for_a_broker_slot_keeps_it_and_is_placed_once(
        worker_factory, queue, sim, firestore_db):
    clock = Clock(MARKET_NOW)
    deps = worker_factory(clock=clock, LEASE_SECONDS="10")
    deps.limiter = _slow_pacer(deps, clock, busy_for=35.0)  # 3.5 leases before the first slot
    message = queue()
    handle(cloud_event(message), deps)
    handle(cloud_event(message), deps)  # a redelivery finds it done

    doc = order(firestore_db, order_id_of(message))
    assert (doc["status"], doc["attempts"]) == ("PLACED", 1)
    assert [e["reason"] for e in events(firestore_db, order_id_of(message)) if e["reason"] == "LEASE_EXPIRED"] == []
    assert doc["lease_until"] > MARKET_NOW + timedelta(seconds=30)  # renewed while it waited
    assert len(sim_orders(sim)) == 1


def test_a_delivery_whose_order_was_taken_over_while_it_waited_for_a_slot_nacks_and_sends_nothing(
        worker_factory, queue, sim, firestore_db):
    clock = Clock(MARKET_NOW)
    deps = worker_factory(clock=clock, LEASE_SECONDS="10")
    message = queue()
    taken: list[str] = []

    def take_over() -> None:  # another delivery, after this one's lease ran out unrenewed
        if not taken:
            claim = deps.store.claim(order_id_of(message), worker_id="worker-other",
                                     now=clock.now + timedelta(seconds=11), lease=timedelta(seconds=10))
            taken.append(claim.outcome)

    deps.limiter = _slow_pacer(deps, clock, busy_for=35.0, on_sleep=take_over)
    with pytest.raises(Retry):
        handle(cloud_event(message), deps)

    doc = order(firestore_db, order_id_of(message))
    assert taken == ["claimed"] and doc["worker_id"] == "worker-other" and doc["status"] == "PLACING"
    assert clock.now < MARKET_NOW + timedelta(seconds=10)  # it gave its place up at its first renewal
    assert sim_orders(sim) == []


def test_an_order_that_cannot_get_the_pacer_lease_in_time_expires_naming_the_other_instance(
        worker_factory, queue, sim, firestore_db, topics):
    from common.pacer_lease import FirestorePacerStore, PacerLease, PacerRecord
    from common.ratelimit import SlidingWindowLimiter

    deps = worker_factory()
    store = FirestorePacerStore(firestore_db, timeout=5)
    # Another instance of the worker (Cloud Run ran two) holds the lease for the next minute.
    store.replace(PacerRecord(holder="worker-other", until=MARKET_NOW + timedelta(seconds=60),
                              written_at=MARKET_NOW), None)
    deps.limiter = SlidingWindowLimiter(deps.settings.orders_per_second, deps.settings.orders_per_minute,
                                        gate=PacerLease(store, deps.worker_id, clock=deps.clock))
    old = (MARKET_NOW - timedelta(seconds=50)).strftime("%Y-%m-%dT%H:%M:%S%z")  # 10 s of life left
    message = queue(time=old)
    handle(cloud_event(message), deps)

    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "EXPIRED" and doc["reason"] == "PACER_LEASE"
    assert "another worker instance (worker-other)" in doc["message"]
    assert sim_orders(sim) == []
    told = [json.loads(n.data) for n in topics.pull(topics.notifications)]
    assert [n["kind"] for n in told] == ["ORDER_EXPIRED"]

"""Never twice, never lost: the router under every fault Fyers, the worker and the queue can throw.

Each scenario runs on the emulators and the simulator, and judges by the
simulator's order log (what really reached Fyers) and the final documents. Faults
that play out in real time (a request that Fyers books after the client gave up)
run the worker on a real-paced clock with a short ``PLACEMENT_LANDING_SECONDS``.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any, Callable

import pytest

from common.outcome import NOTICES
from common.records import ORDERS, OrderStatus
from deploy.local.emulators import free_port
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

PLACE = "POST /api/v3/orders/sync"


def reasons(db, order_id: str) -> list[str]:
    return [e.get("reason") for e in events(db, order_id)]


def notices(db, order_id: str) -> list[str]:
    return sorted(d.id for d in db.collection(ORDERS).document(order_id).collection(NOTICES).list_documents())


# --- Fyers answers late, wrongly, or not at all ---------------------------------------------


def test_a_hang_booked_before_the_answer_is_found_in_the_book_and_placed_once(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("hang", route=PLACE, seconds=1.0, record=True)

    handle(cloud_event(message), worker_factory(read_timeout=0.3))

    [placed] = sim_orders(sim)
    doc = order(firestore_db, order_id_of(message))
    assert (doc["status"], doc["broker_order_id"]) == ("PLACED", placed["id"])
    assert "AMBIGUOUS" in reasons(firestore_db, order_id_of(message))


def test_a_hang_booked_after_the_client_gave_up_is_waited_for_and_never_placed_twice(
        worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("hang", route=PLACE, seconds=0.6, land_after=1.0)  # Fyers books it 1 s after it arrived

    handle(cloud_event(message), real_time_worker(worker_factory, read_timeout=0.3, PLACEMENT_LANDING_SECONDS="2"))
    time.sleep(0.5)  # anything still in flight at Fyers lands by now

    [placed] = sim_orders(sim)
    doc = order(firestore_db, order_id_of(message))
    assert (doc["status"], doc["broker_order_id"]) == ("PLACED", placed["id"])
    steps = reasons(firestore_db, order_id_of(message))
    assert "AWAIT_LANDING" in steps and "REPLACE" not in steps


def test_a_hang_never_booked_is_placed_again_only_after_its_landing_bound(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("hang", route=PLACE, seconds=0.6)  # the gateway gives up; nothing is booked
    started = time.monotonic()

    handle(cloud_event(message), real_time_worker(worker_factory, read_timeout=0.3, PLACEMENT_LANDING_SECONDS="1.5"))

    assert len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id_of(message))["status"] == "PLACED"
    steps = reasons(firestore_db, order_id_of(message))
    assert steps.index("AWAIT_LANDING") < steps.index("REPLACE") < steps.index("PLACED")
    assert time.monotonic() - started >= 1.5


def test_the_gateways_503_once_is_sent_again_and_placed_once(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("http_503_html", route=PLACE)

    handle(cloud_event(message), worker_factory())

    assert len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id_of(message))["status"] == "PLACED"
    assert reasons(firestore_db, order_id_of(message)).count("RESEND") == 1


def test_the_gateways_503_four_times_then_recovery_places_once_within_the_signals_life(
        worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("http_503_html", route=PLACE, count=4)
    deps = worker_factory()

    handle(cloud_event(message), deps)

    assert len(sim_orders(sim)) == 1
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "PLACED" and reasons(firestore_db, order_id_of(message)).count("RESEND") == 4
    assert doc["placed_at"] - MARKET_NOW < timedelta(seconds=60)


def test_the_gateways_503_past_the_signals_life_expires_unplaced_and_is_told(
        worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("http_503_html", route=PLACE, count=20)

    with pytest.raises(Retry):  # released while the budget lasts: Pub/Sub brings it back
        handle(cloud_event(message), deps := worker_factory())
    deps.clock.advance(60)
    handle(cloud_event(message), deps)

    assert sim_orders(sim) == []
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "EXPIRED" and notices(firestore_db, order_id_of(message)) == ["ORDER_EXPIRED"]


def test_a_429_on_placement_is_waited_out_and_placed_once(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("rate_limit", route=PLACE, retry_after_ms=400)

    handle(cloud_event(message), worker_factory())

    assert len(sim_orders(sim)) == 1 and order(firestore_db, order_id_of(message))["status"] == "PLACED"


def test_201_twice_with_nothing_booked_places_once_after_each_landing_bound(worker_factory, queue, sim, firestore_db):
    message = queue()
    sim.add_fault("no_ack", route=PLACE, count=2)

    handle(cloud_event(message), worker_factory())

    assert len(sim_orders(sim)) == 1
    doc = order(firestore_db, order_id_of(message))
    assert doc["status"] == "PLACED" and reasons(firestore_db, order_id_of(message)).count("AMBIGUOUS") == 2


def test_a_partial_fill_is_recorded_and_counted_once_as_it_completes(worker_factory, queue, sim, firestore_db):
    from functions.jobs.reconcile import ReconcileDeps, run_reconcile

    sim.set_price("NSE:NIFTY26NOV24500CE", 140.0)
    message = queue(order_type="LIMIT", price=120.0)
    deps = worker_factory()
    handle(cloud_event(message), deps)
    [resting] = sim_orders(sim)
    sim.exchange.fill_partly(resting["id"], 65)
    reconcile = ReconcileDeps(settings=deps.settings, store=deps.store, broker=lambda: deps.broker,
                              notifier=_Silent(), ledger=deps.ledger)

    run_reconcile(reconcile, MARKET_NOW + timedelta(minutes=1))
    half = order(firestore_db, order_id_of(message))
    sim.set_price("NSE:NIFTY26NOV24500CE", 119.0)
    run_reconcile(reconcile, MARKET_NOW + timedelta(minutes=2))
    run_reconcile(reconcile, MARKET_NOW + timedelta(minutes=3))

    assert (half["broker_status"], half["filled_qty"]) == ("PENDING", 65)
    full = order(firestore_db, order_id_of(message))
    assert (full["broker_status"], full["filled_qty"]) == ("FILLED", 130)
    assert full["avg_price"] == pytest.approx((140.0 * 65 + 119.0 * 65) / 130)
    assert len(sim_orders(sim)) == 1


# --- the worker dies ---------------------------------------------------------------------


class Killed(BaseException):
    """The instance died here (a BaseException, so no handler in the worker catches it)."""


class DyingStore:
    """The real store, but the process dies at the first call that ``at`` picks."""

    def __init__(self, store: Any, at: Callable[[str, tuple, dict], bool]) -> None:
        self._store, self._at, self.died = store, at, False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if not self.died and self._at(name, args, kwargs):
                self.died = True
                raise Killed(name)
            return method(*args, **kwargs)

        return call


KILL_POINTS = {
    "before placing": lambda name, args, kw: name == "update_fields" and "broker_request" in args[1],
    "after Fyers accepted, before the record": lambda name, args, kw: name == "transition" and args[1] == OrderStatus.PLACED,
    "after the record": lambda name, args, kw: name == "update_fields" and "broker_status" in args[1],
}


@pytest.mark.parametrize("moment", KILL_POINTS)
def test_a_worker_killed_at_any_step_ends_with_one_order_placed_within_a_minute(
        moment, worker_factory, queue, sim, firestore_db):
    message = queue()
    dying = worker_factory()
    dying.store = DyingStore(dying.store, KILL_POINTS[moment])
    with pytest.raises(Killed):
        handle(cloud_event(message), dying)
    died_at = dying.clock.now

    # Pub/Sub redelivers ten seconds later, to another instance, while the dead one's lease still runs.
    successor = worker_factory(clock=Clock(died_at + timedelta(seconds=10)))
    handle(cloud_event(message), successor)

    [placed] = sim_orders(sim)
    doc = order(firestore_db, order_id_of(message))
    assert (doc["status"], doc["broker_order_id"]) == ("PLACED", placed["id"])
    placed_event = [e for e in events(firestore_db, order_id_of(message)) if e["to_status"] == "PLACED"][-1]
    assert placed_event["at"] - died_at < timedelta(seconds=60)


def test_a_redelivery_during_a_live_lease_waits_for_the_holder_instead_of_dropping_itself(
        worker_factory, queue, sim, firestore_db):
    message = queue()
    holder, waiter = real_time_worker(worker_factory), real_time_worker(worker_factory)
    release = threading.Event()
    original = holder.broker.place_order

    def slow_place(request):  # the holder is mid-placement when the redelivery arrives
        release.wait(5)
        return original(request)

    holder.broker.place_order = slow_place  # type: ignore[method-assign]
    first = threading.Thread(target=handle, args=(cloud_event(message), holder))
    first.start()
    time.sleep(0.5)
    waiting = threading.Thread(target=handle, args=(cloud_event(message), waiter))
    waiting.start()
    time.sleep(0.5)
    release.set()
    first.join(10)
    waiting.join(10)

    assert len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id_of(message))["status"] == "PLACED"
    assert not waiting.is_alive()  # it saw the holder finish, and went away acked


# --- the queue and the store fail at ingest --------------------------------------------------


def test_pubsub_down_past_tradingviews_resends_is_told_and_a_late_publish_still_places_once(
        deps_factory, worker_factory, topics, sim, firestore_db):
    clock = Clock(MARKET_NOW)
    dead = make_client(deps_factory(clock=clock, pubsub_host=f"127.0.0.1:{free_port()}", PUBLISH_TIMEOUT="0.5"))
    body = alert()
    answers = []
    for _ in range(4):  # TradingView's four deliveries over about 20 s
        answers.append(dead.post("/", data=body, content_type="application/json"))
        clock.advance(5)
    assert {a.status_code for a in answers} == {503}
    [recorded] = firestore_db.collection(ORDERS).get()  # the record says the queue did not take it
    order_id = recorded.id
    assert recorded.get("publish_failed_at") is not None and recorded.get("status") == "QUEUED"

    clock.advance(10)  # the sender's own retry, 35 s after the alert, once Pub/Sub is back
    live = make_client(deps_factory(clock=clock))
    assert live.post("/", data=body, content_type="application/json").status_code == 200
    [message] = topics.pull(topics.orders)
    handle(cloud_event(message), worker_factory(clock=Clock(clock.now)))

    assert len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id)["status"] == "PLACED"
    assert "ORDER_PLACED" in notices(firestore_db, order_id)  # placed late, after an outage: the trader is told


def test_firestore_down_at_ingest_still_places_exactly_once(deps_factory, worker_factory, topics, sim, firestore_db):
    clock = Clock(MARKET_NOW)
    client = make_client(deps_factory(clock=clock, firestore_host=f"127.0.0.1:{free_port()}", FIRESTORE_TIMEOUT="0.3"))
    body = alert()
    for _ in range(3):  # TradingView re-sends: each is queued, flagged unrecorded
        assert client.post("/", data=body, content_type="application/json").status_code == 200
    messages = topics.pull(topics.orders)
    assert len(messages) == 3 and {m.attributes["order_id"] for m in messages} == {order_id_of(messages[0])}

    deps = worker_factory()
    for message in messages:
        handle(cloud_event(message), deps)

    assert len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id_of(messages[0]))["status"] == "PLACED"


class BlackHole:
    """A server that takes connections and never answers: a frozen Firestore."""

    def __init__(self) -> None:
        import socket

        self._server = socket.create_server(("127.0.0.1", 0))
        self._held: list[Any] = []
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self._held.append(self._server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self._server.close()
        for conn in self._held:
            conn.close()


def test_firestore_frozen_at_ingest_still_places_exactly_once(deps_factory, worker_factory, topics, sim, firestore_db):
    frozen = BlackHole()
    try:
        client = make_client(deps_factory(clock=Clock(MARKET_NOW), firestore_host=frozen.host,
                                          FIRESTORE_TIMEOUT="0.3"))
        body = alert()
        answers = [client.post("/", data=body, content_type="application/json") for _ in range(2)]
    finally:
        frozen.close()
    assert {a.status_code for a in answers} == {200}
    messages = topics.pull(topics.orders)

    deps = worker_factory()
    for message in messages:
        handle(cloud_event(message), deps)

    assert len(messages) == 2 and len(sim_orders(sim)) == 1
    assert order(firestore_db, order_id_of(messages[0]))["status"] == "PLACED"


# --- the breaker ---------------------------------------------------------------------------


def test_the_breaker_opens_on_repeated_outages_and_closes_after_its_cooldown(worker_factory, queue, sim, firestore_db):
    deps = worker_factory(BREAKER_THRESHOLD="2", BREAKER_COOLDOWN_SECONDS="30")
    sim.add_fault("http_503_html", route="GET /data/quotes", count=2)
    for n in range(2):
        with pytest.raises(Retry):
            handle(cloud_event(queue(strategy=f"outage-{n}")), deps)
    blocked = queue(strategy="while-open")
    handle(cloud_event(blocked), deps)

    deps.clock.advance(31)
    later = queue(strategy="after-cooldown", time=(MARKET_NOW + timedelta(seconds=31)).isoformat())
    handle(cloud_event(later), deps)

    assert order(firestore_db, order_id_of(blocked))["reason"] == "BREAKER_OPEN"
    assert order(firestore_db, order_id_of(later))["status"] == "PLACED"
    assert [o["orderTag"] for o in sim_orders(sim)] == [f"1:{order_id_of(later)}"]


class _Silent:
    """A notifier for scenarios that do not judge notices."""

    def send(self, notification: Any) -> None:
        return None


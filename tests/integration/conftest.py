"""Fixtures for driving the real webhook on the emulators."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import flask
import pytest

from tests.secret_scan import register
from common.clients import firestore_client
from common.orders import OrderStore
from common.records import ORDERS
from common.pubsub import Publisher
from common.settings import load_settings
from functions.webhook import WebhookDeps, serve

ROOT = Path(__file__).resolve().parents[2]
SECRET = "tv-S3cret-do-not-leak-7f3a"
OTHER_SECRET = "rotated-N3xt-secret-91bc"
register(SECRET, OTHER_SECRET)


@pytest.fixture
def webhook_env(emulators: dict[str, str], topics: Any) -> dict[str, str]:
    """The environment a deployed webhook would have, on this test's topics."""
    env = {**emulators, **topics.env(), "WEBHOOK_SECRET": f"{SECRET},{OTHER_SECRET}", "LOG_LEVEL": "INFO"}
    os.environ.update(env)
    return env


@pytest.fixture
def client(webhook_env: dict[str, str]) -> flask.testing.FlaskClient:
    """The real ``main.webhook`` served by functions-framework."""
    from functions_framework import create_app

    return create_app("webhook", str(ROOT / "main.py"), "http").test_client()


class Clock:
    """A settable clock for scenarios that span seconds (retries) without sleeping.

    Each reading ticks a millisecond, so events recorded in one scenario keep their order.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        from datetime import timedelta

        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.now += timedelta(seconds=seconds)


def make_client(deps: WebhookDeps) -> flask.testing.FlaskClient:
    """A Flask app that serves ``functions.webhook.serve`` with injected dependencies."""
    app = flask.Flask("webhook-under-test")
    app.add_url_rule("/", "webhook", lambda: serve(flask.request, deps), methods=["GET", "POST", "PUT"])
    return app.test_client()


def make_auth_client(deps: Any) -> flask.testing.FlaskClient:
    """A Flask app that serves ``functions.auth.serve`` with injected dependencies, on any path."""
    from functions.auth import serve as serve_auth

    app = flask.Flask("auth-under-test")
    view = lambda **_: serve_auth(flask.request, deps)  # noqa: E731
    app.add_url_rule("/", "root", view, methods=["GET", "POST"])
    app.add_url_rule("/<path:route>", "route", view, methods=["GET", "POST", "PUT"])
    return app.test_client()


@pytest.fixture
def db(firestore_db: Any) -> Any:
    """The emulator, without a broker-session record or auth events from earlier tests."""
    from common.records import SYSTEM
    from common.session import AUTH_EVENTS, SESSION_DOC

    firestore_db.collection(SYSTEM).document(SESSION_DOC).delete()
    for doc in firestore_db.collection(AUTH_EVENTS).list_documents():
        doc.delete()
    return firestore_db


@pytest.fixture
def deps_factory(webhook_env: dict[str, str], gcp_project: str) -> Callable[..., WebhookDeps]:
    """Build webhook dependencies from the test environment, with parts swapped as asked."""

    def build(*, clock: Callable[[], datetime] | None = None, firestore_host: str | None = None,
              pubsub_host: str | None = None, **overrides: str) -> WebhookDeps:
        settings = load_settings({**os.environ, **overrides})
        db = _client_on(firestore_host, "FIRESTORE_EMULATOR_HOST", lambda: firestore_client(gcp_project))
        store = OrderStore(db, timeout=settings.firestore_timeout)
        publisher = Publisher(settings.project, timeout=settings.publish_timeout)
        if pubsub_host:
            from common.clients import publisher_client

            pub = _client_on(pubsub_host, "PUBSUB_EMULATOR_HOST", publisher_client)
            publisher = Publisher(settings.project, timeout=settings.publish_timeout, client_factory=lambda: pub)
        return WebhookDeps(settings=settings, webhook_secrets=lambda: [SECRET, OTHER_SECRET],
                           store=lambda: store, publisher=publisher,
                           clock=clock or (lambda: datetime.now(timezone.utc)))

    return build


def _client_on(host: str | None, variable: str, factory: Callable[[], Any]) -> Any:
    """Build a client against another emulator host (e.g. a dead port) than the session's."""
    if host is None:
        return factory()
    saved = os.environ[variable]
    os.environ[variable] = host
    try:
        return factory()
    finally:
        os.environ[variable] = saved


# --- the order worker against the simulator -------------------------------------------

import base64  # noqa: E402
import json  # noqa: E402
import itertools  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import date, timedelta  # noqa: E402

from common.breaker import CircuitBreaker  # noqa: E402
from common.controls import ControlsReader  # noqa: E402
from common.ledger import Ledger  # noqa: E402
from common.notify import Notifier  # noqa: E402
from common.ratelimit import SlidingWindowLimiter  # noqa: E402
from common.secrets import InMemorySecretStore  # noqa: E402
from common.shared_reads import QuoteCache, SharedRead  # noqa: E402
from common.symbols import SymbolMaster  # noqa: E402
from deploy.local.fyers_simulator import FyersSimulator  # noqa: E402
from deploy.local.mastergen import generate_masters  # noqa: E402
from functions.order_worker import WorkerDeps  # noqa: E402
from tests.clock import BASELINE, HOLIDAYS, Instant, ShiftedClock  # noqa: E402

IST = timezone(timedelta(hours=5, minutes=30))
# Tests that name contracts literally live at the baseline instant (a Monday; NIFTY's weekly
# expiry on the 24th is also the monthly), on clocks they inject; date-dependent tests take
# the ``world`` of each instant chosen with --at instead.
MARKET_NOW = BASELINE.at
TODAY = MARKET_NOW.date()
APP_ID = "ROUTERAPP1-100"
APP_SECRET = "router-app-secret-5e6f"
register(APP_SECRET)
NIFTY_SPOT = 24512.0  # ATM 24500


@pytest.fixture(scope="session")
def masters() -> dict[str, str]:
    return generate_masters(TODAY)


@pytest.fixture(scope="session")
def symbol_master(masters: dict[str, str]) -> SymbolMaster:
    return SymbolMaster.from_csv(*masters.values())


@pytest.fixture(scope="session")
def sim_session(masters: dict[str, str]) -> Iterator[FyersSimulator]:
    simulator = FyersSimulator(masters=list(masters.values()), apps={APP_ID: APP_SECRET},
                               clock=lambda: MARKET_NOW, auto_approve=True,
                               rate_per_second=10_000, rate_per_minute=100_000).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def sim(sim_session: FyersSimulator) -> FyersSimulator:
    """The simulator, reset, with the NIFTY index priced for a known ATM."""
    sim_session.reset()
    sim_session.set_price("NSE:NIFTY50-INDEX", NIFTY_SPOT)
    return sim_session


class TokenBox:
    """The access token as the secret store would hand it out."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.invalidations = 0

    def get(self) -> str:
        return self.token

    def invalidate(self) -> None:
        self.invalidations += 1


@pytest.fixture
def worker_factory(emulators, clean_firestore, topics, sim, symbol_master, gcp_project):
    """Build ``WorkerDeps`` on the emulators and the simulator; tests tweak what they need."""
    from common.broker import FyersBroker

    def build(*, clock: "Clock | ShiftedClock | None" = None, read_timeout: float = 1.0, world: "World | None" = None,
              sleep: Callable[[float], None] | None = None, **overrides: str) -> WorkerDeps:
        """A worker on the baseline simulator and master, or on ``world``'s. Its sleeps advance its
        clock, unless ``sleep`` is given (real time, for faults that play out in real time)."""
        broker_sim, master = (world.sim, world.master) if world else (sim, symbol_master)
        env = {**os.environ, **topics.env(), "ENFORCE_MARKET_HOURS": "true", **overrides}
        settings = load_settings(env)
        clock = clock or Clock(MARKET_NOW)
        db = firestore_client(gcp_project)
        tokens = TokenBox(broker_sim.mint_token(APP_ID))
        broker = FyersBroker(APP_ID, tokens.get, api_base=broker_sim.api_base, data_base=broker_sim.data_base,
                             connect_timeout=0.5, read_timeout=read_timeout)
        publisher = Publisher(gcp_project, timeout=5)
        notifier = Notifier(settings, publisher.publish, InMemorySecretStore())
        needs_login: list[str] = []
        deps = WorkerDeps(
            settings=settings, store=OrderStore(db, timeout=5),
            controls=ControlsReader(db, ttl=0, timeout=5),
            breaker=CircuitBreaker(db, threshold=settings.breaker_threshold,
                                   cooldown=timedelta(seconds=settings.breaker_cooldown_seconds), timeout=5),
            master=lambda: master, broker=broker, invalidate_token=tokens.invalidate,
            needs_login=lambda reason, now: needs_login.append(reason), notify=notifier.send,
            limiter=SlidingWindowLimiter(settings.orders_per_second, settings.orders_per_minute),
            ledger=Ledger(db, timeout=5),
            worker_id=f"worker-{uuid.uuid4().hex[:6]}", clock=clock, sleep=sleep or clock.advance,
            # No caching across a test's price changes; no gathering delay before a book read.
            quotes=QuoteCache(ttl=0.0), book=SharedRead(gather=0.0))
        deps.tokens = tokens  # type: ignore[attr-defined]  # for assertions
        deps.needs_login_calls = needs_login  # type: ignore[attr-defined]
        return deps

    return build


_message_ids = itertools.count(1)


def cloud_event(message: Any) -> Any:
    """The CloudEvent functions-framework builds from a Pub/Sub push of ``message``."""
    from cloudevents.http import CloudEvent

    data = message.data if isinstance(message.data, bytes) else message.data.encode()
    attributes = dict(message.attributes) if hasattr(message, "attributes") else {}
    msg_id = getattr(message, "message_id", "") or str(next(_message_ids))
    published = getattr(message, "publish_time", None)
    push = {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": msg_id,
            **({"publishTime": published.isoformat()} if published is not None else {})}
    return CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished",
                       "source": "//pubsub.googleapis.com/projects/p/topics/orders", "id": msg_id},
                      {"message": push})


# --- one instant's world: the simulator, masters and clock shared with the router ------


@dataclass
class World:
    """An instant's world: that day's masters, a simulator serving them, and the clock that the
    simulator and the router (through :meth:`env`) share. The clock starts at the instant."""

    instant: Instant
    masters: dict[str, str]
    master: SymbolMaster
    sim: FyersSimulator
    clock: ShiftedClock

    @property
    def today(self) -> date:
        return self.instant.at.astimezone(IST).date()

    def env(self) -> dict[str, str]:
        """The router's settings for this world: its clock and the holidays a deployment configures."""
        return {**self.clock.env(), "MARKET_HOLIDAYS": ",".join(HOLIDAYS)}


@pytest.fixture(scope="session")
def worlds() -> Iterator[Callable[[Instant], World]]:
    """One simulator per instant, started on first use and kept for the session."""
    built: dict[str, World] = {}

    def world_of(instant: Instant) -> World:
        if instant.name not in built:
            masters = generate_masters(instant.at.astimezone(IST).date())
            clock = ShiftedClock()
            simulator = FyersSimulator(masters=list(masters.values()), apps={APP_ID: APP_SECRET}, clock=clock,
                                       auto_approve=True, rate_per_second=10_000, rate_per_minute=100_000).start()
            built[instant.name] = World(instant, masters, SymbolMaster.from_csv(*masters.values()), simulator, clock)
        return built[instant.name]

    yield world_of
    for world in built.values():
        world.sim.stop()


@pytest.fixture
def world(request: pytest.FixtureRequest, worlds: Callable[[Instant], World]) -> World:
    """The world of the test's ``instant`` (the baseline for a test that takes none), reset, its
    clock at the instant and the NIFTY index priced for a known ATM."""
    instant = request.getfixturevalue("instant") if "instant" in request.fixturenames else BASELINE
    w = worlds(instant)
    w.sim.reset()
    w.clock.start_at(instant.at)
    w.sim.set_price("NSE:NIFTY50-INDEX", NIFTY_SPOT)
    return w


# --- alerts through the real webhook, and what became of them --------------------------


def alert(**fields) -> str:
    """A NIFTY weekly ATM call alert (2 lots) at market time, with ``fields`` changed."""
    body = {"secret": SECRET, "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM",
            "optionType": "CE", "lots": 2, "strategy": "worker-test",
            "time": MARKET_NOW.strftime("%Y-%m-%dT%H:%M:%S%z")}
    body.update(fields)
    return json.dumps(body)


@pytest.fixture
def queue(deps_factory, topics):
    """Send alerts through the real webhook (clock at market time); returns their Pub/Sub messages."""
    clock = Clock(MARKET_NOW)
    client = make_client(deps_factory(clock=clock))

    def send(body: str | None = None, **fields):
        answer = client.post("/", data=body or alert(**fields), content_type="application/json")
        assert answer.status_code == 200, answer.get_json()
        [message] = topics.pull(topics.orders)
        return message

    send.clock = clock
    return send


def order(db, order_id: str) -> dict:
    """The order document."""
    return db.collection(ORDERS).document(order_id).get().to_dict()


def events(db, order_id: str) -> list[dict]:
    """The order's events, oldest first."""
    docs = db.collection(ORDERS).document(order_id).collection("events").stream()
    return sorted((d.to_dict() for d in docs), key=lambda e: e["at"])


def sim_orders(sim) -> list[dict]:
    """Every order Fyers (the simulator) has booked: the ground truth."""
    return sim.exchange.orders()


def order_id_of(message) -> str:
    return message.attributes["order_id"]


def real_time_worker(worker_factory: Callable[..., WorkerDeps], **overrides: Any) -> WorkerDeps:
    """A worker whose clock and sleeps are real (from market time): for deliveries that run at the
    same time (they wait for each other's leases in real time) and faults that take real seconds."""
    import time

    clock = ShiftedClock()
    clock.start_at(MARKET_NOW)
    # A short landing bound keeps a scenario that meets an unclear answer to seconds.
    return worker_factory(clock=clock, sleep=time.sleep, **{"PLACEMENT_LANDING_SECONDS": "3", **overrides})

"""Shared fixtures: environment isolation, and the real emulators, once per session.

The Firestore and Pub/Sub emulators start on free ports the first time a test
asks for them, with a project id unique to this session, and stop at the end.
Each test gets its own topics, so tests cannot read each other's messages.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from deploy.local import emulators as emu

GOLDEN = Path(__file__).parent / "golden"

pytest_plugins = ["tests.secret_scan"]  # no secret in anything written, published, answered or logged


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--at", default=os.environ.get("TEST_AT", "all"),
                     help="the instants the date-dependent tests run at: all (default), edges, now, an edge's "
                          "name, or an ISO instant with its zone (tests/clock.py)")
    parser.addoption("--repeat", type=int, default=1, help="run each selected test this many times (deploy/local/stress.sh)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``instant`` runs once per instant chosen with ``--at``; every test runs ``--repeat`` times."""
    repeat = metafunc.config.getoption("--repeat")
    if repeat > 1:
        metafunc.fixturenames.append("repetition")
        metafunc.parametrize("repetition", range(1, repeat + 1), ids=[f"run{n}" for n in range(1, repeat + 1)])
    if "instant" in metafunc.fixturenames:
        from tests.clock import chosen

        try:
            instants = chosen(metafunc.config.getoption("--at"))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        metafunc.parametrize("instant", instants, ids=[i.name for i in instants], scope="session")


@pytest.fixture(autouse=True)
def isolated_environ() -> Iterator[None]:
    """Every test starts from the same environment and cannot leak changes into the next."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def render(name: str, **values: Any) -> str:
    """A golden TradingView message from tests/golden/, rendered as TradingView would.

    Placeholders are written ``{{timenow}}``, ``{{strategy.order.action}}``...; pass their
    values with dots as underscores (``strategy_order_action="buy"``).
    """
    text = (GOLDEN / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key.replace("_", ".") + "}}", str(value)).replace("{{" + key + "}}", str(value))
    return text


@pytest.fixture(scope="session")
def gcp_project() -> str:
    """A project id unique to this test session: emulator data never mixes across runs."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def emulators(gcp_project: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start the Firestore and Pub/Sub emulators once, and point the client libraries at them."""
    emu.ensure_tools()
    log_dir = tmp_path_factory.mktemp("emulators")
    started: list[emu.Emulator] = []
    try:
        started.append(emu.start_firestore(log_dir))
        started.append(emu.start_pubsub(log_dir, gcp_project))
        env = {"GOOGLE_CLOUD_PROJECT": gcp_project}
        for e in started:
            env.update(e.env)
        os.environ.update(env)  # the session baseline that isolated_environ restores to
        _warm_up(gcp_project)
        yield env
    finally:
        for e in started:
            e.stop()


def _warm_up(project: str) -> None:
    """The emulators' first calls take ~1 s (JIT): pay that once, not in a timed request."""
    from google.cloud import firestore, pubsub_v1

    firestore.Client(project=project).collection("warmup").document("w").set({"at": 1})
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, "warmup")
    publisher.create_topic(name=topic)
    publisher.publish(topic, b"w").result(timeout=30)


@pytest.fixture(scope="session")
def firestore_db(emulators: dict[str, str], gcp_project: str) -> Any:
    """A Firestore client on the emulator."""
    from google.cloud import firestore

    return firestore.Client(project=gcp_project)


@pytest.fixture
def clean_firestore(emulators: dict[str, str], gcp_project: str) -> None:
    """Delete every document, for tests that count documents."""
    import requests

    host = emulators["FIRESTORE_EMULATOR_HOST"]
    requests.delete(f"http://{host}/emulator/v1/projects/{gcp_project}/databases/(default)/documents", timeout=10).raise_for_status()


class Topics:
    """Per-test topics with a pull subscription each, and a way to read what was published."""

    def __init__(self, project: str) -> None:
        from google.cloud import pubsub_v1

        self.project = project
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        suffix = uuid.uuid4().hex[:8]
        self.orders = f"orders-{suffix}"
        self.notifications = f"notifications-{suffix}"
        for topic in (self.orders, self.notifications):
            self.publisher.create_topic(name=self.publisher.topic_path(project, topic))
            self.subscriber.create_subscription(name=self._sub(topic), topic=self.publisher.topic_path(project, topic))

    def _sub(self, topic: str) -> str:
        return self.subscriber.subscription_path(self.project, f"{topic}-pull")

    def pull(self, topic: str, *, max_messages: int = 100, rounds: int = 3) -> list[Any]:
        """Every message waiting on ``topic`` (acked), polling a few times to catch stragglers."""
        messages: list[Any] = []
        for _ in range(rounds):
            response = self.subscriber.pull(subscription=self._sub(topic), max_messages=max_messages,
                                            return_immediately=True, timeout=5)
            if response.received_messages:
                self.subscriber.acknowledge(subscription=self._sub(topic),
                                            ack_ids=[m.ack_id for m in response.received_messages])
                messages.extend(m.message for m in response.received_messages)
        return messages

    def env(self) -> dict[str, str]:
        return {"ORDERS_TOPIC": self.orders, "NOTIFICATIONS_TOPIC": self.notifications}


@pytest.fixture
def topics(emulators: dict[str, str], gcp_project: str) -> Topics:
    """Fresh orders and notifications topics for this test."""
    return Topics(gcp_project)

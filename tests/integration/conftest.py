"""Fixtures for driving the real webhook on the emulators."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import flask
import pytest

from common.clients import firestore_client
from common.orders import OrderStore
from common.pubsub import Publisher
from common.settings import load_settings
from functions.webhook import WebhookDeps, serve

ROOT = Path(__file__).resolve().parents[2]
SECRET = "tv-S3cret-do-not-leak-7f3a"
OTHER_SECRET = "rotated-N3xt-secret-91bc"


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
    """A settable clock for scenarios that span seconds (retries) without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.now += timedelta(seconds=seconds)


def make_client(deps: WebhookDeps) -> flask.testing.FlaskClient:
    """A Flask app that serves ``functions.webhook.serve`` with injected dependencies."""
    app = flask.Flask("webhook-under-test")
    app.add_url_rule("/", "webhook", lambda: serve(flask.request, deps), methods=["GET", "POST", "PUT"])
    return app.test_client()


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

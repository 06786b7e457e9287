"""No secret in anything the router writes, publishes, answers or logs: checked in every test.

A pytest plugin (loaded by tests/conftest.py). It watches, for the whole suite:

* every Firestore write (``set``/``create``/``update`` on documents, batches and
  transactions), before it reaches the emulator;
* every Pub/Sub publish through ``common.pubsub.Publisher``;
* every answer a Flask test client receives from a function;
* every log line and printed line captured in the test.

A test fails when any of them holds a secret the suite knows: the webhook secrets,
the Fyers app secrets, and every access token the simulator issues. Inputs are
not scanned: tests put secrets into alerts on purpose, to check they are kept out.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Iterator

import pytest

_SECRETS: set[str] = set()
_LEAKS: list[str] = []


def register(*values: str | None) -> None:
    """Values no output may contain (short ones are skipped: they would match by chance)."""
    _SECRETS.update(v for v in values if v and len(v) >= 8)


def _text(payload: Any) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace")
    if isinstance(payload, str):
        return payload
    try:
        return json.dumps(payload, default=str)
    except (TypeError, ValueError):
        return repr(payload)


def check(where: str, *payloads: Any) -> None:
    """Record a leak if any payload holds a known secret."""
    for payload in payloads:
        text = _text(payload)
        for secret in _SECRETS:
            if secret in text:
                _LEAKS.append(f"{where} holds a secret ({secret[:3]}…)")


def _watch(owner: Any, name: str, where: str, pick: Callable[[tuple, dict], tuple]) -> Callable[[], None]:
    original = getattr(owner, name)

    @functools.wraps(original)
    def watched(*args: Any, **kwargs: Any) -> Any:
        check(where, *pick(args, kwargs))
        return original(*args, **kwargs)

    setattr(owner, name, watched)
    return lambda: setattr(owner, name, original)


def _watch_answers(owner: Any) -> Callable[[], None]:
    original = owner.open

    @functools.wraps(original)
    def opened(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = original(self, *args, **kwargs)
        check("an answer", response.get_data())
        return response

    owner.open = opened
    return lambda: setattr(owner, "open", original)


@pytest.fixture(scope="session", autouse=True)
def _secret_watch() -> Iterator[None]:
    from flask.testing import FlaskClient
    from google.cloud.firestore_v1.base_batch import BaseWriteBatch
    from google.cloud.firestore_v1.document import DocumentReference

    from common.pubsub import Publisher
    from deploy.local.fyers_sim.tokens import TokenStore

    undo = [
        _watch(DocumentReference, method, "a Firestore document", lambda a, k: (a[1:2], k.get("document_data")))
        for method in ("set", "create", "update")
    ] + [
        _watch(BaseWriteBatch, method, "a Firestore document", lambda a, k: (a[2:3], k.get("document_data")))
        for method in ("set", "create", "update")
    ] + [
        _watch(Publisher, "publish", "a Pub/Sub message", lambda a, k: (a[2:4], k.get("data"), k.get("attributes"))),
        _watch_answers(FlaskClient),
    ]
    issue = TokenStore.issue_access_token

    def issued(self: Any, *args: Any, **kwargs: Any) -> str:
        token = issue(self, *args, **kwargs)
        register(token)
        return token

    TokenStore.issue_access_token = issued  # type: ignore[method-assign]
    try:
        yield
    finally:
        TokenStore.issue_access_token = issue  # type: ignore[method-assign]
        for restore in undo:
            restore()


@pytest.fixture(autouse=True)
def no_secret_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test if anything it made the router write, publish, answer or log held a secret."""
    start = len(_LEAKS)
    yield
    for when, key, content in getattr(request.node, "_report_sections", []):
        if when == "call":
            check(f"{key.lower()}", content)
    leaks = _LEAKS[start:]
    del _LEAKS[start:]
    assert not leaks, "; ".join(sorted(set(leaks)))

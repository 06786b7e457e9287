"""Whatever arrives, the webhook answers below 500 and keeps the secret out of what it keeps.

Hypothesis drives the whole request path of ``functions.webhook.serve`` (parsing,
authentication, validation, identity, redaction, building the records) with real
Flask requests, as functions-framework hands them over, over 10,000 generated
requests in all (without a WSGI round trip each, which would triple the time). The order store and the
publisher are in memory, but they hold documents to Firestore's and Pub/Sub's
rules (value types, 64-bit integers, valid UTF-8, field names, nesting, attribute
sizes), so a value the real services would refuse fails here too.
(tests/integration/test_webhook.py runs a smaller fuzz on the real emulators.)
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import flask
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from common.alert import Alert
from common.orders import Duplicate
from common.records import AlertAudit, OrderEvent, OrderRecord
from common.settings import load_settings
from functions.webhook import WebhookDeps, serve

SECRET = "fz-S3cret-never-stored-42ab"
OTHER_SECRET = "fz-rotated-Secret-77cd"
NOW = datetime(2026, 11, 23, 4, 30, tzinfo=timezone.utc)
TIMENOW = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# --- in-memory services with the real services' rules ------------------------------


class FirestoreRefused(Exception):
    """A document the real Firestore would not store."""


_RESERVED = re.compile(r"^__.*__$")
_INT64 = range(-(2 ** 63), 2 ** 63)


def firestore_check(doc: dict[str, Any]) -> dict[str, Any]:
    """Refuse ``doc`` as Firestore would: the client's encoding (value types, 64-bit integers,
    valid UTF-8) and the server's rules (field names, nesting, arrays in arrays, 1 MiB)."""
    stack: list[tuple[Any, int, bool]] = [(doc, 0, False)]
    while stack:
        value, depth, in_array = stack.pop()
        if depth > 20:
            raise FirestoreRefused("maps and arrays nest at most 20 levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or not key or _RESERVED.match(key) or len(key.encode()) > 1500:
                    raise FirestoreRefused(f"field name {str(key)[:40]!r} is not allowed")
                stack.append((item, depth + 1, False))
        elif isinstance(value, list):
            if in_array:
                raise FirestoreRefused("an array cannot hold an array")
            stack.extend((item, depth + 1, True) for item in value)
        elif isinstance(value, str):
            value.encode("utf-8")  # a lone surrogate raises, as in the client
        elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
            raise FirestoreRefused("integers are 64-bit")
        elif not isinstance(value, (type(None), bool, int, float, bytes, datetime)):
            raise FirestoreRefused(f"{type(value).__name__} is not a Firestore value")
    if len(json.dumps(doc, default=str)) > 1_000_000:
        raise FirestoreRefused("a document holds at most 1 MiB")
    return doc


class MemoryStore:
    """The webhook's part of ``OrderStore``, in memory: same methods, same outcomes."""

    def __init__(self) -> None:
        self.claims: dict[str, str] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.alerts: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.written: list[dict[str, Any]] = []  # every document and update, in order

    def _write(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.written.append(firestore_check(doc))
        return doc

    def accept(self, record: OrderRecord, claims: tuple[str, ...], audit: AlertAudit | None) -> Duplicate | None:
        docs = [record.to_firestore()] + ([audit.to_firestore()] if audit is not None else [])
        for doc in docs:
            firestore_check(doc)  # the batch is refused whole, before anything is written
        taken = [self.claims[c] for c in claims if c in self.claims]
        if taken:
            return Duplicate(order_id=taken[0], record=OrderRecord.model_validate(self.orders[taken[0]]))
        self.claims.update({claim: record.order_id for claim in claims})
        self.orders[record.order_id] = self._write(docs[0])
        self.alerts.extend(self._write(doc) for doc in docs[1:])
        return None

    def record_alert(self, audit: AlertAudit) -> None:
        self.alerts.append(self._write(audit.to_firestore()))

    def update_fields(self, order_id: str, fields: dict[str, Any], *, now: datetime) -> None:
        self.orders[order_id].update(self._write({**fields, "updated_at": now}))

    def add_event(self, order_id: str, event: OrderEvent) -> None:
        self.events.append(self._write(event.to_firestore()))


class MemoryPublisher:
    """``Publisher`` in memory, with Pub/Sub's limits on attributes."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []

    def publish_json(self, topic: str, payload: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        data = json.dumps(payload, default=str).encode()
        attributes = attributes or {}
        assert all(len(k.encode()) <= 256 and len(v.encode()) <= 1024 for k, v in attributes.items())
        self.messages.append((data, attributes))
        return str(len(self.messages))


@pytest.fixture(scope="module")
def webhook() -> tuple[WebhookDeps, MemoryStore, MemoryPublisher]:
    """One in-memory webhook for a whole fuzz: state (claims, duplicates) carries across examples."""
    store, publisher = MemoryStore(), MemoryPublisher()
    deps = WebhookDeps(settings=load_settings({"WEBHOOK_SECRET": SECRET}),
                       webhook_secrets=lambda: [SECRET, OTHER_SECRET], store=lambda: store,
                       publisher=publisher, clock=lambda: NOW)  # type: ignore[arg-type]
    return deps, store, publisher


def send(webhook: tuple[WebhookDeps, MemoryStore, MemoryPublisher], body: bytes | str, *, method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """One request; asserts what holds for every answer, and that the secret was kept nowhere."""
    deps, store, publisher = webhook
    written, published = len(store.written), len(publisher.messages)
    environ = EnvironBuilder(method=method, data=body, content_type="text/plain", headers=headers).get_environ()
    answer, status = serve(flask.Request(environ), deps)
    text = json.dumps(answer)  # as Flask will send it
    assert status < 500, text
    kept = [text, json.dumps(store.written[written:], default=str)]
    kept += [data.decode() + json.dumps(attributes) for data, attributes in publisher.messages[published:]]
    assert not [secret for secret in (SECRET, OTHER_SECRET) for item in kept if secret in item]
    return status, answer


# --- what the requests are made of --------------------------------------------------

ODD_KEYS = st.sampled_from(["", " ", "__name__", "__proto__", "a.b", "a/b", "a`b", ".", "/", "\\", "$", "*",
                            "0", "-1", "null", "true", "1e400", "x" * 2000, "\u0000", "é", "😀", "\u202e",
                            "ACTION", "Symbol", "secret ", "strik", "optType", "constructor", SECRET, "token"])
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # surrogates included
KEYS = st.one_of(ODD_KEYS, TEXT)
ODD_NUMBERS = ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" * 5000, "9" * 30,
               "1e-400", "-0", "0.0", "2.0000000000000001", "4.9e-324", "1.7976931348623157e308",
               "18446744073709551616", "-9223372036854775809", "1E2", "1e15", "-5"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2 ** 200), max_value=2 ** 200),
                    st.floats(allow_nan=True, allow_infinity=True), TEXT,
                    st.sampled_from(["ATM", "atm+1", "OTM0", "CE", "put", "WEEKLY", "24NOV26", "2026-02-30",
                                     "{{ticker}}", "{{strategy.order.action}}", TIMENOW, "2026-11-23T10:00:00",
                                     "long", "FLAT", "sell", "NIFTY1!", "NSE:SBIN-EQ", SECRET]))
# Small values: drawing is most of a fuzz's time, and depth and size have tests of their own.
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                    max_leaves=5)

VALID = {"secret": SECRET, "strategy": "fuzz", "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY",
         "strike": "ATM", "optionType": "CE", "lots": 1, "time": TIMENOW}
KNOWN_FIELDS = sorted(set(Alert.model_fields) | {"token", "optionType", "orderType", "triggerPrice", "qty",
                                                  "strikeprice", "productType", "limitPrice", "stopPrice"})


def dumps(value: Any) -> str:
    """JSON as a client might send it: NaN and Infinity literals, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True)


# --- the fuzz -----------------------------------------------------------------------


@settings(FUZZ, max_examples=2500)
@given(body=st.dictionaries(KEYS, JSON, max_size=6), with_secret=st.booleans())
def test_any_json_object_is_answered_below_500(webhook, body, with_secret):
    if with_secret:
        body["secret"] = SECRET
    send(webhook, dumps(body))


@settings(FUZZ, max_examples=1000)
@given(body=st.one_of(st.binary(max_size=300), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")), JSON.map(lambda v: dumps(v).encode())))
def test_any_bytes_are_answered_below_500(webhook, body):
    send(webhook, body)


@settings(FUZZ, max_examples=500)
@given(depth=st.integers(min_value=1, max_value=30_000), shape=st.sampled_from(["[", "{\"a\":", "[{\"b\":"]))
def test_deep_nesting_is_answered_below_500(webhook, depth, shape):
    closing = {"[": "]", "{\"a\":": "}", "[{\"b\":": "}]"}[shape]
    nested = shape * depth + "1" + closing * depth
    status, _ = send(webhook, dumps(VALID)[:-1] + f', "comment": {nested}}}')
    assert status in (400, 413)


@settings(FUZZ, max_examples=2000)
@given(field=st.sampled_from(KNOWN_FIELDS), number=st.sampled_from(ODD_NUMBERS) | st.integers().map(str))
def test_extreme_numbers_in_any_field_are_answered_below_500(webhook, field, number):
    body = {k: v for k, v in VALID.items() if k != field}
    send(webhook, dumps(body)[:-1] + f', "{field}": {number}}}')


@settings(FUZZ, max_examples=2000)
@given(field=st.sampled_from(KNOWN_FIELDS), value=JSON, key=st.text(max_size=12))
def test_a_valid_alert_with_one_field_malformed_is_answered_below_500(webhook, field, value, key):
    body = {**VALID, "strategy": f"fuzz-{key}", field: value}
    send(webhook, dumps(body))


@settings(FUZZ, max_examples=1500)
@given(key=KEYS, value=JSON)
def test_a_valid_alert_with_an_unknown_extra_is_a_400_naming_it(webhook, key, value):
    status, body = send(webhook, dumps({**VALID, key: value}))
    if key not in KNOWN_FIELDS:
        assert status == 400


@settings(FUZZ, max_examples=500)
@given(where=st.sampled_from(["strategy", "comment", "key", "nested", "idempotency_key", "header"]),
       prefix=st.text(max_size=5), secret=st.sampled_from([SECRET, OTHER_SECRET]))
def test_the_secret_anywhere_else_is_a_400_that_does_not_echo_it(webhook, where, prefix, secret):
    body: dict[str, Any] = dict(VALID)
    headers = {}
    if where == "key":
        body[prefix + secret] = 1
    elif where == "nested":
        body["comment"] = {"a": [prefix + secret]}
    elif where == "header":
        headers["Idempotency-Key"] = secret
    else:
        body[where] = prefix + secret
    status, answer = send(webhook, dumps(body), headers=headers)
    assert (status, answer["error"]) == (400, "SECRET_IN_ALERT")


@settings(FUZZ, max_examples=500)
@given(method=st.sampled_from(["POST", "GET", "PUT"]),
       headers=st.dictionaries(st.sampled_from(["Idempotency-Key", "X-Forwarded-For", "Function-Execution-Id",
                                                "X-Cloud-Trace-Context"]),
                               st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                                       max_size=300) | ODD_KEYS.filter(lambda k: k.isprintable() and k.isascii()),
                               max_size=4),
       offset=st.integers(min_value=-10 ** 6, max_value=10 ** 6))
def test_odd_headers_and_methods_are_answered_below_500(webhook, method, headers, offset):
    moment = (NOW + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")
    send(webhook, dumps({**VALID, "time": moment, "strategy": f"h{offset}"}), method=method, headers=headers)


def test_a_valid_alert_is_accepted_once_and_its_resend_is_a_duplicate(webhook):
    body = dumps({**VALID, "strategy": "fuzz-baseline", "position": "long", "position_size": 1})
    first, second = send(webhook, body), send(webhook, body)
    assert (first[0], first[1]["status"]) == (200, "accepted")
    assert second[1] == {"status": "duplicate", "order_id": first[1]["order_id"], "order_status": "QUEUED"}


def test_answers_reach_the_caller_as_json_through_flask(webhook):
    """The fuzz calls serve directly; this is the one WSGI round trip that shows Flask sends its answers."""
    deps, _, _ = webhook
    app = flask.Flask("webhook-fuzz")
    app.add_url_rule("/", "webhook", lambda: serve(flask.request, deps), methods=["POST"])
    answer = app.test_client().post("/", data=b'{"secret": "' + SECRET.encode() + b'", "x": NaN}')
    assert answer.status_code == 400 and answer.get_json()["error"] == "BAD_REQUEST"

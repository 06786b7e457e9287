"""The webhook, specified by what TradingView sends and what it must get back.

Real parts: functions-framework serving ``main.webhook``, the Firestore and
Pub/Sub emulators. Each test asserts the HTTP answer, the Firestore documents
and the messages on the orders topic.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.records import ALERTS, DEDUPE, ORDERS
from deploy.local.emulators import free_port
from tests.conftest import render
from tests.integration.conftest import OTHER_SECRET, SECRET, Clock, make_client
from tests.unit.test_webhook_fuzz import JSON, KEYS, KNOWN_FIELDS, dumps

pytestmark = pytest.mark.emulators


def timenow(delta_seconds: float = 0) -> str:
    """TradingView's {{timenow}}: UTC, to the second."""
    moment = datetime.now(timezone.utc) + timedelta(seconds=delta_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_strategy = {"name": "nifty-orb"}


@pytest.fixture(autouse=True)
def unique_strategy():
    """Each test trades its own strategy, so identical alerts from two tests never dedupe."""
    _strategy["name"] = f"orb-{uuid.uuid4().hex[:8]}"


def option_alert(strategy: str | None = None, **overrides) -> str:
    """The golden option template, rendered; the strategy label made unique to the test."""
    values = dict(secret=SECRET, strategy_order_action="buy", strategy_order_contracts="2",
                  timenow=timenow(), strategy_order_id="Long", interval="5")
    values.update(overrides)
    return render("strategy_option_atm.json", **values).replace("nifty-orb", strategy or _strategy["name"])


def post(client, body: str | bytes, content_type: str = "application/json", **headers):
    return client.post("/", data=body, content_type=content_type, headers=headers)


def order_docs(db, **where) -> list[dict]:
    docs = [d.to_dict() for d in db.collection(ORDERS).stream()]
    return [d for d in docs if all(d.get(k) == v for k, v in where.items())]


def alert_docs(db, order_id=None) -> list[dict]:
    docs = [d.to_dict() for d in db.collection(ALERTS).stream()]
    return [d for d in docs if order_id is None or d.get("order_id") == order_id]


# --- the happy path -----------------------------------------------------------


def test_golden_option_alert_is_recorded_queued_and_published(client, firestore_db, topics):
    answer = post(client, option_alert())

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "accepted"
    order_id = body["order_id"]
    assert order_id.startswith("tv") and order_id.isalnum() and len(order_id) <= 30

    doc = firestore_db.collection(ORDERS).document(order_id).get().to_dict()
    assert doc["status"] == "QUEUED"
    assert doc["action"] == "BUY" and doc["symbol"] == "NIFTY" and doc["lots"] == 2
    assert doc["alert"]["expiry"] == "WEEKLY" and doc["alert"]["strike"] == "ATM"
    assert doc["alert"]["option_type"] == "CE" and doc["strategy"] == _strategy["name"]
    assert doc["key_source"] == "time" and "published_at" not in doc  # noted by the worker's claim
    assert isinstance(doc["created_at"], datetime) and doc["request_id"]
    events = [e.to_dict() for e in firestore_db.collection(ORDERS).document(order_id).collection("events").stream()]
    assert [e["to_status"] for e in events] == ["QUEUED"]

    [message] = topics.pull(topics.orders)
    assert message.attributes["order_id"] == order_id
    assert message.attributes["idempotency_key"] == doc["idempotency_key"]
    command = json.loads(message.data)
    assert command["version"] == 1 and command["order_id"] == order_id and command["recorded"] is True
    assert command["alert"]["symbol"] == "NIFTY" and "secret" not in command["alert"]

    [audit] = alert_docs(firestore_db, order_id)
    assert audit["outcome"] == "accepted" and audit["http_status"] == 200
    assert doc["alert"]["comment"] == "Long on 5" and command["alert"]["comment"] == "Long on 5"
    assert json.loads(audit["payload"])["secret"] == "[REDACTED]"
    assert audit["expire_at"] > audit["received_at"]


def test_text_plain_body_is_accepted(client, topics):
    answer = post(client, render("plain_text_message.txt", secret=SECRET, timenow=timenow()), "text/plain")
    assert answer.status_code == 200 and answer.get_json()["status"] == "accepted"
    assert len(topics.pull(topics.orders)) == 1


@pytest.mark.parametrize("golden", ["continuous_future.json", "equity_limit.json", "exit_position.json",
                                    "legacy_aliases.json"])
def test_every_golden_template_is_accepted(client, topics, golden):
    body = render(golden, secret=SECRET, timenow=timenow(), strategy_order_action="sell",
                  ticker="BANKNIFTY1!", exchange="NSE_DL")
    answer = post(client, body)
    assert answer.status_code == 200, answer.get_json()
    [message] = topics.pull(topics.orders)
    assert json.loads(message.data)["order_id"] == answer.get_json()["order_id"]


def test_position_placeholders_travel_to_the_worker(client, firestore_db, topics):
    positions = {"strategy.market_position": "Long", "strategy.market_position_size": "1",
                 "strategy.prev_market_position": "long", "strategy.prev_market_position_size": "2"}
    body = render("strategy_position.json", secret=SECRET, timenow=timenow(), strategy_order_action="sell",
                  strategy_order_contracts="1", strategy_order_id="Trim", **positions)
    answer = post(client, body.replace("nifty-orb", _strategy["name"]))
    assert answer.status_code == 200, answer.get_json()
    [message] = topics.pull(topics.orders)
    alert = json.loads(message.data)["alert"]
    assert (alert["position"], alert["position_size"], alert["prev_position"], alert["prev_position_size"],
            alert["options"], alert["comment"]) == ("long", 1, "long", 2, "buy", "Trim")


def test_rotated_secret_is_accepted_too(client):
    assert post(client, option_alert(secret=OTHER_SECRET)).status_code == 200


# --- refusals: never a 500, never published ----------------------------------


def test_wrong_secret_is_401_and_nothing_is_published(client, firestore_db, topics):
    answer = post(client, option_alert(secret="guess"))
    assert answer.status_code == 401
    assert answer.get_json() == {"status": "error", "error": "UNAUTHORIZED", "message": "Authentication failed."}
    assert topics.pull(topics.orders) == []


def test_missing_secret_is_401(client):
    assert post(client, json.dumps({"action": "buy", "symbol": "NSE:SBIN-EQ"})).status_code == 401


def test_oversized_body_is_413(client, topics):
    huge = json.dumps({"secret": SECRET, "action": "buy", "symbol": "NSE:SBIN-EQ", "pad": "x" * 70_000})
    assert post(client, huge).status_code == 413
    assert topics.pull(topics.orders) == []


@pytest.mark.parametrize("body", ["not json", "[1, 2]", "", "{\"secret\": "])
def test_non_json_is_400(client, body):
    answer = post(client, body, "text/plain")
    assert answer.status_code == 400 and answer.get_json()["error"] == "BAD_REQUEST"


def test_get_is_405_and_audited(client, firestore_db):
    assert client.get("/").status_code == 405
    assert any(a.get("reason") == "METHOD_NOT_ALLOWED" for a in alert_docs(firestore_db))


def test_invalid_fields_are_400_listing_each_field(client, firestore_db, topics):
    body = json.dumps({"secret": SECRET, "action": "hold", "symbol": "NIFTY", "strike": "ATMX",
                       "optionType": "XE", "lots": 0, "orderType": "ICEBERG"})
    answer = post(client, body)
    assert answer.status_code == 400
    fields = {e["field"] for e in answer.get_json()["errors"]}
    assert {"action", "strike", "optionType", "lots", "orderType"} <= fields
    assert SECRET not in answer.get_data(as_text=True)
    assert topics.pull(topics.orders) == []
    rejected = [a for a in alert_docs(firestore_db) if a.get("reason") == "VALIDATION_FAILED"]
    assert rejected and json.loads(rejected[-1]["payload"])["secret"] == "[REDACTED]"


def test_a_typo_and_an_unrendered_placeholder_are_400_and_nothing_is_published(client, topics):
    typo = post(client, json.dumps({"secret": SECRET, "symbol": "NIFTY", "expiry": "WEEKLY", "strik": "ATM",
                                    "optType": "CE", "action": "SELL", "time": timenow()}))
    assert typo.status_code == 400
    messages = {e["field"]: e["message"] for e in typo.get_json()["errors"]}
    assert messages["strik"] == "unknown field `strik`: did you mean `strike`?"
    unrendered = post(client, option_alert(strategy_order_action="{{strategy.order.action}}"))
    assert unrendered.status_code == 400
    assert "not rendered by TradingView" in unrendered.get_json()["errors"][0]["message"]
    assert topics.pull(topics.orders) == []


@pytest.mark.parametrize("misplaced", [
    {"strategy": f"orb {SECRET}"}, {SECRET: "x"}, {"idempotency_key": SECRET}, {"comment": [{"note": SECRET}]},
])
def test_the_secret_in_another_field_is_400_that_says_so_without_echoing_it(client, firestore_db, topics, misplaced):
    body = json.dumps({**json.loads(option_alert()), **misplaced})
    answer = post(client, body)
    assert answer.status_code == 400 and answer.get_json()["error"] == "SECRET_IN_ALERT"
    assert SECRET not in answer.get_data(as_text=True)
    assert topics.pull(topics.orders) == []
    stored = [json.dumps(d.to_dict(), default=str) for d in firestore_db.collection(ALERTS).stream()]
    assert stored and not any(SECRET in text for text in stored)


def test_the_secret_in_the_idempotency_key_header_is_refused(client, topics):
    answer = post(client, option_alert(), **{"Idempotency-Key": SECRET})
    assert answer.status_code == 400 and SECRET not in answer.get_data(as_text=True)
    assert topics.pull(topics.orders) == []


def test_index_without_option_fields_is_400_with_a_hint(client):
    answer = post(client, json.dumps({"secret": SECRET, "action": "buy", "symbol": "NIFTY"}))
    assert answer.status_code == 400
    assert "NIFTY1!" in answer.get_json()["errors"][0]["message"]


def test_stale_alert_is_refused(client, topics):
    answer = post(client, option_alert(timenow=timenow(-120)))
    assert answer.status_code == 400 and answer.get_json()["error"] == "STALE_ALERT"
    assert topics.pull(topics.orders) == []


def test_too_many_lots_is_refused(client, webhook_env):
    answer = post(client, option_alert(strategy_order_contracts="11"))  # default limit: 10
    assert answer.status_code == 400 and answer.get_json()["error"] == "LIMIT_EXCEEDED"


def test_symbol_outside_the_allow_list_is_refused(deps_factory):
    client = make_client(deps_factory(ALLOWED_SYMBOLS="BANKNIFTY,NSE:SBIN-EQ"))
    assert post(client, option_alert()).get_json()["error"] == "LIMIT_EXCEEDED"
    body = render("equity_limit.json", secret=SECRET, timenow=timenow())
    assert post(client, body).status_code == 200


def test_source_ip_allow_list_honours_cloud_run_forwarding(deps_factory):
    client = make_client(deps_factory(ALLOWED_SOURCE_IPS="tradingview"))
    spoofed = post(client, option_alert(), **{"X-Forwarded-For": "52.89.214.238, 203.0.113.9"})
    assert spoofed.status_code == 403
    genuine = post(client, option_alert(), **{"X-Forwarded-For": "203.0.113.9, 52.89.214.238"})
    assert genuine.status_code == 200


# --- dedupe -------------------------------------------------------------------


def test_duplicate_storm_50_concurrent_alerts_name_one_order(client, firestore_db, topics):
    """Every copy answers for the same order, recorded once. On a loaded machine some copies may
    be queued unrecorded (Firestore too slow); that Fyers still gets one order is proven through
    the worker (test_order_worker::test_duplicate_storm_50_concurrent_alerts_make_one_broker_order)."""
    body = option_alert()
    answers: list = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def send() -> None:
        start.wait()
        answer = post(client.application.test_client(), body)
        with lock:
            answers.append((answer.status_code, answer.get_json()))

    threads = [threading.Thread(target=send) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert {status for status, _ in answers} <= {200, 503}  # 503: TradingView re-sends; never a 500
    order_ids = {b["order_id"] for status, b in answers if status == 200}
    assert len(order_ids) == 1
    order_id = order_ids.pop()
    assert len(order_docs(firestore_db, order_id=order_id)) == 1
    published = topics.pull(topics.orders)
    assert published and {m.attributes["order_id"] for m in published} == {order_id}


def test_tradingview_retry_pattern_without_time_makes_one_order(deps_factory, firestore_db, topics):
    """4 deliveries over 20 s, straddling a dedupe-window boundary (no {{timenow}} in the alert)."""
    from common.orders import Delivered, OrderStore

    clock = Clock(datetime(2026, 11, 23, 4, 0, 50, tzinfo=timezone.utc))  # 10 s before a 60 s bucket edge
    client = make_client(deps_factory(clock=clock))
    body = json.dumps({"secret": SECRET, "action": "buy", "symbol": "NSE:SBIN-EQ", "lots": 3, "strategy": "retry-test"})
    answers = [post(client, body).get_json()]
    [message] = topics.pull(topics.orders)
    OrderStore(firestore_db, timeout=5).claim(  # the worker takes it, noting its message
        answers[0]["order_id"], worker_id="worker-1", now=clock.now, lease=timedelta(seconds=30),
        message=Delivered(message.message_id, message.publish_time))
    for _ in range(3):
        clock.advance(6.5)
        answers.append(post(client, body).get_json())
    assert [a["status"] for a in answers] == ["accepted", "duplicate", "duplicate", "duplicate"]
    assert len({a["order_id"] for a in answers}) == 1
    assert topics.pull(topics.orders) == []


def test_a_resend_of_an_order_no_worker_has_taken_queues_it_again_once_per_request_budget(
        deps_factory, firestore_db, topics):
    """The webhook stopped between recording and publishing (no note of a failed publish): a
    re-send queues it, and a quick second re-send does not queue it a third time."""
    clock = Clock(datetime(2026, 11, 23, 4, 0, 10, tzinfo=timezone.utc))
    deps = deps_factory(clock=clock)
    client = make_client(deps)
    body = json.dumps({"secret": SECRET, "action": "buy", "symbol": "NSE:SBIN-EQ", "lots": 3, "strategy": "resend"})
    first = post(client, body).get_json()
    topics.pull(topics.orders)  # the publish that, in this story, never happened
    clock.advance(deps.republish_after.total_seconds() + 1)
    again = post(client, body).get_json()
    clock.advance(1)
    third = post(client, body).get_json()

    assert (first["status"], again["status"], third["status"]) == ("accepted", "accepted", "duplicate")
    assert len(topics.pull(topics.orders)) == 1
    doc = firestore_db.collection(ORDERS).document(first["order_id"]).get().to_dict()
    assert doc["status"] == "QUEUED" and doc["requeued_at"]
    events = [e.to_dict() for e in firestore_db.collection(ORDERS).document(first["order_id"]).collection("events").stream()]
    assert "REQUEUED" in [e.get("reason") for e in events]


def test_idempotency_key_header_dedupes_different_bodies(client, topics):
    first = post(client, option_alert(), **{"Idempotency-Key": "signal-42"})
    second = post(client, option_alert(strategy_order_contracts="3"), **{"Idempotency-Key": "signal-42"})
    assert first.get_json()["status"] == "accepted"
    assert second.get_json() == {"status": "duplicate", "order_id": first.get_json()["order_id"],
                                 "order_status": "QUEUED"}
    assert len(topics.pull(topics.orders)) == 1


def test_distinct_triggers_are_distinct_orders(client, topics):
    first = post(client, option_alert(timenow=timenow(-5))).get_json()
    second = post(client, option_alert(timenow=timenow())).get_json()
    assert first["status"] == second["status"] == "accepted"
    assert first["order_id"] != second["order_id"]


# --- failure paths ------------------------------------------------------------


def test_firestore_down_still_publishes_flagged_for_the_worker(deps_factory, topics):
    client = make_client(deps_factory(firestore_host=f"127.0.0.1:{free_port()}"))
    answer = post(client, option_alert())
    assert answer.status_code == 200
    assert answer.get_json()["recorded"] is False
    [message] = topics.pull(topics.orders)
    assert message.attributes["recorded"] == "0" and json.loads(message.data)["recorded"] is False


def test_firestore_and_pubsub_down_is_503_with_a_last_resort_log(deps_factory, topics, caplog):
    dead = f"127.0.0.1:{free_port()}"
    client = make_client(deps_factory(firestore_host=dead, pubsub_host=dead))
    with caplog.at_level(logging.INFO):
        answer = post(client, option_alert())
    assert answer.status_code == 503
    assert "Traceback" not in answer.get_data(as_text=True)
    [lost] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert lost.fields["alert"]["symbol"] == "NIFTY" and lost.fields["alert"]["secret"] == "[REDACTED]"


def test_publish_failure_is_503_and_the_retry_publishes_it(deps_factory, firestore_db, topics):
    clock = Clock()
    dead_pubsub = make_client(deps_factory(clock=clock, pubsub_host=f"127.0.0.1:{free_port()}"))
    body = option_alert(timenow=clock.now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    failed = post(dead_pubsub, body)
    assert failed.status_code == 503

    [order] = order_docs(firestore_db, strategy=_strategy["name"])  # the record says it is not queued
    assert order["status"] == "QUEUED" and order["publish_failed_at"] and "published_at" not in order
    assert order["publish_error"].startswith("Could not publish")
    events = firestore_db.collection(ORDERS).document(order["order_id"]).collection("events").stream()
    assert "PUBLISH_FAILED" in [e.to_dict().get("reason") for e in events]

    clock.advance(5)  # TradingView re-sends 5 s after a 5xx
    healthy = make_client(deps_factory(clock=clock))
    answer = post(healthy, body)
    assert answer.status_code == 200 and answer.get_json()["status"] == "accepted"
    assert len(topics.pull(topics.orders)) == 1
    assert post(healthy, body).get_json()["status"] == "duplicate"  # now published: a plain duplicate


# --- secrets never leak -------------------------------------------------------


def test_the_secret_never_appears_in_logs_answers_or_documents(client, firestore_db, topics, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    answers = [
        post(client, option_alert()),
        post(client, option_alert()),  # duplicate
        post(client, json.dumps({"secret": SECRET, "action": "nope", "symbol": SECRET})),  # invalid
        post(client, option_alert(secret=SECRET + "x")),  # wrong secret containing the real one
        post(client, json.dumps({"token": SECRET, "action": "buy", "symbol": "NSE:SBIN-EQ", "lots": 999})),
    ]
    texts = [a.get_data(as_text=True) for a in answers]
    out, err = capfd.readouterr()
    documents = [json.dumps(d.to_dict(), default=str) for c in (ORDERS, ALERTS, DEDUPE)
                 for d in firestore_db.collection(c).stream()]
    messages = [m.data.decode() for m in topics.pull(topics.orders)]
    for text in texts + [out, err, caplog.text] + documents + messages:
        assert SECRET not in text


# --- the fuzz, on the real emulators ---------------------------------------------------


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(KNOWN_FIELDS) | KEYS, value=JSON)
def test_malformed_fields_on_the_emulators_are_answered_below_500_and_audited(deps_factory, firestore_db, topics,
                                                                            field, value):
    """tests/unit/test_webhook_fuzz.py holds the 10,000-example fuzz; this checks the real services agree."""
    request_id = uuid.uuid4().hex
    body = {**json.loads(option_alert()), field: value}
    answer = post(make_client(deps_factory()), dumps(body), **{"Function-Execution-Id": request_id})
    assert answer.status_code < 500, answer.get_data(as_text=True)
    query = firestore_db.collection(ALERTS).where(filter=FieldFilter("request_id", "==", request_id))
    [audit] = [d.to_dict() for d in query.stream()]
    assert audit["http_status"] == answer.status_code  # stored, however odd the body
    stored = json.dumps(audit, default=str)
    if answer.get_json()["status"] == "accepted":
        stored += json.dumps(firestore_db.collection(ORDERS).document(answer.get_json()["order_id"]).get().to_dict(),
                             default=str)
    assert SECRET not in stored and SECRET not in answer.get_data(as_text=True)

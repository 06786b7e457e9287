"""The ``health`` job, specified by the states the router can be in and what the trader
must hear about them. Real parts: the Firestore and Pub/Sub emulators.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from common.artifacts import LocalDirStore
from common.breaker import BREAKER_DOC, BreakerState
from common.controls import Controls, write_controls
from common.idempotency import order_id_for
from common.master_store import MasterRepository
from common.notify import Notifier
from common.pubsub import Publisher
from common.records import ORDERS, SYSTEM, OrderRecord, OrderStatus, ist_day
from common.secrets import InMemorySecretStore
from common.session import SessionStore
from common.settings import load_settings
from deploy.local.mastergen import generate_masters
from functions.jobs.health import HealthDeps, run_health
from tests.integration.conftest import IST, MARKET_NOW, TODAY

pytestmark = pytest.mark.emulators

NOW = MARKET_NOW + timedelta(hours=1)  # 11:00 IST, market open
TOKEN_EXPIRY = datetime(2026, 11, 24, 6, 0, tzinfo=IST)


@pytest.fixture
def deps(emulators, clean_firestore, firestore_db, topics, tmp_path, gcp_project) -> HealthDeps:
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": gcp_project, **topics.env()})
    notifier = Notifier(settings, Publisher(gcp_project, timeout=5).publish, InMemorySecretStore())
    masters = MasterRepository(firestore_db, LocalDirStore(tmp_path), check_seconds=300)
    return HealthDeps(settings=settings, db=firestore_db, masters=masters, notifier=notifier, timeout=5)


@pytest.fixture
def calm(deps, firestore_db) -> HealthDeps:
    """A logged-in session, today's master, a closed breaker, trading on, no orders."""
    generated = generate_masters(TODAY)
    deps.masters.publish({"NSE_FO": generated["NSE_FO"]}, source="test", now=MARKET_NOW - timedelta(hours=2))
    SessionStore(firestore_db, timeout=5).mark_authenticated(
        fy_id="XY12345", name="SIM TRADER", expires_at=TOKEN_EXPIRY, now=MARKET_NOW - timedelta(hours=1))
    return deps


@pytest.fixture
def all_well(calm, firestore_db) -> HealthDeps:
    """:func:`calm`, with orders flowing."""
    deps = calm
    order(firestore_db, OrderStatus.PLACED, at=NOW - timedelta(minutes=30))
    order(firestore_db, OrderStatus.PLACING, at=NOW - timedelta(seconds=20))  # in progress, not stuck
    order(firestore_db, OrderStatus.REJECTED, at=NOW - timedelta(days=1))
    return deps


def order(db, status: OrderStatus, *, at: datetime) -> str:
    order_id = order_id_for(f"k:test:{uuid.uuid4().hex}")
    doc = OrderRecord(order_id=order_id, status=status, action="BUY", symbol="NIFTY", lots=1, product="INTRADAY",
                      order_type="MARKET", idempotency_key=f"k:{order_id}", key_source="explicit",
                      received_at=at, created_at=at, created_day=ist_day(at), updated_at=at)
    db.collection(ORDERS).document(order_id).set(doc.to_firestore())
    return order_id


def codes(report: dict[str, Any]) -> list[str]:
    return [p["code"] for p in report["problems"]]


def notifications(topics) -> list[dict[str, Any]]:
    return [json.loads(m.data) for m in topics.pull(topics.notifications)]


def test_all_well_is_ok_and_silent(all_well, topics):
    report = run_health(all_well, NOW)

    assert report["ok"] is True and report["problems"] == [] and report["notified"] is False
    assert report["session"]["status"] == "AUTHENTICATED" and report["session"]["expired"] is False
    assert report["master"]["age_hours"] == 3.0 and report["master"]["data_date"] == "2026-11-23"
    assert report["breaker"]["open"] is False and report["controls"]["trading_enabled"] is True
    assert report["counts"]["today"] == {"day": "2026-11-23", "total": 2, "by_status": {"PLACED": 1, "PLACING": 1}}
    assert report["counts"]["yesterday"] == {"day": "2026-11-22", "total": 1, "by_status": {"REJECTED": 1}}
    assert report["stuck_orders"] == []
    assert notifications(topics) == []


def test_an_order_stuck_in_placing_is_a_problem_and_notified(all_well, firestore_db, topics):
    stuck = order(firestore_db, OrderStatus.PLACING, at=NOW - timedelta(minutes=12))
    unknown = order(firestore_db, OrderStatus.UNKNOWN, at=NOW - timedelta(days=1, minutes=3))  # yesterday's

    report = run_health(all_well, NOW)

    assert report["ok"] is False and codes(report) == ["ORDER_STUCK", "ORDER_STUCK"]
    assert [s["order_id"] for s in report["stuck_orders"]] == [unknown, stuck]
    assert report["problems"][1] == {"code": "ORDER_STUCK", "subject": stuck,
                                     "message": "BUY NIFTY has been PLACING for 12 min."}
    sent = notifications(topics)
    assert [(n["kind"], n["title"]) for n in sent] == [("HEALTH", "Router health: 2 problems")]
    assert "PLACING for 12 min" in sent[0]["text"]


def test_an_expired_session_is_a_problem_while_the_market_is_open(all_well, firestore_db):
    SessionStore(firestore_db, timeout=5).mark_authenticated(
        fy_id="XY12345", name="SIM TRADER", expires_at=datetime(2026, 11, 23, 6, 0, tzinfo=IST),
        now=NOW - timedelta(days=1))

    report = run_health(all_well, NOW)

    assert codes(report) == ["SESSION_EXPIRED"]
    assert report["problems"][0]["message"] == "The Fyers token expired at 23 Nov 06:00 IST: log in."
    assert report["session"]["expired"] is True


def test_a_session_marked_dead_is_a_problem(all_well, firestore_db):
    SessionStore(firestore_db, timeout=5).mark_needs_login("TOKEN_REJECTED", "Fyers refused the token", NOW)

    assert codes(run_health(all_well, NOW)) == ["SESSION_NEEDS_LOGIN"]


def test_the_nightly_token_death_is_not_a_problem_before_the_market_opens(all_well):
    early = datetime(2026, 11, 24, 7, 0, tzinfo=IST)  # the token died at 06:00; login is due at 08:30

    report = run_health(all_well, early)

    assert report["session"]["expired"] is True and report["session"]["market_open"] is False
    assert "SESSION_EXPIRED" not in codes(report)


def test_an_open_breaker_is_a_problem(all_well, firestore_db):
    state = BreakerState(state="OPEN", consecutive_failures=3, open_until=NOW + timedelta(minutes=4),
                         last_error="BROKER_TRANSIENT", updated_at=NOW - timedelta(minutes=1))
    firestore_db.collection(SYSTEM).document(BREAKER_DOC).set(state.model_dump(exclude_none=True))

    report = run_health(all_well, NOW)

    assert codes(report) == ["BREAKER_OPEN"]
    assert report["breaker"]["open"] is True
    assert "until 11:04:00 IST" in report["problems"][0]["message"]


def test_a_breaker_past_its_cooldown_is_not_a_problem(all_well, firestore_db):
    state = BreakerState(state="OPEN", consecutive_failures=3, open_until=NOW - timedelta(minutes=1))
    firestore_db.collection(SYSTEM).document(BREAKER_DOC).set(state.model_dump(exclude_none=True))

    assert run_health(all_well, NOW)["ok"] is True


def test_the_kill_switch_is_reported(all_well, firestore_db):
    write_controls(firestore_db, Controls(trading_enabled=False, note="holiday"))

    report = run_health(all_well, NOW)

    assert codes(report) == ["KILL_SWITCH"] and report["controls"]["trading_enabled"] is False


def test_a_master_not_confirmed_for_a_day_is_stale(calm):
    report = run_health(calm, NOW + timedelta(hours=24))

    assert "MASTER_STALE" in codes(report) and report["master"]["age_hours"] == 27.0


def test_no_master_at_all_is_a_problem(deps):
    report = run_health(deps, NOW)

    assert "MASTER_MISSING" in codes(report) and report["master"] == {"version": None}


def test_the_same_problems_are_notified_at_most_once_an_hour(calm, firestore_db, topics):
    order(firestore_db, OrderStatus.UNKNOWN, at=NOW - timedelta(minutes=10))

    first = run_health(calm, NOW)
    soon = run_health(calm, NOW + timedelta(minutes=30))
    write_controls(firestore_db, Controls(trading_enabled=False))
    changed = run_health(calm, NOW + timedelta(minutes=31))
    same_soon = run_health(calm, NOW + timedelta(minutes=31 + 59))
    same_later = run_health(calm, NOW + timedelta(minutes=31 + 60))

    assert [first["notified"], soon["notified"], changed["notified"], same_soon["notified"],
            same_later["notified"]] == [True, False, True, False, True]
    assert len(notifications(topics)) == 3


def test_a_problem_that_comes_back_is_notified_again(calm, firestore_db, topics):
    write_controls(firestore_db, Controls(trading_enabled=False))
    run_health(calm, NOW)
    write_controls(firestore_db, Controls(trading_enabled=True))
    healthy = run_health(calm, NOW + timedelta(minutes=10))
    write_controls(firestore_db, Controls(trading_enabled=False))

    again = run_health(calm, NOW + timedelta(minutes=20))

    assert healthy["ok"] is True and again["notified"] is True
    assert [n["kind"] for n in notifications(topics)] == ["HEALTH", "HEALTH"]

"""The scheduler's session job on the emulators and the Fyers simulator (refresh disabled, as in 2026)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from tests.secret_scan import register
from common.notify import Notifier
from common.pubsub import Publisher
from common.records import SYSTEM
from common.secrets import InMemorySecretStore
from common.session import SESSION_DOC, SessionStatus, SessionStore, Verdict, consume_login_link
from common.settings import load_settings
from deploy.local.fyers_simulator import FyersSimulator
from functions.auth import AuthDeps
from functions.jobs.session import SessionJobDeps, run_session_job
from tests.integration.conftest import Clock, make_auth_client

APP_ID, APP_SECRET = "APPID-100", "app-Secret-never-shown-5e1"
register(APP_SECRET)
PUBLIC = "https://auth.example.test"
START = datetime(2026, 7, 15, 1, 0, tzinfo=timezone.utc)  # 06:30 IST: yesterday's token just died


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def sim(clock: Clock):
    with FyersSimulator(apps={APP_ID: APP_SECRET}, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def secrets() -> InMemorySecretStore:
    return InMemorySecretStore({"FYERS_APP_ID": APP_ID, "FYERS_SECRET_KEY": APP_SECRET})


def make_deps(sim, db, topics, secrets, gcp_project, **env: str) -> SessionJobDeps:
    settings = load_settings({
        "GOOGLE_CLOUD_PROJECT": gcp_project, **topics.env(), "FYERS_API_BASE": sim.api_base,
        "FYERS_DATA_BASE": sim.data_base, "AUTH_PUBLIC_URL": PUBLIC, "AUTH_REDIRECT_URL": f"{PUBLIC}/callback",
        "FIRESTORE_TIMEOUT": "10", **env,
    })
    notifier = Notifier(settings, Publisher(gcp_project, timeout=10).publish, secrets)
    return SessionJobDeps(settings=settings, secrets=secrets, db=db, notifier=notifier)


@pytest.fixture
def deps(sim, db, topics, secrets, gcp_project) -> SessionJobDeps:
    return make_deps(sim, db, topics, secrets, gcp_project)


def store_dead_token_with_refresh(sim: FyersSimulator, secrets: InMemorySecretStore, now: datetime) -> str:
    """Yesterday's login: an access token that died at 06:00 IST, a refresh token, the PIN."""
    token = sim.mint_token(APP_ID, expires_at=now - timedelta(minutes=30))
    secrets.put("FYERS_ACCESS_TOKEN", token)
    secrets.put("FYERS_REFRESH_TOKEN", sim.tokens.issue_refresh_token(APP_ID, now - timedelta(days=1)))
    secrets.put("FYERS_PIN", "1234")
    return token


def notices(topics) -> list[dict[str, Any]]:
    return [json.loads(m.data) for m in topics.pull(topics.notifications)]


def session_doc(db) -> dict[str, Any]:
    return db.collection(SYSTEM).document(SESSION_DOC).get().to_dict() or {}


def link_token(login_url: str) -> str:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(login_url).query))["link"]


def test_a_live_token_is_checked_with_the_profile(deps, sim, secrets, db, topics, clock):
    secrets.put("FYERS_ACCESS_TOKEN", sim.mint_token(APP_ID))

    report = run_session_job(deps, clock())

    assert (report["ok"], report["status"], report["probe"], report["fy_id"]) == (
        True, "AUTHENTICATED", "profile", "XY12345")
    record = session_doc(db)
    assert record["status"] == SessionStatus.AUTHENTICATED and record["fy_id"] == "XY12345"
    assert record["checked_at"] >= START
    assert notices(topics) == []


def test_a_dead_token_with_refresh_disabled_asks_for_a_login_with_a_one_time_link(deps, sim, secrets, db, topics,
                                                                                 clock):
    token = store_dead_token_with_refresh(sim, secrets, clock())

    report = run_session_job(deps, clock())

    assert (report["status"], report["reason"], report["probe"], report["refresh"], report["notified"]) == (
        "NEEDS_LOGIN", "EXPIRED", "jwt", "unavailable", True)
    calls = [(r["method"], r["path"]) for r in sim.requests]
    assert ("GET", "/api/v3/profile") not in calls  # the JWT said enough
    assert calls == [("POST", "/api/v3/validate-refresh-token")]  # tried once, answered -16
    record = session_doc(db)
    assert record["status"] == SessionStatus.NEEDS_LOGIN and record["reason"] == "EXPIRED"
    assert record["login_link_expires_at"] - record["notified_at"] == timedelta(hours=4)

    [notice] = notices(topics)
    assert notice["kind"] == "NEEDS_LOGIN" and notice["severity"] == "WARNING"
    assert notice["login_url"].startswith(f"{PUBLIC}/login?link=")
    link = link_token(notice["login_url"])
    assert consume_login_link(db, link, clock()) == Verdict.OK
    shown = json.dumps(report) + json.dumps(record, default=str)
    for secret in (link, token, secrets.get("FYERS_REFRESH_TOKEN"), "1234", APP_SECRET):
        assert secret not in shown


def test_a_second_run_within_the_hour_does_not_notify_again(deps, sim, secrets, topics, clock):
    store_dead_token_with_refresh(sim, secrets, clock())
    assert run_session_job(deps, clock())["notified"] is True
    first = notices(topics)

    clock.advance(15 * 60)
    again = run_session_job(deps, clock())

    assert (again["status"], again["notified"]) == ("NEEDS_LOGIN", False)
    assert notices(topics) == []

    clock.advance(50 * 60)  # more than an hour since the notice: a fresh link
    later = run_session_job(deps, clock())
    [renewed] = notices(topics)
    assert later["notified"] is True and renewed["login_url"] != first[0]["login_url"]


def test_two_runs_at_once_send_one_notice(deps, sim, secrets, topics, clock):
    store_dead_token_with_refresh(sim, secrets, clock())
    now = clock()
    reports: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        reports.append(run_session_job(deps, now))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["notified"] for r in reports) == [False, True]
    assert len(notices(topics)) == 1


def test_a_token_fyers_calls_dead_is_dead(deps, sim, secrets, db, topics, clock):
    secrets.put("FYERS_ACCESS_TOKEN", sim.mint_token(APP_ID))  # valid by its JWT...
    sim.expire_tokens()  # ...but Fyers ended the session (-8)

    report = run_session_job(deps, clock())

    assert (report["status"], report["reason"], report["probe"], report["refresh"]) == (
        "NEEDS_LOGIN", "TOKEN_REJECTED", "profile", "not_configured")
    assert "-8" in report["message"]
    assert [n["kind"] for n in notices(topics)] == ["NEEDS_LOGIN"]


def test_no_token_at_all_needs_a_login(deps, db, topics, clock):
    report = run_session_job(deps, clock())
    assert (report["status"], report["reason"], report["probe"]) == ("NEEDS_LOGIN", "NO_TOKEN", "none")
    assert len(notices(topics)) == 1


def test_fyers_unreachable_leaves_the_session_as_it_was(deps, sim, secrets, db, topics, clock):
    secrets.put("FYERS_ACCESS_TOKEN", sim.mint_token(APP_ID))
    SessionStore(db, timeout=10).mark_authenticated(fy_id="XY12345", name=None, expires_at=None, now=clock())
    sim.add_fault("http_503_html", route="GET /api/v3/profile")

    report = run_session_job(deps, clock())

    assert (report["ok"], report["status"], report["reason"]) == (False, "AUTHENTICATED", "BROKER_TRANSIENT")
    assert session_doc(db)["status"] == SessionStatus.AUTHENTICATED
    assert notices(topics) == []


def test_without_a_public_url_the_notice_says_where_to_log_in(sim, db, topics, secrets, gcp_project, clock):
    deps = make_deps(sim, db, topics, secrets, gcp_project, AUTH_PUBLIC_URL="")
    run_session_job(deps, clock())
    [notice] = notices(topics)
    assert notice["login_url"] is None and "AUTH_PUBLIC_URL" in notice["fields"]["setup"]


def test_the_link_in_the_notice_logs_the_trader_in_and_the_next_check_is_healthy(deps, sim, secrets, db, topics,
                                                                                  clock):
    store_dead_token_with_refresh(sim, secrets, clock())
    run_session_job(deps, clock())
    [notice] = notices(topics)
    auth = AuthDeps(settings=deps.settings, secrets=secrets, db=lambda: db, notifier=deps.notifier, clock=clock)
    client = make_auth_client(auth)

    # The trader taps the link, approves on Fyers' page, and lands on our callback.
    opened = client.get(notice["login_url"].removeprefix(PUBLIC))  # shows a button, spends nothing
    assert opened.status_code == 200 and "Continue to the Fyers login" in opened.get_data(as_text=True)
    to_fyers = client.post("/login", data={"link": link_token(notice["login_url"])})
    assert to_fyers.status_code == 302
    approved = requests.get(to_fyers.headers["Location"] + "&approve=1", allow_redirects=False, timeout=5)
    callback = urllib.parse.urlsplit(approved.headers["Location"])
    assert client.get(f"{callback.path}?{callback.query}").status_code == 200

    clock.advance(10 * 60)
    report = run_session_job(deps, clock())
    assert (report["status"], report["fy_id"]) == ("AUTHENTICATED", "XY12345")
    assert session_doc(db).get("notified_at") is None  # the next death is announced at once

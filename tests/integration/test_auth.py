"""The daily login, end to end: our auth function, the Fyers simulator's login page and
token exchange (over HTTP, through the real broker adapter), the Firestore and Pub/Sub
emulators, and an env secret store writing its overlay directory.
"""

from __future__ import annotations

import json
import stat
import urllib.parse
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import flask
import pytest
import requests

from tests.secret_scan import register
from common.broker import FyersBroker, exchange_auth_code, token_expiry
from common.notify import Notifier
from common.pubsub import Publisher
from common.records import IST, SYSTEM
from common.secrets import EnvSecretStore
from common.session import AUTH_EVENTS, SESSION_DOC, SessionStatus, mint_login_link
from common.settings import load_settings
from deploy.local.fyers_simulator import FyersSimulator
from functions.auth import AuthDeps
from tests.integration.conftest import ROOT, Clock, make_auth_client

APP_ID, APP_SECRET = "APPID-100", "app-Secret-never-shown-5e1"
OPERATOR_KEY = "op-Key-long-and-private-77c2"
register(APP_SECRET, OPERATOR_KEY)
PUBLIC = "https://auth.example.test"
# 09:07 IST on Tue 14 Jul 2026: the token must live until 06:00 IST on Wed 15 Jul.
START = datetime(2026, 7, 14, 3, 37, tzinfo=timezone.utc)
NEXT_SIX_IST = datetime(2026, 7, 15, 6, 0, tzinfo=IST)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def sim(clock: Clock):
    with FyersSimulator(apps={APP_ID: APP_SECRET}, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def secrets(tmp_path: Path) -> EnvSecretStore:
    env = {"FYERS_APP_ID": APP_ID, "FYERS_SECRET_KEY": APP_SECRET, "OPERATOR_KEY": OPERATOR_KEY}
    return EnvSecretStore(env, overlay_dir=tmp_path / "secrets")


@pytest.fixture
def deps(sim, db, topics, secrets, clock, gcp_project) -> AuthDeps:
    settings = load_settings({
        "GOOGLE_CLOUD_PROJECT": gcp_project, **topics.env(),
        "FYERS_API_BASE": sim.api_base, "FYERS_DATA_BASE": sim.data_base,
        "AUTH_REDIRECT_URL": f"{PUBLIC}/callback", "AUTH_PUBLIC_URL": PUBLIC,
        "FIRESTORE_TIMEOUT": "10",
    })
    notifier = Notifier(settings, Publisher(gcp_project, timeout=10).publish, secrets)
    return AuthDeps(settings=settings, secrets=secrets, db=lambda: db, notifier=notifier, clock=clock)


@pytest.fixture
def client(deps: AuthDeps) -> flask.testing.FlaskClient:
    return make_auth_client(deps)


class _Form(HTMLParser):
    """The simulator's login form: its action and fields, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.action, self.fields = "", {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action") or ""
        if tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""


def fyers_login(sim: FyersSimulator, location: str) -> str:
    """Open Fyers' login page and press Approve; return the callback path+query Fyers redirects to."""
    page = requests.get(location, allow_redirects=False, timeout=5)
    assert page.status_code == 200, page.text
    form = _Form()
    form.feed(page.text)
    approved = requests.get(sim.base_url + form.action, params=form.fields, allow_redirects=False, timeout=5)
    assert approved.status_code == 302
    callback = urllib.parse.urlsplit(approved.headers["Location"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == f"{PUBLIC}/callback"
    return f"{callback.path}?{callback.query}"


def start_with_key(client) -> str:
    answer = client.post("/login", data={"key": OPERATOR_KEY})
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def session_doc(db) -> dict[str, Any]:
    return db.collection(SYSTEM).document(SESSION_DOC).get().to_dict() or {}


def events(db, kind: str) -> list[dict[str, Any]]:
    """This test's audit events of one kind, oldest first."""
    docs = [d.to_dict() for d in db.collection(AUTH_EVENTS).stream()]
    return sorted((d for d in docs if d["kind"] == kind), key=lambda d: d["at"])


def notifications(topics) -> list[dict[str, Any]]:
    return [json.loads(m.data) for m in topics.pull(topics.notifications)]


# --- the round trip ------------------------------------------------------------------


def test_full_login_stores_the_token_and_records_the_session(client, sim, db, secrets, topics, tmp_path):
    location = start_with_key(client)
    target = urllib.parse.urlsplit(location)
    assert location.startswith(f"{sim.api_base}/generate-authcode?")
    query = dict(urllib.parse.parse_qsl(target.query))
    assert query["client_id"] == APP_ID and query["redirect_uri"] == f"{PUBLIC}/callback"
    assert query["response_type"] == "code" and len(query["state"]) >= 40

    callback = fyers_login(sim, location)
    page = client.get(callback)

    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Logged in as XY12345; valid until 06:00 IST on Wed 15 Jul 2026." in text
    token = secrets.get("FYERS_ACCESS_TOKEN")
    assert token_expiry(token) == NEXT_SIX_IST
    assert secrets.get("FYERS_REFRESH_TOKEN")
    assert stat.S_IMODE((tmp_path / "secrets" / "FYERS_ACCESS_TOKEN").stat().st_mode) == 0o600
    # The stored token is the live one: Fyers (the simulator) accepts it.
    broker = FyersBroker(APP_ID, lambda: token, api_base=sim.api_base, data_base=sim.data_base)
    assert broker.profile().fy_id == "XY12345"

    record = session_doc(db)
    assert record["status"] == SessionStatus.AUTHENTICATED
    assert record["fy_id"] == "XY12345" and record["name"] == "S** T*****"
    assert record["expires_at"] == NEXT_SIX_IST
    assert timedelta(0) <= record["logged_in_at"] - START < timedelta(seconds=1)
    assert token not in json.dumps(record, default=str)

    sent = notifications(topics)
    assert [n["kind"] for n in sent] == ["LOGGED_IN"]
    assert "XY12345" in sent[0]["title"] and "06:00 IST" in sent[0]["text"]
    assert events(db, "logged_in")[0]["fy_id"] == "XY12345"


def test_no_secret_or_token_appears_in_any_url_or_page(client, sim, secrets):
    form = client.get("/login")
    location = start_with_key(client)
    callback = fyers_login(sim, location)
    done = client.get(callback)
    status = client.get("/")
    token, refresh = secrets.get("FYERS_ACCESS_TOKEN"), secrets.get("FYERS_REFRESH_TOKEN")
    for shown in (form.get_data(as_text=True), location, done.get_data(as_text=True), done.headers.get("Location", ""),
                  status.get_data(as_text=True)):
        for secret in (APP_SECRET, OPERATOR_KEY, token, refresh):
            assert secret not in shown
    assert done.headers["Cache-Control"] == "no-store" and done.headers["Referrer-Policy"] == "no-referrer"


def test_the_status_page_shows_the_session_without_secrets(client, sim, secrets):
    client.get(fyers_login(sim, start_with_key(client)))
    page = client.get("/")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "AUTHENTICATED" in text and "06:00 IST on Wed 15 Jul 2026" in text
    assert secrets.get("FYERS_ACCESS_TOKEN") not in text


def test_routes_work_under_the_function_name_prefix(client):
    page = client.get("/auth/login")
    assert page.status_code == 200 and 'name="key"' in page.get_data(as_text=True)


# --- the operator key ------------------------------------------------------------------


def test_the_login_form_posts_the_key_in_the_body(client):
    page = client.get("/login")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'<form method="post" action="{PUBLIC}/login">' in text and 'type="password" name="key"' in text
    assert 'name="viewport"' in text  # readable on a phone


def test_a_wrong_operator_key_is_refused_and_audited(client, db):
    answer = client.post("/login", data={"key": "guess"})
    assert answer.status_code == 401 and "Location" not in answer.headers
    text = answer.get_data(as_text=True)
    assert "Wrong operator key" in text and "guess" not in text
    refused = events(db, "login_refused")
    assert refused and refused[-1]["reason"] == "BAD_OPERATOR_KEY"
    assert "guess" not in json.dumps(refused, default=str)


def test_key_login_is_refused_when_no_operator_key_is_configured(deps, client, tmp_path):
    deps.secrets = EnvSecretStore({"FYERS_APP_ID": APP_ID}, overlay_dir=tmp_path / "other")
    assert client.post("/login", data={"key": ""}).status_code == 401
    assert client.post("/login", data={"key": "anything"}).status_code == 401


# --- one-time links ---------------------------------------------------------------------


def test_a_login_link_starts_the_login_once(client, db, clock, sim):
    link = mint_login_link(db, clock(), timedelta(hours=4))
    first = client.post("/login", data={"link": link.token})
    assert first.status_code == 302 and first.headers["Location"].startswith(f"{sim.api_base}/generate-authcode?")
    again = client.post("/login", data={"link": link.token})
    assert again.status_code == 403 and "already used" in again.get_data(as_text=True)
    assert events(db, "login_refused")[-1]["reason"] == "LINK_USED"


def test_opening_a_login_link_only_shows_a_button_so_link_previews_cannot_spend_it(client, db, clock):
    link = mint_login_link(db, clock(), timedelta(hours=4))
    for _ in range(2):  # a chat app's preview, then the trader
        page = client.get(f"/login?link={link.token}")
        assert page.status_code == 200 and 'name="link"' in page.get_data(as_text=True)
    assert client.post("/login", data={"link": link.token}).status_code == 302


def test_an_expired_login_link_is_refused(client, db, clock):
    link = mint_login_link(db, clock(), timedelta(hours=4))
    clock.advance(4 * 3600 + 1)
    answer = client.post("/login", data={"link": link.token})
    assert answer.status_code == 403 and "expired" in answer.get_data(as_text=True)


def test_an_unknown_login_link_is_refused(client):
    answer = client.post("/login", data={"link": "made-up"})
    assert answer.status_code == 403 and "not valid" in answer.get_data(as_text=True)


# --- the callback ---------------------------------------------------------------------


def test_a_replayed_callback_is_refused_without_calling_fyers(client, sim, db):
    callback = fyers_login(sim, start_with_key(client))
    assert client.get(callback).status_code == 200
    replay = client.get(callback)
    assert replay.status_code == 400 and "already completed" in replay.get_data(as_text=True)
    assert [r["path"] for r in sim.requests].count("/api/v3/validate-authcode") == 1
    assert events(db, "callback_refused")[-1]["reason"] == "STATE_USED"


def test_a_callback_after_ten_minutes_is_refused(client, sim, clock):
    callback = fyers_login(sim, start_with_key(client))
    clock.advance(10 * 60 + 1)
    answer = client.get(callback)
    assert answer.status_code == 400 and "took too long" in answer.get_data(as_text=True)


def test_a_callback_with_a_state_we_never_issued_is_refused(client, sim, db):
    answer = client.get("/callback?s=ok&code=200&auth_code=x.y.z&state=forged-state")
    assert answer.status_code == 400 and "not started here" in answer.get_data(as_text=True)
    assert not [r for r in sim.requests if r["path"] == "/api/v3/validate-authcode"]
    assert session_doc(db) == {}


def test_a_reused_auth_code_gets_a_clear_page_and_an_audit_record(client, sim, db, secrets):
    """Fyers -437: the code was already exchanged (here, by someone else first)."""
    callback = fyers_login(sim, start_with_key(client))
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))["auth_code"]
    exchange_auth_code(APP_ID, APP_SECRET, code, api_base=sim.api_base)  # spends it

    page = client.get(callback)

    text = page.get_data(as_text=True)
    assert page.status_code == 400
    assert "Fyers refused the login code" in text and "-437: invalid auth code" in text
    assert "Traceback" not in text
    audit = events(db, "token_exchange")[-1]
    assert (audit["outcome"], audit["broker_code"], audit["message"]) == ("refused", -437, "invalid auth code")
    assert secrets.get_optional("FYERS_ACCESS_TOKEN") is None
    assert session_doc(db).get("status") != SessionStatus.AUTHENTICATED
    # The page offers a fresh one-time link, which starts a new login.
    retry = text.split(f'href="{PUBLIC}/login?link=')[1].split('"')[0]
    assert client.post("/login", data={"link": retry}).status_code == 302


def test_a_fyers_error_redirect_is_shown_escaped(client, sim, db):
    location = start_with_key(client)
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["state"]
    query = urllib.parse.urlencode({"s": "error", "code": "-1025", "message": "<script>alert(1)</script>",
                                    "state": state})
    page = client.get(f"/callback?{query}")
    text = page.get_data(as_text=True)
    assert page.status_code == 400
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert events(db, "callback_refused")[-1]["broker_code"] == -1025


def test_fyers_unreachable_during_the_exchange_gets_a_clear_page(client, sim, db):
    callback = fyers_login(sim, start_with_key(client))
    sim.add_fault("http_503_html", route="POST /api/v3/validate-authcode")
    page = client.get(callback)
    assert page.status_code == 502 and "Fyers could not be reached" in page.get_data(as_text=True)
    assert events(db, "token_exchange")[-1]["reason"] == "BROKER_TRANSIENT"


def test_missing_app_credentials_give_a_configuration_page(deps, client, tmp_path):
    deps.secrets = EnvSecretStore({"OPERATOR_KEY": OPERATOR_KEY}, overlay_dir=tmp_path / "other")
    page = client.post("/login", data={"key": OPERATOR_KEY})
    assert page.status_code == 500 and "FYERS_APP_ID is not set" in page.get_data(as_text=True)


# --- the deployed entry point ------------------------------------------------------------


def test_main_auth_is_wired(emulators, topics, monkeypatch, tmp_path):
    from functions_framework import create_app

    for name, value in {**topics.env(), "OPERATOR_KEY": OPERATOR_KEY, "FYERS_APP_ID": APP_ID,
                        "AUTH_PUBLIC_URL": PUBLIC}.items():
        monkeypatch.setenv(name, value)
    app = create_app("auth", str(ROOT / "main.py"), "http").test_client()
    page = app.get("/login")
    assert page.status_code == 200 and 'name="key"' in page.get_data(as_text=True)
    assert app.get("/").status_code == 200


def test_a_link_is_not_spent_when_the_login_cannot_start(deps, client, db, clock, tmp_path):
    link = mint_login_link(db, clock(), timedelta(hours=4))
    working = deps.secrets
    deps.secrets = EnvSecretStore({}, overlay_dir=tmp_path / "empty")
    assert client.post("/login", data={"link": link.token}).status_code == 500
    deps.secrets = working
    assert client.post("/login", data={"link": link.token}).status_code == 302


def test_an_internal_failure_is_a_plain_page_without_details(deps, client):
    def broken() -> Any:
        raise RuntimeError("firestore exploded at /secret/path")

    deps.db = broken
    page = client.get("/")
    text = page.get_data(as_text=True)
    assert page.status_code == 500 and "Something went wrong" in text
    assert "Traceback" not in text and "exploded" not in text and "RuntimeError" not in text

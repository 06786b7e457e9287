"""The ``scheduler`` HTTP function, specified by what Cloud Scheduler sends and gets back.

The real ``main.scheduler`` served by functions-framework, configured from the
environment as in the cloud, on the emulators, the Fyers simulator and a local
stand-in for Fyers' symbol-master host. Failure answers are driven through
``functions.scheduler.serve`` with injected parts.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import flask
import pytest

from common.artifacts import LocalDirStore
from common.idempotency import order_id_for
from common.ledger import Ledger
from common.master_store import MasterRepository
from common.notify import Notifier
from common.pubsub import Publisher
from common.records import ORDERS, OrderRecord, OrderStatus, ist_day
from common.secrets import InMemorySecretStore
from common.settings import load_settings
from deploy.local.emulators import free_port
from functions.jobs.symbols import SymbolsDeps
from functions.scheduler import SchedulerDeps, serve
from tests.integration.conftest import APP_ID, MARKET_NOW, TODAY
from tests.integration.test_symbols_job import MasterServer

pytestmark = pytest.mark.emulators

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def master_server():
    server = MasterServer()
    yield server
    server.stop()


@pytest.fixture
def scheduler_env(world, emulators, clean_firestore, topics, master_server, tmp_path, gcp_project):
    """The environment a deployed scheduler has, pointed at local stand-ins, on the world's clock."""
    import os

    master_server.serve_day(world.today)
    env = {**emulators, **topics.env(), **world.env(), "GOOGLE_CLOUD_PROJECT": gcp_project,
           "SYMBOL_MASTER_BASE": master_server.base, "ARTIFACT_DIR": str(tmp_path / "artifacts"),
           "FYERS_API_BASE": world.sim.api_base, "FYERS_DATA_BASE": world.sim.data_base,
           "FYERS_APP_ID": APP_ID, "FYERS_ACCESS_TOKEN": world.sim.mint_token(APP_ID), "LOG_LEVEL": "INFO"}
    os.environ.update(env)
    return env


@pytest.fixture
def client(scheduler_env) -> flask.testing.FlaskClient:
    from functions_framework import create_app

    return create_app("scheduler", str(ROOT / "main.py"), "http").test_client()


# --- dispatch ---------------------------------------------------------------------


def test_an_unknown_job_is_a_bad_request(client):
    answer = client.post("/?job=reboot")

    assert answer.status_code == 400
    assert answer.get_json() == {"status": "error", "error": "BAD_REQUEST",
                                 "message": "Unknown job 'reboot'; expected one of session, symbols, reconcile, health."}


def test_a_request_naming_no_job_is_a_bad_request(client):
    answer = client.post("/")

    assert answer.status_code == 400 and answer.get_json()["error"] == "BAD_REQUEST"


def test_an_odd_job_name_is_not_echoed(client):
    answer = client.post("/", json={"job": "<script>alert(1)</script>"})

    assert answer.status_code == 400 and "script" not in answer.get_data(as_text=True)


def test_only_post_and_get_are_accepted(client):
    assert client.put("/?job=health").status_code == 405


def test_the_health_job_is_reachable(client):
    answer = client.post("/?job=health")

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "done" and body["job"] == "health"
    assert {"ok", "problems", "session", "master", "breaker", "controls", "counts"} <= set(body["report"])


def test_the_symbols_job_is_reachable_with_a_json_body(instant, client, scheduler_env, firestore_db):
    answer = client.post("/", json={"job": "symbols"})

    assert answer.status_code == 200
    report = answer.get_json()["report"]
    assert report["status"] == "updated"
    stored = MasterRepository(firestore_db, LocalDirStore(scheduler_env["ARTIFACT_DIR"]), check_seconds=300)
    assert stored.pointer().version == report["version"] and "NIFTY" in stored.current().underlyings()


def test_the_reconcile_job_is_reachable_and_uses_the_stored_token(instant, client, world, firestore_db):
    from common.broker import FyersBroker, OrderRequest
    from common.symbols import Contract

    sim, now = world.sim, world.clock()
    order_id = order_id_for(f"k:test:{uuid.uuid4().hex}")
    sim.set_price("NSE:SBIN-EQ", 812.5)
    broker = FyersBroker(APP_ID, lambda: sim.mint_token(APP_ID), api_base=sim.api_base, data_base=sim.data_base)
    broker_id = broker.place_order(OrderRequest(symbol="NSE:SBIN-EQ", qty=10, side=1, type=2, product="CNC",
                                                tag=order_id)).order_id
    doc = OrderRecord(order_id=order_id, status=OrderStatus.PLACED, action="BUY", symbol="SBIN", lots=10,
                      product="CNC", order_type="MARKET", idempotency_key="k", key_source="explicit",
                      received_at=now, created_at=now, created_day=ist_day(now), updated_at=now,
                      contract=Contract(ticker="NSE:SBIN-EQ", underlying="SBIN", exchange="NSE", kind="EQ",
                                        lot_size=1, tick_size=0.05, expiry=None, strike=None), quantity=10,
                      broker_order_id=broker_id)
    firestore_db.collection(ORDERS).document(order_id).set(doc.to_firestore())

    answer = client.post("/?job=reconcile")

    assert answer.status_code == 200
    assert answer.get_json()["report"]["filled"] == [order_id]
    assert firestore_db.collection(ORDERS).document(order_id).get().get("avg_price") == 812.5


def test_the_session_job_is_reachable(instant, client):
    answer = client.get("/?job=session")

    assert answer.status_code == 200
    report = answer.get_json()["report"]
    assert report["status"] == "AUTHENTICATED" and report["probe"] == "profile"


def test_each_run_logs_one_summary_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="scheduler"):
        client.post("/?job=health")

    lines = [r for r in caplog.records if r.name == "scheduler" and r.getMessage() == "scheduler job finished"]
    assert len(lines) == 1
    fields = lines[0].fields
    assert fields["job"] == "health" and fields["http_status"] == 200 and "ok" in fields
    assert isinstance(fields["duration_ms"], int)


# --- failures: only the retryable ones answer 5xx ----------------------------------


def app_for(deps: SchedulerDeps) -> flask.testing.FlaskClient:
    app = flask.Flask("scheduler-under-test")
    app.add_url_rule("/", "scheduler", lambda: serve(flask.request, deps), methods=["GET", "POST", "PUT"])
    return app.test_client()


def injected(settings, **jobs: Any) -> SchedulerDeps:
    def missing() -> Any:
        raise AssertionError("this job should not run")

    return SchedulerDeps(settings=settings, clock=lambda: MARKET_NOW,
                         **{name: jobs.get(name, missing) for name in ("session", "symbols", "reconcile", "health")})


def test_a_retryable_refresh_failure_answers_503_with_its_report(emulators, clean_firestore, firestore_db, topics,
                                                                  master_server, tmp_path, gcp_project):
    master_server.serve_day(TODAY)
    master_server.status["NSE_FO"] = 502
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": gcp_project, **topics.env(),
                              "SYMBOL_MASTER_BASE": master_server.base})
    masters = MasterRepository(firestore_db, LocalDirStore(tmp_path), check_seconds=300)
    notifier = Notifier(settings, Publisher(gcp_project, timeout=5).publish, InMemorySecretStore())
    client = app_for(injected(settings, symbols=lambda: SymbolsDeps(settings, masters, notifier)))

    answer = client.post("/?job=symbols")

    assert answer.status_code == 503
    body = answer.get_json()
    assert body["status"] == "retry" and body["report"]["error"] == "MASTER_DOWNLOAD_FAILED"


def test_an_invalid_master_is_reported_with_200_as_a_retry_would_not_help(
        emulators, clean_firestore, firestore_db, topics, master_server, tmp_path, gcp_project):
    master_server.serve_day(TODAY)
    master_server.files["NSE_FO"] = b"garbage\n" * 100
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": gcp_project, **topics.env(),
                              "SYMBOL_MASTER_BASE": master_server.base})
    masters = MasterRepository(firestore_db, LocalDirStore(tmp_path), check_seconds=300)
    notifier = Notifier(settings, Publisher(gcp_project, timeout=5).publish, InMemorySecretStore())
    client = app_for(injected(settings, symbols=lambda: SymbolsDeps(settings, masters, notifier)))

    answer = client.post("/?job=symbols")

    assert answer.status_code == 200
    assert answer.get_json()["report"]["ok"] is False
    assert answer.get_json()["report"]["error"] == "MASTER_INVALID"


def test_an_unreachable_firestore_during_a_refresh_answers_503(emulators, gcp_project, master_server, tmp_path):
    import os

    from google.cloud import firestore

    saved = os.environ["FIRESTORE_EMULATOR_HOST"]
    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{free_port()}"
    try:
        dead = firestore.Client(project=gcp_project)
    finally:
        os.environ["FIRESTORE_EMULATOR_HOST"] = saved
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": gcp_project, "SYMBOL_MASTER_BASE": master_server.base})
    masters = MasterRepository(dead, LocalDirStore(tmp_path), check_seconds=300, timeout=1)
    sent: list[Any] = []
    notifier = Notifier(settings, lambda *message: sent.append(message), InMemorySecretStore())
    client = app_for(injected(settings, symbols=lambda: SymbolsDeps(settings, masters, notifier)))

    answer = client.post("/?job=symbols")

    assert answer.status_code == 503
    report = answer.get_json()["report"]
    assert report["error"] == "MASTER_STORE_FAILED" and report["retryable"] is True
    assert len(sent) == 1  # the trader hears of it


def test_a_google_cloud_outage_escaping_a_job_answers_503(emulators, gcp_project):
    from google.api_core.exceptions import ServiceUnavailable

    settings = load_settings({"GOOGLE_CLOUD_PROJECT": gcp_project})

    def outage() -> Any:
        raise ServiceUnavailable("firestore.googleapis.com: connection reset")

    answer = app_for(injected(settings, health=outage)).post("/?job=health")

    assert answer.status_code == 503
    assert answer.get_json() == {"status": "error", "error": "STORE_UNAVAILABLE", "job": "health",
                                 "message": "A Google Cloud service did not answer (ServiceUnavailable); retry."}


def test_an_unexpected_failure_answers_a_sanitised_500(emulators, gcp_project):
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": gcp_project})

    def broken() -> Any:
        raise RuntimeError("secret internals: token=abc123")

    answer = app_for(injected(settings, reconcile=broken)).post("/?job=reconcile")

    assert answer.status_code == 500
    assert answer.get_json() == {"status": "error", "error": "INTERNAL", "message": "Internal error.",
                                 "job": "reconcile"}
    assert "abc123" not in answer.get_data(as_text=True)


def test_a_broker_outage_during_reconcile_answers_503(emulators, clean_firestore, firestore_db, topics, sim,
                                                       gcp_project):
    from common.broker import FyersBroker
    from common.orders import OrderStore
    from deploy.local.fyers_sim import ORDERBOOK
    from functions.jobs.reconcile import ReconcileDeps

    settings = load_settings({"GOOGLE_CLOUD_PROJECT": gcp_project, **topics.env()})
    token = sim.mint_token(APP_ID)
    broker = FyersBroker(APP_ID, lambda: token, api_base=sim.api_base, data_base=sim.data_base, read_timeout=2)
    sim.add_fault("http_503_html", route=ORDERBOOK)
    notifier = Notifier(settings, Publisher(gcp_project, timeout=5).publish, InMemorySecretStore())
    deps = ReconcileDeps(settings, OrderStore(firestore_db, timeout=5), lambda: broker, notifier,
                         Ledger(firestore_db, timeout=5))

    answer = app_for(injected(settings, reconcile=lambda: deps)).post("/?job=reconcile")

    assert answer.status_code == 503 and answer.get_json()["error"] == "BROKER_TRANSIENT"


def test_notifications_of_a_run_reach_the_topic(client, master_server, topics):
    master_server.status["BSE_FO"] = 404

    answer = client.post("/?job=symbols")

    assert answer.status_code == 503
    sent = [json.loads(m.data) for m in topics.pull(topics.notifications)]
    assert [n["kind"] for n in sent] == ["MASTER_REFRESH_FAILED"]
    assert sent[0]["text"] == "BSE_FO.csv: HTTP 404 from the master source."

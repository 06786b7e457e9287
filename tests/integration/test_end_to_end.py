"""The whole pipeline, as deployed but local: nothing injected, everything configured by environment.

TradingView's POST -> ``main.webhook`` -> Firestore + Pub/Sub emulators -> a push
subscription -> ``main.order_worker`` served over HTTP by functions-framework
-> the real Fyers SDK -> the simulator.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from werkzeug.serving import make_server

from common.artifacts import LocalDirStore
from common.master_store import MasterRepository
from common.records import ORDERS
from deploy.local.emulators import free_port
from tests.integration.conftest import APP_ID, ROOT, SECRET, TODAY

pytestmark = pytest.mark.emulators


@pytest.fixture
def pipeline(emulators, topics, sim, masters, firestore_db, gcp_project, tmp_path, clean_firestore) -> Iterator[Any]:
    """Configure the functions like a deployment, serve the worker, and subscribe it by push."""
    import os

    from functions_framework import create_app
    from google.cloud import pubsub_v1

    artifacts = tmp_path / "artifacts"
    MasterRepository(firestore_db, LocalDirStore(artifacts), check_seconds=60).publish(
        {name: text.encode() for name, text in masters.items()}, source="generated", now=datetime.now(timezone.utc))
    os.environ.update({
        **topics.env(), "WEBHOOK_SECRET": SECRET, "SECRET_BACKEND": "env", "FYERS_APP_ID": APP_ID,
        "FYERS_ACCESS_TOKEN": sim.mint_token(APP_ID), "FYERS_API_BASE": sim.api_base,
        "FYERS_DATA_BASE": sim.data_base, "ARTIFACT_BACKEND": "local", "ARTIFACT_DIR": str(artifacts),
        # The real clock is used end to end; the simulator's market is open whatever the hour.
        "ENFORCE_MARKET_HOURS": "false",
    })
    assert datetime.now(timezone.utc).date() >= TODAY

    worker_app = create_app("order_worker", str(ROOT / "main.py"), "cloudevent")
    port = free_port()
    server = make_server("127.0.0.1", port, worker_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = subscriber.topic_path(gcp_project, topics.orders)
    # The push URL names the topic so functions-framework can fill the CloudEvent's source.
    subscriber.create_subscription(
        name=subscriber.subscription_path(gcp_project, f"{topics.orders}-push"), topic=topic_path,
        push_config=pubsub_v1.types.PushConfig(push_endpoint=f"http://127.0.0.1:{port}/{topic_path}"))
    webhook = create_app("webhook", str(ROOT / "main.py"), "http").test_client()
    yield webhook
    server.shutdown()


def wait_for(db, order_id: str, statuses: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        doc = db.collection(ORDERS).document(order_id).get().to_dict() or {}
        if doc.get("status") in statuses:
            return doc
        time.sleep(0.1)
    raise AssertionError(f"order {order_id} still {doc.get('status')!r} after {timeout} s")


def test_a_tradingview_alert_becomes_one_placed_fyers_order(pipeline, sim, firestore_db):
    body = {"secret": SECRET, "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM",
            "optionType": "CE", "lots": 1, "strategy": "e2e",
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    answer = pipeline.post("/", data=json.dumps(body), content_type="text/plain")
    assert answer.status_code == 200
    order_id = answer.get_json()["order_id"]

    doc = wait_for(firestore_db, order_id, {"PLACED", "REJECTED", "FAILED", "BLOCKED", "EXPIRED", "UNKNOWN"})

    assert doc["status"] == "PLACED", doc.get("message")
    [placed] = sim.exchange.orders()
    assert placed["symbol"] == "NSE:NIFTY26NOV24500CE" and placed["qty"] == 65
    assert placed["orderTag"] == f"1:{order_id}"
    assert doc["broker_order_id"] == placed["id"]

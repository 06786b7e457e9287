"""The whole pipeline, as deployed but local: nothing injected, everything configured by environment.

TradingView's POST -> ``main.webhook`` -> Firestore + Pub/Sub emulators -> a push
subscription -> ``main.order_worker`` served over HTTP by functions-framework
-> the real Fyers SDK -> the simulator. It runs at every instant chosen with
``--at``: the router's clock and the simulator's are shifted there together.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

from common.records import ORDERS
from tests.integration.conftest import APP_ID, NIFTY_SPOT, SECRET
from tests.pipeline import local_pipeline

pytestmark = pytest.mark.emulators


@pytest.fixture
def pipeline(instant, world, emulators, topics, firestore_db, gcp_project, tmp_path, clean_firestore) -> Iterator[Any]:
    """The functions configured like a deployment; the worker behind a push subscription."""
    env = {**topics.env(), **world.env(), "WEBHOOK_SECRET": SECRET,
           # Orders are placed at every instant, the weekend's included: market hours have their own tests.
           "ENFORCE_MARKET_HOURS": "false"}
    with local_pipeline(project=gcp_project, db=firestore_db, sim=world.sim, app_id=APP_ID, masters=world.masters,
                        artifacts=tmp_path / "artifacts", orders_topic=topics.orders, env=env,
                        clock=world.clock) as webhook:
        yield webhook


def wait_for(db, order_id: str, statuses: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        doc = db.collection(ORDERS).document(order_id).get().to_dict() or {}
        if doc.get("status") in statuses:
            return doc
        time.sleep(0.1)
    raise AssertionError(f"order {order_id} still {doc.get('status')!r} after {timeout} s")


def test_a_tradingview_alert_becomes_one_placed_fyers_order(pipeline, world, firestore_db):
    body = {"secret": SECRET, "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM",
            "optionType": "CE", "lots": 1, "strategy": "e2e",
            "time": world.clock().strftime("%Y-%m-%dT%H:%M:%SZ")}
    answer = pipeline.post("/", data=json.dumps(body), content_type="text/plain")
    assert answer.status_code == 200
    order_id = answer.get_json()["order_id"]

    doc = wait_for(firestore_db, order_id, {"PLACED", "REJECTED", "FAILED", "BLOCKED", "EXPIRED", "UNKNOWN"})

    assert doc["status"] == "PLACED", doc.get("message")
    weekly = min(e for e in world.master.expiries("NIFTY") if e >= world.today)
    [placed] = world.sim.exchange.orders()
    assert placed["symbol"].startswith("NSE:NIFTY") and placed["symbol"].endswith(f"{round(NIFTY_SPOT, -2):.0f}CE")
    assert placed["qty"] == 65
    assert doc["contract"]["ticker"] == placed["symbol"] and doc["contract"]["expiry"] == weekly.isoformat()
    assert placed["orderTag"] == f"1:{order_id}"
    assert doc["broker_order_id"] == placed["id"]

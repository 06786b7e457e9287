"""Benchmark: alert-to-broker latency through the local pipeline.

From the moment the webhook receives a TradingView POST to the moment the Fyers
simulator receives the order (``POST /orders/sync``), through Firestore, the
Pub/Sub emulator's push subscription, ``main.order_worker`` over HTTP, the
symbol master, an index quote for ATM and the real SDK.

Run: ``python -m tests.bench.bench_pipeline [--alerts 20]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from tests.bench.emulated import create_topics, emulated_project, percentiles
from tests.pipeline import local_pipeline

APP_ID = "BENCHAPP01-100"
SECRET = "bench-secret"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=20)
    args = parser.parse_args()

    from google.cloud import firestore

    from deploy.local.fyers_simulator import FyersSimulator
    from deploy.local.mastergen import generate_masters

    today = datetime.now(timezone.utc).date()
    masters = generate_masters(date(today.year, today.month, today.day))
    sim = FyersSimulator(masters=list(masters.values()), apps={APP_ID: "bench-app-secret"}).start()
    sim.set_price("NSE:NIFTY50-INDEX", 24512.0)
    try:
        with emulated_project() as project:
            create_topics(project, "orders", "notifications")
            env = {"WEBHOOK_SECRET": SECRET, "ENFORCE_MARKET_HOURS": "false", "LOG_LEVEL": "WARNING"}
            with local_pipeline(project=project, db=firestore.Client(project=project), sim=sim, app_id=APP_ID,
                                masters=masters, artifacts=Path(tempfile.mkdtemp()), orders_topic="orders",
                                env=env) as webhook:
                latencies = run(webhook, sim, args.alerts)
    finally:
        sim.stop()
    stats = percentiles(latencies)
    print(f"alert -> Fyers order request, {len(latencies)} alerts, one at a time:")
    for name, value in stats.items():
        print(f"  {name:>4}: {value * 1000:7.1f} ms")


def run(webhook, sim, alerts: int) -> list[float]:
    latencies = []
    for n in range(-1, alerts):  # the first alert warms the worker's clients and is not counted
        body = json.dumps({"secret": SECRET, "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY",
                           "strike": "ATM", "optionType": "CE", "lots": 1, "strategy": f"bench-{n}",
                           "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        sent = datetime.now(timezone.utc)
        answer = webhook.post("/", data=body, content_type="application/json")
        order_id = answer.get_json()["order_id"]
        arrived = wait_for_order(sim, order_id)
        if n >= 0:
            latencies.append((arrived - sent).total_seconds())
    return latencies


def wait_for_order(sim, order_id: str, timeout: float = 30) -> datetime:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in sim.requests:
            if entry["path"].endswith("/orders/sync") and (entry.get("body") or {}).get("orderTag") == order_id:
                return datetime.fromisoformat(entry["time"])
        time.sleep(0.005)
    raise TimeoutError(f"order {order_id} never reached the simulator")


if __name__ == "__main__":
    main()

"""Benchmark: each entry point's import time and first-request time, in a fresh interpreter.

What a new instance pays: ``create_app`` (functions-framework importing ``main.py`` for
the target), then its first request, which builds the clients it needs:

* ``webhook``: a live NIFTY ATM alert, published to a capture topic;
* ``order_worker``: that very command, pushed as Pub/Sub would (master, quote, placement);
* ``scheduler``: ``?job=health``;
* ``auth``: the ``/login`` page.

Each runs in the environment of the running pipeline (emulators, simulator).
Run by ``python -m tests.bench.run``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bench.bench_pipeline import alert

ROOT = Path(__file__).resolve().parents[2]
CAPTURE_TOPIC = "bench-capture"
SUBPROCESS_TIMEOUT = 120

_FRESH = r"""
import json, sys, time
request = json.loads(sys.stdin.read())
started = time.perf_counter()
from functions_framework import create_app
framework = time.perf_counter() - started
started = time.perf_counter()
client = create_app(request["target"], "main.py", request["signature"]).test_client()
imported = time.perf_counter() - started
started = time.perf_counter()
if request["method"] == "GET":
    answer = client.get(request["path"])
else:
    answer = client.post(request["path"], data=request.get("data"), content_type=request["content_type"])
first = time.perf_counter() - started
print(json.dumps({"framework_import_s": round(framework, 3), "import_s": round(imported, 3),
                  "first_request_s": round(first, 3), "status": answer.status_code,
                  "answer": answer.get_data(as_text=True)[:300]}))
"""


def fresh(target: str, signature: str, method: str, path: str, env: dict[str, str], data: str | None = None,
          content_type: str = "application/json") -> dict[str, Any]:
    request = {"target": target, "signature": signature, "method": method, "path": path, "data": data,
               "content_type": content_type}
    done = subprocess.run([sys.executable, "-c", _FRESH], input=json.dumps(request), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(project: str) -> dict[str, Any]:
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.create_topic(name=publisher.topic_path(project, CAPTURE_TOPIC), timeout=30)
    capture = subscriber.subscription_path(project, f"{CAPTURE_TOPIC}-pull")
    subscriber.create_subscription(name=capture, topic=publisher.topic_path(project, CAPTURE_TOPIC), timeout=30)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    report = {"webhook": fresh("webhook", "http", "POST", "/", {**env, "ORDERS_TOPIC": CAPTURE_TOPIC},
                               data=alert("entry-point"), content_type="text/plain")}
    [received] = subscriber.pull(subscription=capture, max_messages=1, timeout=30).received_messages
    message = received.message
    push = {"message": {"data": base64.b64encode(message.data).decode(), "attributes": dict(message.attributes),
                        "messageId": message.message_id,
                        "publishTime": message.publish_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
            "subscription": capture, "deliveryAttempt": 1}
    report["order_worker"] = fresh("order_worker", "cloudevent", "POST",
                                   f"/projects/{project}/topics/{CAPTURE_TOPIC}", env, data=json.dumps(push))
    report["scheduler"] = fresh("scheduler", "http", "POST", "/?job=health", env)
    report["auth"] = fresh("auth", "http", "GET", "/login", env)
    subscriber.close()
    publisher.transport.close()
    return report

"""The local pipeline as deployed: configured by environment, the worker served over HTTP as
Cloud Run serves it (:mod:`deploy.local.cloud_run`: its concurrency, 429 beyond) and pushed
to as Pub/Sub pushes (:mod:`deploy.local.pubsub_push`: retry backoff, dead letters). Used by
the end-to-end test and the benchmarks."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from common.artifacts import LocalDirStore
from common.clock import Clock, wall_clock
from common.master_store import MasterRepository
from deploy.local.cloud_run import WORKER, Admission, Shape, function_app, serve
from deploy.local.emulators import free_port
from deploy.local.pubsub_push import WORKER_TRIGGER, PushDelivery, PushPolicy

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Pipeline:
    """The webhook (a test client), the worker's admission and the push delivery feeding it."""

    webhook: Any
    admission: Admission
    delivery: PushDelivery
    dead_letter_topic: str


@contextmanager
def pipeline_parts(*, project: str, db: Any, sim: Any, app_id: str, masters: dict[str, str], artifacts: Path,
                   orders_topic: str, env: dict[str, str], clock: Clock = wall_clock, shape: Shape = WORKER,
                   policy: PushPolicy = WORKER_TRIGGER) -> Iterator[Pipeline]:
    """Publish the master, serve ``main.order_worker`` with ``shape``, push ``orders_topic`` to it
    under ``policy`` (dead letters to ``<orders_topic>-dlq``); yield the parts.

    ``clock`` is the simulator's; ``env`` carries the same clock for the router (``CLOCK_SHIFT_SECONDS``).
    """
    from functions_framework import create_app
    from google.cloud import pubsub_v1

    MasterRepository(db, LocalDirStore(artifacts), check_seconds=60).publish(
        {name: text.encode() for name, text in masters.items()}, source="generated", now=clock())
    os.environ.update({
        "SECRET_BACKEND": "env", "FYERS_APP_ID": app_id, "FYERS_ACCESS_TOKEN": sim.mint_token(app_id),
        "FYERS_API_BASE": sim.api_base, "FYERS_DATA_BASE": sim.data_base, "ARTIFACT_BACKEND": "local",
        "ARTIFACT_DIR": str(artifacts), "ORDERS_TOPIC": orders_topic, "THREADS": str(shape.concurrency), **env,
    })
    worker = function_app("order_worker", str(ROOT / "main.py"), "cloudevent", shape)
    server = serve(worker, "127.0.0.1", free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, orders_topic)
    dead_letters = f"{orders_topic}-dlq"
    publisher.create_topic(name=publisher.topic_path(project, dead_letters), timeout=30)
    subscriber.create_subscription(name=subscriber.subscription_path(project, f"{orders_topic}-worker"),
                                   topic=topic_path, timeout=30)
    subscriber.close()
    publisher.transport.close()
    # The push URL names the topic so functions-framework can fill the CloudEvent's source.
    delivery = PushDelivery(project=project, subscription=f"{orders_topic}-worker",
                            endpoint=f"http://127.0.0.1:{server.server_port}/{topic_path}", policy=policy,
                            dead_letter_topic=dead_letters).start()
    try:
        yield Pipeline(create_app("webhook", str(ROOT / "main.py"), "http").test_client(), worker.admission,
                       delivery, dead_letters)
    finally:
        delivery.stop()
        server.shutdown()


@contextmanager
def local_pipeline(**kwargs: Any) -> Iterator[Any]:
    """:func:`pipeline_parts`, yielding only the webhook's test client."""
    with pipeline_parts(**kwargs) as parts:
        yield parts.webhook

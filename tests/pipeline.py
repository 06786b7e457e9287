"""The local pipeline as deployed: configured by environment, the worker served over HTTP
behind a Pub/Sub push subscription. Used by the end-to-end test and the pipeline benchmark."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from werkzeug.serving import make_server

from common.artifacts import LocalDirStore
from common.clock import Clock, wall_clock
from common.master_store import MasterRepository
from deploy.local.emulators import free_port

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def local_pipeline(*, project: str, db: Any, sim: Any, app_id: str, masters: dict[str, str], artifacts: Path,
                   orders_topic: str, env: dict[str, str], clock: Clock = wall_clock) -> Iterator[Any]:
    """Publish the master, serve ``main.order_worker``, subscribe it by push; yield a webhook test client.

    ``clock`` is the simulator's; ``env`` carries the same clock for the router (``CLOCK_SHIFT_SECONDS``).
    """
    from functions_framework import create_app
    from google.cloud import pubsub_v1

    MasterRepository(db, LocalDirStore(artifacts), check_seconds=60).publish(
        {name: text.encode() for name, text in masters.items()}, source="generated", now=clock())
    os.environ.update({
        "SECRET_BACKEND": "env", "FYERS_APP_ID": app_id, "FYERS_ACCESS_TOKEN": sim.mint_token(app_id),
        "FYERS_API_BASE": sim.api_base, "FYERS_DATA_BASE": sim.data_base, "ARTIFACT_BACKEND": "local",
        "ARTIFACT_DIR": str(artifacts), "ORDERS_TOPIC": orders_topic, **env,
    })
    server = make_server("127.0.0.1", free_port(), create_app("order_worker", str(ROOT / "main.py"), "cloudevent"),
                         threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = subscriber.topic_path(project, orders_topic)
    # The push URL names the topic so functions-framework can fill the CloudEvent's source.
    subscriber.create_subscription(
        name=subscriber.subscription_path(project, f"{orders_topic}-push"), topic=topic_path,
        push_config=pubsub_v1.types.PushConfig(push_endpoint=f"http://127.0.0.1:{server.server_port}/{topic_path}"))
    try:
        yield create_app("webhook", str(ROOT / "main.py"), "http").test_client()
    finally:
        server.shutdown()

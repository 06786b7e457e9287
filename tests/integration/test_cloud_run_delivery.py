"""Pub/Sub push into a Cloud Run admission limit, on the emulator: a delivery beyond the
instance's concurrency is answered 429, redelivered after the backoff and placed; one that
keeps failing is dead-lettered after the policy's attempts (deploy/local/pubsub_push.py)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from deploy.local.cloud_run import Admission, Shape, serve
from deploy.local.pubsub_push import PushDelivery, PushPolicy

pytestmark = pytest.mark.emulators

POLICY = PushPolicy(max_delivery_attempts=5, min_backoff=0.2, max_backoff=0.8, ack_deadline=10)


class Endpoint:
    """A push endpoint whose first request waits until released; records every body it admits."""

    def __init__(self, status: str = "200 OK") -> None:
        self.status = status
        self.release = threading.Event()
        self.first_inside = threading.Event()
        self.bodies: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        with self._lock:
            first = not self.bodies
            self.bodies.append(body)
        if first:
            self.first_inside.set()
            self.release.wait(timeout=20)
        start_response(self.status, [("Content-Type", "text/plain")])
        return [b""]


@pytest.fixture
def push(emulators, gcp_project):
    """Start a delivery from a fresh topic to an endpoint behind admission; yield a publisher."""
    from google.cloud import pubsub_v1

    started = []

    def make(endpoint: Endpoint, shape: Shape):
        suffix = uuid.uuid4().hex[:8]
        topic, dlq, sub = f"push-{suffix}", f"push-{suffix}-dlq", f"push-{suffix}-sub"
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        for name in (topic, dlq):
            publisher.create_topic(name=publisher.topic_path(gcp_project, name))
        subscriber.create_subscription(name=subscriber.subscription_path(gcp_project, sub),
                                       topic=publisher.topic_path(gcp_project, topic))
        subscriber.create_subscription(name=subscriber.subscription_path(gcp_project, f"{dlq}-hold"),
                                       topic=publisher.topic_path(gcp_project, dlq))
        admission = Admission(endpoint, shape)
        server = serve(admission, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        delivery = PushDelivery(project=gcp_project, subscription=sub, endpoint=f"http://127.0.0.1:{server.server_port}/",
                                policy=POLICY, dead_letter_topic=dlq).start()
        started.append((delivery, server, subscriber))

        def publish(data: bytes, **attributes: str) -> str:
            return publisher.publish(publisher.topic_path(gcp_project, topic), data, **attributes).result(timeout=10)

        def dead_letters() -> list:
            path = subscriber.subscription_path(gcp_project, f"{dlq}-hold")
            answer = subscriber.pull(subscription=path, max_messages=10, return_immediately=True, timeout=5)
            return [m.message for m in answer.received_messages]

        return publish, delivery, admission, dead_letters

    yield make
    for delivery, server, subscriber in started:
        delivery.stop()
        server.shutdown()
        subscriber.close()


def wait_until(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_delivery_beyond_the_concurrency_gets_429_and_is_redelivered_after_the_backoff(push):
    endpoint = Endpoint()
    publish, delivery, admission, dead_letters = push(endpoint, Shape(concurrency=1, max_instances=1, timeout=60))

    first = publish(b"first")
    assert endpoint.first_inside.wait(timeout=20)
    second = publish(b"second")
    wait_until(lambda: any(a.message_id == second for a in delivery.attempts))
    endpoint.release.set()
    wait_until(lambda: {b["message"]["messageId"] for b in endpoint.bodies} == {first, second})
    wait_until(lambda: admission.stats()["in_flight"] == 0)

    # Refused while the first held the only slot (once, or more on a slow machine), then placed.
    tries = [a for a in delivery.attempts if a.message_id == second]
    assert [a.number for a in tries] == list(range(1, len(tries) + 1)) and len(tries) >= 2
    assert [a.status for a in tries] == [429] * (len(tries) - 1) + [200]
    assert tries[1].at - tries[0].at >= POLICY.min_backoff
    [admitted] = [b for b in endpoint.bodies if b["message"]["messageId"] == second]
    assert admitted["deliveryAttempt"] == len(tries) and admitted["subscription"].endswith("-sub")
    assert admission.stats()["refused"] >= 1 and dead_letters() == []


def test_a_delivery_that_keeps_failing_is_dead_lettered_after_the_policys_attempts(push):
    endpoint = Endpoint(status="500 Internal Server Error")
    endpoint.release.set()
    publish, delivery, admission, dead_letters = push(endpoint, Shape(concurrency=1, max_instances=1, timeout=60))

    message_id = publish(b"order", order_id="tv-dead")
    wait_until(lambda: message_id in delivery.dead_lettered)

    tries = [a for a in delivery.attempts if a.message_id == message_id]
    assert [a.number for a in tries] == [1, 2, 3, 4, 5] and {a.status for a in tries} == {500}
    gaps = [later.at - earlier.at for earlier, later in zip(tries, tries[1:])]
    assert all(gap >= POLICY.backoff(n) for n, gap in enumerate(gaps, start=1))
    [dead] = dead_letters()
    assert dead.data == b"order" and dead.attributes["order_id"] == "tv-dead"
    assert dead.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert admission.stats()["refused"] == 0

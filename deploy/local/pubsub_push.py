"""Pub/Sub push delivery with the trigger subscription's retry and dead-letter policy, for the
emulator, whose own push does not keep them.

Measured on the Pub/Sub emulator 0.8.20 (gcloud 528), ``tests/bench/emulator_push.py``:

* it pushes at most 2 requests at a time per subscription (20 messages answered in 2 s
  each took 21 s), so a burst never reaches a worker faster than that and no local
  worker could ever see more than 2 deliveries in flight;
* with a retry policy (10-60 s) and a dead-letter policy (5 attempts), a message answered
  non-2xx was pushed again after 1 s (not 10 s), some a third time 13-15 s later, and then
  never again within 150 s: none was dead-lettered;
* without a retry policy it re-pushes every 1.0 s, and with a dead-letter policy the 5th
  failure does dead-letter, with ``CloudPubSubDeadLetterSource*`` attributes;
* push bodies carry no ``deliveryAttempt``.

:class:`PushDelivery` does what Pub/Sub does instead. It pulls the subscription (a
streaming pull, whose leases the client library extends) and POSTs each message to the
endpoint as a push (``message``, ``subscription``, ``deliveryAttempt``), each message in
its own thread, all at once: Pub/Sub's push window starts small and grows with each
success, so this is the harsher case for the endpoint. A 2xx acks. Anything else, or no
answer within the ack deadline, is a failed attempt: the message is pushed again after
``min_backoff x 2^(attempt-1)`` (at most ``max_backoff``), and after
``max_delivery_attempts`` failures it is published to the dead-letter topic with Pub/Sub's
``CloudPubSubDeadLetterSource*`` attributes, then acked.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests

from deploy.local.cloud_run import WORKER

CONNECT_TIMEOUT = 3.0
STOP_TIMEOUT = 5.0
# Outstanding messages the pull may hold at once: more than any local burst.
MAX_OUTSTANDING = 2000


@dataclass(frozen=True)
class PushPolicy:
    """A push subscription's delivery policy (seconds)."""

    max_delivery_attempts: int
    min_backoff: float
    max_backoff: float
    ack_deadline: float

    def backoff(self, failed_attempts: int) -> float:
        """The wait before the next push after ``failed_attempts`` failures."""
        return min(self.max_backoff, self.min_backoff * 2 ** (failed_attempts - 1))


# The worker's trigger subscription as deploy.sh configures it by default (tests/deploy checks
# that the two agree): the ack deadline outlasts the function's timeout, so that the function's
# own 504, not Pub/Sub's clock, ends a delivery that runs too long.
ACK_DEADLINE_MARGIN = 10
WORKER_TRIGGER = PushPolicy(max_delivery_attempts=5, min_backoff=10, max_backoff=60,
                            ack_deadline=min(600, WORKER.timeout + ACK_DEADLINE_MARGIN))


@dataclass(frozen=True)
class Attempt:
    """One push of one message: when (monotonic), its number, and the answer (0: none)."""

    message_id: str
    number: int
    at: float
    status: int


class PushDelivery:
    """Pushes the messages of ``subscription`` (a pull subscription) to ``endpoint`` under ``policy``."""

    def __init__(self, *, project: str, subscription: str, endpoint: str, policy: PushPolicy,
                 dead_letter_topic: str) -> None:
        from google.cloud import pubsub_v1

        self.project = project
        self.endpoint = endpoint
        self.policy = policy
        self._subscriber = pubsub_v1.SubscriberClient()
        self._publisher = pubsub_v1.PublisherClient()
        self.subscription_path = self._subscriber.subscription_path(project, subscription)
        self.subscription = subscription
        self.dead_letter_topic = self._publisher.topic_path(project, dead_letter_topic)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._future: Any = None
        self.attempts: list[Attempt] = []
        self.dead_lettered: list[str] = []

    def start(self) -> PushDelivery:
        from google.cloud import pubsub_v1

        self._future = self._subscriber.subscribe(
            self.subscription_path, callback=self._received,
            flow_control=pubsub_v1.types.FlowControl(max_messages=MAX_OUTSTANDING))
        return self

    def stop(self) -> None:
        """Stop pulling and pushing; messages not yet acked stay in the subscription."""
        self._stopping.set()
        if self._future is not None:
            self._future.cancel()
            try:
                self._future.result(timeout=STOP_TIMEOUT)
            except Exception:  # noqa: BLE001 - a cancelled pull ends with an exception by design
                pass
        for thread in list(self._threads):
            thread.join(timeout=STOP_TIMEOUT)
        self._subscriber.close()
        self._publisher.transport.close()

    def outstanding(self) -> int:
        """Messages received and neither acked nor dead-lettered yet."""
        with self._lock:
            return sum(thread.is_alive() for thread in self._threads)

    def statuses(self) -> dict[int, int]:
        """How many pushes got each answer (0: none within the ack deadline, or no connection)."""
        counts: dict[int, int] = {}
        with self._lock:
            for attempt in self.attempts:
                counts[attempt.status] = counts.get(attempt.status, 0) + 1
        return counts

    # --- delivery -----------------------------------------------------------------------

    def _received(self, message: Any) -> None:
        # The client's callback pool is small: each message is pushed from its own thread,
        # so that slow answers never hold up the next message.
        thread = threading.Thread(target=self._deliver, args=(message,), name=f"push-{message.message_id}",
                                  daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _deliver(self, message: Any) -> None:
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            if self._push(message, attempt):
                message.ack()
                return
            if attempt >= self.policy.max_delivery_attempts:
                self._dead_letter(message, attempt)
                message.ack()
                return
            if self._stopping.wait(self.policy.backoff(attempt)):
                return

    def _push(self, message: Any, attempt: int) -> bool:
        body = {
            "message": {"data": base64.b64encode(message.data).decode(), "attributes": dict(message.attributes),
                        "messageId": message.message_id, "publishTime": _rfc3339(message.publish_time)},
            "subscription": self.subscription_path,
            "deliveryAttempt": attempt,
        }
        try:
            status = requests.post(self.endpoint, json=body,
                                   timeout=(CONNECT_TIMEOUT, self.policy.ack_deadline)).status_code
        except requests.RequestException:
            status = 0
        with self._lock:
            self.attempts.append(Attempt(message.message_id, attempt, time.monotonic(), status))
        return 200 <= status < 300

    def _dead_letter(self, message: Any, attempts: int) -> None:
        attributes = {**message.attributes,
                      "CloudPubSubDeadLetterSourceDeliveryCount": str(attempts),
                      "CloudPubSubDeadLetterSourceSubscription": self.subscription,
                      "CloudPubSubDeadLetterSourceSubscriptionProject": self.project,
                      "CloudPubSubDeadLetterSourceTopicPublishTime": _rfc3339(message.publish_time)}
        self._publisher.publish(self.dead_letter_topic, message.data, **attributes).result(timeout=30)
        with self._lock:
            self.dead_lettered.append(message.message_id)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

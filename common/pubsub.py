"""Publishing to Pub/Sub topics, with a deadline."""

from __future__ import annotations

import json
from typing import Any, Callable

from common.clients import Lazy, publisher_client
from common.errors import PublishFailed


class Publisher:
    """Publishes messages to topics of one project, one request per message, made on the
    caller's thread and given up after a timeout (retries included)."""

    def __init__(self, project: str, *, timeout: float, client_factory: Callable[[], Any] = publisher_client) -> None:
        self._project = project
        self._timeout = timeout
        self._client = Lazy(client_factory)
        self._retry = Lazy(lambda: _publish_retry(timeout))

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        """Publish one message and return its message id, or raise :class:`PublishFailed`."""
        try:
            from google.pubsub_v1.services.publisher import PublisherClient as PublishRequests

            client = self._client.get()
            # The client's own publish() batches: it starts a thread to send each batch (a batch
            # of one included) and one to time it. Every caller here waits for its message, so
            # the same request is made directly, the way that batch thread makes it.
            response = PublishRequests.publish(client, topic=client.topic_path(self._project, topic),
                                               messages=[{"data": data, "attributes": attributes or {}}],
                                               retry=self._retry.get(), timeout=self._timeout)
            return response.message_ids[0]
        except Exception as exc:  # any failure (timeout, auth, unavailable) means "not published"
            raise PublishFailed(f"Could not publish to {topic}: {type(exc).__name__}") from exc

    def publish_json(self, topic: str, payload: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        """Publish a JSON document."""
        return self.publish(topic, json.dumps(payload, default=str).encode(), attributes)


def _publish_retry(deadline: float) -> Any:
    """The client's retry policy for publish (the same errors, the same backoff), given up
    after ``deadline`` seconds in all, as the caller stops waiting then."""
    from google.api_core import exceptions
    from google.api_core.retry import Retry, if_exception_type

    return Retry(initial=0.1, maximum=60.0, multiplier=4.0, timeout=deadline, predicate=if_exception_type(
        exceptions.Aborted, exceptions.Cancelled, exceptions.DeadlineExceeded, exceptions.InternalServerError,
        exceptions.ResourceExhausted, exceptions.ServiceUnavailable, exceptions.Unknown))

"""Publishing to Pub/Sub topics, with a deadline."""

from __future__ import annotations

import json
from typing import Any, Callable

from common.clients import Lazy, publisher_client
from common.errors import PublishFailed


class Publisher:
    """Publishes messages to topics of one project; waits for each with a timeout."""

    def __init__(self, project: str, *, timeout: float, client_factory: Callable[[], Any] = publisher_client) -> None:
        self._project = project
        self._timeout = timeout
        self._client = Lazy(client_factory)

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        """Publish one message and return its message id, or raise :class:`PublishFailed`."""
        try:
            client = self._client.get()
            future = client.publish(client.topic_path(self._project, topic), data, **(attributes or {}))
            return future.result(timeout=self._timeout)
        except Exception as exc:  # any failure (timeout, auth, unavailable) means "not published"
            raise PublishFailed(f"Could not publish to {topic}: {type(exc).__name__}") from exc

    def publish_json(self, topic: str, payload: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        """Publish a JSON document."""
        return self.publish(topic, json.dumps(payload, default=str).encode(), attributes)

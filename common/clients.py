"""Google Cloud clients, created lazily, once, thread-safely.

Functions serve concurrent requests, so two threads may ask for a client at the
same moment on a cold instance: a lock makes sure only one is built. The
libraries are imported on first use, keeping them off paths that don't need
them. Emulators are picked up from the standard ``*_EMULATOR_HOST`` variables
by the libraries themselves.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    """A value built by ``factory`` on first ``get()``, at most once, under a lock."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
                value = self._value
        return value  # type: ignore[return-value]


def firestore_client(project: str) -> Any:
    """A Firestore client for ``project`` (the emulator when FIRESTORE_EMULATOR_HOST is set)."""
    from google.cloud import firestore

    return firestore.Client(project=project)


def publisher_client() -> Any:
    """A Pub/Sub publisher client (the emulator when PUBSUB_EMULATOR_HOST is set). Its batching
    is not used: :class:`common.pubsub.Publisher` sends each message in a request of its own."""
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient()


def bounded_retry(deadline: float) -> Any:
    """A retry policy for Firestore calls that gives up after ``deadline`` seconds in all.

    The client's default retries transient errors for up to minutes: during an outage
    one call would outlive the function's own timeout. Callers pass this with ``timeout``.
    """
    from google.api_core.retry import Retry

    return Retry(initial=0.1, maximum=1.0, multiplier=2.0, timeout=deadline)

"""Emulators for benchmarks run as scripts (outside pytest): started once, stopped at exit."""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from deploy.local import emulators as emu


@contextmanager
def emulated_project() -> Iterator[str]:
    """Start Firestore and Pub/Sub emulators for a fresh project; yield its id, env set."""
    emu.ensure_tools()
    project = f"bench-{uuid.uuid4().hex[:8]}"
    log_dir = Path(tempfile.mkdtemp(prefix="bench-emulators-"))
    started = [emu.start_firestore(log_dir), emu.start_pubsub(log_dir, project)]
    try:
        for e in started:
            os.environ.update(e.env)
        os.environ["GOOGLE_CLOUD_PROJECT"] = project
        yield project
    finally:
        for e in started:
            e.stop()


def create_topics(project: str, *names: str) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    for name in names:
        publisher.create_topic(name=publisher.topic_path(project, name))


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": ordered[-1]}

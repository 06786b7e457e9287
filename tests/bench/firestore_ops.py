"""Counts the Firestore operations this process bills, at the client's RPC layer.

Every Firestore client in the process (webhook, worker, anything else) goes through
``FirestoreClient``'s methods, so :func:`counting` wraps them and counts as Firestore
bills (https://cloud.google.com/firestore/pricing): a read per document returned by a
get or a query, a get of a missing document is a read too, a query or an aggregation
(``count()``) that returns nothing still a read; a write per write in a commit, a delete
per delete. Transaction begin and rollback are free.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

# List prices, USD per 100,000 operations, beyond the free daily quota (50,000 reads,
# 20,000 writes, 20,000 deletes): Firestore's multi-region figures as noted in
# /work/shared/gcp-notes.md; a regional database (asia-south1) is somewhat cheaper.
PRICE_PER_100K = {"reads": 0.06, "writes": 0.18, "deletes": 0.02}


@dataclass
class Counts:
    reads: int = 0
    writes: int = 0
    deletes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def add(self, kind: str, n: int) -> None:
        if getattr(self._local, "paused", False):
            return
        with self._lock:
            setattr(self, kind, getattr(self, kind) + n)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Not counted: this thread's own calls (the benchmark's look-ups) while inside."""
        self._local.paused = True
        try:
            yield
        finally:
            self._local.paused = False

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"reads": self.reads, "writes": self.writes, "deletes": self.deletes}


def _field(request: Any, name: str) -> Any:
    return request.get(name) if isinstance(request, dict) else getattr(request, name, None)


@contextmanager
def counting() -> Iterator[Counts]:
    """Count every Firestore operation of the process while inside."""
    from google.cloud.firestore_v1.services.firestore.client import FirestoreClient

    counts = Counts()
    originals = {name: getattr(FirestoreClient, name)
                 for name in ("get_document", "batch_get_documents", "run_query", "run_aggregation_query",
                              "commit", "batch_write")}

    def stream_reads(responses: Iterator[Any], has_document: Any) -> Iterator[Any]:
        # Counted as they arrive: a caller may stop reading the stream early.
        returned = 0
        try:
            for response in responses:
                if has_document(response):
                    returned += 1
                    counts.add("reads", 1)
                yield response
        finally:
            if not returned:
                counts.add("reads", 1)

    def wrap(name: str) -> Any:
        original = originals[name]

        def wrapped(self: Any, request: Any = None, **kwargs: Any) -> Any:
            answer = original(self, request=request, **kwargs)
            if name == "get_document":
                counts.add("reads", 1)
            elif name == "batch_get_documents":
                return stream_reads(answer, lambda r: bool(_field(r, "found")) or bool(_field(r, "missing")))
            elif name == "run_query":
                return stream_reads(answer, lambda r: bool(_field(r, "document")))
            elif name == "run_aggregation_query":
                return stream_reads(answer, lambda r: 0)  # one read per 1,000 index entries counted
            else:  # commit, batch_write
                writes = list(_field(request, "writes") or [])
                deletes = sum(1 for w in writes if _field(w, "delete"))
                counts.add("deletes", deletes)
                counts.add("writes", len(writes) - deletes)
            return answer

        return wrapped

    for name in originals:
        setattr(FirestoreClient, name, wrap(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(FirestoreClient, name, original)


def cost_per_1000(per_alert: dict[str, float]) -> float:
    """USD for 1,000 alerts at :data:`PRICE_PER_100K`, beyond the free quota."""
    return sum(per_alert[kind] * 1000 * PRICE_PER_100K[kind] / 100_000 for kind in PRICE_PER_100K)

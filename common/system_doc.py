"""One document under ``system/`` (the broker session, the breaker, the controls, the pacer
lease), read and written with its store's timeout and a retry bounded by it."""

from __future__ import annotations

from typing import Any

from common.clients import bounded_retry
from common.records import SYSTEM


class SystemDocument:
    """Base of the stores that each own one ``system/`` document: ``_ref`` is that document,
    and every call passes ``timeout=self._timeout, retry=self._retry``."""

    def __init__(self, db: Any, doc_id: str, *, timeout: float) -> None:
        self._db = db
        self._timeout = timeout
        self._retry = bounded_retry(timeout)
        self._ref = db.collection(SYSTEM).document(doc_id)

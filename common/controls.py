"""The trader's controls: ``system/controls``, editable in the Firestore console.

``trading_enabled: false`` is the kill switch; ``dry_run: true`` records the
exact broker request instead of sending it; ``max_lots`` caps lots per order
below the deployment's limit. Read with a short cache: an edit takes effect
within ``CONTROLS_CACHE_SECONDS``.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from common.records import SYSTEM
from common.system_doc import SystemDocument

CONTROLS_DOC = "controls"


class Controls(BaseModel):
    """``system/controls``. A missing document means: trading on, live, no extra cap."""

    model_config = ConfigDict(extra="ignore")

    trading_enabled: bool = True
    dry_run: bool = False
    max_lots: int | None = None
    note: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


class ControlsReader(SystemDocument):
    """Reads the controls document, cached for ``ttl`` seconds; thread-safe."""

    def __init__(self, db: Any, *, ttl: float, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(db, CONTROLS_DOC, timeout=timeout)
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Controls] | None = None

    def get(self) -> Controls:
        """The current controls. A read failure raises: never trade on a guess about the kill switch."""
        with self._lock:
            if self._cached and self._clock() - self._cached[0] < self._ttl:
                return self._cached[1]
        snap = self._ref.get(timeout=self._timeout, retry=self._retry)
        controls = Controls.model_validate(snap.to_dict() or {}) if snap.exists else Controls()
        with self._lock:
            self._cached = (self._clock(), controls)
        return controls


def write_controls(db: Any, controls: Controls, *, timeout: float = 10.0) -> None:
    """Replace the controls document (the operator CLI and tests use this)."""
    db.collection(SYSTEM).document(CONTROLS_DOC).set(controls.model_dump(exclude_none=True), timeout=timeout)

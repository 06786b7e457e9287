"""A circuit breaker on broker failures, shared through ``system/breaker``.

After ``threshold`` consecutive transient broker failures, orders stop calling
the broker for ``cooldown`` and are BLOCKED with a clear reason, instead of
piling retries onto a broker that is down. Any success closes it again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from common.system_doc import SystemDocument

BREAKER_DOC = "breaker"


class BreakerState(BaseModel):
    """``system/breaker``."""

    model_config = ConfigDict(extra="ignore")

    state: str = "CLOSED"  # CLOSED or OPEN
    consecutive_failures: int = 0
    open_until: datetime | None = None
    last_error: str | None = None
    updated_at: datetime | None = None


class CircuitBreaker(SystemDocument):
    """Counts consecutive transient failures in Firestore and opens after ``threshold``."""

    def __init__(self, db: Any, *, threshold: int, cooldown: timedelta, timeout: float) -> None:
        super().__init__(db, BREAKER_DOC, timeout=timeout)
        self._threshold = threshold
        self._cooldown = cooldown

    def state(self) -> BreakerState:
        snap = self._ref.get(timeout=self._timeout, retry=self._retry)
        return BreakerState.model_validate(snap.to_dict()) if snap.exists else BreakerState()

    def open_until(self, now: datetime) -> datetime | None:
        """When the breaker closes again, if it is open at ``now``."""
        state = self.state()
        if state.state == "OPEN" and state.open_until is not None and state.open_until > now:
            return state.open_until
        return None

    def record_failure(self, now: datetime, error: str) -> bool:
        """Count a transient failure; returns True if this one opened the breaker."""
        from google.cloud import firestore

        @firestore.transactional
        def bump(transaction: Any) -> bool:
            snap = self._ref.get(transaction=transaction, timeout=self._timeout)
            state = BreakerState.model_validate(snap.to_dict()) if snap.exists else BreakerState()
            failures = state.consecutive_failures + 1
            # After the cooldown (half-open), the next failure opens it again.
            still_open = state.state == "OPEN" and state.open_until is not None and state.open_until > now
            opens = failures >= self._threshold and not still_open
            update = BreakerState(
                state="OPEN" if failures >= self._threshold else state.state,
                consecutive_failures=failures, last_error=error, updated_at=now,
                open_until=now + self._cooldown if opens else state.open_until)
            transaction.set(self._ref, update.model_dump(exclude_none=True))
            return opens

        return bump(self._db.transaction())

    def record_success(self, now: datetime) -> None:
        """Close the breaker (only writes when it was not already clean)."""
        state = self.state()
        if state.consecutive_failures or state.state != "CLOSED":
            self._ref.set(BreakerState(updated_at=now).model_dump(exclude_none=True),
                          timeout=self._timeout, retry=self._retry)

"""The order and alert documents in Firestore.

Acceptance follows the idempotency-record pattern: write first, read only on
conflict. One atomic batch ``create()``s the dedupe claims and the order and
writes the alert audit; if any claim exists, the batch writes nothing and
raises ``AlreadyExists``, and only then do we read who won. Concurrent
duplicates cannot both win: ``create()`` is decided by Firestore.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.errors import StoreUnavailable
from common.idempotency import claim_doc_id
from common.records import ALERTS, DEDUPE, EVENTS, ORDERS, AlertAudit, DedupeClaim, OrderEvent, OrderRecord

DEDUPE_TTL = timedelta(days=3)


@dataclass(frozen=True)
class Duplicate:
    """The alert was already taken: the winner's order id and, if readable, its record."""

    order_id: str | None
    record: OrderRecord | None


class OrderStore:
    """Reads and writes ``orders``, their ``events``, ``dedupe_keys`` and ``alerts``."""

    def __init__(self, db: Any, *, timeout: float) -> None:
        self._db = db
        self._timeout = timeout

    @property
    def db(self) -> Any:
        return self._db

    # --- acceptance (webhook, and worker when the webhook could not record) ---

    def accept(self, record: OrderRecord, claims: list[str] | tuple[str, ...], audit: AlertAudit | None) -> Duplicate | None:
        """Atomically claim the keys and create the order. Returns None if we won, else the winner.

        Raises :class:`StoreUnavailable` when Firestore cannot be reached in time.
        """
        from google.api_core import exceptions

        batch = self._db.batch()
        for claim in claims:
            doc = DedupeClaim(key=claim, order_id=record.order_id, created_at=record.created_at,
                              expire_at=record.created_at + DEDUPE_TTL)
            batch.create(self._db.collection(DEDUPE).document(claim_doc_id(claim)), doc.to_firestore())
        order_ref = self._db.collection(ORDERS).document(record.order_id)
        batch.create(order_ref, record.to_firestore())
        batch.create(order_ref.collection(EVENTS).document(_event_id(record.created_at)),
                     OrderEvent(at=record.created_at, to_status=record.status, reason="RECEIVED",
                                message=f"Alert accepted ({record.key_source} key)",
                                by=record.recorded_by).to_firestore())
        if audit is not None:
            batch.set(self._db.collection(ALERTS).document(), audit.to_firestore())
        try:
            batch.commit(timeout=self._timeout, retry=None)
            return None
        except exceptions.AlreadyExists:
            return self.find_winner(claims)
        except exceptions.GoogleAPIError as exc:
            raise StoreUnavailable(f"Firestore unavailable: {type(exc).__name__}") from exc

    def find_winner(self, claims: list[str] | tuple[str, ...]) -> Duplicate:
        """Read which order holds any of these claims (only ever called on a conflict)."""
        from google.api_core import exceptions

        try:
            refs = [self._db.collection(DEDUPE).document(claim_doc_id(c)) for c in claims]
            for snap in self._db.get_all(refs, timeout=self._timeout):
                if snap.exists:
                    order_id = snap.get("order_id")
                    return Duplicate(order_id=order_id, record=self.get(order_id))
            return Duplicate(order_id=None, record=None)
        except exceptions.GoogleAPIError:
            # The duplicate is certain (create() said so); only its details are missing.
            return Duplicate(order_id=None, record=None)

    def record_alert(self, audit: AlertAudit) -> None:
        """Write one audit document for a webhook request. Best effort: never raises."""
        try:
            self._db.collection(ALERTS).document().set(audit.to_firestore(), timeout=self._timeout, retry=None)
        except Exception:  # the audit must never turn an answer into a 500
            from common.logs import get_logger

            get_logger(__name__).warning("alert audit not written", exc_info=True)

    def mark_published(self, order_id: str, message_id: str, at: datetime) -> None:
        """Note on the order that its command is on the queue. Best effort."""
        try:
            self._db.collection(ORDERS).document(order_id).update(
                {"published_at": at, "message_id": message_id}, timeout=self._timeout, retry=None)
        except Exception:
            from common.logs import get_logger

            get_logger(__name__).warning("published_at not written", exc_info=True)

    # --- reads ---

    def get(self, order_id: str) -> OrderRecord | None:
        """The order document, or None."""
        snap = self._db.collection(ORDERS).document(order_id).get(timeout=self._timeout)
        return OrderRecord.model_validate(snap.to_dict()) if snap.exists else None

    def events(self, order_id: str) -> list[OrderEvent]:
        """The order's events, oldest first."""
        docs = self._db.collection(ORDERS).document(order_id).collection(EVENTS).order_by("at").stream(timeout=self._timeout)
        return [OrderEvent.model_validate(d.to_dict()) for d in docs]


def _event_id(at: datetime) -> str:
    # Sortable in the console (time first), unique across concurrent writers (suffix).
    return at.strftime("%Y%m%dT%H%M%S.%f") + "-" + uuid.uuid4().hex[:6]

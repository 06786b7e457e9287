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
from common.clients import bounded_retry
from common.records import (
    ALERTS,
    DEDUPE,
    EVENTS,
    ORDERS,
    AlertAudit,
    DedupeClaim,
    OrderCommand,
    OrderEvent,
    OrderRecord,
    OrderStatus,
    ist_day,
)

DEDUPE_TTL = timedelta(days=3)


def queued_record(command: OrderCommand, *, recorded_by: str, now: datetime) -> OrderRecord:
    """The new ``QUEUED`` order document for a command (by the webhook, or the worker if it could not)."""
    alert = command.alert
    return OrderRecord(
        order_id=command.order_id, status=OrderStatus.QUEUED, strategy=alert.get("strategy"),
        action=alert["action"], symbol=alert["symbol"], lots=alert["lots"], product=alert["product"],
        order_type=alert["order_type"], dry_run=alert.get("dry_run", False), alert=alert,
        idempotency_key=command.idempotency_key, key_source=command.key_source, recorded_by=recorded_by,
        source_ip=command.source_ip, request_id=command.request_id, alert_time=command.alert_time,
        received_at=command.received_at, created_at=now, created_day=ist_day(command.received_at), updated_at=now,
    )


@dataclass(frozen=True)
class Duplicate:
    """The alert was already taken: the winner's order id and, if readable, its record."""

    order_id: str | None
    record: OrderRecord | None


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to take an order: claimed, terminal, leased or missing."""

    outcome: str
    record: OrderRecord | None
    previous: OrderStatus | None = None
    previous_lease_until: datetime | None = None  # the lease a takeover broke: sends stopped by then


@dataclass(frozen=True)
class Delivered:
    """The Pub/Sub message an order command came in."""

    message_id: str
    published_at: datetime


class OrderStore:
    """Reads and writes ``orders``, their ``events``, ``dedupe_keys`` and ``alerts``."""

    def __init__(self, db: Any, *, timeout: float) -> None:
        self._db = db
        self._timeout = timeout
        self._retry = bounded_retry(timeout)

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
            for snap in self._db.get_all(refs, timeout=self._timeout, retry=self._retry):
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

    # --- the worker's state machine ---

    def claim(self, order_id: str, *, worker_id: str, now: datetime, lease: timedelta,
              message: Delivered | None = None) -> Claim:
        """Take the order for placing, in a transaction; the first claim also notes the Pub/Sub
        ``message`` that brought it (its id and publish time: the order is known to be queued).

        Allowed: QUEUED -> PLACING, or PLACING/UNKNOWN whose lease has expired -> PLACING
        (a worker died mid-way; the caller must check the broker's book before placing
        again). Terminal orders and live leases are left alone. No side effects here:
        the transaction may run several times.
        """
        from google.cloud import firestore

        ref = self._db.collection(ORDERS).document(order_id)

        @firestore.transactional
        def attempt(transaction: Any) -> Claim:
            snap = ref.get(transaction=transaction, timeout=self._timeout)
            if not snap.exists:
                return Claim("missing", None)
            record = OrderRecord.model_validate(snap.to_dict())
            status = OrderStatus(record.status)
            if status.terminal:
                return Claim("terminal", record)
            live_lease = record.lease_until is not None and record.lease_until > now
            if status != OrderStatus.QUEUED and live_lease:
                return Claim("leased", record)
            update: dict[str, Any] = {"status": OrderStatus.PLACING.value, "attempts": record.attempts + 1,
                                      "lease_until": now + lease, "worker_id": worker_id, "updated_at": now}
            if message is not None and record.message_id is None:
                update.update(message_id=message.message_id, published_at=message.published_at)
            transaction.update(ref, update)
            transaction.set(ref.collection(EVENTS).document(_event_id(now)), OrderEvent(
                at=now, from_status=status.value, to_status=OrderStatus.PLACING.value, by=worker_id,
                reason="CLAIMED" if status == OrderStatus.QUEUED else "LEASE_EXPIRED",
                message=f"attempt {record.attempts + 1}").to_firestore())
            claimed = record.model_copy(update={**update, "status": OrderStatus.PLACING})
            return Claim("claimed", claimed, previous=status, previous_lease_until=record.lease_until)

        return attempt(self._db.transaction())

    def renew_lease(self, order_id: str, *, held: datetime, now: datetime, lease: timedelta) -> datetime | None:
        """Extend a delivery's lease on an order it is still working on (waiting for a broker
        slot): the new end, or None when the order is no longer under the lease ``held`` (taken
        over, or finished). In a transaction, so that it never extends a takeover's lease."""
        from google.cloud import firestore

        ref = self._db.collection(ORDERS).document(order_id)
        until = now + lease

        @firestore.transactional
        def attempt(transaction: Any) -> datetime | None:
            snap = ref.get(transaction=transaction, timeout=self._timeout)
            record = snap.to_dict() if snap.exists else None
            if record is None or record.get("lease_until") != held or OrderStatus(record["status"]).terminal:
                return None
            transaction.update(ref, {"lease_until": until, "updated_at": now})
            return until

        return attempt(self._db.transaction(max_attempts=3))

    def add_children(self, parent: OrderRecord, steps: list[dict[str, Any]], *, now: datetime) -> list[str]:
        """Record the later steps of a parent's intent as QUEUED orders of their own (ids
        ``<parent>s2``, ``<parent>s3``...: valid Fyers tags), once: a redelivery finds them made."""
        from google.api_core import exceptions

        ids = [f"{parent.order_id}s{n}" for n in range(2, len(steps) + 2)]
        for child_id, step in zip(ids, steps):
            child = parent.model_copy(update={
                "order_id": child_id, "status": OrderStatus.QUEUED, "parent_order_id": parent.order_id,
                "step": step, "children": None, "intent": None, "attempts": 0, "lease_until": None,
                "worker_id": None, "reason": None, "message": None, "created_at": now, "updated_at": now})
            ref = self._db.collection(ORDERS).document(child_id)
            try:
                ref.create(child.to_firestore(), timeout=self._timeout, retry=self._retry)
            except exceptions.AlreadyExists:
                continue
            ref.collection(EVENTS).document(_event_id(now)).set(OrderEvent(
                at=now, to_status=OrderStatus.QUEUED.value, reason="STEP", by="worker",
                message=f"Step {child_id[-1]} of {parent.order_id}: {step.get('effect', '').lower()} "
                        f"{'BUY' if step.get('side') == 1 else 'SELL'} {step.get('ticker') or step.get('option_type') or ''}"
                        ).to_firestore(), timeout=self._timeout, retry=self._retry)
        return ids

    def transition(self, order_id: str, to: OrderStatus, *, now: datetime, by: str,
                   from_status: OrderStatus | None = None, reason: str | None = None,
                   message: str | None = None, fields: dict[str, Any] | None = None, broker_code: int | None = None,
                   broker_message: str | None = None, latency_ms: float | None = None) -> None:
        """Move the order to ``to`` with its fields, and append the event (one atomic batch)."""
        ref = self._db.collection(ORDERS).document(order_id)
        update: dict[str, Any] = {**(fields or {}), "status": to.value, "updated_at": now}
        if reason is not None:
            update["reason"] = reason
        if message is not None:
            update["message"] = message
        batch = self._db.batch()
        batch.update(ref, update)
        batch.set(ref.collection(EVENTS).document(_event_id(now)), OrderEvent(
            at=now, from_status=from_status.value if from_status else None, to_status=to.value, reason=reason, message=message, broker_code=broker_code,
            broker_message=broker_message, latency_ms=latency_ms, by=by).to_firestore())
        batch.commit(timeout=self._timeout, retry=self._retry)

    def update_fields(self, order_id: str, fields: dict[str, Any], *, now: datetime) -> None:
        """Record facts on the order without changing its status (LTP, contract, fills)."""
        self._db.collection(ORDERS).document(order_id).update({**fields, "updated_at": now},
                                                              timeout=self._timeout, retry=self._retry)

    def add_event(self, order_id: str, event: OrderEvent) -> None:
        """Append an event without changing the order (a look-up, a wait, a note)."""
        ref = self._db.collection(ORDERS).document(order_id).collection(EVENTS).document(_event_id(event.at))
        ref.set(event.to_firestore(), timeout=self._timeout, retry=self._retry)

    def orders_of_day(self, day: str, statuses: list[OrderStatus] | None = None) -> list[OrderRecord]:
        """Orders created on an IST day (``YYYY-MM-DD``), optionally only in some statuses."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._db.collection(ORDERS).where(filter=FieldFilter("created_day", "==", day))
        if statuses:
            query = query.where(filter=FieldFilter("status", "in", [s.value for s in statuses]))
        docs = query.stream(timeout=self._timeout, retry=self._retry)
        return [OrderRecord.model_validate(d.to_dict()) for d in docs]

    def count_day(self, day: str, statuses: list[OrderStatus]) -> int:
        """How many of an IST day's orders are in these statuses (an aggregation: no documents read)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self._db.collection(ORDERS).where(filter=FieldFilter("created_day", "==", day))
                 .where(filter=FieldFilter("status", "in", [s.value for s in statuses])))
        return int(query.count().get(timeout=self._timeout, retry=self._retry)[0][0].value)

    def record_bad_message(self, message_id: str | None, attributes: dict[str, str], error: str, now: datetime) -> None:
        """Keep a trace of a Pub/Sub message that could not be decoded (in ``alerts``, with its TTL)."""
        audit = AlertAudit(received_at=now, outcome="error", http_status=0, reason="BAD_MESSAGE",
                           message=f"Order message {message_id} could not be decoded ({error}).",
                           order_id=attributes.get("order_id"), request_id=message_id,
                           expire_at=now + timedelta(days=30))
        self.record_alert(audit)

    # --- reads ---

    def get(self, order_id: str) -> OrderRecord | None:
        """The order document, or None."""
        snap = self._db.collection(ORDERS).document(order_id).get(timeout=self._timeout, retry=self._retry)
        return OrderRecord.model_validate(snap.to_dict()) if snap.exists else None

    def events(self, order_id: str) -> list[OrderEvent]:
        """The order's events, oldest first."""
        query = self._db.collection(ORDERS).document(order_id).collection(EVENTS).order_by("at")
        docs = query.stream(timeout=self._timeout, retry=self._retry)
        return [OrderEvent.model_validate(d.to_dict()) for d in docs]


def _event_id(at: datetime) -> str:
    # Sortable in the console (time first), unique across concurrent writers (suffix).
    return at.strftime("%Y%m%dT%H%M%S.%f") + "-" + uuid.uuid4().hex[:6]

"""The Firestore documents and the Pub/Sub order command, as pydantic models.

Field names are chosen to read well in the Firestore console, where the trader
browses the audit trail: plain words, Firestore timestamps, status strings.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from common.symbols import Contract

IST = timezone(timedelta(hours=5, minutes=30), "IST")

ORDERS = "orders"
EVENTS = "events"  # subcollection of an order
ALERTS = "alerts"
DEDUPE = "dedupe_keys"
SYSTEM = "system"


class OrderStatus(str, Enum):
    """Where an order stands. Terminal statuses never change again (except fills on PLACED)."""

    QUEUED = "QUEUED"
    PLACING = "PLACING"
    PLACED = "PLACED"
    UNKNOWN = "UNKNOWN"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    BLOCKED = "BLOCKED"
    DRY_RUN = "DRY_RUN"
    SKIPPED = "SKIPPED"  # nothing to do: the strategy already holds what the signal means

    @property
    def terminal(self) -> bool:
        return self not in (OrderStatus.QUEUED, OrderStatus.PLACING, OrderStatus.UNKNOWN)


def ist_day(moment: datetime) -> str:
    """The IST calendar day of a moment, as ``YYYY-MM-DD`` (orders are grouped by trading day)."""
    return moment.astimezone(IST).date().isoformat()


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", use_enum_values=True)

    def to_firestore(self) -> dict[str, Any]:
        """The document body: None fields left out so the console shows only what is known."""
        return self.model_dump(mode="python", exclude_none=True)


def contract_doc(contract: Contract) -> dict[str, Any]:
    """A contract as an order document keeps it: the expiry as an ISO date (IST), which
    Firestore can store and the console shows as written."""
    return {"ticker": contract.ticker, "underlying": contract.underlying, "kind": contract.kind,
            "exchange": contract.exchange, "lot_size": contract.lot_size, "tick_size": contract.tick_size,
            "strike": contract.strike, "expiry": contract.expiry.isoformat() if contract.expiry else None}


class OrderRecord(_Doc):
    """``orders/{order_id}``: one order, from alert to broker outcome."""

    order_id: str
    status: OrderStatus
    reason: str | None = None  # machine code, e.g. NEEDS_LOGIN, STALE, BROKER_REJECTED
    message: str | None = None  # human text: why, in the trader's words or the broker's
    # the alert, normalised
    strategy: str | None = None
    action: str
    symbol: str
    lots: int
    product: str
    order_type: str
    dry_run: bool = False
    alert: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str
    key_source: str
    # provenance and time
    recorded_by: Literal["webhook", "worker"] = "webhook"
    source_ip: str | None = None
    request_id: str | None = None
    alert_time: datetime | None = None
    received_at: datetime
    created_at: datetime
    created_day: str
    updated_at: datetime
    published_at: datetime | None = None
    message_id: str | None = None
    publish_failed_at: datetime | None = None  # the last time the webhook could not queue it
    requeued_at: datetime | None = None  # the last time a re-send queued it again, no worker having taken it
    publish_error: str | None = None
    # the worker's progress
    attempts: int = 0
    lease_until: datetime | None = None
    worker_id: str | None = None
    contract: Contract | None = None  # the listed instrument (common/symbols.py), stored by contract_doc
    quantity: int | None = None
    ltp: float | None = None
    underlying_ltp: float | None = None
    sl_price: float | None = None
    tp_price: float | None = None
    broker_request: dict[str, Any] | None = None
    broker_order_id: str | None = None
    broker_order_ids: list[str] | None = None  # slices and splits
    sent_at: datetime | None = None  # when the last placement request left for Fyers
    may_land_until: datetime | None = None  # an unanswered placement may still be booked until then
    broker_duplicates: list[str] | None = None  # Fyers orders with this order's tag beyond its own
    intent: dict[str, Any] | None = None  # what the signal meant for the position: kind, reason, steps
    parent_order_id: str | None = None  # a later step of another order's intent (a reversal's opening leg)
    step: dict[str, Any] | None = None  # that step, as planned from the ledger
    children: list[str] | None = None  # this order's later steps, placed in order after it
    placed_at: datetime | None = None
    # the broker's view, after reconciliation
    broker_status: str | None = None
    broker_message: str | None = None
    filled_qty: int | None = None
    avg_price: float | None = None
    reconciled_at: datetime | None = None

    @field_serializer("contract")
    def _contract(self, contract: Contract | None) -> dict[str, Any] | None:
        return contract_doc(contract) if contract is not None else None


class OrderEvent(_Doc):
    """``orders/{id}/events/{n}``: one step of an order's life."""

    at: datetime
    from_status: str | None = None
    to_status: str
    reason: str | None = None
    message: str | None = None
    broker_code: int | None = None
    broker_message: str | None = None
    latency_ms: float | None = None
    by: str | None = None  # webhook, worker id, scheduler


class AlertAudit(_Doc):
    """``alerts/{id}``: one request to the webhook, whatever came of it (TTL on ``expire_at``)."""

    received_at: datetime
    outcome: Literal["accepted", "duplicate", "rejected", "error"]
    http_status: int
    reason: str | None = None
    message: str | None = None
    errors: list[dict[str, Any]] | None = None
    order_id: str | None = None
    strategy: str | None = None
    symbol: str | None = None
    action: str | None = None
    source_ip: str | None = None
    request_id: str | None = None
    payload: str | None = None  # the body as received (JSON text), secrets redacted
    expire_at: datetime


class DedupeClaim(_Doc):
    """``dedupe_keys/{hash}``: a claim on an idempotency key, pointing at its order."""

    key: str
    order_id: str
    created_at: datetime
    expire_at: datetime


class OrderCommand(BaseModel):
    """The Pub/Sub message that asks the worker to place one order. Versioned JSON."""

    model_config = ConfigDict(extra="ignore")

    version: Literal[1] = 1
    order_id: str
    idempotency_key: str
    key_source: str
    claims: list[str]
    alert: dict[str, Any]
    received_at: datetime
    alert_time: datetime | None = None
    request_id: str | None = None
    source_ip: str | None = None
    # False when the webhook could not write Firestore: the worker creates the record itself.
    recorded: bool = True

    def attributes(self) -> dict[str, str]:
        """Pub/Sub attributes: routing facts visible without decoding the body."""
        return {
            "order_id": self.order_id,
            "idempotency_key": self.idempotency_key,
            "version": str(self.version),
            "recorded": "1" if self.recorded else "0",
        }


def today_ist(now: datetime) -> date:
    """The IST date of ``now``."""
    return now.astimezone(IST).date()

"""Taking a delivery: its message read into an order command, the order recorded if the
webhook could not, and claimed with a lease, waiting out another delivery's."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from common.logs import get_logger
from common.notify import Notification, NotificationKind, Severity
from common.orders import Claim, Delivered, queued_record
from common.records import OrderCommand
from functions.order_worker.deps import Retry, WorkerDeps

log = get_logger("order_worker")

# A delivery that finds another's live lease looks again this often.
LEASE_POLL_SECONDS = 1.0


def decode(message: dict[str, Any], deps: WorkerDeps) -> OrderCommand | None:
    try:
        payload = json.loads(base64.b64decode(message.get("data", "")).decode())
        return OrderCommand.model_validate(payload)
    except (ValueError, ValidationError, TypeError) as exc:
        # Never retried: a message that cannot be read now never will be.
        attributes = message.get("attributes") or {}
        log.error("unreadable order command", extra={"fields": {"message_id": message.get("messageId"),
                                                                "attributes": attributes, "error": type(exc).__name__}})
        deps.store.record_bad_message(message.get("messageId"), attributes, type(exc).__name__, deps.clock())
        deps.notify(Notification(kind=NotificationKind.ORDER_FAILED, severity=Severity.ERROR,
                                 title="Unreadable order message",
                                 text=f"Message {message.get('messageId')} could not be decoded and was dropped.",
                                 order_id=attributes.get("order_id")))
        return None


def delivered(message: dict[str, Any], now: datetime) -> Delivered | None:
    """The message's id and publish time, to note on the order at its first claim."""
    message_id = message.get("messageId") or message.get("message_id")
    if not message_id:
        return None
    try:
        published_at = datetime.fromisoformat(str(message.get("publishTime") or message.get("publish_time")))
    except ValueError:
        published_at = now  # a push without its publish time: it was published by now
    return Delivered(str(message_id), published_at)


def claim_order(command: OrderCommand, deps: WorkerDeps, message: Delivered | None = None) -> Claim | None:
    """Take the order, waiting out another delivery's live lease: the claim (``claimed``, or
    ``terminal`` when an earlier delivery settled it), or None when there is no such order.

    A delivery that finds a live lease is never acked away: it waits until the holder
    finishes (then there is nothing to do) or its lease ends (then this one takes over),
    and past that wait it nacks, so Pub/Sub brings it back.
    """
    settings = deps.settings
    give_up = deps.clock() + timedelta(seconds=settings.lease_seconds + settings.placement_landing_seconds + 5)
    while True:
        now = deps.clock()
        claim = deps.store.claim(command.order_id, worker_id=deps.worker_id, now=now,
                                 lease=timedelta(seconds=settings.lease_seconds), message=message)
        if claim.outcome in ("claimed", "terminal"):
            return claim
        if claim.outcome != "leased":
            log.info("delivery skipped", extra={"fields": {"claim": claim.outcome}})
            return None
        if now >= give_up:
            raise Retry("Another delivery still holds the order; Pub/Sub will bring this one back.")
        lease_left = (claim.record.lease_until - now).total_seconds()  # type: ignore[union-attr]  # leased
        deps.sleep(min(LEASE_POLL_SECONDS, max(0.05, lease_left)))


def record_for_webhook(command: OrderCommand, deps: WorkerDeps, now: datetime) -> bool:
    """The webhook could not write Firestore: create the record (and claims) here. False = duplicate."""
    duplicate = deps.store.accept(queued_record(command, recorded_by="worker", now=now), command.claims, None)
    if duplicate is not None and duplicate.order_id not in (None, command.order_id):
        log.info("duplicate of another order; dropped", extra={"fields": {"winner": duplicate.order_id}})
        return False
    return True


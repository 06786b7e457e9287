"""Idempotency keys, order ids and dedupe claims.

One order per idempotency key. The key is the trader's explicit key when given;
otherwise a hash of the canonical order fields plus ``time`` ({{timenow}}), or,
without a time, plus a time bucket of ``DEDUPE_WINDOW_SECONDS``.

A bucketed key alone would let a retry that straddles a bucket boundary through
(TradingView re-sends for 20 s). So a bucketed alert claims *two* buckets, its
own and the next: any identical alert less than one window later shares a
claim with it. The cost: identical alerts between one and two windows apart
also count as duplicates, which is why templates should carry ``{{timenow}}``.

Claims are Firestore documents created with ``create()`` (see
``common/orders.py``); the order id is derived from the first claim, so it is
stable across re-sends. The order id doubles as the Fyers ``orderTag``:
alphanumeric, at most 30 characters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from common.alert import Alert

ORDER_ID_PREFIX = "tv"
_ORDER_ID_HEX = 24  # 96 bits: collisions are out of reach; "tv" + 24 = 26 chars <= 30


@dataclass(frozen=True)
class Identity:
    """How one alert is identified: its idempotency key, the claims it takes, its order id."""

    key: str
    claims: tuple[str, ...]
    source: str  # "explicit", "time" or "window": how the key was made

    @property
    def order_id(self) -> str:
        return order_id_for(self.claims[0])


def order_id_for(claim: str) -> str:
    """The Fyers-tag-safe order id for a claim: ``tv`` + 24 hex digits."""
    return ORDER_ID_PREFIX + hashlib.sha256(claim.encode()).hexdigest()[:_ORDER_ID_HEX]


def is_order_id(tag: str | None) -> bool:
    """Whether a Fyers ``orderTag`` has the shape of our order ids (:func:`order_id_for`)."""
    return (tag is not None and len(tag) == len(ORDER_ID_PREFIX) + _ORDER_ID_HEX and tag.startswith(ORDER_ID_PREFIX)
            and all(c in "0123456789abcdef" for c in tag[len(ORDER_ID_PREFIX):]))


def canonical_order(alert: Alert) -> str:
    """The alert's order fields as canonical JSON (sorted keys, no time, no secret)."""
    fields = alert.order_fields()
    for volatile in ("time", "dry_run"):
        fields.pop(volatile, None)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def identify(alert: Alert, *, header_key: str | None, now: datetime, window_seconds: int) -> Identity:
    """Derive the idempotency key and dedupe claims for an alert received at ``now``."""
    explicit = alert.idempotency_key or header_key
    if explicit:
        # Scope by strategy so two strategies reusing a key like "1" don't collide.
        key = f"k:{alert.strategy or ''}:{explicit}"
        return Identity(key=key, claims=(key,), source="explicit")
    digest = hashlib.sha256(canonical_order(alert).encode()).hexdigest()
    if alert.time is not None:
        key = f"t:{digest}:{int(alert.time.timestamp())}"
        return Identity(key=key, claims=(key,), source="time")
    bucket = int(now.timestamp()) // window_seconds
    key = f"w:{digest}:{bucket}"
    return Identity(key=key, claims=(key, f"w:{digest}:{bucket + 1}"), source="window")


def claim_doc_id(claim: str) -> str:
    """Firestore document id for a claim (keys may hold '/', which ids may not)."""
    return hashlib.sha256(claim.encode()).hexdigest()

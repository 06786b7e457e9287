"""Turn one Fyers exchange (what the transport saw + the body) into a result or a failure class.

The SDK hides HTTP statuses and turns transport failures into a synthetic
``{"s": "error", "code": -99 | <status>, "message": "Bad request"}``. The
transport (``common.broker.transport``) records what really happened, and this
module decides, in this order (fyers-v3.md §2, §7, §11):

1. no answer: failed before sending -> :class:`BrokerTransient`; after sending ->
   :class:`BrokerAmbiguous` for an order placement (it may exist), else transient;
2. HTTP 429 or code -429 -> :class:`RateLimited` (``X-Retry-After-Ms``, then
   ``Retry-After``, else 1 s);
3. HTTP 401 or code -8/-15/-16/-17 -> :class:`TokenDead`;
4. a non-JSON answer: the gateway's 503 page -> transient (it refused, nothing was
   booked); any other -> ambiguous for a placement, transient otherwise;
5. code 201 on a placement -> ambiguous (no acknowledgement);
6. ``s == "ok"`` -> the body;
7. a JSON 5xx -> ambiguous for a placement, transient otherwise;
8. code -51 -> :class:`BrokerNotFound`; anything else -> :class:`BrokerRejected`
   with Fyers' code and message kept (-50, a real -99, -300, the algo refusal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.errors import (
    BrokerAmbiguous,
    BrokerError,
    BrokerNotFound,
    BrokerRejected,
    BrokerTransient,
    RateLimited,
    RouterError,
    TokenDead,
)

TOKEN_DEAD_CODES = frozenset({-8, -15, -16, -17})
RATE_LIMIT_CODES = frozenset({-429, 429})
NO_ACK = 201
GATEWAY_REFUSED = 503
UNKNOWN_ORDER = -51
DEFAULT_RETRY_AFTER = 1.0


@dataclass
class CallRecord:
    """What one HTTP exchange looked like below the SDK."""

    method: str
    path: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # only the retry hints
    error: BaseException | None = None
    sent: bool = True  # False when the failure came before the request left (connect phase)


def retry_after(headers: dict[str, str]) -> float:
    """Seconds to wait, from ``X-Retry-After-Ms`` or ``Retry-After`` (1 s if neither parses)."""
    for name, scale in (("X-Retry-After-Ms", 0.001), ("Retry-After", 1.0)):
        try:
            seconds = float(headers[name]) * scale
        except (KeyError, TypeError, ValueError):
            continue
        if seconds > 0:
            return seconds
    return DEFAULT_RETRY_AFTER


def check(
    body: dict[str, Any],
    record: CallRecord | None,
    *,
    synthetic: bool,
    placement: bool,
    what: str,
) -> dict[str, Any]:
    """Return ``body`` if it is a success answer; raise the failure class otherwise.

    ``synthetic``: the body was made up by the SDK (no JSON answer arrived).
    ``placement``: the call may have created an order, so unknown outcomes are ambiguous.
    """
    if record is None:
        # The SDK failed before reaching the transport (it could not build the request).
        raise BrokerError(f"{what}: the request could not be built: {body.get('message')}")
    if record.error is not None:
        if isinstance(record.error, RouterError):
            raise record.error
        reason = type(record.error).__name__
        if not record.sent:
            raise BrokerTransient(f"{what}: Fyers could not be reached ({reason}).")
        if placement:
            raise BrokerAmbiguous(f"{what}: no answer after the request was sent ({reason}); the order may exist.")
        raise BrokerTransient(f"{what}: no answer from Fyers ({reason}).")

    code = body.get("code")
    message = str(body.get("message") or "")
    details: dict[str, Any] = {"broker_code": code if isinstance(code, int) else None, "broker_message": message}
    if body.get("id"):  # a refusal may still name an order (margin rejections, §7): keep it for the book
        details["order_id"] = str(body["id"])
    if record.status == 429 or code in RATE_LIMIT_CODES:
        wait = retry_after(record.headers)
        raise RateLimited(f"{what}: rate limited by Fyers; retry after {wait:g} s.", retry_after=wait, **details)
    if record.status == 401 or (not synthetic and code in TOKEN_DEAD_CODES):
        raise TokenDead(f"{what}: the Fyers session is dead ({code}: {message}); a fresh login is needed.", **details)
    if synthetic:
        text = f"{what}: HTTP {record.status} without a JSON answer"
        if record.status == GATEWAY_REFUSED:
            # The gateway's own page: it refused the request instead of passing it on, so
            # nothing was booked (a 502 or 504 page may come after the OMS got it: ambiguous).
            raise BrokerTransient(f"{what}: Fyers' gateway refused the request (HTTP 503); nothing was booked.",
                                  broker_code=None, broker_message=None)
        if placement:
            raise BrokerAmbiguous(f"{text}; the order may exist.", broker_code=None, broker_message=None)
        raise BrokerTransient(f"{text}.", broker_code=None, broker_message=None)
    if placement and code == NO_ACK:
        raise BrokerAmbiguous(f"{what}: Fyers did not acknowledge the order (201); the order may exist.", **details)
    if body.get("s") == "ok":
        return body
    if record.status is not None and record.status >= 500:
        if placement:
            raise BrokerAmbiguous(f"{what}: HTTP {record.status} ({message}); the order may exist.", **details)
        raise BrokerTransient(f"{what}: HTTP {record.status} ({message}).", **details)
    if code == UNKNOWN_ORDER:
        raise BrokerNotFound(f"{what}: Fyers has no such order ({message}).", **details)
    raise BrokerRejected(f"{what}: Fyers refused ({code}: {message}).", **details)

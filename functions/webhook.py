"""The ``webhook`` HTTP function: TradingView alert in, order command out, well under 3 s.

Steps: size and source checks, JSON, the shared secret (and nowhere else),
validation, limits, dedupe and record in Firestore (one atomic batch), publish
to Pub/Sub, answer. A duplicate answers 200 so TradingView does not re-send. A
permanently bad alert answers 4xx, whatever its bytes (a 5xx would make
TradingView re-send it three more times). Only "nothing could take this alert"
answers 503.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from common.alert import IDEMPOTENCY_KEY_RULE, Alert, parse_alert, valid_idempotency_key
from common.errors import (
    BadRequest,
    ForbiddenSource,
    LimitExceeded,
    MethodNotAllowed,
    PayloadTooLarge,
    PublishFailed,
    RouterError,
    SecretInAlert,
    ServiceUnavailable,
    StaleAlert,
    StoreUnavailable,
    Unauthorized,
    ValidationFailed,
    http_response,
)
from common.idempotency import Identity, identify
from common.logs import get_logger, log_context, redact, set_order_id
from common.orders import Duplicate, OrderStore, queued_record
from common.pubsub import Publisher
from common.records import AlertAudit, OrderCommand, OrderEvent, OrderStatus
from common.settings import Settings

log = get_logger("webhook")

# An alert is a flat object; a few levels leave room for mistakes to be reported as field errors.
MAX_DEPTH = 16
_REQUEST_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass
class WebhookDeps:
    """What the webhook needs, injected so tests can pass emulator-backed parts."""

    settings: Settings
    webhook_secrets: Callable[[], list[str]]
    store: Callable[[], OrderStore]
    publisher: Publisher
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

    @property
    def republish_after(self) -> timedelta:
        # An order no worker has taken (no ``published_at``) older than one full request
        # budget was likely orphaned by a failed publish; a re-send may then publish it. At
        # worst that queues a second message for an order still waiting in a backlog, and the
        # worker's claim makes that one a no-op.
        return timedelta(seconds=self.settings.firestore_timeout + self.settings.publish_timeout + 1)


@dataclass
class _Request:
    """What we learned about the request so far: for the answer and the audit."""

    request_id: str
    received_at: datetime
    source_ip: str | None
    payload: dict[str, Any] | None = None
    alert: Alert | None = None
    secrets: tuple[str, ...] = ()  # values to scrub from anything we keep

    def redacted_payload(self) -> dict[str, Any] | None:
        """The body as received, safe to log."""
        return redact(self.payload, self.secrets) if isinstance(self.payload, dict) else None

    def stored_payload(self) -> str | None:
        """The body as received, safe to store: JSON text holds any key and any number,
        where a Firestore map refuses some (``__name__``, integers beyond 64 bits, nested arrays)."""
        payload = self.redacted_payload()
        return None if payload is None else json.dumps(payload, ensure_ascii=False)

    @property
    def stored_request_id(self) -> str:
        """The request id, scrubbed like everything stored: it comes from a header."""
        return redact(self.request_id, self.secrets)


def serve(request: Any, deps: WebhookDeps) -> tuple[dict[str, Any], int]:
    """Handle one webhook request; returns (JSON body, HTTP status). Never raises."""
    req = _Request(request_id=_request_id(request), received_at=deps.clock(), source_ip=_source_ip(request))
    with log_context(request_id=req.request_id):
        try:
            return _process(request, req, deps)
        except RouterError as exc:
            body, status = http_response(exc)
            _audit_rejection(req, deps, exc, status)
            log.info("alert refused", extra={"fields": {"error": exc.code, "http_status": status}})
            return body, status
        except Exception:
            log.exception("webhook failed unexpectedly")
            body, status = http_response(Exception())
            return body, status


def _process(request: Any, req: _Request, deps: WebhookDeps) -> tuple[dict[str, Any], int]:
    settings = deps.settings
    if request.method != "POST":
        raise MethodNotAllowed("Only POST is accepted.")
    if settings.allowed_source_ips and req.source_ip not in settings.allowed_source_ips:
        raise ForbiddenSource("Requests from this address are not allowed.")
    req.payload = _read_json(request, settings.max_body_bytes)
    secrets = deps.webhook_secrets()
    auth_field = "secret" if "secret" in req.payload else "token"
    given = req.payload.get(auth_field)
    req.secrets = tuple(secrets) + ((given,) if isinstance(given, str) else ())
    _authenticate(given, secrets)
    header_key = request.headers.get("Idempotency-Key") or None
    _refuse_secret_elsewhere(req.payload, auth_field, header_key, req.secrets)
    alert = req.alert = parse_alert(req.payload)
    if header_key is not None and not valid_idempotency_key(header_key):
        raise ValidationFailed([{"field": "Idempotency-Key", "message": IDEMPOTENCY_KEY_RULE}])
    _check_limits(alert, settings, req.received_at)

    ident = identify(alert, header_key=header_key, now=req.received_at,
                     window_seconds=settings.dedupe_window_seconds)
    set_order_id(ident.order_id)
    command = _command(alert, ident, req)
    record = queued_record(command, recorded_by="webhook", now=req.received_at)
    try:
        duplicate = deps.store().accept(record, ident.claims, _audit(req, settings, "accepted", 200, order_id=ident.order_id))
    except StoreUnavailable as exc:
        log.error("Firestore unavailable; queueing without a record", extra={"fields": {"error": exc.message}})
        return _publish_unrecorded(command.model_copy(update={"recorded": False}), req, deps)
    if duplicate is not None:
        return _answer_duplicate(duplicate, command, req, deps)
    return _publish(command, req, deps)


# --- the request ------------------------------------------------------------------


def _read_json(request: Any, limit: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The body exceeds {limit // 1024} KiB.")
    # TradingView sends text/plain unless the message is valid JSON: never trust the header.
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The body exceeds {limit // 1024} KiB.")
    try:
        payload = json.loads(data.decode("utf-8-sig"), parse_constant=_refuse_constant,
                             parse_float=_finite_float, parse_int=_int)
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError includes JSONDecodeError
        raise BadRequest("The body is not valid JSON. Check the alert message in TradingView.") from None
    if not isinstance(payload, dict):
        raise BadRequest("The body must be a JSON object.")
    _check_structure(payload)
    return payload


def _refuse_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a number an alert may carry.")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 parses as infinity
        raise BadRequest("A number in the body is too large.")
    return number


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # beyond Python's digit limit for int()
        raise BadRequest("A number in the body is too large.") from None


def _check_structure(payload: dict[str, Any]) -> None:
    """Refuse what JSON allows but nothing downstream can hold: deep nesting, lone surrogates."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"The body is nested more than {MAX_DEPTH} levels deep.")
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # "\ud800": valid JSON, not valid text
                raise BadRequest("The body holds an invalid Unicode escape (a lone surrogate).") from None


def _authenticate(given: Any, secrets: list[str]) -> None:
    if not secrets:
        log.error("no webhook secret is configured: every alert is refused")
    if not isinstance(given, str) or not given:
        raise Unauthorized("Authentication failed.")
    given_bytes = given.encode()
    # Compare against every active secret (rotation) without stopping early.
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given_bytes, secret.encode())
    if not matched:
        raise Unauthorized("Authentication failed.")


def _refuse_secret_elsewhere(payload: dict[str, Any], auth_field: str, header_key: str | None,
                             secrets: tuple[str, ...]) -> None:
    """A secret pasted into another field, a field name or the idempotency key would be stored
    and published: refuse the alert, naming where, never what."""
    where = _secret_location(payload, auth_field, header_key, [s for s in secrets if s])
    if where is not None:
        raise SecretInAlert(f"The webhook secret appears in {where}: it belongs only in `secret`. "
                            "Fix the alert template.")


def _secret_location(payload: dict[str, Any], auth_field: str, header_key: str | None,
                     secrets: list[str]) -> str | None:
    """Where a secret appears outside the authentication field, in words; None if nowhere."""
    def holds(text: str) -> bool:
        return any(secret in text for secret in secrets)

    if header_key is not None and holds(header_key):
        return "the Idempotency-Key header"
    # (path, field name, value, is the authentication field); a path is shown only once
    # every name on it has been checked.
    stack: list[tuple[str, str, Any, bool]] = [(key, key, value, key == auth_field) for key, value in payload.items()]
    while stack:
        path, name, value, authenticates = stack.pop()
        if holds(name):
            return "a field name"
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}", key, item, False) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}", "", item, False) for index, item in enumerate(value))
        elif isinstance(value, str) and not authenticates and holds(value):
            return f"`{path[:60]}`"
    return None


def _check_limits(alert: Alert, settings: Settings, now: datetime) -> None:
    if alert.action != "EXIT" and alert.lots > settings.max_lots_per_alert:
        raise LimitExceeded(f"{alert.lots} lots is above the limit of {settings.max_lots_per_alert} per alert.")
    if not settings.symbol_allowed(alert.underlying, alert.symbol):
        raise LimitExceeded(f"{alert.symbol} is not in the allowed symbols.")
    if alert.time is not None:
        age = (now - alert.time).total_seconds()
        if age > settings.max_alert_age_seconds:
            raise StaleAlert(f"The alert is {age:.0f} s old; the limit is {settings.max_alert_age_seconds} s.")
        if -age > settings.max_alert_age_seconds:
            raise StaleAlert(f"The alert time is {-age:.0f} s in the future. Check the 'time' field.")


def _request_id(request: Any) -> str:
    execution = request.headers.get("Function-Execution-Id", "")
    trace = request.headers.get("X-Cloud-Trace-Context", "").split("/")[0]
    # Headers are the caller's to write: only an id-shaped one is kept.
    given = [candidate for candidate in (execution, trace) if _REQUEST_ID.fullmatch(candidate)]
    return given[0] if given else uuid.uuid4().hex[:16]


def _source_ip(request: Any) -> str | None:
    forwarded = request.headers.get("X-Forwarded-For", "")
    # Cloud Run appends the caller's address last; earlier entries are the client's own claims.
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    address = hops[-1] if hops else request.remote_addr
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


# --- records --------------------------------------------------------------------


def _command(alert: Alert, ident: Identity, req: _Request) -> OrderCommand:
    return OrderCommand(
        order_id=ident.order_id, idempotency_key=ident.key, key_source=ident.source, claims=list(ident.claims),
        alert=redact(alert.order_fields(), req.secrets), received_at=req.received_at, alert_time=alert.time,
        request_id=req.stored_request_id, source_ip=req.source_ip,
    )


def _audit(req: _Request, settings: Settings, outcome: str, status: int, *, order_id: str | None = None,
           error: RouterError | None = None) -> AlertAudit:
    alert = req.alert
    return AlertAudit(
        received_at=req.received_at, outcome=outcome, http_status=status, order_id=order_id,
        reason=error.code if error else None, message=error.message if error else None,
        errors=getattr(error, "errors", None),
        strategy=alert.strategy if alert else None, symbol=alert.symbol if alert else None,
        action=alert.action if alert else None, source_ip=req.source_ip, request_id=req.stored_request_id,
        payload=req.stored_payload(), expire_at=req.received_at + timedelta(days=settings.alert_ttl_days),
    )


def _audit_rejection(req: _Request, deps: WebhookDeps, exc: RouterError, status: int) -> None:
    try:
        # Early refusals (a probe, a bad body) come before the secrets are read; the audit
        # scrubs with them all the same (a header may carry one).
        req.secrets = req.secrets or tuple(deps.webhook_secrets())
        audit = _audit(req, deps.settings, "rejected" if status < 500 else "error", status, error=exc)
        deps.store().record_alert(audit)
    except Exception:
        log.warning("alert audit not written", exc_info=True)


# --- outcomes -------------------------------------------------------------------


def _enqueue(command: OrderCommand, deps: WebhookDeps) -> str:
    """Publish the order command to the orders topic; its message id, or PublishFailed."""
    return deps.publisher.publish_json(deps.settings.orders_topic, command.model_dump(mode="json"),
                                       command.attributes())


def _publish(command: OrderCommand, req: _Request, deps: WebhookDeps) -> tuple[dict[str, Any], int]:
    try:
        message_id = _enqueue(command, deps)
    except PublishFailed as exc:
        # Recorded but not queued: a 503 makes TradingView re-send, and the re-send
        # (a duplicate of an unpublished order) publishes it. See _answer_duplicate.
        log.error("order recorded but not published", extra={"fields": {"alert": req.redacted_payload()}})
        _note_not_queued(command.order_id, exc, deps)
        raise ServiceUnavailable("The order could not be queued; TradingView will retry.") from exc
    # The message id and publish time go on the order when the worker claims it: a third
    # Firestore round trip here would cost a quarter of the answer's time under load.
    log.info("alert accepted", extra={"fields": {"message_id": message_id, "key_source": command.key_source}})
    return {"status": "accepted", "order_id": command.order_id}, 200


def _note_not_queued(order_id: str, exc: PublishFailed, deps: WebhookDeps) -> None:
    """Say on the order that its command is not on the queue. Best effort: the answer is a 503 anyway."""
    now = deps.clock()
    _note(order_id, {"publish_failed_at": now, "publish_error": exc.message}, exc.code,
          "Not queued: Pub/Sub did not take the order. TradingView re-sends the alert, which queues it; "
          "do not place it by hand.", now, deps)


def _note(order_id: str, fields: dict[str, Any], reason: str, message: str, now: datetime, deps: WebhookDeps) -> None:
    """Record facts and an event on a QUEUED order. Best effort: the answer does not depend on it."""
    try:
        store = deps.store()
        store.update_fields(order_id, fields, now=now)
        store.add_event(order_id, OrderEvent(at=now, from_status=OrderStatus.QUEUED.value,
                                             to_status=OrderStatus.QUEUED.value, reason=reason, message=message,
                                             by="webhook"))
    except Exception:
        log.warning("note not written on the order", extra={"fields": {"reason": reason}}, exc_info=True)


def _answer_duplicate(duplicate: Duplicate, command: OrderCommand, req: _Request,
                      deps: WebhookDeps) -> tuple[dict[str, Any], int]:
    record = duplicate.record
    order_id = duplicate.order_id or command.order_id
    orphaned = (record is not None and record.published_at is None and record.status == OrderStatus.QUEUED
                and req.received_at - (record.requeued_at or record.created_at) > deps.republish_after)
    if orphaned:
        original = command.model_copy(update={"order_id": order_id, "idempotency_key": record.idempotency_key})
        log.warning("re-publishing an order no worker has taken")
        answer = _publish(original, req, deps)
        _note(order_id, {"requeued_at": req.received_at}, "REQUEUED", (
            f"Queued again by a re-send of the alert: no worker had taken it "
            f"{(req.received_at - record.created_at).total_seconds():.0f} s after it was recorded. "
            "A second delivery of one order places it once."), req.received_at, deps)
        return answer
    audit = _audit(req, deps.settings, "duplicate", 200, order_id=order_id)
    deps.store().record_alert(audit)
    log.info("duplicate alert", extra={"fields": {"winner": order_id}})
    body: dict[str, Any] = {"status": "duplicate", "order_id": order_id}
    if record is not None:
        body["order_status"] = record.status
    return body, 200


def _publish_unrecorded(command: OrderCommand, req: _Request, deps: WebhookDeps) -> tuple[dict[str, Any], int]:
    """Firestore is down: queue anyway, flagged, so the worker records and dedupes it."""
    try:
        message_id = _enqueue(command, deps)
    except PublishFailed:
        # Last-resort record: the log line holds everything needed to place it by hand.
        log.critical("alert LOST: neither Firestore nor Pub/Sub took it",
                     extra={"fields": {"alert": req.redacted_payload(), "order_id": command.order_id}})
        raise ServiceUnavailable("The router is temporarily unavailable; TradingView will retry.") from None
    log.warning("alert queued without a Firestore record",
                extra={"fields": {"message_id": message_id, "alert": req.redacted_payload()}})
    return {"status": "accepted", "order_id": command.order_id, "recorded": False}, 200

"""Structured JSON logs for Cloud Logging, with secrets redacted.

Cloud Logging parses one JSON object per stdout line and reads ``severity`` and
``message`` from it. Every line carries the request id and order id of the
work in progress (kept in context variables, so concurrent requests on one
instance don't mix them up).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Iterable, Iterator

# Field names whose values never leave the process: any name containing a marker,
# or exactly one of the short names (a substring match on "pin" would hit "shipping").
_SECRET_MARKERS = ("secret", "token", "password", "authorization", "apikey", "api_key", "operator_key", "appidhash")
_SECRET_NAMES = frozenset({"pin", "fyers_pin"})
REDACTED = "[REDACTED]"

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_order_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)


def is_secret_key(key: str) -> bool:
    """True when a field name suggests a credential (``secret``, ``access_token``, ``pin``...)."""
    lowered = key.lower().replace("-", "_")
    return lowered in _SECRET_NAMES or any(marker in lowered for marker in _SECRET_MARKERS)


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A deep copy of ``value`` with every secret-looking field replaced, and every
    occurrence of the given secret values scrubbed from values and field names alike
    (a secret pasted into the wrong field, or used as one)."""
    known = tuple(s for s in secrets if s)
    if isinstance(value, dict):
        return {redact(k, known): (REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v, known))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, known) for v in value]
    if isinstance(value, str) and known:
        for secret in known:
            value = value.replace(secret, REDACTED)
    return value


class JsonFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(),
        }
        if (rid := _request_id.get()) is not None:
            entry["request_id"] = rid
        if (oid := _order_id.get()) is not None:
            entry["order_id"] = oid
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(redact(fields))
        if record.exc_info and record.exc_info[0] is not None:
            # The class name only: exception texts can carry URLs with tokens in them.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def configure(level: str = "INFO") -> None:
    """Send the root logger's output to stdout as JSON lines (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    # The Fyers SDK and Google clients are chatty at INFO/DEBUG.
    for noisy in ("urllib3", "google", "grpc", "FyersAPI", "FyersAPIRequest"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    """A logger; pass structured fields as ``extra={"fields": {...}}``."""
    return logging.getLogger(name)


@contextmanager
def log_context(*, request_id: str | None = None, order_id: str | None = None) -> Iterator[None]:
    """Tag every log line inside the block with these ids (and only these: a thread
    serving many requests must not carry one request's order id into the next)."""
    tokens = [(_request_id, _request_id.set(request_id)), (_order_id, _order_id.set(order_id))]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_order_id(order_id: str | None) -> None:
    """Tag the rest of the current context's log lines with an order id."""
    _order_id.set(order_id)

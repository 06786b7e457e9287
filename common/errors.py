"""The router's failure classes, and the one place that maps them to HTTP answers.

Every failure the router can meet has its own exception class. Each carries a
stable machine-readable ``code`` (it lands in Firestore as the order's
``reason``) and a public ``message`` that is safe to return and log: it never
holds a secret, a token or a stack trace.

HTTP functions turn any exception into a response with :func:`http_response`;
nothing else decides status codes.
"""

from __future__ import annotations

from typing import Any


class RouterError(Exception):
    """Base of every failure the router expects and handles."""

    code = "ERROR"
    http_status = 500

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip().splitlines()[0]
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON body an HTTP caller sees."""
        return {"status": "error", "error": self.code, "message": self.message}


# --- configuration --------------------------------------------------------------


class ConfigError(RouterError):
    """The deployment's configuration is invalid."""

    code = "CONFIG_ERROR"
    http_status = 500


class SecretNotFound(RouterError):
    """A required secret is missing from the secret store."""

    code = "SECRET_NOT_FOUND"
    http_status = 500


class ArtifactNotFound(RouterError):
    """A stored artifact (file or object) does not exist."""

    code = "ARTIFACT_NOT_FOUND"
    http_status = 500


# --- ingress (the webhook) ------------------------------------------------------


class BadRequest(RouterError):
    """The request body is not valid JSON."""

    code = "BAD_REQUEST"
    http_status = 400


class PayloadTooLarge(RouterError):
    """The request body exceeds the size limit."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class MethodNotAllowed(RouterError):
    """Only POST is accepted."""

    code = "METHOD_NOT_ALLOWED"
    http_status = 405


class Unauthorized(RouterError):
    """Authentication failed."""

    code = "UNAUTHORIZED"
    http_status = 401


class SecretInAlert(RouterError):
    """The webhook secret appears outside the ``secret`` field (a template mistake); the answer never repeats it."""

    code = "SECRET_IN_ALERT"
    http_status = 400


class ForbiddenSource(RouterError):
    """The request comes from an address that is not allowed."""

    code = "FORBIDDEN_SOURCE"
    http_status = 403


class ValidationFailed(RouterError):
    """The alert has invalid fields."""

    code = "VALIDATION_FAILED"
    http_status = 400

    def __init__(self, errors: list[dict[str, Any]], message: str = "") -> None:
        super().__init__(message or "The alert has invalid fields.")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {**super().body(), "errors": self.errors}


class LimitExceeded(RouterError):
    """The alert breaks a configured limit (lots, allow-list)."""

    code = "LIMIT_EXCEEDED"
    http_status = 400


class StaleAlert(RouterError):
    """The alert is older than the allowed age."""

    code = "STALE_ALERT"
    http_status = 400


class StoreUnavailable(RouterError):
    """Firestore could not be reached in time."""

    code = "STORE_UNAVAILABLE"
    http_status = 503


class PublishFailed(RouterError):
    """The order command could not be published to Pub/Sub in time."""

    code = "PUBLISH_FAILED"
    http_status = 503


class ServiceUnavailable(RouterError):
    """Neither the order store nor the queue could take the alert; retry."""

    code = "UNAVAILABLE"
    http_status = 503


# --- symbol master and pricing --------------------------------------------------


class SymbolError(RouterError):
    """The alert cannot be resolved to a contract."""

    code = "SYMBOL_ERROR"
    http_status = 400


class UnknownUnderlying(SymbolError):
    """The underlying is not in the symbol master."""

    code = "UNKNOWN_UNDERLYING"


class UnknownTicker(SymbolError):
    """The Fyers ticker is not in the symbol master."""

    code = "UNKNOWN_TICKER"


class NoExpiry(SymbolError):
    """No expiry on or after the requested date."""

    code = "NO_EXPIRY"


class StrikeNotListed(SymbolError):
    """The strike is not listed for the chosen expiry."""

    code = "STRIKE_NOT_LISTED"


class MasterUnavailable(RouterError):
    """No usable symbol master is loaded."""

    code = "MASTER_UNAVAILABLE"
    http_status = 503


class MasterDownloadFailed(RouterError):
    """A symbol master could not be downloaded (connection, HTTP error, timeout); retry later."""

    code = "MASTER_DOWNLOAD_FAILED"
    http_status = 503


class MasterInvalid(RouterError):
    """A downloaded symbol master failed validation; the previous version stays current."""

    code = "MASTER_INVALID"
    http_status = 502


class InvalidPriceLevel(RouterError):
    """A computed or supplied price level is zero or on the wrong side of the price."""

    code = "INVALID_PRICE_LEVEL"
    http_status = 400


class IntentConflict(RouterError):
    """The alert's fields contradict each other about the position it means."""

    code = "INTENT_CONFLICT"
    http_status = 400


class NoPosition(RouterError):
    """There is no position to exit or cover."""

    code = "NO_POSITION"
    http_status = 400


# --- broker ---------------------------------------------------------------------


class BrokerError(RouterError):
    """Base of every broker failure. ``broker_code``/``broker_message`` keep Fyers' words."""

    code = "BROKER_ERROR"
    http_status = 502

    def __init__(
        self,
        message: str = "",
        *,
        broker_code: int | None = None,
        broker_message: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, **details)
        self.broker_code = broker_code
        self.broker_message = broker_message


class BrokerRejected(BrokerError):
    """Fyers refused the request (input, RMS, exchange or algo restriction)."""

    code = "BROKER_REJECTED"


class BrokerAmbiguous(BrokerError):
    """The request may have reached Fyers; the order may exist. Check the book first."""

    code = "BROKER_AMBIGUOUS"


class TokenDead(BrokerError):
    """The Fyers session is expired or invalid; a fresh login is needed."""

    code = "NEEDS_LOGIN"


class RateLimited(BrokerError):
    """Fyers rate-limited the request."""

    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str = "", *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BrokerTransient(BrokerError):
    """Fyers could not be reached, or answered a server error; safe to retry."""

    code = "BROKER_TRANSIENT"
    http_status = 503


class BrokerNotFound(BrokerError):
    """Fyers has no such order."""

    code = "BROKER_NOT_FOUND"
    http_status = 404


# --- the one mapping to HTTP ----------------------------------------------------


def http_response(exc: BaseException) -> tuple[dict[str, Any], int]:
    """Map any exception to a sanitised (JSON body, HTTP status) pair.

    Unexpected exceptions become a generic 500: their text may hold internals.
    """
    if isinstance(exc, RouterError):
        return exc.body(), exc.http_status
    return {"status": "error", "error": "INTERNAL", "message": "Internal error."}, 500

"""The daily Fyers login: the login URL, the auth-code exchange, refresh, token expiry.

The SDK's ``SessionModel.generate_token`` has no timeout and no error handling,
and the SDK has no refresh call (fyers-v3.md §3, §11), so these talk HTTP
directly through :class:`~common.broker.transport.TimedSession` and classify
answers like every other broker call (``common.broker.outcome``).

Refresh tokens are disabled since 1 April 2026: Fyers answers HTTP 400 with
-16. :func:`refresh_access_token` raises :class:`TokenDead` for it (not
:class:`BrokerRejected`): the caller's only way forward is a fresh interactive
login, which is exactly what ``TokenDead`` means everywhere else.

Nothing here logs, returns in an error, or keeps a token, an auth code or the
app secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from datetime import datetime, timezone
from typing import Any

from common.broker.models import TokenPair
from common.broker.outcome import check
from common.errors import BrokerRejected, TokenDead

DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 5.0
REFRESH_DISABLED_CODE = -16


def app_id_hash(app_id: str, app_secret: str) -> str:
    """Fyers' ``appIdHash``: lowercase hex SHA-256 of ``APP_ID:APP_SECRET`` (suffix included)."""
    return hashlib.sha256(f"{app_id}:{app_secret}".encode()).hexdigest()


def login_url(app_id: str, redirect_uri: str, state: str, *, api_base: str) -> str:
    """The page where the trader logs in; Fyers then redirects to ``redirect_uri`` with an auth code."""
    query = urllib.parse.urlencode(
        {"client_id": app_id, "redirect_uri": redirect_uri, "response_type": "code", "state": state}
    )
    return f"{api_base.rstrip('/')}/generate-authcode?{query}"


def token_expiry(token: str) -> datetime | None:
    """The JWT ``exp`` of a Fyers token (UTC), decoded without verifying; None if unreadable."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), timezone.utc)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, OverflowError):
        return None


def exchange_auth_code(
    app_id: str,
    app_secret: str,
    auth_code: str,
    *,
    api_base: str,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> TokenPair:
    """``POST /validate-authcode``: trade the redirect's auth code for the day's tokens.

    Raises :class:`BrokerRejected` with Fyers' code for a bad or used code (-437),
    a missing code (-441) or a bad hash (-371); the usual broker failure classes
    otherwise. A timed-out exchange may have consumed the code: log in again.
    """
    body = {"grant_type": "authorization_code", "appIdHash": app_id_hash(app_id, app_secret), "code": auth_code}
    answer = _post(api_base, "/validate-authcode", body, "auth code exchange", (connect_timeout, read_timeout))
    access = answer.get("access_token")
    if not isinstance(access, str) or not access:
        raise BrokerRejected("auth code exchange: Fyers answered without an access token.",
                             broker_code=answer.get("code"), broker_message=str(answer.get("message") or ""))
    return TokenPair(access, str(answer.get("refresh_token") or ""), token_expiry(access))


def refresh_access_token(
    app_id: str,
    app_secret: str,
    refresh_token: str,
    pin: str,
    *,
    api_base: str,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> TokenPair:
    """``POST /validate-refresh-token``. Disabled by Fyers since April 2026: expect :class:`TokenDead`.

    If Fyers ever answers with a token again, the old refresh token is kept
    (the endpoint used to return an access token only).
    """
    body = {"grant_type": "refresh_token", "appIdHash": app_id_hash(app_id, app_secret),
            "refresh_token": refresh_token, "pin": pin}
    try:
        answer = _post(api_base, "/validate-refresh-token", body, "token refresh", (connect_timeout, read_timeout))
    except TokenDead as exc:
        if exc.broker_code == REFRESH_DISABLED_CODE:
            raise TokenDead(
                "token refresh: Fyers has disabled refresh tokens (SEBI rules); a fresh interactive login is needed.",
                broker_code=exc.broker_code, broker_message=exc.broker_message,
            ) from None
        raise
    access = answer.get("access_token")
    if not isinstance(access, str) or not access:
        raise BrokerRejected("token refresh: Fyers answered without an access token.",
                             broker_code=answer.get("code"), broker_message=str(answer.get("message") or ""))
    return TokenPair(access, str(answer.get("refresh_token") or refresh_token), token_expiry(access))


def _post(api_base: str, path: str, body: dict[str, Any], what: str, timeouts: tuple[float, float]) -> dict[str, Any]:
    """POST JSON under ``api_base`` with deadlines; return the success body or raise the failure class."""
    from common.broker.transport import TimedSession  # requests is imported on this path only

    api_base = api_base.rstrip("/")
    with TimedSession(api_base=api_base, data_base=api_base, connect_timeout=timeouts[0],
                      read_timeout=timeouts[1]) as session:
        answer: dict[str, Any] = {"s": "error", "code": None, "message": "no JSON answer"}
        synthetic = True
        try:
            response = session.post(api_base + path, json=body)
        except Exception:  # noqa: BLE001 - the session's record says what happened
            response = None
        if response is not None:
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                answer, synthetic = parsed, False
        return check(answer, session.last, synthetic=synthetic, placement=False, what=what)

"""Auth codes and tokens, shaped like Fyers' (JWT-like, decodable ``exp``).

Lifetimes follow fyers-v3.md §3: an access token dies at 06:00 IST the next
calendar day (the same morning if issued before 06:00), a refresh token at
06:00 IST on day 15, an auth code after 30,000 s and at its first use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Literal

IST = timezone(timedelta(hours=5, minutes=30))
AUTH_CODE_SECONDS = 30_000

TokenState = Literal["ok", "unknown", "expired"]


def session_expiry(now: datetime) -> datetime:
    """06:00 IST after ``now``: the next morning, or this morning if before 06:00."""
    local = now.astimezone(IST)
    six = datetime.combine(local.date(), time(6, 0), IST)
    return six if local < six else six + timedelta(days=1)


def app_id_hash(app_id: str, secret: str) -> str:
    return hashlib.sha256(f"{app_id}:{secret}".encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class _Grant:
    app_id: str
    expires_at: datetime
    kind: str
    revoked: bool = False


class TokenStore:
    """Issues and checks auth codes, access tokens and refresh tokens. Thread-safe."""

    def __init__(self, apps: dict[str, str]) -> None:
        self.apps = dict(apps)
        self._key = secrets.token_bytes(32)
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()

    def _jwt(self, claims: dict) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"

    def _issue(self, app_id: str, kind: str, now: datetime, expires_at: datetime, iss: str) -> str:
        token = self._jwt({
            "iss": iss,
            "sub": kind,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "nbf": int(now.timestamp()),
            "app_id": app_id.split("-", 1)[0],
            "fy_id": "XY12345",
            "nonce": secrets.token_hex(8),
        })
        with self._lock:
            self._grants[token] = _Grant(app_id, expires_at, kind)
        return token

    def issue_auth_code(self, app_id: str, now: datetime) -> str:
        expires = now + timedelta(seconds=AUTH_CODE_SECONDS)
        return self._issue(app_id, "auth_code", now, expires, "api.login.fyers.in")

    def issue_access_token(self, app_id: str, now: datetime, expires_at: datetime | None = None) -> str:
        return self._issue(app_id, "access_token", now, expires_at or session_expiry(now), "api.fyers.in")

    def issue_refresh_token(self, app_id: str, now: datetime) -> str:
        expires = session_expiry(now) + timedelta(days=14)
        return self._issue(app_id, "refresh_token", now, expires, "api.fyers.in")

    def redeem_auth_code(self, code: str, hash_hex: str, now: datetime) -> tuple[str, str] | str:
        """Exchange a code for (access, refresh), or return the Fyers error name.

        Errors: ``"bad_code"`` (unknown, used or expired), ``"bad_hash"`` (the hash
        does not match the code's app). A bad hash does not consume the code.
        """
        with self._lock:
            grant = self._grants.get(code)
            if grant is None or grant.kind != "auth_code" or grant.revoked or grant.expires_at <= now:
                return "bad_code"
            if not hmac.compare_digest(hash_hex, app_id_hash(grant.app_id, self.apps[grant.app_id])):
                return "bad_hash"
            grant.revoked = True
            app_id = grant.app_id
        return self.issue_access_token(app_id, now), self.issue_refresh_token(app_id, now)

    def check(self, app_id: str, token: str, now: datetime) -> TokenState:
        """State of an access token presented by ``app_id``."""
        with self._lock:
            grant = self._grants.get(token)
        if grant is None or grant.kind != "access_token" or grant.app_id != app_id:
            return "unknown"
        if grant.revoked or grant.expires_at <= now:
            return "expired"
        return "ok"

    def revoke(self, token: str) -> None:
        """Logout: the token becomes unknown, as after a Fyers logout."""
        with self._lock:
            self._grants.pop(token, None)

    def expire_all(self) -> None:
        """Kill every issued access token (mid-day session expiry): they answer -8."""
        with self._lock:
            for grant in self._grants.values():
                if grant.kind == "access_token":
                    grant.revoked = True

    def clear(self) -> None:
        with self._lock:
            self._grants.clear()

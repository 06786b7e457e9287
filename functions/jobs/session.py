"""The scheduler's ``session`` job: is the Fyers session alive, and if not, ask the trader to log in.

1. Probe the stored access token: none, or a JWT ``exp`` in the past (tokens die
   at 06:00 IST), means dead without a call; otherwise ``GET /profile``.
2. Alive: ``mark_checked``. Inconclusive (Fyers unreachable, rate limited): leave
   the record alone and report it.
3. Dead: try the refresh token once if one and the PIN are stored. Fyers has
   disabled refresh since April 2026 (HTTP 400, -16): that reads as "unavailable".
4. Still dead: record ``NEEDS_LOGIN``, and unless a notice with a still-valid link
   went out within ``notify_every``, mint a one-time login link and notify.
   The "unless" is decided in a Firestore transaction, so two runs at once send
   one notice.

The returned report is JSON-able and holds no secret: no token, no link.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common import secret_table
from common.errors import BrokerError, ConfigError, TokenDead
from common.logs import get_logger
from common.notify import Notification, NotificationKind, Notifier, Severity
from common.records import IST
from common.secrets import SecretStore
from common.session import (
    ACCESS_TOKEN_SECRET,
    REFRESH_TOKEN_SECRET,
    SessionStatus,
    SessionStore,
    auth_event,
    mint_login_link,
)
from common.settings import Settings

log = get_logger("jobs.session")

APP_ID_SECRET = secret_table.FYERS_APP_ID
APP_SECRET_SECRET = secret_table.FYERS_SECRET_KEY
PIN_SECRET = secret_table.FYERS_PIN
NOTIFY_EVERY = timedelta(hours=1)


@dataclass
class SessionJobDeps:
    """What the session job needs. ``secrets`` should be uncached: the job must see a fresh login."""

    settings: Settings
    secrets: SecretStore
    db: Any  # Firestore client
    notifier: Notifier
    notify_every: timedelta = NOTIFY_EVERY

    def sessions(self) -> SessionStore:
        return SessionStore(self.db, timeout=self.settings.firestore_timeout)


@dataclass
class _Probe:
    alive: bool | None  # None: inconclusive
    via: str  # none | jwt | profile
    reason: str | None = None
    message: str | None = None
    fy_id: str | None = None
    name: str | None = None
    expires_at: datetime | None = None


def run_session_job(deps: SessionJobDeps, now: datetime) -> dict[str, Any]:
    """Check the session once; see the module docstring. Raises :class:`ConfigError` if FYERS_APP_ID is unset."""
    sessions = deps.sessions()
    token = deps.secrets.get_optional(ACCESS_TOKEN_SECRET)
    probe = _probe(deps, token, now)
    report: dict[str, Any] = {"job": "session", "checked_at": now.isoformat(), "probe": probe.via,
                              "expires_at": probe.expires_at.isoformat() if probe.expires_at else None}
    if probe.alive:
        sessions.mark_checked(now=now, fy_id=probe.fy_id, name=probe.name, expires_at=probe.expires_at)
        return {**report, "ok": True, "status": SessionStatus.AUTHENTICATED.value, "fy_id": probe.fy_id}
    if probe.alive is None:
        log.warning("session probe inconclusive", extra={"fields": {"reason": probe.reason}})
        return {**report, "ok": False, "status": sessions.get().status, "reason": probe.reason,
                "message": probe.message}

    refresh, renewed = _try_refresh(deps, now)
    report["refresh"] = refresh
    if renewed is not None:
        sessions.mark_authenticated(fy_id=renewed.fy_id, name=renewed.name, expires_at=renewed.expires_at,
                                    now=now, message="Renewed with the refresh token.")
        deps.notifier.send(Notification(kind=NotificationKind.LOGGED_IN, title="Fyers session renewed",
                                        text=f"valid until {_ist(renewed.expires_at)}", at=now))
        return {**report, "ok": True, "status": SessionStatus.AUTHENTICATED.value, "fy_id": renewed.fy_id,
                "expires_at": renewed.expires_at.isoformat() if renewed.expires_at else None}

    reason, message = probe.reason or "TOKEN_DEAD", probe.message or "The Fyers session is dead."
    sessions.mark_needs_login(reason, message, now)
    notified = _announce(deps, sessions, now, reason, message)
    log.warning("Fyers session needs a login", extra={"fields": {"reason": reason, "notified": notified}})
    return {**report, "ok": True, "status": SessionStatus.NEEDS_LOGIN.value, "reason": reason,
            "message": message, "notified": notified}


def _probe(deps: SessionJobDeps, token: str | None, now: datetime) -> _Probe:
    from common.broker import FyersBroker, token_expiry

    if not token:
        return _Probe(False, "none", "NO_TOKEN", "No Fyers access token is stored.")
    expires_at = token_expiry(token)
    if expires_at is not None and expires_at <= now:
        return _Probe(False, "jwt", "EXPIRED", f"The Fyers access token expired at {_ist(expires_at)}.",
                      expires_at=expires_at)
    app_id = deps.secrets.get_optional(APP_ID_SECRET)
    if not app_id:
        raise ConfigError("FYERS_APP_ID is not set: the session cannot be checked.")
    broker = FyersBroker.from_settings(deps.settings, app_id, lambda: token)
    try:
        profile = broker.profile()
    except TokenDead as exc:
        return _Probe(False, "profile", "TOKEN_REJECTED", exc.message, expires_at=expires_at)
    except BrokerError as exc:
        return _Probe(None, "profile", exc.code, exc.message, expires_at=expires_at)
    return _Probe(True, "profile", fy_id=profile.fy_id or None, name=profile.name or None, expires_at=expires_at)


def _try_refresh(deps: SessionJobDeps, now: datetime) -> tuple[str, _Probe | None]:
    """One refresh attempt: ("not_configured" | "expired" | "unavailable" | "refused" | "failed" | "ok", new session)."""
    from common.broker import refresh_access_token, token_expiry

    secrets = deps.secrets
    refresh_token = secrets.get_optional(REFRESH_TOKEN_SECRET)
    pin = secrets.get_optional(PIN_SECRET)
    app_id, app_secret = secrets.get_optional(APP_ID_SECRET), secrets.get_optional(APP_SECRET_SECRET)
    if not (refresh_token and pin and app_id and app_secret):
        return "not_configured", None
    refresh_expiry = token_expiry(refresh_token)
    if refresh_expiry is not None and refresh_expiry <= now:
        return "expired", None
    settings = deps.settings
    try:
        pair = refresh_access_token(app_id, app_secret, refresh_token, pin, api_base=settings.fyers_api_base,
                                    connect_timeout=settings.broker_connect_timeout,
                                    read_timeout=settings.broker_read_timeout)
    except TokenDead as exc:
        # -16 "disabled to comply with SEBI regulations" (HTTP 400) since April 2026.
        return ("unavailable" if exc.broker_code == -16 else "refused"), None
    except BrokerError as exc:
        log.warning("token refresh failed", extra={"fields": {"error": exc.code}})
        return "failed", None
    probe = _probe(deps, pair.access_token, now)
    if not probe.alive:
        return "refused", None
    secrets.put(ACCESS_TOKEN_SECRET, pair.access_token)
    if pair.refresh_token and pair.refresh_token != refresh_token:
        secrets.put(REFRESH_TOKEN_SECRET, pair.refresh_token)
    probe.expires_at = pair.expires_at or probe.expires_at
    return "ok", probe


def _announce(deps: SessionJobDeps, sessions: SessionStore, now: datetime, reason: str, message: str) -> bool:
    """Send one NEEDS_LOGIN notice with a fresh link, unless a recent one is still usable."""
    settings = deps.settings
    ttl = timedelta(seconds=settings.login_link_ttl_seconds)
    if not sessions.claim_login_notice(now=now, link_expires_at=now + ttl, every=deps.notify_every):
        return False
    try:
        login_url = None
        fields: dict[str, Any] = {"reason": reason}
        if settings.auth_public_url:
            link = mint_login_link(deps.db, now, ttl, timeout=settings.firestore_timeout)
            login_url = f"{settings.auth_public_url.rstrip('/')}/login?link={link.token}"
            fields["link valid until"] = _ist(link.expires_at)
        else:
            fields["setup"] = "AUTH_PUBLIC_URL is not set: open the auth function's /login page."
        result = deps.notifier.send(Notification(
            kind=NotificationKind.NEEDS_LOGIN, severity=Severity.WARNING, title="Fyers login needed",
            text=message, fields=fields, login_url=login_url, at=now,
        ))
        sent = "sent" in (result.pubsub.status, result.telegram.status, result.webhook.status)
    except Exception:  # noqa: BLE001 - release the claim, then let the scheduler see the failure
        sessions.release_login_notice(now)
        raise
    if not sent:
        sessions.release_login_notice(now)  # nobody heard: the next run tries again
        return False
    sessions.record_event(auth_event("login_requested", "ok", now, reason=reason, message=message[:300]))
    return True


def _ist(moment: datetime | None) -> str:
    return moment.astimezone(IST).strftime("%H:%M IST on %a %d %b %Y") if moment else "an unknown time"

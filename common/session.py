"""The Fyers session as the router sees it: its Firestore record, the token reader,
and the one-time login links and OAuth states of the daily login.

* ``system/broker_session`` (:class:`BrokerSession`, kept by :class:`SessionStore`):
  whether the stored access token works, whose it is and until when. Never the token.
* :class:`TokenReader`: the order worker's short-cached access to ``FYERS_ACCESS_TOKEN``.
* ``login_links/{sha256(token)}``: one-time links sent to the trader; only the hash is
  stored, so reading Firestore does not give a usable link.
* ``auth_states/{state}``: the OAuth ``state`` of a login in progress (10 minutes).
* ``auth_events``: an audit trail of logins, refusals and session checks.

Firestore's TTL deletes expired documents late (up to 24 h), so every expiry is
checked here, in code. Links and states are consumed in a transaction: a replay,
even a concurrent one, finds them used.
"""

from __future__ import annotations

import hashlib
import secrets as token_source
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict

from common import secret_table
from common.errors import TokenDead
from common.secrets import CachedSecretStore
from common.system_doc import SystemDocument

if TYPE_CHECKING:
    from common.secrets import SecretStore

SESSION_DOC = "broker_session"
LOGIN_LINKS = "login_links"
AUTH_STATES = "auth_states"
AUTH_EVENTS = "auth_events"

ACCESS_TOKEN_SECRET = secret_table.FYERS_ACCESS_TOKEN
REFRESH_TOKEN_SECRET = secret_table.FYERS_REFRESH_TOKEN

STATE_TTL = timedelta(minutes=10)
AUTH_EVENT_TTL = timedelta(days=30)


class SessionStatus(StrEnum):
    AUTHENTICATED = "AUTHENTICATED"
    NEEDS_LOGIN = "NEEDS_LOGIN"
    UNKNOWN = "UNKNOWN"


class BrokerSession(BaseModel):
    """``system/broker_session``. A missing document reads as ``UNKNOWN``."""

    model_config = ConfigDict(extra="ignore", use_enum_values=True)

    status: SessionStatus = SessionStatus.UNKNOWN
    fy_id: str | None = None
    name: str | None = None  # masked: initials only
    expires_at: datetime | None = None  # the access token's JWT exp
    logged_in_at: datetime | None = None
    checked_at: datetime | None = None
    reason: str | None = None  # machine code of the last NEEDS_LOGIN, e.g. EXPIRED, TOKEN_REJECTED
    message: str | None = None
    login_link_expires_at: datetime | None = None  # the newest link sent to the trader
    notified_at: datetime | None = None  # when that link was sent


class AuthEvent(BaseModel):
    """``auth_events/{auto}``: one login step or session check, for the audit trail."""

    model_config = ConfigDict(extra="ignore")

    at: datetime
    kind: str  # login_started, login_refused, callback_refused, logged_in, session_dead, ...
    outcome: str  # ok, refused, failed
    reason: str | None = None
    message: str | None = None
    broker_code: int | None = None
    fy_id: str | None = None
    source_ip: str | None = None
    expire_at: datetime


def mask_name(name: str | None) -> str | None:
    """``"SIM TRADER"`` -> ``"S** T*****"``: enough to recognise, not to identify."""
    if not name:
        return None
    return " ".join(word[0] + "*" * (len(word) - 1) for word in name.split())


class SessionStore(SystemDocument):
    """Reads and writes ``system/broker_session`` and ``auth_events``; every call has ``timeout``."""

    def __init__(self, db: Any, *, timeout: float) -> None:
        super().__init__(db, SESSION_DOC, timeout=timeout)

    def get(self) -> BrokerSession:
        snap = self._ref.get(timeout=self._timeout, retry=self._retry)
        return BrokerSession.model_validate(snap.to_dict() or {}) if snap.exists else BrokerSession()

    def mark_authenticated(self, *, fy_id: str | None, name: str | None, expires_at: datetime | None,
                           now: datetime, message: str | None = None) -> BrokerSession:
        """A fresh login: replace the record (clearing the last refusal and the link bookkeeping)."""
        session = BrokerSession(status=SessionStatus.AUTHENTICATED, fy_id=fy_id, name=mask_name(name),
                                expires_at=expires_at, logged_in_at=now, checked_at=now, message=message)
        self._ref.set(session.model_dump(), timeout=self._timeout, retry=self._retry)
        return session

    def mark_needs_login(self, reason: str, message: str, now: datetime) -> None:
        """The token is dead: say why. Who was logged in, and the link bookkeeping, stay."""
        self._ref.set({"status": SessionStatus.NEEDS_LOGIN.value, "reason": reason, "message": message,
                       "checked_at": now}, merge=True, timeout=self._timeout, retry=self._retry)

    def mark_checked(self, *, now: datetime, fy_id: str | None = None, name: str | None = None,
                     expires_at: datetime | None = None) -> None:
        """The token answered: the session is authenticated as of ``now``.

        The link bookkeeping is cleared too, so the next death is announced at once.
        """
        update: dict[str, Any] = {"status": SessionStatus.AUTHENTICATED.value, "checked_at": now,
                                  "reason": None, "message": None, "notified_at": None,
                                  "login_link_expires_at": None}
        if fy_id:
            update["fy_id"] = fy_id
        if name:
            update["name"] = mask_name(name)
        if expires_at:
            update["expires_at"] = expires_at
        self._ref.set(update, merge=True, timeout=self._timeout, retry=self._retry)

    def claim_login_notice(self, *, now: datetime, link_expires_at: datetime, every: timedelta) -> bool:
        """Take the right to send a NEEDS_LOGIN notice with a new link, at most once per ``every``.

        True (and the notice recorded) unless a notice went out less than ``every`` ago
        and its link is still valid. Decided in a transaction, so two concurrent session
        checks cannot both send one.
        """
        from google.cloud import firestore

        ref = self._ref

        @firestore.transactional
        def attempt(transaction: Any) -> bool:
            snap = ref.get(transaction=transaction, timeout=self._timeout)
            current = BrokerSession.model_validate(snap.to_dict() or {}) if snap.exists else BrokerSession()
            recent = current.notified_at is not None and now - current.notified_at < every
            link_alive = current.login_link_expires_at is not None and current.login_link_expires_at > now
            if recent and link_alive:
                return False
            transaction.set(ref, {"notified_at": now, "login_link_expires_at": link_expires_at}, merge=True)
            return True

        return attempt(self._db.transaction())

    def release_login_notice(self, notified_at: datetime) -> None:
        """Undo :meth:`claim_login_notice` when the notice could not be sent, so the next check retries.

        Only if the record still holds our claim: a newer one must stand.
        """
        from google.cloud import firestore

        ref = self._ref

        @firestore.transactional
        def attempt(transaction: Any) -> None:
            snap = ref.get(transaction=transaction, timeout=self._timeout)
            if snap.exists and (snap.to_dict() or {}).get("notified_at") == notified_at:
                transaction.update(ref, {"notified_at": None, "login_link_expires_at": None})

        attempt(self._db.transaction())

    def record_event(self, event: AuthEvent) -> None:
        """Append to ``auth_events``. Best effort: an audit failure never changes an answer."""
        try:
            self._db.collection(AUTH_EVENTS).document().set(event.model_dump(exclude_none=True),
                                                            timeout=self._timeout, retry=None)
        except Exception:  # noqa: BLE001 - see docstring
            from common.logs import get_logger

            get_logger(__name__).warning("auth event not written", exc_info=True)


def auth_event(kind: str, outcome: str, now: datetime, **fields: Any) -> AuthEvent:
    """An :class:`AuthEvent` with its TTL set."""
    return AuthEvent(at=now, kind=kind, outcome=outcome, expire_at=now + AUTH_EVENT_TTL, **fields)


# --- the worker's token -----------------------------------------------------------


class TokenReader:
    """The order worker's view of ``FYERS_ACCESS_TOKEN``: cached for ``ttl_seconds``.

    :meth:`get` raises :class:`TokenDead` when no token is stored or its JWT has
    expired (tokens die at 06:00 IST), without asking Fyers. After Fyers calls a
    token dead, :meth:`invalidate` makes the next :meth:`get` re-read the store,
    which may by then hold the token of a fresh login. The token is never logged.
    """

    def __init__(self, secrets: SecretStore, *, ttl_seconds: float,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._cache = CachedSecretStore(secrets, ttl_seconds, monotonic)
        self._now = wall_clock

    def get(self) -> str:
        from common.broker.auth import token_expiry

        token = self._cache.get_optional(ACCESS_TOKEN_SECRET)
        if not token:
            raise TokenDead("No Fyers access token is stored; log in.")
        expires_at = token_expiry(token)
        if expires_at is not None and expires_at <= self._now():
            self.invalidate()  # a login may store a new one any moment
            raise TokenDead(f"The Fyers access token expired at {expires_at.isoformat()}; log in.")
        return token

    def invalidate(self) -> None:
        self._cache.invalidate(ACCESS_TOKEN_SECRET)


# --- one-time login links and OAuth states -------------------------------------


class Verdict(StrEnum):
    """The outcome of presenting a one-time link or a state."""

    OK = "OK"
    UNKNOWN = "UNKNOWN"
    USED = "USED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class LoginLink:
    token: str  # goes into the URL sent to the trader, nowhere else
    expires_at: datetime


def _link_id(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint_login_link(db: Any, now: datetime, ttl: timedelta, *, timeout: float = 5.0) -> LoginLink:
    """A new one-time login link token; Firestore keeps only its SHA-256."""
    token = token_source.token_urlsafe(32)
    db.collection(LOGIN_LINKS).document(_link_id(token)).create(
        {"created_at": now, "expire_at": now + ttl, "used_at": None}, timeout=timeout)
    return LoginLink(token=token, expires_at=now + ttl)


def consume_login_link(db: Any, token: str, now: datetime, *, timeout: float = 5.0) -> Verdict:
    """Use a login link: OK once, if it exists and has not expired; USED/EXPIRED/UNKNOWN otherwise."""
    if not token or len(token) > 200:
        return Verdict.UNKNOWN
    return _consume(db, db.collection(LOGIN_LINKS).document(_link_id(token)), now, timeout)


def create_state(db: Any, now: datetime, *, ttl: timedelta = STATE_TTL, timeout: float = 5.0) -> str:
    """A fresh OAuth ``state`` for one login, valid for ``ttl``."""
    state = token_source.token_urlsafe(32)
    db.collection(AUTH_STATES).document(state).create(
        {"created_at": now, "expire_at": now + ttl, "used_at": None}, timeout=timeout)
    return state


def consume_state(db: Any, state: str, now: datetime, *, timeout: float = 5.0) -> Verdict:
    """Use a state from Fyers' redirect: OK once, within its lifetime."""
    # token_urlsafe(32) gives 43 characters of [A-Za-z0-9_-]; anything else was never ours
    # (and '/' would make an invalid document path).
    if not state or len(state) > 100 or not all(c.isalnum() or c in "-_" for c in state):
        return Verdict.UNKNOWN
    return _consume(db, db.collection(AUTH_STATES).document(state), now, timeout)


def _consume(db: Any, ref: Any, now: datetime, timeout: float) -> Verdict:
    from google.cloud import firestore

    @firestore.transactional
    def attempt(transaction: Any) -> Verdict:
        snap = ref.get(transaction=transaction, timeout=timeout)
        if not snap.exists:
            return Verdict.UNKNOWN
        doc = snap.to_dict() or {}
        if doc.get("used_at") is not None:
            return Verdict.USED
        if doc["expire_at"] <= now:
            return Verdict.EXPIRED
        transaction.update(ref, {"used_at": now})
        return Verdict.OK

    return attempt(db.transaction())

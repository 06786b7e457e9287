"""The ``auth`` HTTP function: the trader's daily Fyers login (public).

Routes, dispatched on the path's last segment (so ``/login`` and ``/auth/login`` agree):

* ``GET /login?link=<one-time token>``: the link from a NEEDS_LOGIN notification; it shows a
  button that POSTs the link (a link preview's GET must not spend it).
  ``POST /login`` with ``link``: consumed, then a 302 to Fyers' login page with a fresh OAuth ``state``.
* ``GET /login``: a form asking for the operator key; ``POST /login`` checks it
  (constant time) and redirects the same way. The key travels in the body only:
  request URLs end up in logs.
* ``GET /callback``: Fyers' redirect. The state is consumed, the auth code exchanged
  for tokens (stored in the secret store, never shown), the profile read, the session
  recorded AUTHENTICATED and the trader notified.
* ``GET /``: the session's state, without secrets.

Answers are small HTML pages, readable on a phone, with every value escaped. A
failure is a page that says what happened and what to do, plus an ``auth_events``
record; never a stack trace. Every outbound call has a timeout.
"""

from __future__ import annotations

import hmac
import html
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from common import secret_table
from common.errors import BrokerError, BrokerRejected, RouterError, TokenDead
from common.logs import get_logger, log_context
from common.notify import Notification, NotificationKind, Notifier, Severity
from common.records import IST
from common.secrets import SecretStore
from common.session import (
    ACCESS_TOKEN_SECRET,
    REFRESH_TOKEN_SECRET,
    SessionStore,
    Verdict,
    auth_event,
    consume_login_link,
    consume_state,
    create_state,
    mint_login_link,
)
from common.settings import Settings

log = get_logger("auth")

APP_ID_SECRET = secret_table.FYERS_APP_ID
APP_SECRET_SECRET = secret_table.FYERS_SECRET_KEY
OPERATOR_KEY_SECRET = secret_table.OPERATOR_KEY
MAX_FORM_BYTES = 4096

_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    # The login link and Fyers' auth code are in our URLs: never pass them on as a referrer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
}
_STYLE = ("body{font-family:system-ui,-apple-system,sans-serif;max-width:32rem;margin:1.5rem auto;padding:0 1rem;"
          "line-height:1.5;font-size:1.05rem}input,button{font-size:1.1rem;padding:.5rem;width:100%;"
          "box-sizing:border-box;margin:.4rem 0}dt{font-weight:600}code{word-break:break-all}")

Answer = tuple[str, int, dict[str, str]]


@dataclass
class AuthDeps:
    """What the auth function needs, injected so tests can pass emulator- and simulator-backed parts."""

    settings: Settings
    secrets: SecretStore
    db: Callable[[], Any]  # Firestore client, built lazily
    notifier: Notifier
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

    def sessions(self) -> SessionStore:
        return SessionStore(self.db(), timeout=self.settings.firestore_timeout)


class _Refusal(Exception):
    """Stop here and answer this page (after the audit record has been written)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("refused")
        self.answer = answer


def serve(request: Any, deps: AuthDeps) -> Answer:
    """Handle one request to the auth function; returns (HTML, status, headers). Never raises."""
    request_id = request.headers.get("Function-Execution-Id") or uuid.uuid4().hex[:16]
    with log_context(request_id=request_id):
        try:
            route = request.path.rstrip("/").rsplit("/", 1)[-1]
            if route == "login":
                return _login(request, deps)
            if route == "callback":
                return _callback(request, deps)
            if route in ("", "auth", "status"):  # "auth": the function's own name, when the URL keeps it
                return _status(deps)
            return _page("Not found", ["There is nothing here."], 404)
        except _Refusal as refusal:
            return refusal.answer
        except Exception:
            log.exception("auth failed unexpectedly")
            return _page("Something went wrong", [
                "The request failed because of an internal error.",
                "The status page shows whether the Fyers session is active; if it is not, log in again "
                "in a minute. If it keeps failing, check the auth function's logs.",
            ], 500, links=[("Status", _public_path(deps, ""))])


# --- /login ---------------------------------------------------------------------------


def _login(request: Any, deps: AuthDeps) -> Answer:
    now = deps.clock()
    if request.method == "POST":
        if "link" in request.form:
            return _login_with_link(request, deps, now, request.form["link"])
        return _login_with_key(request, deps, now)
    if request.method != "GET":
        return _page("Not allowed", ["Use the login link or the login form."], 405)
    link = request.args.get("link")
    if link is None:
        return _key_form(deps)
    # Opening the link only shows a button: chat apps fetch links for previews, and a
    # GET that spent the one-time link would leave the trader a dead one.
    form = (f'<form method="post" action="{html.escape(_login_path(deps))}">'
            f'<input type="hidden" name="link" value="{html.escape(link)}">'
            "<button type=\"submit\">Continue to the Fyers login</button></form>")
    return _page("Fyers login", ["Log in to Fyers for today's trading session."], 200, raw=form)


def _login_with_link(request: Any, deps: AuthDeps, now: datetime, link: str) -> Answer:
    app_id = _fyers_app(deps, request, now)  # before spending the link on a login that cannot start
    verdict = consume_login_link(deps.db(), link, now, timeout=deps.settings.firestore_timeout)
    if verdict != Verdict.OK:
        _audit(deps, request, "login_refused", "refused", now, reason=f"LINK_{verdict.value}")
        why = {
            Verdict.USED: "This login link was already used.",
            Verdict.EXPIRED: "This login link has expired.",
            Verdict.UNKNOWN: "This login link is not valid.",
        }[verdict]
        return _page("Login link refused", [
            why, "Use the newest link from your notifications, or log in with the operator key.",
        ], 403, links=[("Log in with the operator key", _login_path(deps))])
    return _redirect_to_fyers(request, deps, now, app_id, via="link")


def _key_form(deps: AuthDeps) -> Answer:
    form = (f'<form method="post" action="{html.escape(_login_path(deps))}">'
            '<label for="key">Operator key</label>'
            '<input id="key" type="password" name="key" autocomplete="current-password" required>'
            "<button type=\"submit\">Log in to Fyers</button></form>")
    return _page("Fyers login", ["Enter the operator key to start today's Fyers login."], 200, raw=form)


def _login_with_key(request: Any, deps: AuthDeps, now: datetime) -> Answer:
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        return _page("Request too large", ["The form is larger than expected."], 413)
    given = request.form.get("key", "")
    expected = deps.secrets.get_optional(OPERATOR_KEY_SECRET)
    if not expected:
        log.error("OPERATOR_KEY is not configured: key logins are refused")
    # compare_digest takes as long for a wrong key as for a right one of the same length.
    if not expected or not given or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        _audit(deps, request, "login_refused", "refused", now, reason="BAD_OPERATOR_KEY")
        return _page("Wrong operator key", ["The operator key is not correct."], 401,
                     links=[("Try again", _login_path(deps))])
    return _redirect_to_fyers(request, deps, now, _fyers_app(deps, request, now), via="key")


def _fyers_app(deps: AuthDeps, request: Any, now: datetime) -> str:
    """The App ID, once the login is known to be startable; else a configuration page."""
    app_id = _secret(deps, request, now, APP_ID_SECRET, "login_started")
    if not deps.settings.auth_redirect_url:
        _audit(deps, request, "login_started", "failed", now, reason="CONFIG_ERROR",
               message="AUTH_REDIRECT_URL is not set")
        raise _Refusal(_page("Login is not configured", [
            "AUTH_REDIRECT_URL (this function's /callback address, as registered with the Fyers app) is not set.",
        ], 500))
    return app_id


def _redirect_to_fyers(request: Any, deps: AuthDeps, now: datetime, app_id: str, *, via: str) -> Answer:
    from common.broker.auth import login_url

    settings = deps.settings
    state = create_state(deps.db(), now, timeout=settings.firestore_timeout)
    _audit(deps, request, "login_started", "ok", now, reason=f"VIA_{via.upper()}")
    location = login_url(app_id, settings.auth_redirect_url, state, api_base=settings.fyers_api_base)
    return "", 302, {**_HEADERS, "Location": location}


# --- /callback ------------------------------------------------------------------------


def _callback(request: Any, deps: AuthDeps) -> Answer:
    now = deps.clock()
    args = request.args
    verdict = consume_state(deps.db(), args.get("state", ""), now, timeout=deps.settings.firestore_timeout)
    if verdict != Verdict.OK:
        _audit(deps, request, "callback_refused", "refused", now, reason=f"STATE_{verdict.value}")
        why = {
            Verdict.USED: "This login was already completed (the page was reloaded or replayed).",
            Verdict.EXPIRED: "This login took too long (more than 10 minutes).",
            Verdict.UNKNOWN: "This login was not started here.",
        }[verdict]
        return _page("Login not accepted", [why, "Start again from your login link or the login form."], 400,
                     links=[("Log in", _login_path(deps))])

    # From here the caller is proven to have come through a link or the key: a failure
    # page may offer a fresh one-time link to try again.
    auth_code = args.get("auth_code", "")
    if args.get("s", "ok") != "ok" or not auth_code:
        fyers_code, fyers_message = args.get("code", ""), args.get("message", "")
        _audit(deps, request, "callback_refused", "refused", now, reason="FYERS_LOGIN_FAILED",
               message=f"{fyers_code}: {fyers_message}"[:300], broker_code=_int(fyers_code))
        return _failure(deps, now, "Fyers did not log you in", [
            f"Fyers answered: {fyers_message or 'no auth code'} ({fyers_code or 'no code'}).",
        ], 400)

    settings = deps.settings
    app_id = _secret(deps, request, now, APP_ID_SECRET, "token_exchange")
    app_secret = _secret(deps, request, now, APP_SECRET_SECRET, "token_exchange")
    try:
        pair = _exchange(app_id, app_secret, auth_code, settings)
    except BrokerRejected as exc:
        _audit(deps, request, "token_exchange", "refused", now, reason=exc.code,
               message=exc.broker_message, broker_code=exc.broker_code)
        return _failure(deps, now, "Fyers refused the login code", [
            f"Fyers answered {exc.broker_code}: {exc.broker_message or 'no message'}.",
            "A login code works once and only for a few hours. Log in again.",
        ], 400)
    except BrokerError as exc:
        _audit(deps, request, "token_exchange", "failed", now, reason=exc.code, message=exc.message,
               broker_code=exc.broker_code)
        return _failure(deps, now, "Fyers could not be reached", [
            exc.message, "The login code may be spent. Log in again.",
        ], 502)

    try:
        deps.secrets.put(ACCESS_TOKEN_SECRET, pair.access_token)
        if pair.refresh_token:
            deps.secrets.put(REFRESH_TOKEN_SECRET, pair.refresh_token)
    except Exception as exc:  # noqa: BLE001 - any storage failure gets the same page
        reason = exc.code if isinstance(exc, RouterError) else type(exc).__name__
        log.error("the new Fyers token could not be stored", extra={"fields": {"error": reason}})
        _audit(deps, request, "token_store", "failed", now, reason=reason)
        return _failure(deps, now, "The token could not be stored", [
            "Fyers logged you in, but the router could not save the session, so orders cannot use it.",
            "Check the secret store's configuration, then log in again.",
        ], 500)

    return _logged_in(request, deps, now, app_id, pair)


def _exchange(app_id: str, app_secret: str, auth_code: str, settings: Settings) -> Any:
    from common.broker.auth import exchange_auth_code

    return exchange_auth_code(app_id, app_secret, auth_code, api_base=settings.fyers_api_base,
                              connect_timeout=settings.broker_connect_timeout,
                              read_timeout=settings.broker_read_timeout)


def _logged_in(request: Any, deps: AuthDeps, now: datetime, app_id: str, pair: Any) -> Answer:
    from common.broker import FyersBroker

    broker = FyersBroker.from_settings(deps.settings, app_id, lambda: pair.access_token)
    fy_id = name = note = None
    try:
        profile = broker.profile()
        fy_id, name = profile.fy_id or None, profile.name or None
    except TokenDead as exc:
        deps.sessions().mark_needs_login("TOKEN_REJECTED", exc.message, now)
        _audit(deps, request, "profile", "refused", now, reason=exc.code, message=exc.broker_message,
               broker_code=exc.broker_code)
        return _failure(deps, now, "Fyers refused the new session", [exc.message], 502)
    except BrokerError as exc:
        # The token is stored and probably good; the profile is only for display.
        note = f"Profile not read: {exc.message}"
        log.warning("profile not read after login", extra={"fields": {"error": exc.code}})

    sessions = deps.sessions()
    sessions.mark_authenticated(fy_id=fy_id, name=name, expires_at=pair.expires_at, now=now, message=note)
    until = _ist(pair.expires_at) if pair.expires_at else "an unknown time (the token's expiry is unreadable)"
    who = fy_id or "an unknown account"
    _audit(deps, request, "logged_in", "ok", now, fy_id=fy_id,
           message=f"valid until {pair.expires_at.isoformat()}" if pair.expires_at else None)
    deps.notifier.send(Notification(
        kind=NotificationKind.LOGGED_IN, severity=Severity.INFO, title=f"Fyers login: {who}",
        text=f"valid until {until}", fields={"fy_id": fy_id}, at=now,
    ))
    log.info("logged in to Fyers", extra={"fields": {"fy_id": fy_id, "expires_at": pair.expires_at}})
    lines = [f"Logged in as {who}; valid until {until}."]
    if note:
        lines.append(note)
    lines.append("You can close this page.")
    return _page("Logged in", lines, 200)


def _failure(deps: AuthDeps, now: datetime, title: str, lines: list[str], status: int) -> Answer:
    """A failure page after a valid state, with a fresh one-time link to try again."""
    links: list[tuple[str, str]] = []
    try:
        link = mint_login_link(deps.db(), now, _link_ttl(deps), timeout=deps.settings.firestore_timeout)
        links.append(("Try again", f"{_login_path(deps)}?link={link.token}"))
    except Exception:  # noqa: BLE001 - the page is still useful without the button
        log.warning("no retry link for the failure page", exc_info=True)
        links.append(("Log in with the operator key", _login_path(deps)))
    return _page(title, lines, status, links=links)


def _link_ttl(deps: AuthDeps) -> timedelta:
    return timedelta(seconds=deps.settings.login_link_ttl_seconds)


# --- / (status) -----------------------------------------------------------------------


def _status(deps: AuthDeps) -> Answer:
    session = deps.sessions().get()
    rows = [("Session", session.status)]
    if session.expires_at:
        rows.append(("Valid until", _ist(session.expires_at)))
    if session.checked_at:
        rows.append(("Last checked", _ist(session.checked_at)))
    if session.message:
        rows.append(("Note", session.message))
    body = "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in rows) + "</dl>"
    return _page("Fyers session", [], 200, raw=body, links=[("Log in", _login_path(deps))])


# --- helpers --------------------------------------------------------------------------


def _secret(deps: AuthDeps, request: Any, now: datetime, name: str, step: str) -> str:
    value = deps.secrets.get_optional(name)
    if value:
        return value
    _audit(deps, request, step, "failed", now, reason="CONFIG_ERROR", message=f"{name} is not set")
    raise _Refusal(_page("Login is not configured", [f"The secret {name} is not set."], 500))


def _audit(deps: AuthDeps, request: Any, kind: str, outcome: str, now: datetime, **fields: Any) -> None:
    try:
        deps.sessions().record_event(auth_event(kind, outcome, now, source_ip=_source_ip(request), **fields))
    except Exception:  # noqa: BLE001 - an audit failure never changes the answer
        log.warning("auth event not written", exc_info=True)
    log.info("auth %s: %s", kind, outcome, extra={"fields": {"reason": fields.get("reason")}})


def _source_ip(request: Any) -> str | None:
    # Cloud Run appends the caller's address last; earlier entries are the client's own claims.
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    return hops[-1] if hops else request.remote_addr


def _login_path(deps: AuthDeps) -> str:
    return _public_path(deps, "login")


def _public_path(deps: AuthDeps, route: str) -> str:
    """The address of one of our routes: under AUTH_PUBLIC_URL, else relative (it resolves
    next to the current route, with or without the function's name in the path)."""
    base = deps.settings.auth_public_url.rstrip("/")
    return f"{base}/{route}" if base else (route or "./")


def _ist(moment: datetime) -> str:
    """``06:00 IST on Wed 15 Jul 2026``."""
    local = moment.astimezone(IST)
    return local.strftime("%H:%M IST on %a %d %b %Y")


def _int(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _page(title: str, lines: list[str], status: int, *, raw: str = "",
          links: list[tuple[str, str]] | None = None) -> Answer:
    """A plain HTML page: escaped title and lines, then ``raw`` (already-escaped markup), then links."""
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    anchors = "".join(f'<p><a href="{html.escape(href)}">{html.escape(text)}</a></p>' for text, href in links or [])
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{paragraphs}{raw}{anchors}</body></html>"
    )
    return document, status, dict(_HEADERS)

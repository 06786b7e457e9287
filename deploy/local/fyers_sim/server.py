"""A local Fyers v3 server: the routes, envelopes and failures of fyers-v3.md §12.

Stdlib only (``http.server``), threaded, on 127.0.0.1. Use it in process::

    sim = FyersSimulator(masters=[csv_text_or_path], apps={"APPID-100": "SECRET"})
    sim.start()                      # port 0 = a free port
    sim.api_base, sim.data_base      # http://127.0.0.1:PORT/api/v3, .../data
    token = sim.mint_token("APPID-100")
    sim.add_fault("no_ack", route=PLACE, record=True)
    sim.stop()

or as a process (``python -m deploy.local.fyers_simulator``), driven over HTTP
by the ``/_sim/...`` control routes (see :meth:`FyersSimulator._control`).
"""

from __future__ import annotations

import html
import json
import math
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable

from deploy.local.fyers_sim.exchange import MARGIN_SHORTFALL, Exchange, Refusal
from deploy.local.fyers_sim.faults import POST_AUTH, PRE_AUTH, Fault, FaultQueue
from deploy.local.fyers_sim.instruments import Prices, load_masters
from deploy.local.fyers_sim.ratelimit import RateLimiter
from deploy.local.fyers_sim.tokens import IST, TokenStore

API, DATA = "/api/v3", "/data"
PLACE = f"POST {API}/orders/sync"
MODIFY = f"PATCH {API}/orders/sync"
CANCEL = f"DELETE {API}/orders/sync"
ORDERBOOK = f"GET {API}/orders"
POSITIONS = f"GET {API}/positions"
TRADEBOOK = f"GET {API}/tradebook"
PROFILE = f"GET {API}/profile"
FUNDS = f"GET {API}/funds"
QUOTES = f"GET {DATA}/quotes"
MAX_QUOTES = 50
REFRESH_DISABLED = "Refresh token API is currently disabled to comply with SEBI regulations."
_AUTH_ROUTES = {f"GET {API}/generate-authcode", f"POST {API}/validate-authcode", f"POST {API}/validate-refresh-token"}
_HTML_503 = "<html><head><title>503 Service Temporarily Unavailable</title></head><body>503</body></html>"
_HTML_504 = "<html><head><title>504 Gateway Time-out</title></head><body>504</body></html>"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    app_id: str
    token: str

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Reply:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False


def _ok(code: int = 200, message: str = "", **payload: Any) -> Reply:
    return Reply(200, {"s": "ok", "code": code, "message": message, **payload})


def _error(status: int, code: int, message: str) -> Reply:
    return Reply(status, {"s": "error", "code": code, "message": message})


class FyersSimulator:
    """The simulated broker: state, faults, and an HTTP server in front of them."""

    def __init__(
        self,
        masters: Iterable[str | Path] = (),
        apps: dict[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auto_approve: bool = False,
        rate_per_second: int = 10,
        rate_per_minute: int = 200,
        block_after_minute_breaches: int | None = 3,
        freeze_qty: dict[str, int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instruments = load_masters(masters)
        self.prices = Prices(self.instruments)
        self.tokens = TokenStore(apps or {})
        self.exchange = Exchange(self.instruments, self.prices, self.now)
        self.exchange.freeze_qty = dict(freeze_qty or {})
        self.faults = FaultQueue()
        self.limiter = RateLimiter(rate_per_second, rate_per_minute,
                                   block_after_minute_breaches=block_after_minute_breaches, monotonic=monotonic)
        self._rate_defaults = (rate_per_second, rate_per_minute)
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._clock_override: datetime | None = None
        self.auto_approve = auto_approve
        self._log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> "FyersSimulator":
        server = _Server(self._address, _Handler)
        server.sim = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fyers-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FyersSimulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API

    @property
    def data_base(self) -> str:
        return self.base_url + DATA

    # --- in-process controls --------------------------------------------------

    def now(self) -> datetime:
        return self._clock_override or self._clock()

    def set_clock(self, now: datetime | None) -> None:
        """Freeze the simulator's clock at ``now`` (aware), or return to the injected clock."""
        if now is not None and now.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")
        self._clock_override = now

    def set_price(self, ticker: str, ltp: float) -> None:
        """Set a ticker's LTP; pending orders on it fill if they now can."""
        self.prices.set(ticker, ltp)
        self.exchange.on_price(ticker)

    def add_fault(self, kind: str, route: str = "*", count: int = 1, **params: Any) -> None:
        """Queue a fault for the next ``count`` calls of ``route`` (see ``faults.py``)."""
        if kind == "expire_tokens":
            self.tokens.expire_all()
            return
        self.faults.add(Fault(kind, route, count, **params))

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    def mint_token(self, app_id: str, expires_at: datetime | None = None) -> str:
        """A valid access token for a known app, without the login dance."""
        if app_id not in self.tokens.apps:
            raise KeyError(f"unknown app {app_id}")
        return self.tokens.issue_access_token(app_id, self.now(), expires_at)

    def set_rate_limits(self, per_second: int, per_minute: int) -> None:
        self.limiter.per_second, self.limiter.per_minute = per_second, per_minute

    def reset(self) -> None:
        """Forget orders, trades, positions, faults, tokens, prices, the log and rate windows."""
        self.exchange.reset()
        self.faults.clear()
        self.tokens.clear()
        self.prices.clear()
        self.limiter.reset()
        self.set_rate_limits(*self._rate_defaults)
        self._clock_override = None
        with self._log_lock:
            self._log.clear()

    @property
    def orders(self) -> list[dict[str, Any]]:
        return self.exchange.orders()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every API request so far: method, path, query, body, app_id, status, time."""
        with self._log_lock:
            return [dict(entry) for entry in self._log]

    @property
    def rate_breaches(self) -> dict[str, dict[str, int]]:
        return self.limiter.snapshot()[0]

    # --- dispatch -----------------------------------------------------------

    def respond(self, req: Request) -> Reply:
        """Answer one request, and log it (control routes are not logged)."""
        if req.path.startswith("/_sim/"):
            return self._control(req)
        reply = self._answer(req)
        entry = {
            "method": req.method, "path": req.path, "query": req.query, "body": req.body,
            "app_id": req.app_id, "status": None if reply.reset else reply.status, "time": self.now().isoformat(),
        }
        with self._log_lock:
            self._log.append(entry)
        return reply

    def _answer(self, req: Request) -> Reply:
        handler = _ROUTES.get(req.route)
        if handler is None:
            return _error(404, -404, f"No route {req.route}")
        if req.app_id and req.route not in _AUTH_ROUTES:
            wait = self.limiter.admit(req.app_id)
            if wait is not None:
                return self._too_many(wait)
        pre = self.faults.take(req.route, PRE_AUTH)
        late = pre if pre is not None and pre.record and pre.kind in ("hang", "reset_connection") else None
        if pre is not None and late is None:
            if pre.kind == "rate_limit":
                return self._too_many(pre.retry_after_ms / 1000)
            if pre.kind == "http_503_html":
                return Reply(503, _HTML_503)
            if pre.kind == "hang":
                if pre.land_after is not None:  # the OMS books it later, after the client gave up
                    threading.Timer(pre.land_after, self._land_late, args=(req,)).start()
                return Reply(504, _HTML_504, delay=pre.seconds)
            return Reply(0, "", reset=True)
        if req.route not in _AUTH_ROUTES:
            refused = self._authenticate(req)
            if refused is not None:
                return refused
        post = self.faults.take(req.route, POST_AUTH)
        if post is not None and post.kind == "algo_not_allowed":
            return Reply(200, {"s": "error", "code": -50, "message": (
                "Request rejected: Order placement restricted. "
                f"Algo orders are not allowed from this app {req.app_id}")})
        if post is not None and post.kind == "reject":
            return _error(400, -99, post.message or "Order rejected by RMS")
        if post is not None and post.kind == "no_ack" and not post.record:
            return self._no_ack()
        try:
            reply = handler(self, req, post)
        except Refusal as refusal:
            reply = _error(refusal.http_status, refusal.code, refusal.message)
        if post is not None and post.kind == "no_ack" and reply.status == 200:
            reply = self._no_ack()
        if late is not None:  # processed, then answered late (hang) or never (reset)
            reply.delay, reply.reset = (late.seconds, False) if late.kind == "hang" else (0.0, True)
        return reply

    def _land_late(self, req: Request) -> None:
        """Process a request whose answer was lost: what a slow OMS does after the client gave up."""
        if self._authenticate(req) is None:
            try:
                _ROUTES[req.route](self, req, None)
            except Refusal:
                pass

    def _authenticate(self, req: Request) -> Reply | None:
        data = req.path.startswith(DATA + "/")
        state = self.tokens.check(req.app_id, req.token, self.now()) if req.token else "unknown"
        if state == "ok":
            return None
        if data:
            return _error(401, -15, "Please provide valid token")
        if state == "expired":
            return _error(401, -8, "Your token has expired. Please generate a token")
        return _error(401, -16, "Could not authenticate the user")

    @staticmethod
    def _too_many(wait: float) -> Reply:
        reply = _error(429, -429, "Request limit reached")
        reply.headers = {
            "Retry-After": str(max(1, math.ceil(wait))),
            "X-Retry-After-Ms": str(max(1, round(wait * 1000))),
        }
        return reply

    @staticmethod
    def _no_ack() -> Reply:
        return Reply(200, {"s": "ok", "code": 201, "message": (
            "Order request not acknowledged. Check the order book before placing it again."), "id": ""})

    # --- routes ---------------------------------------------------------------

    def _generate_authcode(self, req: Request, _: Fault | None) -> Reply:
        q = req.query
        app_id, redirect_uri, state = q.get("client_id", ""), q.get("redirect_uri", ""), q.get("state", "")
        if app_id not in self.tokens.apps:
            return _error(400, -352, "Invalid App ID")
        if not redirect_uri:
            return _error(400, -50, "redirect_uri is required")
        if not (self.auto_approve or q.get("approve") == "1"):
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in q.items() if k != "approve"
            )
            page = (f"<html><body><h1>Fyers simulator login</h1><p>App {html.escape(app_id)}</p>"
                    f'<form method="get" action="{API}/generate-authcode">{hidden}'
                    '<input type="hidden" name="approve" value="1"><button type="submit">Approve</button>'
                    "</form></body></html>")
            return Reply(200, page)
        code = self.tokens.issue_auth_code(app_id, self.now())
        params = urllib.parse.urlencode({"s": "ok", "code": 200, "auth_code": code, "state": state})
        location = redirect_uri + ("&" if "?" in redirect_uri else "?") + params
        return Reply(302, "", headers={"Location": location})

    def _validate_authcode(self, req: Request, _: Fault | None) -> Reply:
        body = req.body if isinstance(req.body, dict) else {}
        if not body.get("code"):
            return _error(400, -441, "auth code is required")
        if not body.get("appIdHash"):
            return _error(400, -371, "Please provide sha256 hash of appId and app secret")
        result = self.tokens.redeem_auth_code(str(body["code"]), str(body["appIdHash"]), self.now())
        if result == "bad_code":
            return _error(400, -437, "invalid auth code")
        if result == "bad_hash":
            return _error(400, -371, "Please provide sha256 hash of appId and app secret")
        access, refresh = result
        return _ok(access_token=access, refresh_token=refresh)

    def _refresh(self, req: Request, _: Fault | None) -> Reply:
        return _error(400, -16, REFRESH_DISABLED)

    def _logout(self, req: Request, _: Fault | None) -> Reply:
        self.tokens.revoke(req.token)
        return _ok(message="you are successfully logged out")

    def _profile(self, req: Request, _: Fault | None) -> Reply:
        return _ok(data={
            "fy_id": "XY12345", "name": "SIM TRADER", "display_name": "SIM", "email_id": "s***@example.com",
            "PAN": "XXXXX1234X", "mobile_number": "******1234", "totp": True, "pwd_to_expire": 90,
        })

    def _funds(self, req: Request, _: Fault | None) -> Reply:
        return _ok(fund_limit=self.exchange.funds())

    def _orderbook(self, req: Request, fault: Fault | None) -> Reply:
        order_id, tag = req.query.get("id"), req.query.get("order_tag")
        return _ok(orderBook=_maybe_reversed(self.exchange.orders(order_id=order_id, tag=tag), fault))

    def _tradebook(self, req: Request, fault: Fault | None) -> Reply:
        return _ok(tradeBook=_maybe_reversed(self.exchange.trades(tag=req.query.get("order_tag")), fault))

    def _positions(self, req: Request, fault: Fault | None) -> Reply:
        positions = self.exchange.positions()
        positions["netPositions"] = _maybe_reversed(positions["netPositions"], fault)
        return _ok(**positions)

    def _place(self, req: Request, fault: Fault | None) -> Reply:
        if not isinstance(req.body, dict):
            return _error(400, -50, "Invalid input")
        reject = (fault.message or MARGIN_SHORTFALL) if fault is not None and fault.kind == "async_reject" else None
        orders = self.exchange.place(req.body, reject_message=reject)
        answers = [
            {"s": "ok", "code": 1101, "message": f"Order submitted successfully. Your Order Ref. No.{o['id']}",
             "id": o["id"]}
            for o in orders
        ]
        if len(answers) == 1:
            return Reply(200, answers[0])
        return _ok(1101, f"{len(answers)} slice orders submitted successfully", data=answers)

    def _modify(self, req: Request, _: Fault | None) -> Reply:
        order = self.exchange.modify(req.body if isinstance(req.body, dict) else {})
        return _ok(1102, "Successfully modified order", id=order["id"])

    def _cancel(self, req: Request, _: Fault | None) -> Reply:
        body = req.body if isinstance(req.body, dict) else {}
        order = self.exchange.cancel(str(body.get("id", "")))
        return _ok(1103, "Successfully cancelled order", id=order["id"])

    def _exit_positions(self, req: Request, _: Fault | None) -> Reply:
        body = req.body if isinstance(req.body, dict) else {}
        count = self.exchange.exit_positions(None if body.get("exit_all") else str(body.get("id", "")))
        return _ok(message=f"Exit requests placed for {count} position(s)")

    def _quotes(self, req: Request, fault: Fault | None) -> Reply:
        symbols = [s for s in req.query.get("symbols", "").split(",") if s]
        if not symbols:
            return _error(400, -300, "Please provide a valid symbol")
        if len(symbols) > MAX_QUOTES:
            return _error(400, -50, f"Maximum {MAX_QUOTES} symbols allowed")
        items = self.exchange.quotes(symbols, self.now())
        if all(item["s"] == "error" for item in items):
            return _error(400, -300, "Please provide a valid symbol")
        return _ok(d=_maybe_reversed(items, fault))

    def _market_status(self, req: Request, _: Fault | None) -> Reply:
        local = self.now().astimezone(IST)
        minutes = local.hour * 60 + local.minute
        status = "OPEN" if local.weekday() < 5 and 9 * 60 + 15 <= minutes < 15 * 60 + 30 else "CLOSED"
        return _ok(marketStatus=[
            {"exchange": exchange, "segment": segment, "market_type": "NORMAL", "status": status}
            for exchange, segment in ((10, 10), (10, 11), (12, 10), (12, 11))
        ])

    # --- control routes (/_sim/...) -------------------------------------------

    def _control(self, req: Request) -> Reply:
        """``POST /_sim/reset | faults | prices | token | clock``; ``GET /_sim/orders | requests | faults | stats``."""
        body = req.body if isinstance(req.body, dict) else {}
        try:
            if req.route == "POST /_sim/reset":
                self.reset()
                return Reply(200, {"ok": True})
            if req.route == "POST /_sim/faults":
                params = {k: v for k, v in body.items() if k != "kind"}
                self.add_fault(str(body.get("kind", "")), **params)
                return Reply(200, {"ok": True, "pending": self.faults.pending()})
            if req.route == "POST /_sim/prices":
                for ticker, ltp in dict(body.get("prices", {})).items():
                    self.set_price(ticker, ltp)
                return Reply(200, {"ok": True})
            if req.route == "POST /_sim/token":
                expires = datetime.fromisoformat(body["expires_at"]) if body.get("expires_at") else None
                token = self.mint_token(str(body.get("app_id", "")), expires)
                return Reply(200, {"access_token": token})
            if req.route == "POST /_sim/clock":
                self.set_clock(datetime.fromisoformat(body["now"]) if body.get("now") else None)
                return Reply(200, {"now": self.now().isoformat()})
            if req.route == "GET /_sim/orders":
                return Reply(200, {"orders": self.orders})
            if req.route == "GET /_sim/requests":
                return Reply(200, {"requests": self.requests})
            if req.route == "GET /_sim/faults":
                return Reply(200, {"pending": self.faults.pending()})
            if req.route == "GET /_sim/stats":
                breaches, blocked = self.limiter.snapshot()
                return Reply(200, {"rate_breaches": breaches, "blocked": blocked,
                                   "requests": len(self.requests), "orders": len(self.orders)})
        except (KeyError, TypeError, ValueError) as exc:
            return Reply(400, {"error": str(exc)})
        return Reply(404, {"error": f"no control route {req.route}"})


def _maybe_reversed(items: list[Any], fault: Fault | None) -> list[Any]:
    return items[::-1] if fault is not None and fault.kind == "shuffle" else items


_ROUTES: dict[str, Callable[[FyersSimulator, Request, Fault | None], Reply]] = {
    f"GET {API}/generate-authcode": FyersSimulator._generate_authcode,
    f"POST {API}/validate-authcode": FyersSimulator._validate_authcode,
    f"POST {API}/validate-refresh-token": FyersSimulator._refresh,
    f"POST {API}/logout": FyersSimulator._logout,
    PROFILE: FyersSimulator._profile,
    FUNDS: FyersSimulator._funds,
    ORDERBOOK: FyersSimulator._orderbook,
    TRADEBOOK: FyersSimulator._tradebook,
    POSITIONS: FyersSimulator._positions,
    PLACE: FyersSimulator._place,
    MODIFY: FyersSimulator._modify,
    CANCEL: FyersSimulator._cancel,
    f"DELETE {API}/positions": FyersSimulator._exit_positions,
    QUOTES: FyersSimulator._quotes,
    f"GET {DATA}/marketStatus": FyersSimulator._market_status,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler must not block stop()
    request_queue_size = 128  # the default backlog (5) drops bursts of concurrent connects
    sim: FyersSimulator


class _Handler(BaseHTTPRequestHandler):
    """Turns one HTTP exchange into a :class:`Request` and writes the :class:`Reply`."""

    server: _Server
    server_version = "fyers-sim/1"

    def log_message(self, format: str, *args: Any) -> None:  # the simulator keeps its own log
        pass

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        app_id, _, token = (self.headers.get("Authorization") or "").partition(":")
        reply = self.server.sim.respond(Request(self.command, url.path, query, body, app_id.strip(), token.strip()))
        if reply.delay:
            time.sleep(reply.delay)
        if reply.reset:
            # Linger 0: close() sends a TCP RST, as a dropped load-balancer connection does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        is_json = isinstance(reply.body, dict)
        payload = (json.dumps(reply.body) if is_json else reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json" if is_json else "text/html")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (a hang outlived its timeout)
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

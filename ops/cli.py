"""The operator's command line: orders, one order's story, positions and trades, the switches,
test alerts, jobs.

    python -m ops orders [--day YYYY-MM-DD] [--limit N] [--status S[,S]]
    python -m ops show ORDER_ID
    python -m ops positions              # each strategy's legs, in flight, realised P&L
    python -m ops trades [--day YYYY-MM-DD]
    python -m ops kill on|off            # on = trading disabled
    python -m ops dry-run on|off
    python -m ops controls
    python -m ops session
    python -m ops alert --url URL [--secret S] [--symbol NIFTY --strike ATM --type CE
                        --expiry WEEKLY --lots 1 --action BUY --dry-run]
    python -m ops job NAME --url URL [--identity-token auto|gcloud|none]

Firestore commands read the project in ``--project`` or ``GOOGLE_CLOUD_PROJECT``: the
emulator when ``FIRESTORE_EMULATOR_HOST`` is set (the local stack prints the export
lines), otherwise the real project with Application Default Credentials. Output is
plain text; times are IST. Exit status: 0 done, 1 failed or not found, 2 bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import subprocess
import sys
import warnings
from datetime import date, datetime, timezone
from typing import Any, Collection, Iterable, Mapping, Sequence, TextIO

from common.clock import Clock, wall_clock
from common.controls import Controls, ControlsReader, write_controls
from common.ledger import InFlight, Ledger, Position, Trade
from common.logs import redact
from common.records import IST, OrderEvent, OrderRecord, OrderStatus, ist_day, today_ist

FIRESTORE_TIMEOUT = 10.0
HTTP_TIMEOUT = 15.0
IDENTITY_TOKEN_TIMEOUT = 30.0

ORDER_COLUMNS = ("TIME (IST)", "ORDER ID", "STRATEGY", "SYMBOL", "SIDE", "QTY", "STATUS", "BROKER ID", "REASON")
EVENT_COLUMNS = ("TIME (IST)", "FROM → TO", "REASON", "MESSAGE", "BROKER", "LATENCY", "BY")
LEG_COLUMNS = ("TICKER", "SIDE", "LOTS", "QTY", "AVG PRICE", "PRODUCT", "OPENED (IST)", "ORDERS")
FLAT_COLUMNS = ("STRATEGY", "INSTRUMENT", "REALISED P&L", "LAST CHANGE (IST)")
TRADE_COLUMNS = ("CLOSED (IST)", "STRATEGY", "TICKER", "SIDE", "LOTS", "QTY", "ENTRY", "EXIT", "P&L",
                 "OPENED (IST)", "EXIT ORDER")
TOTAL_COLUMNS = ("STRATEGY", "TRADES", "QTY", "P&L")
NUMBER_COLUMNS = frozenset({"LOTS", "QTY", "AVG PRICE", "ENTRY", "EXIT", "P&L", "REALISED P&L", "TRADES"})


class CliError(Exception):
    """A failure worth one line to the operator (exit status 1)."""


# --- plain-text tables ----------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], widths: Mapping[str, int] | None = None,
          *, right: Collection[str] = ()) -> str:
    """An aligned text table. Cells are ``str()``-ed, ``None`` shows as ``-``; a column
    named in ``widths`` is cut to that many characters (ending in ``…``), and one named
    in ``right`` (numbers) is right-aligned."""
    limits = widths or {}
    cells = [[_cell(value, limits.get(header)) for header, value in zip(headers, row)] for row in rows]
    sizes = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]

    def line(texts: Sequence[str]) -> str:
        return "  ".join(t.rjust(w) if h in right else t.ljust(w) for h, t, w in zip(headers, texts, sizes)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in sizes)] + [line(row) for row in cells])


def _cell(value: Any, limit: int | None) -> str:
    text = "-" if value is None or value == "" else " ".join(str(value).split())
    return text[: limit - 1] + "…" if limit and len(text) > limit else text


def ist_time(moment: datetime | None, *, with_date: bool = False, millis: bool = False) -> str | None:
    """``14:03:07`` (or ``2026-11-23 14:03:07``) in IST; None stays None."""
    if moment is None:
        return None
    local = moment.astimezone(IST)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
    return text + f".{local.microsecond // 1000:03d}" if millis else text


# --- orders ---------------------------------------------------------------------------


def symbol_of(record: OrderRecord) -> str:
    """The resolved Fyers ticker, or the alert's own words while it is unresolved."""
    if record.contract is not None:
        return record.contract.ticker
    alert = record.alert or {}
    words = [record.symbol] + [str(alert[key]) for key in ("expiry", "strike", "option_type") if alert.get(key)]
    return " ".join(words)


def _quantity(record: OrderRecord) -> str:
    if record.quantity is not None:
        return str(record.quantity)
    return f"{record.lots} lot" + ("s" if record.lots != 1 else "")


def _reason(record: OrderRecord) -> str | None:
    code = record.reason if record.reason != record.status else None  # "PLACED: Placed..." says it twice
    parts = [part for part in (code, record.message) if part]
    return ": ".join(parts) or None


def orders_table(records: Sequence[OrderRecord]) -> str:
    """The orders as a table, in the order given."""
    rows = [(ist_time(r.created_at), r.order_id, r.strategy, symbol_of(r), r.action, _quantity(r), r.status,
             r.broker_order_id, _reason(r)) for r in records]
    return table(ORDER_COLUMNS, rows, {"STRATEGY": 16, "SYMBOL": 28, "REASON": 70})


def recent_orders(db: Any, day: str, *, statuses: list[OrderStatus] | None = None, limit: int = 20) -> list[OrderRecord]:
    """An IST day's orders, newest first, at most ``limit``."""
    from common.orders import OrderStore

    records = OrderStore(db, timeout=FIRESTORE_TIMEOUT).orders_of_day(day, statuses)
    records.sort(key=lambda r: r.created_at, reverse=True)
    return records[:limit]


def order_report(record: OrderRecord, events: Sequence[OrderEvent]) -> str:
    """One order: every known field, then its events, oldest first."""
    fields = redact(record.to_firestore())
    width = max(len(key) for key in fields)
    lines = [f"Order {record.order_id}: {record.status}", ""]
    lines += [f"  {key.ljust(width)}  {_field(value)}" for key, value in fields.items() if key != "order_id"]
    lines += ["", f"Events ({len(events)})"]
    rows = [(ist_time(e.at, millis=True), f"{e.from_status or '∅'} → {e.to_status}", e.reason, e.message,
             " ".join(str(part) for part in (e.broker_code, e.broker_message) if part is not None) or None,
             f"{e.latency_ms:.0f} ms" if e.latency_ms is not None else None, e.by) for e in events]
    lines.append(table(EVENT_COLUMNS, rows, {"MESSAGE": 60, "BROKER": 50}))
    return "\n".join(lines)


def _field(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{ist_time(value, with_date=True, millis=True)} IST"
    if isinstance(value, dict):
        value = {key: item for key, item in value.items() if item is not None}
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
    return str(value)


# --- positions and trades -------------------------------------------------------------


def money(value: float) -> str:
    """A P&L as the trader's notifications show it: ``+1,234.00``, ``-500.00``."""
    return f"{value:+,.2f}"


def _price(value: float) -> str:
    return f"{value:,.2f}"


def _lots(lots: int, *, shares: bool = False) -> str:
    unit = "share" if shares else "lot"
    return f"{lots} {unit}" + ("s" if lots != 1 else "")


def _opened(moment: datetime, day: date) -> str | None:
    """The time alone on ``day``, with its date otherwise (a position carried over)."""
    return ist_time(moment, with_date=moment.astimezone(IST).date() != day)


def _view(position: Position) -> str:
    """``long 2 lots`` (``long 10 shares`` for a stock): the strategy's view, in which a long put is short."""
    if not position.legs:
        return "flat"
    exposure = position.exposure
    if exposure == 0:
        return "hedged, 0 lots net"
    shares = all(leg.lot_size == 1 for leg in position.legs)  # a stock's lot is one share
    return f"{'long' if exposure > 0 else 'short'} {_lots(abs(exposure), shares=shares)}"


def positions_report(positions: Sequence[Position], *, today: date) -> str:
    """Each strategy's position per instrument: its legs, the quantity in flight and the
    realised P&L so far. Open ones (legs or orders in flight) first, then the flat ones."""
    ordered = sorted(positions, key=lambda p: (p.strategy, p.instrument))
    held = [p for p in ordered if p.legs or _in_flight(p)]
    flat = [p for p in ordered if not (p.legs or _in_flight(p))]
    blocks = [_position_block(p, today) for p in held] or ["No open positions."]
    if flat:
        rows = [(p.strategy, p.instrument, money(p.realised_pnl), ist_time(p.updated_at, with_date=True)) for p in flat]
        blocks.append("Flat:\n" + table(FLAT_COLUMNS, rows, {"STRATEGY": 24}, right=NUMBER_COLUMNS))
    blocks.append(f"Realised P&L so far, all strategies: {money(sum(p.realised_pnl for p in positions))}")
    return "\n\n".join(blocks)


def _in_flight(position: Position) -> list[InFlight]:
    return [item for item in position.in_flight if item.quantity > 0]


def _position_block(position: Position, today: date) -> str:
    heading = f"{position.strategy} · {position.instrument}: {_view(position)}"
    lines = [f"{heading}, realised P&L so far {money(position.realised_pnl)}"]
    if position.legs:
        rows = [(leg.ticker, leg.side, leg.lots, leg.quantity, _price(leg.avg_price), leg.product,
                 _opened(leg.opened_at, today), _orders(leg.orders)) for leg in position.legs]
        lines += ["  " + line for line in table(LEG_COLUMNS, rows, right=NUMBER_COLUMNS).splitlines()]
    for item in _in_flight(position):
        to = "open" if item.effect == "OPEN" else "close"
        lines.append(f"  in flight (placed, not filled): {item.side} {item.ticker} x{item.quantity} to {to}, "
                     f"order {item.order_id}" + (f", Fyers {item.broker_order_id}" if item.broker_order_id else ""))
    return "\n".join(lines)


def _orders(order_ids: Sequence[str], shown: int = 2) -> str:
    """The orders that built a leg: the first few, then how many more (``show`` tells each)."""
    more = len(order_ids) - shown
    return ", ".join(order_ids[:shown]) + (f" (+{more} more)" if more > 0 else "")


def trades_report(trades: Sequence[Trade], day: str) -> str:
    """A day's closed trades in the order they closed, then the P&L per strategy and overall."""
    on = date.fromisoformat(day)
    rows = [(ist_time(t.closed_at), t.strategy, t.ticker, t.side, t.lots, t.quantity, _price(t.entry_price),
             _price(t.exit_price), money(t.realised_pnl), _opened(t.opened_at, on), t.exit_order) for t in trades]
    per_strategy: dict[str, list[Trade]] = {}
    for trade in trades:
        per_strategy.setdefault(trade.strategy, []).append(trade)
    totals = [(name, len(group), sum(t.quantity for t in group), money(sum(t.realised_pnl for t in group)))
              for name, group in sorted(per_strategy.items())]
    totals.append(("all strategies", len(trades), sum(t.quantity for t in trades),
                   money(sum(t.realised_pnl for t in trades))))
    return "\n".join([f"Trades closed on {day} (oldest first):",
                      table(TRADE_COLUMNS, rows, {"STRATEGY": 16}, right=NUMBER_COLUMNS), "",
                      f"Realised P&L on {day}:", table(TOTAL_COLUMNS, totals, {"STRATEGY": 24}, right=NUMBER_COLUMNS)])


# --- switches and state ---------------------------------------------------------------


def set_control(db: Any, field: str, value: bool, *, by: str, now: datetime) -> Controls:
    """Set one field of ``system/controls``, keeping the others; returns the new controls.

    Read, then replaced (``write_controls``): an edit made in the console between the
    two is lost. The operator is one person; the window is milliseconds."""
    current = ControlsReader(db, ttl=0, timeout=FIRESTORE_TIMEOUT).get()
    updated = current.model_copy(update={field: value, "updated_at": now, "updated_by": by})
    write_controls(db, updated, timeout=FIRESTORE_TIMEOUT)
    return updated


def controls_report(controls: Controls) -> str:
    trading = "ENABLED" if controls.trading_enabled else "DISABLED (kill switch on: orders are blocked)"
    mode = "DRY RUN (broker requests are recorded, never sent)" if controls.dry_run else "LIVE"
    rows = [("trading", trading), ("mode", mode),
            ("max_lots", controls.max_lots if controls.max_lots is not None else "deployment limit"),
            ("note", controls.note), ("updated", _when(controls.updated_at)), ("updated_by", controls.updated_by)]
    return _key_values(rows)


def session_report(db: Any) -> str:
    from common.session import SessionStore

    session = SessionStore(db, timeout=FIRESTORE_TIMEOUT).get()
    rows = [("status", session.status), ("fy_id", session.fy_id), ("name", session.name),
            ("valid until", _when(session.expires_at)), ("logged in", _when(session.logged_in_at)),
            ("checked", _when(session.checked_at)), ("reason", session.reason), ("message", session.message),
            ("login link sent", _when(session.notified_at)),
            ("login link valid until", _when(session.login_link_expires_at))]
    return _key_values(rows)


def _when(moment: datetime | None) -> str | None:
    return f"{ist_time(moment, with_date=True)} IST" if moment else None


def _key_values(rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {'-' if value is None else value}" for key, value in rows)


# --- HTTP: test alerts and scheduler jobs ---------------------------------------------


def example_alert(secret: str, *, symbol: str = "NIFTY", strike: str = "ATM", option_type: str = "CE",
                  expiry: str = "WEEKLY", lots: int = 1, action: str = "BUY", dry_run: bool = False,
                  strategy: str = "ops-cli", now: datetime | None = None) -> dict[str, Any]:
    """A TradingView-style alert body; empty ``strike``/``option_type``/``expiry`` are left out."""
    moment = now or datetime.now(timezone.utc)
    body: dict[str, Any] = {"secret": secret, "action": action, "symbol": symbol, "expiry": expiry,
                            "strike": strike, "optionType": option_type, "lots": lots, "strategy": strategy,
                            "time": moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if dry_run:
        body["dry_run"] = True
    return {key: value for key, value in body.items() if value != ""}


def post_json(url: str, body: Mapping[str, Any] | None, *, headers: Mapping[str, str] | None = None,
              timeout: float = HTTP_TIMEOUT) -> tuple[int, Any]:
    """POST ``body`` as TradingView does (JSON, text/plain); returns (status, JSON or text)."""
    import requests

    data = json.dumps(body).encode() if body is not None else b""
    try:
        response = requests.post(url, data=data, timeout=timeout,
                                 headers={"Content-Type": "text/plain; charset=utf-8", **(headers or {})})
    except requests.RequestException as exc:
        raise CliError(f"{url} did not answer: {type(exc).__name__}") from None
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def identity_token(mode: str, url: str) -> str | None:
    """A Google identity token for a private function: ``gcloud`` insists, ``auto`` tries for https URLs."""
    if mode == "none" or (mode == "auto" and not url.startswith("https://")):
        return None
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        if mode == "gcloud":
            raise CliError("gcloud is not installed: cannot get an identity token.")
        return None
    try:
        done = subprocess.run([gcloud, "auth", "print-identity-token"], capture_output=True, text=True,
                              timeout=IDENTITY_TOKEN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CliError("gcloud auth print-identity-token timed out.") from None
    if done.returncode != 0:
        if mode == "gcloud":
            raise CliError("gcloud auth print-identity-token failed: run `gcloud auth login`.")
        return None
    return done.stdout.strip() or None


# --- commands -------------------------------------------------------------------------


def _firestore(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    from google.cloud import firestore

    project = args.project or environ.get("GOOGLE_CLOUD_PROJECT", "")
    if not project:
        raise CliError("No project: pass --project or export GOOGLE_CLOUD_PROJECT "
                       "(the local stack prints the export lines).")
    return firestore.Client(project=project)


def _cmd_orders(args: argparse.Namespace, db: Any, out: TextIO, now: datetime) -> int:
    day = args.day or ist_day(now)
    records = recent_orders(db, day, statuses=args.status, limit=args.limit)
    if not records:
        wanted = f" with status {','.join(s.value for s in args.status)}" if args.status else ""
        print(f"No orders on {day}{wanted}.", file=out)
        return 0
    print(f"Orders on {day} (newest first, at most {args.limit}):", file=out)
    print(orders_table(records), file=out)
    return 0


def _cmd_show(args: argparse.Namespace, db: Any, out: TextIO, now: datetime) -> int:
    from common.orders import OrderStore

    store = OrderStore(db, timeout=FIRESTORE_TIMEOUT)
    record = store.get(args.order_id)
    if record is None:
        raise CliError(f"No order {args.order_id}.")
    print(order_report(record, store.events(args.order_id)), file=out)
    return 0


def _cmd_positions(args: argparse.Namespace, db: Any, out: TextIO, now: datetime) -> int:
    positions = Ledger(db, timeout=FIRESTORE_TIMEOUT).all()
    if not positions:
        print("No positions: the ledger is empty (nothing has filled yet).", file=out)
        return 0
    print(positions_report(positions, today=today_ist(now)), file=out)
    return 0


def _cmd_trades(args: argparse.Namespace, db: Any, out: TextIO, now: datetime) -> int:
    day = args.day or ist_day(now)
    trades = Ledger(db, timeout=FIRESTORE_TIMEOUT).trades_of_day(day)
    if not trades:
        print(f"No trades closed on {day}.", file=out)
        return 0
    print(trades_report(trades, day), file=out)
    return 0


def _cmd_switch(field: str):
    def run(args: argparse.Namespace, db: Any, out: TextIO, now: datetime) -> int:
        value = args.state == "on"
        if field == "trading_enabled":
            value = not value  # kill on = trading off
        controls = set_control(db, field, value, by=f"ops-cli:{_user()}", now=now)
        print(controls_report(controls), file=out)
        print("Workers see the change within CONTROLS_CACHE_SECONDS (5 s by default).", file=out)
        return 0

    return run


def _cmd_controls(args: argparse.Namespace, db: Any, out: TextIO, now: datetime) -> int:
    print(controls_report(ControlsReader(db, ttl=0, timeout=FIRESTORE_TIMEOUT).get()), file=out)
    return 0


def _cmd_session(args: argparse.Namespace, db: Any, out: TextIO, now: datetime) -> int:
    print(session_report(db), file=out)
    return 0


def _cmd_alert(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, now: datetime) -> int:
    secret = args.secret or environ.get("WEBHOOK_SECRET", "")
    if not secret:
        raise CliError("No secret: pass --secret or export WEBHOOK_SECRET.")
    body = example_alert(secret, symbol=args.symbol, strike=args.strike, option_type=args.type,
                         expiry=args.expiry, lots=args.lots, action=args.action, dry_run=args.dry_run,
                         strategy=args.strategy, now=now)
    status, answer = post_json(args.url, body)
    print(f"HTTP {status} {json.dumps(answer) if not isinstance(answer, str) else answer.strip()[:500]}", file=out)
    if isinstance(answer, dict) and answer.get("order_id"):
        print(f"Follow it: python -m ops show {answer['order_id']}", file=out)
    return 0 if 200 <= status < 300 else 1


def _cmd_job(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, now: datetime) -> int:
    token = identity_token(args.identity_token, args.url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    separator = "&" if "?" in args.url else "?"
    status, answer = post_json(f"{args.url}{separator}job={args.name}", None, headers=headers,
                               timeout=args.timeout)
    print(f"HTTP {status}", file=out)
    print(json.dumps(answer, indent=2, default=str) if not isinstance(answer, str) else answer.strip()[:2000],
          file=out)
    return 0 if 200 <= status < 300 else 1


def _statuses(text: str) -> list[OrderStatus]:
    try:
        return [OrderStatus(part.strip().upper()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown status in {text!r}; known: {', '.join(s.value for s in OrderStatus)}") from None


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): still say it was the CLI
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops", description="Operate the TradingView → Fyers router.")
    parser.add_argument("--project", help="Google Cloud project (default: $GOOGLE_CLOUD_PROJECT)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    orders = sub.add_parser("orders", help="a day's orders as a table")
    orders.add_argument("--day", type=_day, help="IST day, YYYY-MM-DD (default: today)")
    orders.add_argument("--limit", type=int, default=20)
    orders.add_argument("--status", type=_statuses, help="only these statuses, e.g. PLACED or REJECTED,FAILED")

    show = sub.add_parser("show", help="one order with its events")
    show.add_argument("order_id")

    sub.add_parser("positions", help="each strategy's open legs, quantity in flight and realised P&L")
    trades = sub.add_parser("trades", help="a day's closed trades with their P&L, per strategy and overall")
    trades.add_argument("--day", type=_day, help="IST day, YYYY-MM-DD (default: today)")

    kill = sub.add_parser("kill", help="kill switch: on = trading disabled")
    kill.add_argument("state", choices=("on", "off"))
    dry = sub.add_parser("dry-run", help="on = broker requests recorded, never sent")
    dry.add_argument("state", choices=("on", "off"))
    sub.add_parser("controls", help="show the controls (kill switch, dry run, lot cap)")
    sub.add_parser("session", help="show the Fyers session record")

    alert = sub.add_parser("alert", help="send a test alert to a webhook")
    alert.add_argument("--url", required=True, help="the webhook URL")
    alert.add_argument("--secret", help="the webhook secret (default: $WEBHOOK_SECRET)")
    alert.add_argument("--symbol", default="NIFTY")
    alert.add_argument("--strike", default="ATM", help="ATM, ATM+1, OTM2, 24500... ('' for none)")
    alert.add_argument("--type", default="CE", help="CE or PE ('' for a future or equity)")
    alert.add_argument("--expiry", default="WEEKLY", help="WEEKLY, MONTHLY, NEXT_WEEKLY, a date ('' for none)")
    alert.add_argument("--lots", type=int, default=1)
    alert.add_argument("--action", default="BUY", choices=("BUY", "SELL", "EXIT"), type=str.upper)
    alert.add_argument("--strategy", default="ops-cli")
    alert.add_argument("--dry-run", action="store_true", help="ask for a dry run of this one order")

    job = sub.add_parser("job", help="run a scheduler job (session, symbols, reconcile, health)")
    job.add_argument("name")
    job.add_argument("--url", required=True, help="the scheduler function's URL")
    job.add_argument("--identity-token", choices=("auto", "gcloud", "none"), default="auto",
                     help="auto: from gcloud for https URLs when available")
    job.add_argument("--timeout", type=float, default=150.0, help="seconds to wait for the job")
    return parser


_FIRESTORE_COMMANDS = {
    "orders": _cmd_orders, "show": _cmd_show, "positions": _cmd_positions, "trades": _cmd_trades,
    "kill": _cmd_switch("trading_enabled"),
    "dry-run": _cmd_switch("dry_run"), "controls": _cmd_controls, "session": _cmd_session,
}
_HTTP_COMMANDS = {"alert": _cmd_alert, "job": _cmd_job}


def main(argv: list[str] | None = None, *, environ: Mapping[str, str] | None = None,
         out: TextIO | None = None, err: TextIO | None = None, clock: Clock = wall_clock) -> int:
    """Run one command; returns the exit status. ``clock`` says what "today" is."""
    out = out or sys.stdout
    err = err or sys.stderr
    env = os.environ if environ is None else environ
    # google-api-core's notice about Python 3.11's end of life is noise in an operator's terminal.
    warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning)
    args = _parser().parse_args(argv)
    try:
        if args.command in _HTTP_COMMANDS:
            return _HTTP_COMMANDS[args.command](args, env, out, clock())
        return _FIRESTORE_COMMANDS[args.command](args, _firestore(args, env), out, clock())
    except CliError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except Exception as exc:  # noqa: BLE001 - Google API and credential failures: one line, not a trace
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError

        if isinstance(exc, (GoogleAPIError, GoogleAuthError)):
            print(f"error: Google Cloud refused or did not answer ({type(exc).__name__}): {exc}", file=err)
            return 1
        raise

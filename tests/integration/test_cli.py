"""The operator CLI (``python -m ops``), against the Firestore emulator and tiny local HTTP servers.

Orders and events are written as the webhook and worker write them, positions and
trades through the ledger as the worker's fills write them; the CLI's output is read
as the operator would read it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from datetime import date, datetime, time, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from common.controls import CONTROLS_DOC, Controls, write_controls
from common.ledger import Ledger
from common.records import (
    EVENTS,
    IST,
    ORDERS,
    SYSTEM,
    OrderEvent,
    OrderRecord,
    OrderStatus,
    ist_day,
    today_ist,
)
from common.session import SessionStore
from common.symbols import Contract
from ops.cli import main
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.emulators

NOW = datetime.now(timezone.utc).replace(microsecond=0)
# Today's orders at 10:00 IST and after: all on today's IST day, whatever the hour the tests run.
MORNING = datetime.combine(today_ist(NOW), time(10, 0), IST)


def run(*argv: str, project: str, now: datetime | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    clock = (lambda: now) if now else (lambda: datetime.now(timezone.utc))
    status = main(list(argv), environ={"GOOGLE_CLOUD_PROJECT": project}, out=out, err=err, clock=clock)
    return status, out.getvalue(), err.getvalue()


def put_order(db: Any, order_id: str, status: OrderStatus, *, at: datetime, strategy: str = "trend",
              events: list[OrderEvent] = (), **fields: Any) -> None:
    record = OrderRecord(
        order_id=order_id, status=status, strategy=strategy, action="BUY", symbol="NIFTY", lots=1,
        product="INTRADAY", order_type="MARKET",
        alert={"symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM", "option_type": "CE", "price": None},
        idempotency_key=f"k-{order_id}", key_source="time", received_at=at, created_at=at,
        created_day=ist_day(at), updated_at=at, **fields)
    ref = db.collection(ORDERS).document(order_id)
    ref.set(record.to_firestore())
    for n, event in enumerate(events):
        ref.collection(EVENTS).document(f"{n:03d}").set(event.to_firestore())


@pytest.fixture
def orders(firestore_db, clean_firestore) -> Any:
    """Today: a placed order (with its events), a rejected one, one still queued; and one yesterday."""
    placed_at = MORNING
    put_order(firestore_db, "tv-placed", OrderStatus.PLACED, at=placed_at,
              contract=Contract(ticker="NSE:NIFTY26NOV24500CE", underlying="NIFTY", exchange="NSE", kind="CE", lot_size=65,
                                tick_size=0.05, expiry=date(2026, 11, 24), strike=24500.0), quantity=65,
              broker_order_id="26112300000042", reason="PLACED", message="Placed BUY 65 NSE:NIFTY26NOV24500CE",
              events=[
                  OrderEvent(at=placed_at, to_status="QUEUED", reason="RECEIVED", by="webhook"),
                  OrderEvent(at=placed_at + timedelta(milliseconds=300), from_status="QUEUED",
                             to_status="PLACING", reason="CLAIMED", message="attempt 1", by="worker-1"),
                  OrderEvent(at=placed_at + timedelta(milliseconds=700), from_status="PLACING",
                             to_status="PLACED", reason="PLACED", broker_code=1101,
                             broker_message="Order submitted successfully", latency_ms=48.2, by="worker-1"),
              ])
    put_order(firestore_db, "tv-rejected", OrderStatus.REJECTED, at=MORNING + timedelta(minutes=1), strategy="meanrev",
              reason="BROKER_REJECTED", message="RED:Margin Shortfall")
    put_order(firestore_db, "tv-queued", OrderStatus.QUEUED, at=MORNING + timedelta(minutes=2))
    put_order(firestore_db, "tv-yesterday", OrderStatus.PLACED, at=MORNING - timedelta(days=1))


def rows(output: str) -> list[str]:
    """The table's data rows (after the dashed rule)."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    return lines[rule + 1:]


# --- orders and show -------------------------------------------------------------------


def test_orders_lists_todays_orders_newest_first_with_ticker_qty_broker_id_and_reason(orders, gcp_project):
    status, out, _ = run("orders", project=gcp_project)

    assert status == 0
    header = out.splitlines()[1]
    for column in ("TIME (IST)", "ORDER ID", "STRATEGY", "SYMBOL", "SIDE", "QTY", "STATUS", "BROKER ID", "REASON"):
        assert column in header
    queued, rejected, placed = rows(out)
    assert queued.split()[1] == "tv-queued" and "NIFTY WEEKLY ATM CE" in queued and "1 lot" in queued
    assert "BROKER_REJECTED: RED:Margin Shortfall" in rejected and "meanrev" in rejected
    assert "NSE:NIFTY26NOV24500CE" in placed and " 65 " in placed and "26112300000042" in placed
    assert placed.startswith("10:00:00")
    assert "tv-yesterday" not in out


def test_orders_filters_by_status_limit_and_day(orders, gcp_project):
    _, out, _ = run("orders", "--status", "placed,rejected", project=gcp_project)
    assert [row.split()[1] for row in rows(out)] == ["tv-rejected", "tv-placed"]

    _, out, _ = run("orders", "--limit", "1", project=gcp_project)
    assert [row.split()[1] for row in rows(out)] == ["tv-queued"]

    yesterday = ist_day(MORNING - timedelta(days=1))
    _, out, _ = run("orders", "--day", yesterday, project=gcp_project)
    assert [row.split()[1] for row in rows(out)] == ["tv-yesterday"]


def test_orders_on_a_day_without_orders_says_so(orders, gcp_project):
    status, out, _ = run("orders", "--day", "2020-01-01", project=gcp_project)
    assert status == 0 and out.strip() == "No orders on 2020-01-01."


def test_an_unknown_status_is_a_usage_error(gcp_project, capsys):
    with pytest.raises(SystemExit) as exit_:
        run("orders", "--status", "DONE", project=gcp_project)
    assert exit_.value.code == 2
    assert "unknown status" in capsys.readouterr().err


def test_show_prints_the_order_fields_and_its_events_in_order(orders, gcp_project):
    status, out, _ = run("show", "tv-placed", project=gcp_project)

    assert status == 0
    assert out.startswith("Order tv-placed: PLACED")
    assert "broker_order_id" in out and "26112300000042" in out
    assert '"ticker": "NSE:NIFTY26NOV24500CE"' in out
    assert '"price"' not in out  # unset alert fields are left out
    events = rows(out.split("Events (3)")[1])
    assert [e.split()[1:4] for e in events] == [["∅", "→", "QUEUED"], ["QUEUED", "→", "PLACING"],
                                                 ["PLACING", "→", "PLACED"]]
    assert "1101 Order submitted successfully" in events[2] and "48 ms" in events[2]


def test_show_of_an_unknown_order_fails_with_one_line(orders, gcp_project):
    status, out, err = run("show", "tv-nope", project=gcp_project)
    assert status == 1 and out == "" and err.strip() == "error: No order tv-nope."


# --- positions and trades ------------------------------------------------------------

# A fixed trading day: the CLI's "today" comes from the clock it is given.
DAY = datetime(2026, 11, 23, 15, 45, tzinfo=IST)
CE = "NSE:NIFTY26NOV24500CE"
PE = "NSE:BANKNIFTY26NOV52000PE"
SBIN = "NSE:SBIN-EQ"


def fill(ledger: Ledger, order_id: str, *, strategy: str, ticker: str, side: int, qty: int, price: float,
         at: datetime, lot_size: int = 65, kind: str = "CE", underlying: str = "NIFTY",
         product: str = "INTRADAY") -> None:
    """One order filled in full at ``price``, as the worker's read of the book tells the ledger."""
    ledger.filled(ledger_order(order_id, strategy=strategy, ticker=ticker, side=side, qty=qty, at=at,
                               lot_size=lot_size, kind=kind, underlying=underlying, product=product),
                  filled_qty=qty, avg_price=price, final=True, now=at)


def ledger_order(order_id: str, *, strategy: str, ticker: str, side: int, qty: int, at: datetime,
                 lot_size: int = 65, kind: str = "CE", underlying: str = "NIFTY",
                 product: str = "INTRADAY") -> OrderRecord:
    return OrderRecord(
        order_id=order_id, status=OrderStatus.PLACED, strategy=strategy, action="BUY" if side == 1 else "SELL",
        symbol=underlying, lots=qty // lot_size, product=product, order_type="MARKET", idempotency_key=f"k-{order_id}",
        key_source="time", received_at=at, created_at=at, created_day=ist_day(at), updated_at=at,
        contract=Contract(ticker=ticker, underlying=underlying, exchange="NSE", kind=kind, lot_size=lot_size,
                          tick_size=0.05, expiry=None, strike=None),
        quantity=qty, broker_request={"symbol": ticker, "qty": qty, "side": side})


@pytest.fixture
def ledger(firestore_db, clean_firestore) -> Ledger:
    """Three strategies, as their fills left them on DAY:

    * nifty-orb bought 2 lots of the 24500 call at 101, sold one at 130.50 (+1,917.50), and
      has a SELL of the other lot placed, not yet filled;
    * bank-short sold the BANKNIFTY 52000 put at 210 and bought it back at 250 (-1,200.00): flat;
    * sbin-swing bought 20 SBIN yesterday at 800 and sold 10 at 805 (+50.00) the same day.
    """
    ledger = Ledger(firestore_db, timeout=5)
    today, yesterday = DAY.replace(hour=9, minute=20), DAY.replace(hour=14, minute=0) - timedelta(days=1)
    fill(ledger, "tv-orb-1", strategy="nifty-orb", ticker=CE, side=1, qty=130, price=101.0, at=today)
    fill(ledger, "tv-orb-2", strategy="nifty-orb", ticker=CE, side=-1, qty=65, price=130.5,
         at=today + timedelta(minutes=45))
    ledger.placed(ledger_order("tv-orb-3", strategy="nifty-orb", ticker=CE, side=-1, qty=65,
                               at=today + timedelta(hours=2)),
                  ticker=CE, side=-1, quantity=65, effect="CLOSE", broker_order_id="26112300000099",
                  now=today + timedelta(hours=2))
    bank = {"strategy": "bank-short", "ticker": PE, "lot_size": 30, "kind": "PE", "underlying": "BANKNIFTY"}
    fill(ledger, "tv-bank-1", side=-1, qty=30, price=210.0, at=today + timedelta(minutes=10), **bank)
    fill(ledger, "tv-bank-2", side=1, qty=30, price=250.0, at=today + timedelta(minutes=100), **bank)
    sbin = {"strategy": "sbin-swing", "ticker": SBIN, "lot_size": 1, "kind": "EQ", "underlying": "SBIN",
            "product": "CNC"}
    fill(ledger, "tv-sbin-1", side=1, qty=20, price=800.0, at=yesterday, **sbin)
    fill(ledger, "tv-sbin-2", side=-1, qty=10, price=805.0, at=yesterday + timedelta(hours=1), **sbin)
    return ledger


def block(output: str, heading: str) -> list[str]:
    """The lines of the output's block (blank-line separated) that starts with ``heading``."""
    [found] = [part for part in output.split("\n\n") if part.startswith(heading)]
    return found.splitlines()


def test_positions_shows_each_strategys_legs_what_is_in_flight_and_the_realised_pnl(ledger, gcp_project):
    status, out, _ = run("positions", project=gcp_project, now=DAY)

    assert status == 0
    orb = block(out, "nifty-orb · NIFTY")
    assert orb[0] == "nifty-orb · NIFTY: long 1 lot, realised P&L so far +1,917.50"
    assert orb[1].split() == ["TICKER", "SIDE", "LOTS", "QTY", "AVG", "PRICE", "PRODUCT", "OPENED", "(IST)", "ORDERS"]
    assert orb[3].split() == [CE, "LONG", "1", "65", "101.00", "INTRADAY", "09:20:00", "tv-orb-1"]
    assert orb[4] == (f"  in flight (placed, not filled): SELL {CE} x65 to close, order tv-orb-3, "
                      "Fyers 26112300000099")
    sbin = block(out, "sbin-swing · NSE:SBIN-EQ")
    assert sbin[0] == "sbin-swing · NSE:SBIN-EQ: long 10 shares, realised P&L so far +50.00"
    assert sbin[3].split() == [SBIN, "LONG", "10", "10", "800.00", "CNC", "2026-11-22", "14:00:00", "tv-sbin-1"]
    assert out.strip().endswith("Realised P&L so far, all strategies: +767.50")


def test_positions_lists_flat_strategies_apart_with_their_realised_pnl(ledger, gcp_project):
    _, out, _ = run("positions", project=gcp_project, now=DAY)

    flat = block(out, "Flat:")
    assert flat[1].split() == ["STRATEGY", "INSTRUMENT", "REALISED", "P&L", "LAST", "CHANGE", "(IST)"]
    assert flat[3].split() == ["bank-short", "BANKNIFTY", "-1,200.00", "2026-11-23", "11:00:00"]
    assert "bank-short · BANKNIFTY" not in out  # no legs to list


def test_positions_of_a_short_put_seller_show_a_long_view(firestore_db, clean_firestore, gcp_project):
    ledger = Ledger(firestore_db, timeout=5)
    fill(ledger, "tv-sell-1", strategy="put-seller", ticker=PE, side=-1, qty=60, price=210.0, at=DAY,
         lot_size=30, kind="PE", underlying="BANKNIFTY")

    _, out, _ = run("positions", project=gcp_project, now=DAY)

    lines = block(out, "put-seller")
    assert lines[0].startswith("put-seller · BANKNIFTY: long 2 lots,")  # a short put is a long view
    assert lines[3].split()[:4] == [PE, "SHORT", "2", "60"]
    assert out.startswith("put-seller") and "Flat:" not in out


def test_an_entry_placed_and_not_yet_filled_shows_as_flat_with_its_quantity_in_flight(
        firestore_db, clean_firestore, gcp_project):
    Ledger(firestore_db, timeout=5).placed(
        ledger_order("tv-new-1", strategy="fresh", ticker=CE, side=1, qty=130, at=DAY),
        ticker=CE, side=1, quantity=130, effect="OPEN", broker_order_id="26112300000100", now=DAY)

    _, out, _ = run("positions", project=gcp_project, now=DAY)

    assert block(out, "fresh")[:2] == [
        "fresh · NIFTY: flat, realised P&L so far +0.00",
        f"  in flight (placed, not filled): BUY {CE} x130 to open, order tv-new-1, Fyers 26112300000100"]


def test_positions_with_an_empty_ledger_says_so(clean_firestore, gcp_project):
    status, out, _ = run("positions", project=gcp_project, now=DAY)
    assert status == 0 and out.strip() == "No positions: the ledger is empty (nothing has filled yet)."


def test_trades_lists_todays_closed_trades_oldest_first_with_totals_per_strategy(ledger, gcp_project):
    status, out, _ = run("trades", project=gcp_project, now=DAY)

    assert status == 0
    assert out.startswith("Trades closed on 2026-11-23 (oldest first):")
    orb, bank = rows(out.split("\n\n")[0])
    assert orb.split() == ["10:05:00", "nifty-orb", CE, "LONG", "1", "65", "101.00", "130.50", "+1,917.50",
                           "09:20:00", "tv-orb-2"]
    assert bank.split() == ["11:00:00", "bank-short", PE, "SHORT", "1", "30", "210.00", "250.00", "-1,200.00",
                            "09:30:00", "tv-bank-2"]
    totals = out.split("Realised P&L on 2026-11-23:\n")[1]
    assert [row.split() for row in rows(totals)] == [
        ["bank-short", "1", "30", "-1,200.00"], ["nifty-orb", "1", "65", "+1,917.50"],
        ["all", "strategies", "2", "95", "+717.50"]]
    assert "sbin" not in out  # closed yesterday


def test_trades_numbers_are_right_aligned_under_their_headings(ledger, gcp_project):
    _, out, _ = run("trades", project=gcp_project, now=DAY)
    header, _, orb, bank = out.splitlines()[1:5]
    pnl_end = header.index("P&L") + len("P&L")
    assert orb[:pnl_end].endswith("+1,917.50") and bank[:pnl_end].endswith("-1,200.00")


def test_trades_of_another_day_by_flag_or_by_the_clock(ledger, gcp_project):
    _, by_flag, _ = run("trades", "--day", "2026-11-22", project=gcp_project, now=DAY)
    _, by_clock, _ = run("trades", project=gcp_project, now=DAY - timedelta(days=1))

    assert by_flag == by_clock
    [sbin] = rows(by_flag.split("\n\n")[0])
    assert sbin.split() == ["15:00:00", "sbin-swing", SBIN, "LONG", "10", "10", "800.00", "805.00", "+50.00",
                            "14:00:00", "tv-sbin-2"]


def test_trades_on_a_day_without_trades_says_so(ledger, gcp_project):
    status, out, _ = run("trades", "--day", "2026-11-20", project=gcp_project, now=DAY)
    assert status == 0 and out.strip() == "No trades closed on 2026-11-20."


# --- switches and state ----------------------------------------------------------------


def controls_doc(db: Any) -> dict[str, Any]:
    return db.collection(SYSTEM).document(CONTROLS_DOC).get().to_dict() or {}


def test_kill_on_disables_trading_and_keeps_the_other_controls(firestore_db, clean_firestore, gcp_project):
    write_controls(firestore_db, Controls(dry_run=True, max_lots=2, note="careful"))

    status, out, _ = run("kill", "on", project=gcp_project)

    assert status == 0 and "DISABLED" in out
    doc = controls_doc(firestore_db)
    assert doc["trading_enabled"] is False
    assert (doc["dry_run"], doc["max_lots"], doc["note"]) == (True, 2, "careful")
    assert doc["updated_by"].startswith("ops-cli:") and doc["updated_at"]

    run("kill", "off", project=gcp_project)
    assert controls_doc(firestore_db)["trading_enabled"] is True


def test_dry_run_on_and_off_flip_only_dry_run(firestore_db, clean_firestore, gcp_project):
    run("dry-run", "on", project=gcp_project)
    doc = controls_doc(firestore_db)
    assert doc["dry_run"] is True and doc["trading_enabled"] is True

    status, out, _ = run("controls", project=gcp_project)
    assert status == 0 and "DRY RUN" in out and "ENABLED" in out

    run("dry-run", "off", project=gcp_project)
    assert controls_doc(firestore_db)["dry_run"] is False


def test_controls_without_a_document_shows_the_defaults(clean_firestore, gcp_project):
    _, out, _ = run("controls", project=gcp_project)
    assert "trading     ENABLED" in out and "mode        LIVE" in out


def test_session_shows_the_broker_session_record(firestore_db, clean_firestore, gcp_project):
    _, out, _ = run("session", project=gcp_project)
    assert out.splitlines()[0].split() == ["status", "UNKNOWN"]

    SessionStore(firestore_db, timeout=5).mark_authenticated(
        fy_id="XY12345", name="SIM TRADER", expires_at=datetime(2026, 11, 24, 0, 30, tzinfo=timezone.utc), now=NOW)
    _, out, _ = run("session", project=gcp_project)
    assert "AUTHENTICATED" in out and "XY12345" in out and "S** T*****" in out
    assert "2026-11-24 06:00:00 IST" in out


def test_without_a_project_the_cli_says_how_to_set_one():
    out, err = io.StringIO(), io.StringIO()
    assert main(["orders"], environ={}, out=out, err=err) == 1
    assert "GOOGLE_CLOUD_PROJECT" in err.getvalue()


# --- alert and job over HTTP -----------------------------------------------------------


class Recorder:
    """A local HTTP server that records each request and answers with a canned reply."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append({"path": self.path, "headers": dict(self.headers), "body": raw})
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def recorder_factory() -> Iterator[Any]:
    servers: list[Recorder] = []

    def make(status: int, body: dict[str, Any]) -> Recorder:
        servers.append(Recorder(status, body))
        return servers[-1]

    yield make
    for recorder in servers:
        recorder.server.shutdown()


def test_alert_sends_a_tradingview_style_body_with_the_time_of_now(recorder_factory):
    webhook = recorder_factory(200, {"status": "accepted", "order_id": "tv-1"})
    out = io.StringIO()

    status = main(["alert", "--url", webhook.url, "--type", "PE", "--strike", "OTM2", "--lots", "2",
                   "--action", "sell", "--dry-run"], environ={"WEBHOOK_SECRET": "s3cret"}, out=out)

    assert status == 0
    [request] = webhook.requests
    body = json.loads(request["body"])
    sent_at = datetime.fromisoformat(body.pop("time").replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - sent_at).total_seconds()) < 30
    assert body == {"secret": "s3cret", "action": "SELL", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "OTM2",
                    "optionType": "PE", "lots": 2, "strategy": "ops-cli", "dry_run": True}
    assert request["headers"]["Content-Type"].startswith("text/plain")  # as TradingView sends it
    assert "HTTP 200" in out.getvalue() and "python -m ops show tv-1" in out.getvalue()
    assert "s3cret" not in out.getvalue()


def test_alert_for_a_future_leaves_out_strike_and_type_and_a_refusal_exits_1(recorder_factory):
    webhook = recorder_factory(401, {"status": "error", "error": "UNAUTHORIZED"})
    out = io.StringIO()

    status = main(["alert", "--url", webhook.url, "--secret", "wrong", "--symbol", "NIFTY1!", "--type", "",
                   "--strike", "", "--expiry", ""], environ={}, out=out)

    assert status == 1 and "HTTP 401" in out.getvalue()
    body = json.loads(webhook.requests[0]["body"])
    assert body["symbol"] == "NIFTY1!" and not {"strike", "optionType", "expiry"} & body.keys()


def test_alert_without_a_secret_fails_before_sending(recorder_factory):
    webhook = recorder_factory(200, {})
    err = io.StringIO()
    assert main(["alert", "--url", webhook.url], environ={}, out=io.StringIO(), err=err) == 1
    assert webhook.requests == [] and "WEBHOOK_SECRET" in err.getvalue()


def test_job_posts_the_job_name_and_prints_the_report(recorder_factory):
    scheduler = recorder_factory(200, {"status": "done", "job": "health", "report": {"ok": True}})
    out = io.StringIO()

    status = main(["job", "health", "--url", scheduler.url], environ={}, out=out)

    assert status == 0
    [request] = scheduler.requests
    assert request["path"] == "/?job=health"
    assert "Authorization" not in request["headers"]  # a local http URL gets no identity token
    assert '"ok": true' in out.getvalue()


def test_a_job_answering_503_exits_1(recorder_factory):
    scheduler = recorder_factory(503, {"status": "retry", "job": "symbols", "report": {"retryable": True}})
    assert main(["job", "symbols", "--url", scheduler.url], environ={}, out=io.StringIO()) == 1


def test_python_dash_m_ops_runs_the_cli(orders, gcp_project):
    env = {**os.environ, "GOOGLE_CLOUD_PROJECT": gcp_project}
    done = subprocess.run([sys.executable, "-m", "ops", "orders", "--status", "PLACED"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tv-placed" in done.stdout and "tv-rejected" not in done.stdout

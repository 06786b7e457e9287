"""The router across the calendar: each scenario runs at every instant chosen with ``--at``.

The edges (tests/clock.py) are where a router that reads the wall clock goes
wrong: expiry days, the year's end, holidays and weekends, either side of the
06:00 IST death of the day's Fyers token, and a year from now. Masters, tokens,
market hours and the router's clock all derive from the instant.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta

import pytest

from common.records import ORDERS
from common.selectors import parse_expiry, parse_strike
from functions.order_worker import handle
from tests.clock import HOLIDAYS, IST
from tests.integration.conftest import NIFTY_SPOT, SECRET, Clock, cloud_event, make_client

pytestmark = pytest.mark.emulators

TUESDAY = 1


def next_token_death(moment: datetime) -> datetime:
    """Fyers tokens die at the first 06:00 IST after they are issued."""
    local = moment.astimezone(IST)
    six = datetime.combine(local.date(), time(6, 0), IST)
    return six if local < six else six + timedelta(days=1)


def nearest_tuesday(day: date) -> date:
    return day + timedelta(days=(TUESDAY - day.weekday()) % 7)


def last_tuesday(year: int, month: int) -> date:
    first_of_next = date(year + month // 12, month % 12 + 1, 1)
    last = first_of_next - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - TUESDAY) % 7)


def monthly_on_or_after(day: date) -> date:
    this_month = last_tuesday(day.year, day.month)
    return this_month if this_month >= day else last_tuesday(day.year + day.month // 12, day.month % 12 + 1)


def send_alert(deps_factory, topics, at: datetime, **fields):
    """The alert through the real webhook, sent at ``at``; returns its Pub/Sub message."""
    body = {"secret": SECRET, "action": "buy", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM",
            "optionType": "CE", "lots": 1, "strategy": "calendar", "time": at.isoformat(), **fields}
    answer = make_client(deps_factory(clock=Clock(at))).post("/", data=json.dumps(body),
                                                             content_type="application/json")
    assert answer.status_code == 200, answer.get_json()
    [message] = topics.pull(topics.orders)
    return message


def order_doc(db, message) -> dict:
    return db.collection(ORDERS).document(message.attributes["order_id"]).get().to_dict()


def test_weekly_and_monthly_resolve_to_the_nearest_live_expiries(instant, world):
    def atm_call(expiry: str) -> date:
        return world.master.resolve("NIFTY", option_type="CE", expiry=parse_expiry(expiry), strike=parse_strike("ATM"),
                                    today=world.today, price_of=lambda _: NIFTY_SPOT).expiry

    monthly = monthly_on_or_after(world.today)
    assert atm_call("WEEKLY") == nearest_tuesday(world.today)
    assert atm_call("MONTHLY") == monthly
    assert world.master.resolve_future("NIFTY", 1, world.today).expiry == monthly


def test_an_alert_is_placed_when_the_market_is_open_and_blocked_when_it_is_not(
        instant, world, worker_factory, deps_factory, topics, firestore_db):
    message = send_alert(deps_factory, topics, instant.at)
    deps = worker_factory(world=world, clock=Clock(instant.at), MARKET_HOLIDAYS=",".join(HOLIDAYS))

    handle(cloud_event(message), deps)

    doc, placed = order_doc(firestore_db, message), world.sim.exchange.orders()
    if instant.market_open:
        assert doc["status"] == "PLACED", doc.get("message")
        assert [o["symbol"] for o in placed] == [doc["contract"]["ticker"]]
        assert doc["contract"]["expiry"] == nearest_tuesday(world.today).isoformat()
    else:
        assert doc["status"] == "BLOCKED" and doc["reason"] == "MARKET_CLOSED", doc.get("message")
        assert placed == []


def test_the_days_token_serves_until_06_00_ist_and_never_after(
        instant, world, worker_factory, deps_factory, topics, firestore_db):
    death = next_token_death(instant.at)
    before = send_alert(deps_factory, topics, death - timedelta(seconds=2), strategy="before")
    after = send_alert(deps_factory, topics, death, strategy="after")
    world.clock.start_at(death - timedelta(seconds=2))  # the worker and the simulator on one clock
    deps = worker_factory(world=world, clock=world.clock, ENFORCE_MARKET_HOURS="false")

    handle(cloud_event(before), deps)
    world.clock.advance(2)
    handle(cloud_event(after), deps)

    assert order_doc(firestore_db, before)["status"] == "PLACED"
    refused = order_doc(firestore_db, after)
    assert refused["status"] == "FAILED" and refused["reason"] == "NEEDS_LOGIN", refused.get("message")
    assert len(world.sim.exchange.orders()) == 1

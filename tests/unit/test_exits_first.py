"""Exits first: what a signal says before the ledger is read, and the limiter's hold for an
exit preparing its calls."""

from __future__ import annotations

import threading
import time

import pytest

from common.alert import Alert
from common.intent import signals_reduction
from common.ratelimit import SlidingWindowLimiter


def _alert(**fields: object) -> Alert:
    return Alert.model_validate({"secret": "s", "symbol": "NIFTY", "expiry": "WEEKLY", "strike": "ATM",
                                 "optionType": "CE", "lots": 1, **fields})


@pytest.mark.parametrize("fields, reduces", [
    ({"action": "sell", "position": "flat", "position_size": 0, "prev_position": "long", "prev_position_size": 1}, True),
    ({"action": "sell", "position": "long", "position_size": 1, "prev_position": "long", "prev_position_size": 2}, True),
    ({"action": "sell", "position": "short", "position_size": 1, "prev_position": "long", "prev_position_size": 1}, True),
    ({"action": "buy", "position": "long", "position_size": 2, "prev_position": "long", "prev_position_size": 1}, False),
    ({"action": "buy", "position": "long", "position_size": 1, "prev_position": "flat", "prev_position_size": 0}, False),
    ({"action": "exit"}, True),
    ({"action": "sell"}, False),  # without the placeholders only the ledger can tell
])
def test_a_signal_says_whether_it_reduces_before_the_ledger_is_read(fields, reduces):
    assert signals_reduction(_alert(**fields)) is reduces


def test_an_exit_preparing_keeps_entries_waiting_until_its_hold_is_released():
    limiter = SlidingWindowLimiter(10, 200)
    order: list[str] = []
    with limiter.ahead(0, within=30.0) as hold:
        entry = threading.Thread(target=lambda: (limiter.call(max_wait=5, priority=(1, 0.0)).__enter__(),
                                                 order.append("entry")))
        entry.start()
        time.sleep(0.2)
        with limiter.call(max_wait=5, priority=(0, 0.0)):  # the exit's own call is not held back
            order.append("exit")
        assert order == ["exit"]  # the entry waited through the exit's call
        hold.release()
        entry.join(timeout=5)
    assert order == ["exit", "entry"]


def test_a_hold_lapses_by_itself():
    limiter = SlidingWindowLimiter(10, 200)
    with limiter.ahead(0, within=0.2):
        started = time.monotonic()
        with limiter.call(max_wait=5, priority=(1, 0.0)):
            pass
        assert 0.15 < time.monotonic() - started < 2

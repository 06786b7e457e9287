"""The router's sense of "now": one clock, built once at the edge and injected everywhere.

In the cloud it is the wall clock. A local run or a test may shift it
(``CLOCK_SHIFT_SECONDS``) so that the whole system, every process alike, lives
at another date: a Monday morning on a weekend, or 05:59 IST just before the
day's Fyers token dies. A shifted clock still runs at the wall clock's pace,
and two processes given the same shift always agree, so the router and the
Fyers simulator can share it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    """Now, in UTC (aware)."""
    return datetime.now(timezone.utc)


def shifted_clock(shift_seconds: float, *, wall: Clock = wall_clock) -> Clock:
    """The wall clock moved by ``shift_seconds``; the wall clock itself when the shift is 0."""
    if not shift_seconds:
        return wall
    shift = timedelta(seconds=shift_seconds)
    return lambda: wall() + shift


def shift_to(moment: datetime, *, wall: Clock = wall_clock) -> float:
    """The shift, in seconds, that makes a shifted clock read ``moment`` now."""
    if moment.tzinfo is None:
        raise ValueError("a clock needs an aware datetime (with a zone)")
    return (moment - wall()).total_seconds()

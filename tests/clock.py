"""The suite's one source of "now" for date-dependent tests, and the instants it runs them at.

A test that takes the ``instant`` fixture runs once per chosen instant. Its
masters, tokens, expiries and market hours all derive from ``instant.at``: the
router's clock is shifted there (``CLOCK_SHIFT_SECONDS``, common/clock.py) and
the Fyers simulator runs on the same shifted clock. Everything else in the
suite injects fixed clocks of its own and never reads the wall clock.

Choose the instants with ``deploy/local/test.sh --at WHEN`` (or ``TEST_AT``):
``all`` (the default: :data:`BASELINE` and every edge of :data:`EDGES`),
``edges``, one edge's name (``sat-1000``), ``now`` (the wall clock: today, as a
trader would run it), or an ISO instant with its zone (``2027-03-01T09:20+05:30``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from common.clock import shift_to, shifted_clock
from common.market import market_closed_reason
from common.settings import Settings

IST = timezone(timedelta(hours=5, minutes=30), "IST")

# The trading holidays the calendar tests configure (MARKET_HOLIDAYS), as a deployment would.
HOLIDAYS = ("2026-12-25", "2027-01-26")


@dataclass(frozen=True)
class Instant:
    """A moment the date-dependent tests run at, and whether the market is open then."""

    name: str
    at: datetime
    market_open: bool

    def __str__(self) -> str:
        return f"{self.name} ({self.at.astimezone(IST):%a %d %b %Y %H:%M} IST)"


def _ist(y: int, m: int, d: int, hh: int, mm: int) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=IST)


BASELINE = Instant("baseline", _ist(2026, 11, 23, 10, 0), True)  # a Monday; NIFTY's weekly and monthly expiry is on the 24th
EDGES = (
    Instant("weekly-expiry", _ist(2026, 12, 8, 10, 0), True),  # NIFTY's Tuesday weekly expiry
    Instant("monthly-expiry", _ist(2026, 12, 29, 10, 0), True),  # the last Tuesday of December
    Instant("year-end", _ist(2026, 12, 31, 15, 0), True),  # the last trading day of December
    Instant("holiday", _ist(2026, 12, 25, 10, 0), False),  # Christmas: NSE is closed
    Instant("saturday", _ist(2026, 12, 5, 10, 0), False),
    Instant("token-0559", _ist(2026, 12, 7, 5, 59), False),  # a minute before the day's token dies
    Instant("token-0601", _ist(2026, 12, 7, 6, 1), False),  # a minute after: a fresh day's token
    Instant("next-year", _ist(2027, 12, 6, 10, 0), True),  # a Monday a year on
)


def chosen(spec: str) -> list[Instant]:
    """The instants named by ``--at`` (see the module docstring)."""
    spec = spec.strip()
    if spec in ("", "all"):
        return [BASELINE, *EDGES]
    if spec == "edges":
        return list(EDGES)
    named = {i.name: i for i in (BASELINE, *EDGES)}
    if spec in named:
        return [named[spec]]
    if spec == "now":
        return [_computed("now", datetime.now(timezone.utc).replace(microsecond=0))]
    try:
        at = datetime.fromisoformat(spec)
    except ValueError:
        raise ValueError(f"--at {spec!r}: expected all, edges, now, one of {', '.join(named)}, "
                         "or an ISO instant with its zone such as 2027-03-01T09:20+05:30") from None
    if at.tzinfo is None:
        raise ValueError(f"--at {spec!r}: give the zone too, e.g. {spec}+05:30")
    return [_computed(spec, at)]


def _computed(name: str, at: datetime) -> Instant:
    """An instant outside the table: whether the market is open is the router's own reading."""
    settings = Settings(MARKET_HOLIDAYS=",".join(HOLIDAYS))
    closed = market_closed_reason(at, open_at=settings.market_open, close_at=settings.market_close,
                                  holidays=settings.market_holidays)
    return Instant(name, at, closed is None)


class ShiftedClock:
    """The wall clock moved to an instant: the simulator reads it, and the router reads the
    same shift from ``CLOCK_SHIFT_SECONDS``, so both agree to the microsecond."""

    def __init__(self) -> None:
        self.shift = 0.0

    def start_at(self, moment: datetime) -> None:
        """Make the clock read ``moment`` now."""
        self.shift = shift_to(moment)

    def advance(self, seconds: float) -> None:
        """Jump ahead (the worker's injected sleep): the simulator and the router jump together."""
        self.shift += seconds

    def __call__(self) -> datetime:
        return shifted_clock(self.shift)()

    def env(self) -> dict[str, str]:
        """The router's settings for the same clock."""
        return {"CLOCK_SHIFT_SECONDS": repr(self.shift)}

"""The simulator's symbol master (the few columns it needs) and its price table.

Masters are Fyers' header-less 21-column CSVs (fyers-v3.md §9). Index tickers
such as ``NSE:NIFTY50-INDEX`` are known even without an NSE_CM master, so a
derivatives-only setup can still quote the underlying.
"""

from __future__ import annotations

import math
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# Instrument types (master column 3).
INDEX, FUTIDX, FUTSTK, OPTIDX, OPTSTK = 10, 11, 13, 14, 15
_FUTURES = {FUTIDX, FUTSTK}

# Built-in indices: ticker -> default level. Plausible, not live; the same spots
# that deploy/local/mastergen.py centres its strike ladders on.
BUILTIN_INDICES = {
    "NSE:NIFTY50-INDEX": 24500.0,
    "NSE:NIFTYBANK-INDEX": 52000.0,
    "NSE:FINNIFTY-INDEX": 24000.0,
    "NSE:MIDCPNIFTY-INDEX": 12500.0,
    "BSE:SENSEX-INDEX": 80000.0,
    "BSE:BANKEX-INDEX": 63000.0,
}
# Underlying name (master column 14) -> index ticker, for derivatives on indices.
INDEX_OF_UNDERLYING = {
    "NIFTY": "NSE:NIFTY50-INDEX",
    "BANKNIFTY": "NSE:NIFTYBANK-INDEX",
    "FINNIFTY": "NSE:FINNIFTY-INDEX",
    "MIDCPNIFTY": "NSE:MIDCPNIFTY-INDEX",
    "SENSEX": "BSE:SENSEX-INDEX",
    "BANKEX": "BSE:BANKEX-INDEX",
}


@dataclass(frozen=True)
class Instrument:
    """One master row, reduced to what order validation and quotes need."""

    ticker: str
    kind: int
    lot: int
    tick: float
    underlying: str
    strike: float
    option_type: str
    fytoken: str
    description: str

    @property
    def is_index(self) -> bool:
        return self.kind == INDEX

    @property
    def exchange(self) -> str:
        return self.ticker.split(":", 1)[0]


def parse_master(text: str) -> list[Instrument]:
    """Parse master CSV text; rows that are not 21-column master rows are skipped."""
    rows = []
    for line in text.splitlines():
        cols = line.rstrip("\r").split(",")
        if len(cols) > 21:  # an unquoted comma inside the description (column 2)
            cols = [cols[0], ",".join(cols[1 : len(cols) - 19]), *cols[-19:]]
        if len(cols) != 21:
            continue
        try:
            rows.append(
                Instrument(
                    ticker=cols[9],
                    kind=int(cols[2]),
                    lot=int(float(cols[3])),
                    tick=float(cols[4]),
                    underlying=cols[13],
                    strike=float(cols[15] or -1),
                    option_type=cols[16],
                    fytoken=cols[0],
                    description=cols[1],
                )
            )
        except ValueError:
            continue
    return rows


def load_masters(sources: Iterable[str | Path]) -> dict[str, Instrument]:
    """Load masters given as CSV text or file paths; later rows win on duplicates."""
    by_ticker: dict[str, Instrument] = {}
    for source in sources:
        is_text = isinstance(source, str) and ("\n" in source or "," in source)
        text = source if is_text else Path(source).read_text(encoding="utf-8")
        for inst in parse_master(text):
            by_ticker[inst.ticker] = inst
    for ticker in BUILTIN_INDICES:
        if ticker not in by_ticker:
            name = ticker.split(":", 1)[1].removesuffix("-INDEX")
            by_ticker[ticker] = Instrument(ticker, INDEX, 1, 0.05, name, -1.0, "XX", "", name)
    return by_ticker


def round_to_tick(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 4)


def is_tick_multiple(price: float, tick: float) -> bool:
    """True if ``price`` is a whole number of ticks (tolerating float noise)."""
    steps = price / tick
    return abs(steps - round(steps)) < 1e-6


class Prices:
    """Last traded prices: settable per ticker, deterministic defaults otherwise.

    Defaults hang together: a future trades at its underlying's level and an
    option at intrinsic value plus a time value that fades away from the money,
    so setting an index level moves every derivative that has no price of its own.
    """

    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self._instruments = instruments
        self._set: dict[str, float] = {}
        self._lock = threading.Lock()

    def set(self, ticker: str, ltp: float) -> None:
        if ticker not in self._instruments:
            raise KeyError(f"unknown ticker {ticker}")
        if not (isinstance(ltp, (int, float)) and ltp > 0 and math.isfinite(ltp)):
            raise ValueError(f"price must be a positive number, got {ltp!r}")
        with self._lock:
            self._set[ticker] = float(ltp)

    def clear(self) -> None:
        with self._lock:
            self._set.clear()

    def ltp(self, ticker: str) -> float | None:
        """The ticker's price, or None if the ticker is not listed."""
        inst = self._instruments.get(ticker)
        if inst is None:
            return None
        with self._lock:
            if ticker in self._set:
                return self._set[ticker]
        return self._default(inst)

    def _spot(self, inst: Instrument) -> float:
        index = INDEX_OF_UNDERLYING.get(inst.underlying)
        if index is not None and index in self._instruments:
            return self.ltp(index) or 0.0
        equity = f"{inst.exchange}:{inst.underlying}-EQ"
        if equity in self._instruments:
            return self.ltp(equity) or 0.0
        return _hashed(equity, 100.0, 3000.0)

    def _default(self, inst: Instrument) -> float:
        if inst.is_index:
            price = BUILTIN_INDICES.get(inst.ticker) or _hashed(inst.ticker, 1000.0, 50000.0)
        elif inst.kind in _FUTURES:
            price = self._spot(inst)
        elif inst.option_type in ("CE", "PE"):
            spot = self._spot(inst)
            intrinsic = max(0.0, spot - inst.strike if inst.option_type == "CE" else inst.strike - spot)
            time_value = spot * 0.004 * math.exp(-abs(spot - inst.strike) / (spot * 0.03))
            price = intrinsic + time_value
        else:
            price = _hashed(inst.ticker, 100.0, 3000.0)
        return max(inst.tick, round_to_tick(price, inst.tick))


def _hashed(key: str, low: float, high: float) -> float:
    """A stable pseudo-random value in [low, high) (crc32: the same in every process)."""
    return low + (zlib.crc32(key.encode()) % 10_000) / 10_000 * (high - low)

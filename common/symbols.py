"""The Fyers symbol master: parse it, index it, and resolve alerts to listed contracts.

Fyers publishes header-less 21-column CSVs (``NSE_FO.csv``, ``BSE_FO.csv``,
``NSE_CM.csv``; see ``shared/fyers-v3.md`` §9). :class:`SymbolMaster` parses
one or more of them into a compact, immutable index:

* ticker -> a plain tuple of the row's useful columns (for :meth:`SymbolMaster.lookup`);
* per (exchange, underlying) a :class:`_Chain`: sorted future expiries, sorted
  option expiries, and per (expiry, CE/PE) a sorted strike ladder with its tickers.

Expiries are matched by their **IST date** (epoch seconds + 05:30), never by the
time of day, which Fyers has changed (15:30 -> 15:40). Dates are kept as
proleptic ordinals (ints) inside the index and become :class:`datetime.date`
only in results. Tickers are never constructed: every answer is a listed row.

The clock is injected: every method that depends on "today" takes it.
The index is read-only once built, so one instance can serve concurrent requests.
"""

from __future__ import annotations

import bisect
import difflib
import io
import math
import os
import pickle
import sys
import zlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Literal

from common.errors import (
    InvalidPriceLevel,
    MasterUnavailable,
    NoExpiry,
    StrikeNotListed,
    SymbolError,
    UnknownTicker,
    UnknownUnderlying,
)
from common.indices import INDICES
from common.selectors import ExpirySelector, StrikeSelector, format_strike

ContractKind = Literal["EQ", "ETF", "INDEX", "FUT", "CE", "PE", "OTHER"]
OptionType = Literal["CE", "PE"]

_COLUMNS = 21
_IST_OFFSET_SECONDS = 5 * 3600 + 30 * 60
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EXCHANGE_CODES = {"10": "NSE", "11": "MCX", "12": "BSE"}
_CASH_KINDS = {"0": "EQ", "9": "ETF", "10": "INDEX"}
_FUTURE_TYPES = frozenset({"11", "13"})
# When an underlying trades on several exchanges and the caller names none.
_EXCHANGE_PREFERENCE = ("NSE", "BSE", "MCX")

# The ticker whose LTP drives ATM selection, for the index underlyings.
INDEX_QUOTES = {name: index.quote for name, index in INDICES.items()}

# Other names traders and TradingView use for the same underlyings.
UNDERLYING_ALIASES = {
    "NIFTY50": "NIFTY",
    "NIFTY_50": "NIFTY",
    "NIFTYBANK": "BANKNIFTY",
    "NIFTY_BANK": "BANKNIFTY",
    "CNXFINANCE": "FINNIFTY",
    "NIFTY_FIN_SERVICE": "FINNIFTY",
    "NIFTY_MID_SELECT": "MIDCPNIFTY",
}

_EXPIRY_WORDS = {
    "WEEKLY": "option expiry",
    "NEXT_WEEKLY": "second option expiry",
    "MONTHLY": "monthly option expiry",
    "NEXT_MONTHLY": "second monthly option expiry",
}

# Index of each field in the per-ticker row tuple.
_UND, _EXCH, _KIND, _LOT, _TICK, _EXPIRY, _STRIKE = range(7)
_FORMAT_MAGIC = b"FYSYMIDX2\n"


@dataclass(frozen=True, slots=True)
class Contract:
    """One listed instrument, as orders need it."""

    ticker: str
    underlying: str
    exchange: str
    kind: ContractKind
    lot_size: int
    tick_size: float
    expiry: date | None
    strike: float | None

    @property
    def is_option(self) -> bool:
        return self.kind in ("CE", "PE")

    def describe(self) -> str:
        """Human text for messages: "NIFTY 24 Nov 2026 24500 CE (NSE:NIFTY26NOV24500CE, lot 65)"."""
        parts = [self.underlying]
        if self.expiry is not None:
            parts.append(self.expiry.strftime("%d %b %Y"))
        if self.strike is not None:
            parts.append(format_strike(self.strike))
        parts.append(self.kind)
        return f"{' '.join(parts)} ({self.ticker}, lot {self.lot_size})"


@dataclass(frozen=True, slots=True)
class LoadStats:
    """What a build read: usable rows, rows skipped as malformed, duplicate tickers skipped."""

    rows: int
    malformed: int
    duplicates: int


class _Chain:
    """The derivatives of one underlying on one exchange, sorted for bisection.

    ``ladders`` maps (expiry ordinal, "CE"/"PE") to (strikes, tickers), both
    sorted by strike. ``monthly`` holds the option expiries that are monthly
    contracts (see :func:`_monthly_expiries`).
    """

    __slots__ = ("futures", "future_tickers", "expiries", "monthly", "ladders")

    def __init__(
        self,
        underlying: str,
        futures: tuple[int, ...],
        future_tickers: tuple[str, ...],
        expiries: tuple[int, ...],
        ladders: dict[tuple[int, str], tuple[tuple[float, ...], tuple[str, ...]]],
    ) -> None:
        self.futures = futures
        self.future_tickers = future_tickers
        self.expiries = expiries
        self.ladders = ladders
        self.monthly = _monthly_expiries(underlying, expiries, ladders)

    def to_plain(self) -> tuple:
        return (self.futures, self.future_tickers, self.expiries, self.ladders)


_MONTH_CODES = frozenset(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
)
_WEEKLY_MONTH_CODES = frozenset("123456789OND")


def _monthly_expiries(
    underlying: str,
    expiries: tuple[int, ...],
    ladders: dict[tuple[int, str], tuple[tuple[float, ...], tuple[str, ...]]],
) -> tuple[int, ...]:
    """The option expiries that are the monthly contract of their month.

    The exchange's own designation comes first: Fyers writes a monthly contract's
    ticker as ``UNDYYMMM...`` and a weekly one as ``UNDYYMDD...`` (fyers-v3.md §10),
    which stays right when the master lists only part of a month. Where a ticker
    does not show its form, the rule is "the last listed expiry of its calendar
    month"; on a complete master both agree.
    """
    last_of_month: dict[tuple[int, int], int] = {}
    for ordinal in expiries:
        day = date.fromordinal(ordinal)
        last_of_month[(day.year, day.month)] = ordinal  # expiries are ascending
    calendar_monthly = set(last_of_month.values())
    monthly = []
    for ordinal in expiries:
        ladder = ladders.get((ordinal, "CE")) or ladders.get((ordinal, "PE"))
        symbol = ladder[1][0].partition(":")[2] if ladder else ""
        form = symbol[len(underlying) + 2 : len(underlying) + 5] if symbol.startswith(underlying) else ""
        if form in _MONTH_CODES:
            monthly.append(ordinal)
        elif not (form[:1] in _WEEKLY_MONTH_CODES and form[1:].isdigit()) and ordinal in calendar_monthly:
            monthly.append(ordinal)
    return tuple(monthly)


class _Builder:
    """Accumulates parsed rows; :meth:`build` sorts them into a :class:`SymbolMaster`."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple] = {}
        self.futures: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self.options: dict[tuple[str, str], dict[tuple[int, str], list[tuple[float, str]]]] = {}
        self.cash: dict[tuple[str, str], str] = {}
        self.malformed = 0
        self.duplicates = 0
        self.data_date = ""
        # Shared objects: one int per expiry, one float per tick size.
        self._expiry_cache: dict[str, int] = {}
        self._tick_cache: dict[str, float] = {}

    def add_lines(self, lines: Iterable[str]) -> None:
        rows = self.rows
        intern = sys.intern
        for line in lines:
            parts = line.rstrip("\r\n").split(",")
            if len(parts) > _COLUMNS:
                # The file is unquoted: extra commas can only sit in the free-text
                # description (column 2); the 19 columns after it are fixed.
                parts[1:-19] = [",".join(parts[1:-19])]
            elif len(parts) != _COLUMNS:
                if len(parts) > 1 or parts[0].strip():  # a blank line is not a row
                    self.malformed += 1
                continue
            ticker = parts[9]
            if ticker in rows:
                self.duplicates += 1
                continue
            try:
                row = self._row(parts, intern)
            except (ValueError, KeyError):
                self.malformed += 1
                continue
            rows[ticker] = row
            self._index(ticker, row)
            if parts[7] > self.data_date:
                self.data_date = parts[7]

    def _row(self, parts: list[str], intern: Callable[[str], str]) -> tuple:
        itype, lot, tick, expiry_epoch, ticker = parts[2], parts[3], parts[4], parts[8], parts[9]
        prefix, sep, _ = ticker.partition(":")
        if not sep or not prefix:
            raise ValueError("ticker without exchange prefix")
        exchange = _EXCHANGE_CODES.get(parts[10]) or intern(prefix)
        option_type = parts[16]
        if option_type == "CE" or option_type == "PE":
            kind = "CE" if option_type == "CE" else "PE"
        elif itype in _FUTURE_TYPES or (expiry_epoch and parts[11] != "10"):
            kind = "FUT"
        else:
            kind = _CASH_KINDS.get(itype, "OTHER")
        expiry = 0
        if kind in ("CE", "PE", "FUT"):
            expiry = self._expiry_cache.get(expiry_epoch, 0)
            if not expiry:
                seconds = int(expiry_epoch)
                expiry = _EPOCH_ORDINAL + (seconds + _IST_OFFSET_SECONDS) // 86400
                self._expiry_cache[expiry_epoch] = expiry
        strike = float(parts[15]) if expiry and kind != "FUT" else 0.0
        if kind in ("CE", "PE") and not strike > 0:
            raise ValueError("option without a strike")
        tick_size = self._tick_cache.get(tick)
        if tick_size is None:
            tick_size = self._tick_cache[tick] = float(tick)
        return (intern(parts[13]), exchange, kind, int(lot), tick_size, expiry, strike)

    def _index(self, ticker: str, row: tuple) -> None:
        kind = row[_KIND]
        key = (row[_EXCH], row[_UND])
        if kind == "FUT":
            self.futures.setdefault(key, []).append((row[_EXPIRY], ticker))
        elif kind == "CE" or kind == "PE":
            chain = self.options.setdefault(key, {})
            chain.setdefault((row[_EXPIRY], kind), []).append((row[_STRIKE], ticker))
        elif kind == "EQ" or kind == "ETF":
            # One cash ticker per underlying, the -EQ series preferred over BE, SM, ...
            if key not in self.cash or ticker.endswith("-EQ"):
                self.cash[key] = ticker

    def build(self) -> SymbolMaster:
        chains: dict[tuple[str, str], _Chain] = {}
        for key in self.futures.keys() | self.options.keys():
            futures = sorted(self.futures.get(key, ()))
            ladders = {}
            for ladder_key, rungs in self.options.get(key, {}).items():
                rungs.sort()
                ladders[ladder_key] = (
                    tuple(strike for strike, _ in rungs),
                    tuple(ticker for _, ticker in rungs),
                )
            chains[key] = _Chain(
                key[1],
                tuple(expiry for expiry, _ in futures),
                tuple(ticker for _, ticker in futures),
                tuple(sorted({expiry for expiry, _ in ladders})),
                ladders,
            )
        stats = LoadStats(len(self.rows), self.malformed, self.duplicates)
        return SymbolMaster(self.rows, chains, self.cash, stats, self.data_date)


class _PlainUnpickler(pickle.Unpickler):
    """Loads only builtin containers and scalars: a tampered index cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"symbol index may not reference {module}.{name}")


class SymbolMaster:
    """An immutable, indexed Fyers symbol master. Build it with :meth:`from_csv` or :meth:`from_bytes`."""

    __slots__ = ("_rows", "_chains", "_cash", "_exchanges", "stats", "data_date", "_sorted_tickers")

    def __init__(
        self,
        rows: dict[str, tuple],
        chains: dict[tuple[str, str], _Chain],
        cash: dict[tuple[str, str], str],
        stats: LoadStats,
        data_date: str,
    ) -> None:
        self._rows = rows
        self._chains = chains
        self._cash = cash
        self.stats = stats
        #: The newest "last update" date (column 8) among the rows, ISO text; "" if none.
        self.data_date = data_date
        exchanges: dict[str, list[str]] = {}
        for exchange, underlying in chains:
            exchanges.setdefault(underlying, []).append(exchange)
        rank = {name: i for i, name in enumerate(_EXCHANGE_PREFERENCE)}
        self._exchanges = {
            und: tuple(sorted(names, key=lambda n: (rank.get(n, len(rank)), n)))
            for und, names in exchanges.items()
        }
        self._sorted_tickers: list[str] | None = None

    # --- construction -----------------------------------------------------------

    @classmethod
    def from_csv(cls, *sources: str | bytes | os.PathLike[str] | Iterable[str]) -> SymbolMaster:
        """Parse and merge masters. A ``str`` or ``bytes`` is CSV text; a path object
        (``pathlib.Path``) is a file; any other iterable yields lines."""
        builder = _Builder()
        for source in sources:
            if isinstance(source, bytes):
                builder.add_lines(source.decode("utf-8").split("\n"))
            elif isinstance(source, str):
                builder.add_lines(source.split("\n"))
            elif isinstance(source, os.PathLike):
                with open(source, encoding="utf-8", newline="") as handle:
                    builder.add_lines(handle.read().split("\n"))
            else:
                builder.add_lines(source)
        return builder.build()

    @classmethod
    def from_files(cls, *paths: str | os.PathLike[str]) -> SymbolMaster:
        """Parse and merge master files given by path."""
        return cls.from_csv(*(Path(path) for path in paths))

    def to_bytes(self) -> bytes:
        """The index as bytes for :meth:`from_bytes`: a format tag, then a zlib-compressed
        pickle of builtin containers only (about 0.5 MB for a 75,000-row master)."""
        chains = {key: chain.to_plain() for key, chain in self._chains.items()}
        stats = (self.stats.rows, self.stats.malformed, self.stats.duplicates)
        payload = (self._rows, chains, self._cash, stats, self.data_date)
        return _FORMAT_MAGIC + zlib.compress(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> SymbolMaster:
        """Load an index written by :meth:`to_bytes`. Raises ``MasterUnavailable`` if unreadable."""
        if not data.startswith(_FORMAT_MAGIC):
            raise MasterUnavailable("The stored symbol index has an unknown format; rebuild it.")
        try:
            raw = zlib.decompress(memoryview(data)[len(_FORMAT_MAGIC) :])
            rows, chains, cash, stats, data_date = _PlainUnpickler(io.BytesIO(raw)).load()
            return cls(
                rows,
                {key: _Chain(key[1], *plain) for key, plain in chains.items()},
                cash,
                LoadStats(*stats),
                data_date,
            )
        except Exception as exc:  # any garbage: the caller falls back to the raw CSV
            raise MasterUnavailable(
                f"The stored symbol index is corrupt ({type(exc).__name__}); rebuild it."
            ) from None

    # --- direct look-ups ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, ticker: object) -> bool:
        return ticker in self._rows

    @property
    def has_cash_master(self) -> bool:
        """Whether a cash-market master (NSE_CM/BSE_CM) was loaded."""
        return bool(self._cash)

    def lookup(self, ticker: str) -> Contract:
        """The contract for a full Fyers ticker (``NSE:SBIN-EQ``); ``UnknownTicker`` lists close ones."""
        row = self._rows.get(ticker)
        if row is None:
            normalised = ticker.strip().upper()
            row = self._rows.get(normalised)
            if row is None:
                candidates = self._close_tickers(normalised)
                hint = f" Did you mean {', '.join(candidates)}?" if candidates else ""
                raise UnknownTicker(
                    f"{ticker!r} is not in the symbol master.{hint}", ticker=ticker, candidates=candidates
                )
            ticker = normalised
        return _contract(ticker, row)

    def equity(self, symbol: str, exchange: str | None = None) -> Contract:
        """The cash-market contract of a stock or ETF (``SBIN`` -> ``NSE:SBIN-EQ``)."""
        exchange_hint, name = _split_underlying(symbol)
        exchange = (exchange or exchange_hint or "NSE").upper()
        ticker = self._cash.get((exchange, name))
        if ticker is None:
            names = sorted({und for exch, und in self._cash if exch == exchange})
            raise UnknownUnderlying(_unknown_message(name, names, f"{exchange} cash market"), underlying=name)
        return _contract(ticker, self._rows[ticker])

    def quote_ticker(self, underlying: str) -> str:
        """The ticker whose LTP drives ATM selection (the index, or the stock's cash ticker).

        Stocks use their cash-market row when a cash master is loaded; otherwise
        (or if the cash master lacks the stock) the conventional ``NSE:<UND>-EQ``.
        """
        _, name = _split_underlying(underlying)
        name = UNDERLYING_ALIASES.get(name, name)
        quote = INDEX_QUOTES.get(name)
        if quote is not None:
            return quote
        for exchange in (*self._exchanges.get(name, ()), "NSE"):
            ticker = self._cash.get((exchange, name))
            if ticker is not None:
                return ticker
        return f"NSE:{name}-EQ"

    # --- listings for messages and checks ---------------------------------------------

    def underlyings(self) -> list[str]:
        """Every underlying with listed derivatives, sorted."""
        return sorted(self._exchanges)

    def expiries(self, underlying: str, exchange: str | None = None) -> list[date]:
        """The listed option expiries (IST dates) of an underlying, ascending."""
        return [date.fromordinal(o) for o in self._chain(underlying, exchange)[1].expiries]

    def future_expiries(self, underlying: str, exchange: str | None = None) -> list[date]:
        """The listed future expiries (IST dates) of an underlying, ascending."""
        return [date.fromordinal(o) for o in self._chain(underlying, exchange)[1].futures]

    def strikes(
        self, underlying: str, expiry: date, option_type: OptionType, exchange: str | None = None
    ) -> list[float]:
        """The listed strikes for one expiry and option type, ascending (empty if none)."""
        chain = self._chain(underlying, exchange)[1]
        ladder = chain.ladders.get((expiry.toordinal(), option_type))
        return list(ladder[0]) if ladder else []

    # --- resolution -------------------------------------------------------------------

    def resolve(
        self,
        underlying: str,
        *,
        option_type: OptionType | None,
        expiry: ExpirySelector | None,
        strike: StrikeSelector | None,
        today: date,
        price_of: Callable[[str], float] | None = None,
        exchange: str | None = None,
    ) -> Contract:
        """The listed contract an alert means.

        Options (``option_type`` CE/PE) need an expiry and a strike selector:

        * expiry ``WEEKLY``: the nearest option expiry on or after ``today``;
          ``MONTHLY``: the nearest monthly contract (the last expiry of its calendar
          month, see :func:`_monthly_expiries`); ``NEXT_WEEKLY``/``NEXT_MONTHLY``: the
          one after; a date: exactly that IST date. On an expiry day the expiring
          contract is chosen.
        * strike ``PRICE``: must be listed; ``ATM``: the listed strike nearest the
          underlying's price (a tie goes to the lower strike); ``ATM±N``: N rungs up
          or down the listed ladder; ``ITMn``/``OTMn``: N rungs from ATM into or out
          of the money (CE: ITM is lower; PE: ITM is higher).

        ``price_of(quote_ticker)`` is called once, and only for ATM/ITM/OTM strikes.

        Futures: ``option_type=None`` and no strike. Expiry ``None``, ``WEEKLY`` or
        ``MONTHLY`` is the nearest future, ``NEXT_*`` the one after, a date exactly that.
        """
        name, chain = self._chain(underlying, exchange)
        if option_type is None:
            if strike is not None:
                raise SymbolError(f"A strike ({strike}) was given for {name} without CE or PE.")
            return self._future(name, chain, expiry, today)
        if option_type not in ("CE", "PE"):
            raise SymbolError(f"Option type must be CE or PE, not {option_type!r}.")
        if expiry is None or strike is None:
            raise SymbolError(f"An option on {name} needs both an expiry and a strike.")
        expiry_ordinal = self._option_expiry(name, chain, expiry, today)
        ladder = chain.ladders.get((expiry_ordinal, option_type))
        if ladder is None:
            raise StrikeNotListed(
                f"No {name} {option_type} strikes are listed for {_day(expiry_ordinal)}.",
                underlying=name,
            )
        ticker = self._strike_ticker(name, option_type, expiry_ordinal, ladder, strike, price_of)
        return _contract(ticker, self._rows[ticker])

    def resolve_future(
        self, underlying: str, n: int, today: date, exchange: str | None = None
    ) -> Contract:
        """The n-th future on or after ``today`` (``NIFTY1!`` -> n=1, the nearest)."""
        if n < 1:
            raise SymbolError(f"Continuous future number must be 1 or more, not {n}.")
        name, chain = self._chain(underlying, exchange)
        return self._nth_future(name, chain, n, today)

    # --- internals --------------------------------------------------------------------

    def _chain(self, underlying: str, exchange: str | None) -> tuple[str, _Chain]:
        exchange_hint, name = _split_underlying(underlying)
        name = UNDERLYING_ALIASES.get(name, name)
        exchange = (exchange or exchange_hint or "").upper()
        venues = self._exchanges.get(name)
        if venues is None:
            raise UnknownUnderlying(
                _unknown_message(name, self._exchanges, "symbol master's derivatives"),
                underlying=name,
            )
        if exchange:
            if exchange not in venues:
                raise UnknownUnderlying(
                    f"{name} has no derivatives on {exchange}; it trades on {', '.join(venues)}.",
                    underlying=name,
                )
        else:
            exchange = venues[0]
        return name, self._chains[(exchange, name)]

    def _future(self, name: str, chain: _Chain, expiry: ExpirySelector | None, today: date) -> Contract:
        if expiry is None or expiry.kind in ("WEEKLY", "MONTHLY"):
            return self._nth_future(name, chain, 1, today)
        if expiry.kind in ("NEXT_WEEKLY", "NEXT_MONTHLY"):
            return self._nth_future(name, chain, 2, today)
        assert expiry.on is not None
        wanted = expiry.on.toordinal()
        index = bisect.bisect_left(chain.futures, wanted)
        if index == len(chain.futures) or chain.futures[index] != wanted:
            raise NoExpiry(
                f"{name} has no future expiring on {expiry.on.isoformat()} "
                f"(listed: {_days(chain.futures, today.toordinal())}).",
                underlying=name,
            )
        ticker = chain.future_tickers[index]
        return _contract(ticker, self._rows[ticker])

    def _nth_future(self, name: str, chain: _Chain, n: int, today: date) -> Contract:
        start = bisect.bisect_left(chain.futures, today.toordinal())
        index = start + n - 1
        if index >= len(chain.futures):
            wanted = "no future" if n == 1 else f"fewer than {n} futures"
            raise NoExpiry(
                f"{name} has {wanted} expiring on or after {today.isoformat()} "
                f"(listed: {_days(chain.futures, today.toordinal())}).",
                underlying=name,
            )
        ticker = chain.future_tickers[index]
        return _contract(ticker, self._rows[ticker])

    def _option_expiry(self, name: str, chain: _Chain, selector: ExpirySelector, today: date) -> int:
        today_ordinal = today.toordinal()
        if not chain.expiries:
            raise NoExpiry(f"{name} has no listed options (futures only).", underlying=name)
        if selector.kind == "DATE":
            assert selector.on is not None
            wanted = selector.on.toordinal()
            index = bisect.bisect_left(chain.expiries, wanted)
            if index < len(chain.expiries) and chain.expiries[index] == wanted:
                return wanted
            raise NoExpiry(
                f"{name} has no option expiry on {selector.on.isoformat()} "
                f"(listed: {_days(chain.expiries, min(today_ordinal, wanted))}).",
                underlying=name,
            )
        pool = chain.monthly if selector.kind in ("MONTHLY", "NEXT_MONTHLY") else chain.expiries
        index = bisect.bisect_left(pool, today_ordinal)
        if selector.kind.startswith("NEXT_"):
            index += 1
        if index >= len(pool):
            raise NoExpiry(
                f"{name} has no {_EXPIRY_WORDS[selector.kind]} on or after {today.isoformat()} "
                f"(listed: {_days(chain.expiries, today_ordinal)}).",
                underlying=name,
            )
        return pool[index]

    def _strike_ticker(
        self,
        name: str,
        option_type: str,
        expiry_ordinal: int,
        ladder: tuple[tuple[float, ...], tuple[str, ...]],
        selector: StrikeSelector,
        price_of: Callable[[str], float] | None,
    ) -> str:
        strikes, tickers = ladder
        where = f"{name} {_day(expiry_ordinal)} {option_type}"
        if selector.kind == "PRICE":
            assert selector.price is not None
            index = bisect.bisect_left(strikes, selector.price - 1e-6)
            if index < len(strikes) and abs(strikes[index] - selector.price) < 1e-6:
                return tickers[index]
            raise StrikeNotListed(
                f"Strike {format_strike(selector.price)} is not listed for {where}; "
                f"nearest listed: {_nearest_strikes(strikes, selector.price)}.",
                underlying=name,
            )
        if price_of is None:
            raise SymbolError(f"Strike {selector} on {name} needs the underlying price; none was provided.")
        quote = self.quote_ticker(name)
        price = price_of(quote)
        if not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
            raise InvalidPriceLevel(f"The price of {quote} is not usable for ATM selection: {price!r}.")
        atm = _atm_index(strikes, price)
        if atm is None:
            raise StrikeNotListed(
                f"The {name} price {format_strike(price)} is outside the listed strikes for {where} "
                f"({format_strike(strikes[0])} to {format_strike(strikes[-1])}); no strike is at the money.",
                underlying=name,
            )
        if selector.kind == "ATM":
            offset = selector.steps
        else:
            into_money = -1 if option_type == "CE" else 1  # CE: lower strikes are in the money
            offset = selector.steps * (into_money if selector.kind == "ITM" else -into_money)
        index = atm + offset
        if not 0 <= index < len(strikes):
            raise StrikeNotListed(
                f"Strike {selector} is beyond the listed strikes for {where}: ATM is "
                f"{format_strike(strikes[atm])} and the ladder runs {format_strike(strikes[0])} to "
                f"{format_strike(strikes[-1])}.",
                underlying=name,
            )
        return tickers[index]

    def _close_tickers(self, ticker: str) -> list[str]:
        # Neighbours in sort order share the exchange and underlying prefix; difflib
        # over that window is cheap, unlike over the whole master. Built on the first
        # miss; a concurrent first miss just builds the same list twice.
        if self._sorted_tickers is None:
            self._sorted_tickers = sorted(self._rows)
        tickers = self._sorted_tickers
        position = bisect.bisect_left(tickers, ticker)
        window = tickers[max(0, position - 40) : position + 40]
        return difflib.get_close_matches(ticker, window, n=5, cutoff=0.6)


def _contract(ticker: str, row: tuple) -> Contract:
    expiry = row[_EXPIRY]
    strike = row[_STRIKE]
    return Contract(
        ticker,
        row[_UND],
        row[_EXCH],
        row[_KIND],
        row[_LOT],
        row[_TICK],
        date.fromordinal(expiry) if expiry else None,
        strike if strike else None,
    )


def canonical_underlying(underlying: str) -> str:
    """The master's name for an underlying: ``nse:nifty50`` -> ``NIFTY``."""
    name = _split_underlying(underlying)[1]
    return UNDERLYING_ALIASES.get(name, name)


def _split_underlying(underlying: str) -> tuple[str | None, str]:
    """Split an optional exchange prefix: ``NSE:NIFTY`` -> ("NSE", "NIFTY"); ``nifty`` -> (None, "NIFTY")."""
    text = underlying.strip().upper()
    exchange, sep, name = text.partition(":")
    return (exchange, name) if sep else (None, text)


def _atm_index(strikes: tuple[float, ...], price: float) -> int | None:
    """The index of the strike nearest ``price`` (ties: the lower), or None if the
    price lies more than one rung beyond either end of the ladder."""
    index = bisect.bisect_left(strikes, price)
    if index == 0:
        gap = strikes[1] - strikes[0] if len(strikes) > 1 else 0.0
        return 0 if strikes[0] - price <= gap else None
    if index == len(strikes):
        gap = strikes[-1] - strikes[-2] if len(strikes) > 1 else 0.0
        return index - 1 if price - strikes[-1] <= gap else None
    below, above = strikes[index - 1], strikes[index]
    return index - 1 if price - below <= above - price else index


def _nearest_strikes(strikes: tuple[float, ...], price: float, count: int = 4) -> str:
    nearest = sorted(sorted(strikes, key=lambda s: abs(s - price))[:count])
    return ", ".join(format_strike(s) for s in nearest)


def _day(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat()


def _days(ordinals: tuple[int, ...], from_ordinal: int, count: int = 4) -> str:
    """Up to ``count`` listed expiries from a date on; the last ones if none is left."""
    index = bisect.bisect_left(ordinals, from_ordinal)
    chosen = ordinals[index : index + count] or ordinals[-count:]
    text = ", ".join(_day(o) for o in chosen)
    return (text + (", ..." if index + count < len(ordinals) else "")) if text else "none"


def _unknown_message(name: str, names: Iterable[str], where: str) -> str:
    close = difflib.get_close_matches(name, list(names), n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"{name!r} is not in the {where}.{hint}"

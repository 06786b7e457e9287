"""Generate Fyers symbol masters around an injected "today", in exactly the real format.

The local stack and the Fyers simulator serve these instead of the real files,
whose contracts expire (``shared/data/README.md``). Rows follow the real
21-column layout (``shared/fyers-v3.md`` §9-10 and the verbatim samples):

* NSE_FO: index futures, stock futures, then options per underlying. NIFTY has
  Tuesday weeklies (the next five Tuesdays) plus the next three monthlies (last
  Tuesday of the month); BANKNIFTY, FINNIFTY, MIDCPNIFTY and stocks have the
  three monthlies only. A month's last expiry takes the monthly ticker form
  (``NSE:NIFTY26NOV24500CE``), the others the weekly form (``NSE:NIFTY2612124500CE``).
* BSE_FO: SENSEX Thursday weeklies and monthlies (last Thursday), and futures.
* NSE_CM: equities, an ETF and the index rows (type 10, ``NSE:NIFTY50-INDEX``);
  BSE_CM: the SENSEX and BANKEX index rows.

Expiries are generated on or after ``today``; exchange holidays (which move an
expiry to the previous trading day) are out of scope. Tokens are synthetic
but unique and stable for a given ``today`` and parameters.

CLI: ``python -m deploy.local.mastergen --date 2026-11-23 --out DIR [--full-size]``.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator, Mapping

from common.selectors import format_strike

TUESDAY, THURSDAY = 1, 3
NSE_SESSION = "0915-1540|1815-1915:"  # NSE_FO, as in the 2026-07-31 master
CASH_SESSION = "0915-1530|1815-1915:"  # BSE_FO and cash masters
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKLY_MONTH_CODES = "123456789OND"
_EXCHANGE_CODES = {"NSE": "10", "BSE": "12"}
_EPOCH = date(1970, 1, 1)
# 15:30 IST is 10:00 UTC.
_EXPIRY_SECONDS_OF_DAY = 10 * 3600


@dataclass(frozen=True)
class IndexSpec:
    """An index with derivatives: where it trades, its lot, strike step and expiry pattern."""

    name: str
    exchange: str
    token: int  # the index's cash-market token (the F&O rows' underlying token)
    lot: int
    step: float
    future_tick: float
    weekly: bool  # weekly options besides the monthlies
    expiry_weekday: int


@dataclass(frozen=True)
class StockSpec:
    """A stock with futures and options; ``spot`` places its strike ladder."""

    name: str
    token: int
    lot: int
    spot: float
    step: float
    tick: float
    isin: str
    description: str


# Lot sizes as of 2026 (fyers-v3.md §9); NIFTY/BANKNIFTY/FINNIFTY futures ticks as in the sample.
NSE_INDICES = (
    IndexSpec("NIFTY", "NSE", 26000, 65, 50, 0.1, True, TUESDAY),
    IndexSpec("BANKNIFTY", "NSE", 26009, 30, 100, 0.2, False, TUESDAY),
    IndexSpec("FINNIFTY", "NSE", 26037, 60, 50, 0.1, False, TUESDAY),
    IndexSpec("MIDCPNIFTY", "NSE", 26074, 120, 25, 0.05, False, TUESDAY),
)
BSE_INDICES = (IndexSpec("SENSEX", "BSE", 1, 20, 100, 0.05, True, THURSDAY),)

#: Default underlying prices around which strike ladders are centred (the simulator's LTPs).
DEFAULT_SPOTS: dict[str, float] = {
    "NIFTY": 24500.0,
    "BANKNIFTY": 52000.0,
    "FINNIFTY": 24000.0,
    "MIDCPNIFTY": 12500.0,
    "SENSEX": 80000.0,
}

# Stocks with F&O; ARE&M, M&M and BAJAJ-AUTO carry the '&' and '-' that real names have.
STOCKS = (
    StockSpec("SBIN", 3045, 750, 800.0, 10, 0.05, "INE062A01020", "STATE BANK OF INDIA"),
    StockSpec("RELIANCE", 2885, 500, 1400.0, 20, 0.1, "INE002A01018", "RELIANCE INDUSTRIES LTD"),
    StockSpec("ARE&M", 100, 1000, 1000.0, 20, 0.1, "INE885A01032", "AMARA RAJA ENERGY MOB LTD"),
    StockSpec("INFY", 1594, 400, 1500.0, 20, 0.1, "INE009A01021", "INFOSYS LIMITED"),
    StockSpec("HDFCBANK", 1333, 550, 1000.0, 10, 0.05, "INE040A01034", "HDFC BANK LTD"),
    StockSpec("AXISBANK", 5900, 625, 1200.0, 10, 0.1, "INE238A01034", "AXIS BANK LIMITED"),
    StockSpec("ABB", 13, 125, 5500.0, 50, 0.5, "INE117A01022", "ABB INDIA LIMITED"),
    StockSpec("ADANIENT", 25, 309, 2400.0, 20, 0.1, "INE423A01024", "ADANI ENTERPRISES LIMITED"),
    StockSpec("TCS", 11536, 175, 3100.0, 20, 0.1, "INE467B01029", "TATA CONSULTANCY SERV LT"),
    StockSpec("M&M", 2031, 200, 3500.0, 50, 0.1, "INE101A01026", "MAHINDRA & MAHINDRA LTD"),
    StockSpec("BAJAJ-AUTO", 16669, 75, 9000.0, 100, 0.5, "INE917I01010", "BAJAJ AUTO LIMITED"),
)

# Cash-market index rows: (ticker name, description, token).
NSE_INDEX_ROWS = (
    ("NIFTY50", "NIFTY 50", 26000),
    ("NIFTYBANK", "NIFTY BANK", 26009),
    ("FINNIFTY", "NIFTY FIN SERVICE", 26037),
    ("MIDCPNIFTY", "NIFTY MID SELECT", 26074),
    ("NIFTYNXT50", "NIFTY NEXT 50", 26013),
    ("INDIAVIX", "INDIA VIX", 26017),
)
BSE_INDEX_ROWS = (("SENSEX", "SENSEX", 1), ("BANKEX", "BANKEX", 12))

# Full-size mode: enough synthetic stocks with wide ladders for ~75,000 NSE_FO rows.
FULL_SIZE_STOCKS = 220
FULL_SIZE_STOCK_STRIKES_EACH_SIDE = 25
FULL_SIZE_INDEX_STRIKES_EACH_SIDE = 100


# --- calendar -------------------------------------------------------------------


def last_weekday_of_month(year: int, month: int, weekday: int) -> date:
    """The last given weekday (Monday = 0) of a month."""
    next_month = date(year + month // 12, month % 12 + 1, 1)
    last = next_month - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def monthly_expiries(today: date, weekday: int, count: int = 3) -> list[date]:
    """The next ``count`` monthly expiries (last ``weekday`` of a month) on or after today."""
    found: list[date] = []
    year, month = today.year, today.month
    while len(found) < count:
        expiry = last_weekday_of_month(year, month, weekday)
        if expiry >= today:
            found.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def weekly_expiries(today: date, weekday: int, count: int = 5) -> list[date]:
    """The next ``count`` ``weekday``s on or after today."""
    first = today + timedelta(days=(weekday - today.weekday()) % 7)
    return [first + timedelta(weeks=i) for i in range(count)]


def option_expiries(today: date, spec: IndexSpec) -> list[date]:
    """Every option expiry listed for an index on ``today``, ascending."""
    expiries = set(monthly_expiries(today, spec.expiry_weekday))
    if spec.weekly:
        expiries.update(weekly_expiries(today, spec.expiry_weekday))
    return sorted(expiries)


def is_monthly_form(expiry: date, expiries: list[date]) -> bool:
    """Whether an expiry is its underlying's last of the month (it takes the monthly ticker form)."""
    return not any(
        other > expiry and (other.year, other.month) == (expiry.year, expiry.month) for other in expiries
    )


# --- row formatting -------------------------------------------------------------


def expiry_epoch(expiry: date) -> int:
    """Expiry as the master writes it: epoch seconds of 15:30 IST on the expiry date."""
    return (expiry - _EPOCH).days * 86400 + _EXPIRY_SECONDS_OF_DAY


def derivative_ticker(
    exchange: str, underlying: str, expiry: date, monthly: bool, strike: float | None, option_type: str
) -> str:
    """``NSE:NIFTY26NOVFUT``, ``NSE:NIFTY26NOV24500CE`` (monthly) or ``NSE:NIFTY26D0124500CE`` (weekly)."""
    year = f"{expiry.year % 100:02d}"
    if strike is None:
        return f"{exchange}:{underlying}{year}{_MONTHS[expiry.month - 1]}FUT"
    if monthly:
        code = _MONTHS[expiry.month - 1]
    else:
        code = f"{_WEEKLY_MONTH_CODES[expiry.month - 1]}{expiry.day:02d}"
    return f"{exchange}:{underlying}{year}{code}{format_strike(strike)}{option_type}"


def _description(exchange: str, underlying: str, expiry: date, strike: float | None, option_type: str) -> str:
    # NSE: "NIFTY 04 Aug 26 28600 CE"; BSE: "SENSEX 25 Oct 16 87300 CE" (YY Mon DD).
    month = _MONTHS[expiry.month - 1].title()
    if exchange == "BSE":
        when = f"{expiry.year % 100:02d} {month} {expiry.day:02d}"
    else:
        when = f"{expiry.day:02d} {month} {expiry.year % 100:02d}"
    tail = "FUT" if strike is None else f"{format_strike(strike)} {option_type}"
    return f"{underlying} {when} {tail}"


class _Rows:
    """Writes derivative rows with unique, increasing exchange tokens."""

    def __init__(self, exchange: str, today: date, session: str, first_token: int) -> None:
        self.exchange = exchange
        self.code = _EXCHANGE_CODES[exchange]
        self.today = today.isoformat()
        self.session = session
        self.tokens = itertools.count(first_token)
        self.lines: list[str] = []

    def derivative(
        self,
        *,
        underlying: str,
        underlying_token: int,
        instrument_type: int,
        lot: int,
        tick: float,
        expiry: date,
        monthly: bool,
        strike: float | None = None,
        option_type: str = "XX",
    ) -> None:
        token = next(self.tokens)
        fytoken = f"{self.code}11{expiry:%y%m%d}{token}"
        ticker = derivative_ticker(self.exchange, underlying, expiry, monthly, strike, option_type)
        self.lines.append(
            ",".join(
                (
                    fytoken,
                    _description(self.exchange, underlying, expiry, strike, option_type),
                    str(instrument_type),
                    str(lot),
                    repr(tick),
                    "",
                    self.session,
                    self.today,
                    str(expiry_epoch(expiry)),
                    ticker,
                    self.code,
                    "11",
                    str(token),
                    underlying,
                    str(underlying_token),
                    repr(float(strike)) if strike is not None else "-1.0",
                    option_type,
                    f"{self.code}10000000{underlying_token}",
                    "None",
                    "0",
                    "0.0",
                )
            )
        )

    def futures(
        self,
        *,
        underlying: str,
        underlying_token: int,
        instrument_type: int,
        lot: int,
        tick: float,
        expiries: list[date],
    ) -> None:
        for expiry in expiries:
            self.derivative(
                underlying=underlying,
                underlying_token=underlying_token,
                instrument_type=instrument_type,
                lot=lot,
                tick=tick,
                expiry=expiry,
                monthly=True,
            )

    def options(
        self,
        *,
        underlying: str,
        underlying_token: int,
        instrument_type: int,
        lot: int,
        expiries: list[date],
        spot: float,
        step: float,
        each_side: int,
    ) -> None:
        centre = round(spot / step) * step
        strikes = [centre + i * step for i in range(-each_side, each_side + 1) if centre + i * step > 0]
        for expiry in expiries:
            monthly = is_monthly_form(expiry, expiries)
            for strike in strikes:
                for option_type in ("CE", "PE"):
                    self.derivative(
                        underlying=underlying,
                        underlying_token=underlying_token,
                        instrument_type=instrument_type,
                        lot=lot,
                        tick=0.05,
                        expiry=expiry,
                        monthly=monthly,
                        strike=strike,
                        option_type=option_type,
                    )

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def synthetic_stocks(count: int) -> Iterator[StockSpec]:
    """Filler stocks (``SYNAAA``, ``SYNAAB``, ...) for full-size masters."""
    letters = itertools.product("ABCDEFGHIJKLMNOPQRSTUVWXYZ", repeat=3)
    names = ("SYN" + "".join(triple) for triple in letters)
    for i, name in zip(range(count), names):
        spot = 100.0 + (i * 37) % 4900
        step = 5.0 if spot < 500 else 10.0 if spot < 2000 else 50.0
        yield StockSpec(name, 30000 + i, 500, spot, step, 0.05, f"INE{i:06d}A01", f"{name} SYNTHETIC LTD")


def _stocks(stock_count: int | None) -> list[StockSpec]:
    if stock_count is None:
        return list(STOCKS)
    return list(STOCKS[:stock_count]) + list(synthetic_stocks(max(0, stock_count - len(STOCKS))))


# --- the masters ----------------------------------------------------------------


def generate_nse_fo(
    today: date,
    *,
    spots: Mapping[str, float] | None = None,
    strikes_each_side: int = 20,
    stock_strikes_each_side: int = 10,
    stock_count: int | None = None,
    full_size: bool = False,
) -> str:
    """NSE_FO.csv for ``today``: index futures, stock futures, then options per underlying.

    ``spots`` overrides :data:`DEFAULT_SPOTS` (and stock spots by name); ``stock_count``
    takes the first named stocks then synthetic ones; ``full_size`` gives ~75,000 rows.
    """
    if full_size:
        stock_count = FULL_SIZE_STOCKS if stock_count is None else stock_count
        strikes_each_side = FULL_SIZE_INDEX_STRIKES_EACH_SIDE
        stock_strikes_each_side = FULL_SIZE_STOCK_STRIKES_EACH_SIDE
    prices = {**DEFAULT_SPOTS, **(spots or {})}
    stocks = _stocks(stock_count)
    rows = _Rows("NSE", today, NSE_SESSION, first_token=35001)
    futures = monthly_expiries(today, TUESDAY)
    for spec in NSE_INDICES:
        rows.futures(
            underlying=spec.name,
            underlying_token=spec.token,
            instrument_type=11,
            lot=spec.lot,
            tick=spec.future_tick,
            expiries=futures,
        )
    for stock in stocks:
        rows.futures(
            underlying=stock.name,
            underlying_token=stock.token,
            instrument_type=13,
            lot=stock.lot,
            tick=stock.tick,
            expiries=futures,
        )
    for spec in NSE_INDICES:
        rows.options(
            underlying=spec.name,
            underlying_token=spec.token,
            instrument_type=14,
            lot=spec.lot,
            expiries=option_expiries(today, spec),
            spot=prices[spec.name],
            step=spec.step,
            each_side=strikes_each_side,
        )
    for stock in stocks:
        rows.options(
            underlying=stock.name,
            underlying_token=stock.token,
            instrument_type=15,
            lot=stock.lot,
            expiries=futures,
            spot=prices.get(stock.name, stock.spot),
            step=stock.step,
            each_side=stock_strikes_each_side,
        )
    return rows.text()


def generate_bse_fo(
    today: date, *, spots: Mapping[str, float] | None = None, strikes_each_side: int = 20
) -> str:
    """BSE_FO.csv for ``today``: SENSEX futures, then SENSEX weekly and monthly options."""
    prices = {**DEFAULT_SPOTS, **(spots or {})}
    rows = _Rows("BSE", today, CASH_SESSION, first_token=870001)
    for spec in BSE_INDICES:
        rows.futures(
            underlying=spec.name,
            underlying_token=spec.token,
            instrument_type=11,
            lot=spec.lot,
            tick=spec.future_tick,
            expiries=monthly_expiries(today, spec.expiry_weekday),
        )
    for spec in BSE_INDICES:
        rows.options(
            underlying=spec.name,
            underlying_token=spec.token,
            instrument_type=14,
            lot=spec.lot,
            expiries=option_expiries(today, spec),
            spot=prices[spec.name],
            step=spec.step,
            each_side=strikes_each_side,
        )
    return rows.text()


def _cash_row(
    exchange: str,
    today: date,
    *,
    name: str,
    suffix: str,
    description: str,
    instrument_type: int,
    token: int,
    tick: float,
    isin: str = "",
    mtf: tuple[str, str] = ("0", "0.0"),
) -> str:
    code = _EXCHANGE_CODES[exchange]
    fytoken = f"{code}10000000{token}"
    ticker = f"{exchange}:{name}-{suffix}"
    columns = [fytoken, description, str(instrument_type), "1", repr(tick), isin, CASH_SESSION]
    columns += [today.isoformat(), "", ticker, code, "10", str(token), name, str(token)]
    columns += ["-1.0", "XX", fytoken, "None", *mtf]
    return ",".join(columns) + "\n"


def _index_row(exchange: str, today: date, name: str, description: str, token: int) -> str:
    return _cash_row(
        exchange,
        today,
        name=name,
        suffix="INDEX",
        description=description,
        instrument_type=10,
        token=token,
        tick=0.05,
    )


def generate_nse_cm(today: date, *, stock_count: int | None = None) -> str:
    """NSE_CM.csv: the index rows, an ETF and the F&O stocks' equity rows (``NSE:SBIN-EQ``)."""
    lines = [_index_row("NSE", today, name, text, token) for name, text, token in NSE_INDEX_ROWS]
    lines.append(
        _cash_row(
            "NSE",
            today,
            name="SETFNIF50",
            suffix="EQ",
            description="SBI-ETF NIFTY 50",
            instrument_type=9,
            token=10176,
            tick=0.01,
            isin="INF200KA1FS1",
            mtf=("1", "4.0"),
        )
    )
    for stock in _stocks(stock_count):
        lines.append(
            _cash_row(
                "NSE",
                today,
                name=stock.name,
                suffix="EQ",
                description=stock.description,
                instrument_type=0,
                token=stock.token,
                tick=0.05,
                isin=stock.isin,
                mtf=("1", "3.2"),
            )
        )
    return "".join(lines)


def generate_bse_cm(today: date) -> str:
    """BSE_CM.csv, reduced to the index rows (``BSE:SENSEX-INDEX``) that quotes need."""
    return "".join(_index_row("BSE", today, name, text, token) for name, text, token in BSE_INDEX_ROWS)


def generate_masters(
    today: date, *, spots: Mapping[str, float] | None = None, full_size: bool = False
) -> dict[str, str]:
    """Every master as text, keyed by Fyers' file stem (``NSE_FO``, ``BSE_FO``, ``NSE_CM``, ``BSE_CM``)."""
    stock_count = FULL_SIZE_STOCKS if full_size else None
    return {
        "NSE_FO": generate_nse_fo(today, spots=spots, full_size=full_size),
        "BSE_FO": generate_bse_fo(today, spots=spots),
        "NSE_CM": generate_nse_cm(today, stock_count=stock_count),
        "BSE_CM": generate_bse_cm(today),
    }


def write_masters(
    directory: str | Path,
    today: date,
    *,
    spots: Mapping[str, float] | None = None,
    full_size: bool = False,
) -> dict[str, Path]:
    """Write ``<STEM>.csv`` files into ``directory`` (created if needed); returns stem -> path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, text in generate_masters(today, spots=spots, full_size=full_size).items():
        path = out / f"{stem}.csv"
        path.write_text(text, encoding="utf-8", newline="")
        paths[stem] = path
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", type=date.fromisoformat, required=True, help="'today' (YYYY-MM-DD, IST)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the CSV files")
    parser.add_argument("--full-size", action="store_true", help="~75,000 NSE_FO rows")
    args = parser.parse_args(argv)
    for stem, path in write_masters(args.out, args.date, full_size=args.full_size).items():
        rows = sum(1 for _ in path.open(encoding="utf-8"))
        print(f"{stem}: {rows} rows -> {path}")


if __name__ == "__main__":
    main()

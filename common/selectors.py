"""Expiry and strike selectors: what an alert says about which contract it means.

An alert names a contract relative to the market ("the weekly expiry, two strikes
above the money") or absolutely ("2026-11-24, 24500"). This module only parses
and prints those selectors; ``common.symbols`` turns them into a listed contract.

Stdlib only: the webhook imports it on its cold-start path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

ExpiryKind = Literal["DATE", "WEEKLY", "MONTHLY", "NEXT_WEEKLY", "NEXT_MONTHLY"]
StrikeKind = Literal["PRICE", "ATM", "ITM", "OTM"]

_RELATIVE_EXPIRIES: dict[str, ExpiryKind] = {
    "WEEKLY": "WEEKLY",
    "MONTHLY": "MONTHLY",
    "NEXT_WEEKLY": "NEXT_WEEKLY",
    "NEXT_MONTHLY": "NEXT_MONTHLY",
}

# Tried in order; %b and %y are case-insensitive in strptime.
_DATE_FORMATS = ("%Y-%m-%d", "%d-%m-%Y", "%d%b%Y", "%d%b%y", "%d-%b-%Y", "%d-%b-%y")

_STRIKE_RELATIVE = re.compile(r"^(ATM)(?:([+-])(\d+))?$|^(ITM|OTM)(\d+)?$")


@dataclass(frozen=True)
class ExpirySelector:
    """Which expiry: an exact date, or one relative to today."""

    kind: ExpiryKind
    on: date | None = None

    def __post_init__(self) -> None:
        if (self.kind == "DATE") != (self.on is not None):
            raise ValueError("an expiry selector has a date exactly when its kind is DATE")

    def __str__(self) -> str:
        return self.on.isoformat() if self.on is not None else self.kind


@dataclass(frozen=True)
class StrikeSelector:
    """Which strike: a price, or a number of listed strikes away from the money.

    ``ATM`` with ``steps`` moves along the listed ladder (positive = higher strike);
    ``ITM``/``OTM`` with ``steps`` >= 1 move into or out of the money, which
    depends on the option type (resolved in ``common.symbols``).
    """

    kind: StrikeKind
    price: float | None = None
    steps: int = 0

    def __post_init__(self) -> None:
        if self.kind == "PRICE":
            if self.price is None or not self.price > 0:
                raise ValueError("a PRICE strike needs a positive price")
            if self.steps:
                raise ValueError("a PRICE strike has no steps")
        elif self.price is not None:
            raise ValueError(f"a {self.kind} strike has no price")
        elif self.kind in ("ITM", "OTM") and self.steps < 1:
            raise ValueError(f"{self.kind} needs at least one step")

    def __str__(self) -> str:
        if self.kind == "PRICE":
            assert self.price is not None
            return format_strike(self.price)
        if self.kind == "ATM":
            return "ATM" if self.steps == 0 else f"ATM{self.steps:+d}"
        return f"{self.kind}{self.steps}"


def format_strike(price: float) -> str:
    """A strike as Fyers and traders write it: no trailing ``.0`` ("24500", "24512.5")."""
    return f"{price:.2f}".rstrip("0").rstrip(".")


def parse_expiry(value: str | date) -> ExpirySelector:
    """Parse an expiry: a date (several spellings) or WEEKLY/MONTHLY/NEXT_WEEKLY/NEXT_MONTHLY."""
    if isinstance(value, datetime):
        return ExpirySelector("DATE", value.date())
    if isinstance(value, date):
        return ExpirySelector("DATE", value)
    if not isinstance(value, str):
        raise ValueError(f"expiry must be text or a date, not {type(value).__name__}")
    text = value.strip().upper()
    keyword = re.sub(r"[\s_-]+", "_", text)
    if keyword in ("NEXTWEEKLY", "NEXTMONTHLY"):
        keyword = "NEXT_" + keyword[4:]
    if keyword in _RELATIVE_EXPIRIES:
        return ExpirySelector(_RELATIVE_EXPIRIES[keyword])
    for fmt in _DATE_FORMATS:
        try:
            return ExpirySelector("DATE", datetime.strptime(text, fmt).date())
        except ValueError:
            continue
    raise ValueError(
        f"expiry {value!r} is not understood: use WEEKLY, MONTHLY, NEXT_WEEKLY, NEXT_MONTHLY "
        "or a date such as 2026-11-24, 24-11-2026, 24NOV2026, 24NOV26 or 24-Nov-2026"
    )


def parse_strike(value: str | int | float) -> StrikeSelector:
    """Parse a strike: a positive number, ATM, ATM+N, ATM-N, ITMn or OTMn (ITM = ITM1)."""
    if isinstance(value, bool):
        raise ValueError("strike must be a number or ATM/ITM/OTM text, not a boolean")
    if isinstance(value, (int, float)):
        return _price_strike(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"strike must be a number or text, not {type(value).__name__}")
    text = re.sub(r"\s+", "", value).upper()
    match = _STRIKE_RELATIVE.match(text)
    if match:
        atm, sign, atm_steps, side, side_steps = match.groups()
        if atm:
            steps = int(atm_steps) if atm_steps else 0
            return StrikeSelector("ATM", steps=-steps if sign == "-" else steps)
        steps = int(side_steps) if side_steps else 1
        if steps < 1:
            raise ValueError(f"strike {value!r}: {side} needs at least one step (e.g. {side}1)")
        return StrikeSelector(side, steps=steps)
    try:
        price = float(text)
    except ValueError:
        raise ValueError(
            f"strike {value!r} is not understood: use a price (24500), ATM, ATM+2, ATM-1, ITM2 or OTM3"
        ) from None
    return _price_strike(price, value)


def _price_strike(price: float, original: object) -> StrikeSelector:
    if not (price > 0 and price != float("inf")):
        raise ValueError(f"strike {original!r} must be a positive price")
    return StrikeSelector("PRICE", price=price)


_CONTINUOUS = re.compile(r"^(?:[A-Z]+:)?([A-Z0-9&_-]+?)([1-9])!$")


def parse_continuous_future(symbol: str) -> tuple[str, int] | None:
    """TradingView continuous futures: "NIFTY1!" -> ("NIFTY", 1); anything else -> None.

    An exchange prefix ("NSE:NIFTY1!") is accepted and dropped.
    """
    match = _CONTINUOUS.match(symbol.strip().upper())
    if not match:
        return None
    return match.group(1), int(match.group(2))

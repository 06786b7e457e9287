"""The index underlyings: one table of what the router knows about each.

An index has no cash instrument: an alert on one names an option or a future.
Its LTP (for ATM strikes) comes from its index ticker, and an order above its
freeze quantity must be sliced. NSE/BSE revise freeze quantities; the CSV master
does not carry them, so these are conservative defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Index:
    quote: str  # the ticker whose LTP drives ATM selection
    freeze_qty: int  # units above which an order must be sliced


INDICES = {
    "NIFTY": Index("NSE:NIFTY50-INDEX", 1800),
    "BANKNIFTY": Index("NSE:NIFTYBANK-INDEX", 900),
    "FINNIFTY": Index("NSE:FINNIFTY-INDEX", 1800),
    "MIDCPNIFTY": Index("NSE:MIDCPNIFTY-INDEX", 2800),
    "NIFTYNXT50": Index("NSE:NIFTYNXT50-INDEX", 600),
    "SENSEX": Index("BSE:SENSEX-INDEX", 1000),
    "BANKEX": Index("BSE:BANKEX-INDEX", 900),
}

INDEX_UNDERLYINGS = frozenset(INDICES)

"""A faithful local Fyers v3 simulator (fyers-v3.md §12), split by concern.

``server`` holds :class:`FyersSimulator` and the route constants; ``exchange``
the book; ``tokens`` auth; ``instruments`` the master and prices; ``faults``
and ``ratelimit`` the scripted failures and Fyers' limits.
"""

from deploy.local.fyers_sim.server import (
    CANCEL, FUNDS, MODIFY, ORDERBOOK, PLACE, POSITIONS, PROFILE, QUOTES, TRADEBOOK, FyersSimulator,
)

__all__ = [
    "CANCEL", "FUNDS", "MODIFY", "ORDERBOOK", "PLACE", "POSITIONS", "PROFILE", "QUOTES", "TRADEBOOK",
    "FyersSimulator",
]

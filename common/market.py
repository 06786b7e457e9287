"""Market hours: is the exchange open for orders now (IST)?"""

from __future__ import annotations

from datetime import datetime, time

from common.records import IST


def market_closed_reason(now: datetime, *, open_at: time, close_at: time, holidays: list[str]) -> str | None:
    """Why the market is closed at ``now``, or None when it is open (weekdays, open..close IST)."""
    local = now.astimezone(IST)
    if local.weekday() >= 5:
        return f"Market closed: {local:%A} (IST)."
    if local.date().isoformat() in holidays:
        return f"Market closed: {local:%d %b %Y} is a trading holiday."
    if not open_at <= local.time() < close_at:
        return f"Market closed at {local:%H:%M} IST (open {open_at:%H:%M}-{close_at:%H:%M})."
    return None

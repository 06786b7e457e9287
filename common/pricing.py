"""Tick rounding and stop-loss/take-profit levels, in exact decimal arithmetic.

Fyers rejects prices that are not a multiple of the contract's tick
("not a multiple of tick size 0.0500"), so every price the router sends goes
through :func:`round_to_tick`. Arithmetic is done in :class:`~decimal.Decimal`
built from the numbers' shortest text (``Decimal(str(0.1))``), so 0.1 + 0.2
artefacts never reach the broker; results are floats whose text is the exact
tick multiple (``24512.35``), ready for the JSON payload.

Stop-loss and take-profit rule: both are rounded **toward the reference price**
(the entry or LTP). The stop never risks more than the points asked, and the
target never asks for more than the points asked; a distance that rounds to
less than one tick is refused rather than silently widened.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal

from common.errors import InvalidPriceLevel

Side = Literal["BUY", "SELL"]
RoundingMode = Literal["nearest", "down", "up"]
Number = float | int | Decimal | str

_ROUNDING = {"nearest": ROUND_HALF_UP, "down": ROUND_FLOOR, "up": ROUND_CEILING}
_ONE = Decimal(1)


def to_decimal(value: Number) -> Decimal:
    """A number as the Decimal of its shortest text: 0.1 -> Decimal("0.1"), not 0.1000000000000000055..."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a price cannot be a boolean")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise InvalidPriceLevel(f"{value!r} is not a number.") from None


def round_to_tick(price: Number, tick: Number, mode: RoundingMode = "nearest") -> float:
    """``price`` rounded to a multiple of ``tick``: ``nearest`` (halves go up), ``down`` or ``up``."""
    return float(_round(to_decimal(price), _tick(tick), mode))


def _round(price: Decimal, tick: Decimal, mode: RoundingMode) -> Decimal:
    if not price.is_finite():
        raise InvalidPriceLevel(f"Price {price} is not a finite number.")
    return (price / tick).quantize(_ONE, rounding=_ROUNDING[mode]) * tick


def _tick(tick: Number) -> Decimal:
    value = to_decimal(tick)
    if not (value.is_finite() and value > 0):
        raise ValueError(f"tick size must be a positive number, not {tick!r}")
    return value


@dataclass(frozen=True)
class ExitLevels:
    """Absolute stop-loss and take-profit prices (None = not set), tick multiples."""

    stop_loss: float | None = None
    take_profit: float | None = None


@dataclass(frozen=True)
class BracketOffsets:
    """What Fyers' cover and bracket orders take: positive point distances from the
    order price (``stopLoss``, ``takeProfit``), tick multiples; None = not set."""

    stop_loss: float | None = None
    take_profit: float | None = None


def exit_levels(
    side: Side,
    reference: Number,
    *,
    tick: Number,
    sl_points: Number | None = None,
    tp_points: Number | None = None,
    stop_loss: Number | None = None,
    take_profit: Number | None = None,
) -> ExitLevels:
    """Stop-loss and take-profit prices for a position opened on ``side`` at ``reference``.

    Each leg is given either as points from the reference (``sl_points``) or as a
    price (``stop_loss``), not both. BUY: stop below, target above; SELL: the
    opposite. Raises ``InvalidPriceLevel`` for a level that is zero or negative,
    on the wrong side, or less than one tick away.
    """
    ref, step = _reference(reference), _tick(tick)
    return ExitLevels(
        _leg_level(side, ref, step, "stop-loss", sl_points, stop_loss),
        _leg_level(side, ref, step, "take-profit", tp_points, take_profit),
    )


def bracket_offsets(
    side: Side,
    reference: Number,
    *,
    tick: Number,
    sl_points: Number | None = None,
    tp_points: Number | None = None,
    stop_loss: Number | None = None,
    take_profit: Number | None = None,
) -> BracketOffsets:
    """The ``stopLoss``/``takeProfit`` distances for a CO/BO order priced at ``reference``.

    Same inputs, rounding and checks as :func:`exit_levels`; the answer is the
    distance from the tick-rounded reference to each level.
    """
    ref, step = _reference(reference), _tick(tick)
    on_tick = _round(ref, step, "nearest")
    offsets = []
    for leg, points, level in (
        ("stop-loss", sl_points, stop_loss),
        ("take-profit", tp_points, take_profit),
    ):
        price = _leg_level(side, on_tick, step, leg, points, level)
        offsets.append(None if price is None else float(abs(on_tick - to_decimal(price))))
    return BracketOffsets(*offsets)


def _reference(reference: Number) -> Decimal:
    value = to_decimal(reference)
    if not (value.is_finite() and value > 0):
        raise InvalidPriceLevel(f"The reference price {reference!r} is not a positive number.")
    return value


def _leg_level(
    side: Side, ref: Decimal, tick: Decimal, leg: str, points: Number | None, level: Number | None
) -> float | None:
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side must be BUY or SELL, not {side!r}")
    if points is not None and level is not None:
        raise InvalidPriceLevel(f"Give the {leg} either in points or as a price, not both.")
    if points is None and level is None:
        return None
    # BUY: the stop is below and the target above; SELL mirrors it.
    below = (leg == "stop-loss") == (side == "BUY")
    if points is not None:
        distance = to_decimal(points)
        if not (distance.is_finite() and distance > 0):
            raise InvalidPriceLevel(f"The {leg} distance must be a positive number of points, not {points!r}.")
        raw = ref - distance if below else ref + distance
    else:
        raw = to_decimal(level)
        if not raw.is_finite():
            raise InvalidPriceLevel(f"The {leg} price {level!r} is not a number.")
        wrong_side = raw >= ref if below else raw <= ref
        if wrong_side:
            where = "below" if below else "above"
            raise InvalidPriceLevel(
                f"A {side} {leg} must be {where} the price {_text(ref)}; got {_text(raw)}."
            )
    # Toward the reference: up for a level below it, down for one above it.
    rounded = _round(raw, tick, "up" if below else "down")
    if rounded <= 0:
        raise InvalidPriceLevel(f"The {leg} level {_text(rounded)} is zero or negative (price {_text(ref)}).")
    if (rounded >= ref) if below else (rounded <= ref):
        raise InvalidPriceLevel(
            f"The {leg} is less than one tick ({_text(tick)}) from the price {_text(ref)}."
        )
    return float(rounded)


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")

"""Specification of tick rounding and stop-loss/take-profit levels."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidPriceLevel
from common.pricing import (
    BracketOffsets,
    ExitLevels,
    bracket_offsets,
    exit_levels,
    round_to_tick,
)

TICKS = st.sampled_from(["0.05", "0.01", "0.1", "0.2", "0.5", "1", "5"])
PRICES = st.decimals(min_value="0.01", max_value="200000", places=4, allow_nan=False, allow_infinity=False)


def is_tick_multiple(value: float, tick: str) -> bool:
    return Decimal(str(value)) % Decimal(tick) == 0


class TestRoundToTick:
    @pytest.mark.parametrize(
        "price, tick, mode, expected",
        [
            (24512.37, 0.05, "nearest", 24512.35),
            (24512.38, 0.05, "nearest", 24512.4),
            (100.025, 0.05, "nearest", 100.05),  # a half tick goes up
            (0.1 + 0.2, 0.1, "nearest", 0.3),  # no float artefact
            (101.01, 0.05, "down", 101.0),
            (101.01, 0.05, "up", 101.05),
            (101.05, 0.05, "up", 101.05),  # already on a tick: unchanged
            (5712.3, 0.2, "nearest", 5712.4),
        ],
    )
    def test_examples(self, price, tick, mode, expected):
        assert round_to_tick(price, tick, mode) == expected

    def test_the_result_prints_as_the_exact_tick_multiple(self):
        assert repr(round_to_tick(24512.37, 0.05)) == "24512.35"
        assert repr(round_to_tick(0.07, 0.05, "up")) == "0.1"

    @given(price=PRICES, tick=TICKS, mode=st.sampled_from(["nearest", "down", "up"]))
    def test_result_is_a_tick_multiple(self, price, tick, mode):
        assert is_tick_multiple(round_to_tick(price, tick, mode), tick)

    @given(price=PRICES, tick=TICKS)
    def test_nearest_is_within_half_a_tick(self, price, tick):
        assert abs(Decimal(str(round_to_tick(price, tick))) - price) <= Decimal(tick) / 2

    @given(price=PRICES, tick=TICKS)
    def test_down_and_up_bracket_the_price_within_one_tick(self, price, tick):
        down = Decimal(str(round_to_tick(price, tick, "down")))
        up = Decimal(str(round_to_tick(price, tick, "up")))
        assert down <= price <= up
        assert up - down in (0, Decimal(tick))

    @pytest.mark.parametrize("tick", [0, -0.05, "nan"])
    def test_a_bad_tick_is_a_programming_error(self, tick):
        with pytest.raises(ValueError):
            round_to_tick(100, tick)

    def test_a_non_finite_price_is_refused(self):
        with pytest.raises(InvalidPriceLevel):
            round_to_tick(float("inf"), 0.05)


class TestExitLevels:
    def test_buy_stop_below_and_target_above(self):
        assert exit_levels("BUY", 100, tick=0.05, sl_points=2, tp_points=5) == ExitLevels(98.0, 105.0)

    def test_sell_stop_above_and_target_below(self):
        assert exit_levels("SELL", 100, tick=0.05, sl_points=2, tp_points=5) == ExitLevels(102.0, 95.0)

    def test_off_tick_distances_round_toward_the_price(self):
        # Stop 97.97 -> 98.00 (never risk more than asked); target 105.07 -> 105.05.
        assert exit_levels("BUY", 100, tick=0.05, sl_points=2.03, tp_points=5.07) == ExitLevels(98.0, 105.05)
        assert exit_levels("SELL", 100, tick=0.05, sl_points=2.03, tp_points=5.07) == ExitLevels(102.0, 94.95)

    def test_absolute_levels_are_checked_and_rounded_toward_the_price(self):
        assert exit_levels("BUY", 250.5, tick=0.05, stop_loss=240.02, take_profit=260.08) == ExitLevels(
            240.05, 260.05
        )

    def test_unset_legs_stay_unset(self):
        assert exit_levels("BUY", 100, tick=0.05) == ExitLevels(None, None)
        assert exit_levels("SELL", 100, tick=0.05, sl_points=1) == ExitLevels(101.0, None)

    @pytest.mark.parametrize(
        "side, kwargs, message",
        [
            ("BUY", {"stop_loss": 101}, "BUY stop-loss must be below"),
            ("BUY", {"take_profit": 99}, "BUY take-profit must be above"),
            ("SELL", {"stop_loss": 99}, "SELL stop-loss must be above"),
            ("SELL", {"take_profit": 100}, "SELL take-profit must be below"),
            ("BUY", {"sl_points": 150}, "zero or negative"),
            ("BUY", {"sl_points": 100}, "zero or negative"),
            ("BUY", {"sl_points": 0.03}, "less than one tick"),
            ("BUY", {"sl_points": 0}, "positive number of points"),
            ("SELL", {"tp_points": -5}, "positive number of points"),
            ("BUY", {"sl_points": 2, "stop_loss": 98}, "not both"),
        ],
    )
    def test_impossible_levels_are_refused(self, side, kwargs, message):
        with pytest.raises(InvalidPriceLevel, match=message):
            exit_levels(side, 100, tick=0.05, **kwargs)

    @pytest.mark.parametrize("reference", [0, -1, float("nan")])
    def test_a_reference_price_must_be_positive(self, reference):
        with pytest.raises(InvalidPriceLevel):
            exit_levels("BUY", reference, tick=0.05, sl_points=1)

    @given(
        side=st.sampled_from(["BUY", "SELL"]),
        reference=st.decimals(min_value="1", max_value="100000", places=2),
        sl=st.decimals(min_value="0.05", max_value="0.99", places=2),
        tp=st.decimals(min_value="0.05", max_value="1000", places=2),
        tick=st.sampled_from(["0.05", "0.01"]),
    )
    def test_levels_are_on_the_right_side_on_ticks_and_no_further_than_asked(self, side, reference, sl, tp, tick):
        reference = Decimal(str(round_to_tick(reference, tick)))
        sl_points = sl * reference  # a fraction of the price keeps the stop above zero
        try:
            levels = exit_levels(side, reference, tick=tick, sl_points=sl_points, tp_points=tp)
        except InvalidPriceLevel as exc:
            assert "less than one tick" in exc.message or "zero or negative" in exc.message
            return
        stop, target = Decimal(str(levels.stop_loss)), Decimal(str(levels.take_profit))
        assert is_tick_multiple(levels.stop_loss, tick) and is_tick_multiple(levels.take_profit, tick)
        if side == "BUY":
            assert 0 < stop < reference < target
        else:
            assert target < reference < stop
        assert abs(reference - stop) <= sl_points
        assert abs(target - reference) <= tp


class TestBracketOffsets:
    def test_offsets_are_positive_tick_multiple_distances(self):
        assert bracket_offsets("BUY", 100, tick=0.05, sl_points=2.03, tp_points=5.07) == BracketOffsets(2.0, 5.05)
        assert bracket_offsets("SELL", 100, tick=0.05, sl_points=2.03, tp_points=5.07) == BracketOffsets(2.0, 5.05)

    def test_offsets_from_absolute_levels(self):
        assert bracket_offsets("SELL", 250.5, tick=0.05, stop_loss=255, take_profit=240) == BracketOffsets(4.5, 10.5)

    def test_an_off_tick_reference_is_rounded_first(self):
        assert bracket_offsets("BUY", 100.02, tick=0.05, sl_points=1, tp_points=1) == BracketOffsets(1.0, 1.0)

    def test_wrong_side_levels_are_refused(self):
        with pytest.raises(InvalidPriceLevel, match="must be below"):
            bracket_offsets("BUY", 100, tick=0.05, stop_loss=100.5)

    @given(
        side=st.sampled_from(["BUY", "SELL"]),
        points=st.decimals(min_value="0.05", max_value="500", places=3),
        tick=TICKS,
    )
    def test_offsets_never_exceed_the_points_asked(self, side, points, tick):
        try:
            offsets = bracket_offsets(side, 1000, tick=tick, sl_points=points, tp_points=points)
        except InvalidPriceLevel:
            assert points < Decimal(tick)
            return
        for offset in (offsets.stop_loss, offsets.take_profit):
            assert 0 < Decimal(str(offset)) <= points
            assert is_tick_multiple(offset, tick)

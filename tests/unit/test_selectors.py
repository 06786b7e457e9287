"""Specification of the alert's expiry and strike selectors."""

from datetime import date

import pytest

from common.selectors import (
    ExpirySelector,
    StrikeSelector,
    parse_continuous_future,
    parse_expiry,
    parse_strike,
)


class TestExpiry:
    @pytest.mark.parametrize(
        "text", ["2026-11-24", "24-11-2026", "24NOV2026", "24nov26", "24-Nov-2026", " 24NOV26 "]
    )
    def test_date_spellings_mean_the_same_day(self, text):
        assert parse_expiry(text) == ExpirySelector("DATE", date(2026, 11, 24))

    def test_a_date_object_is_taken_as_is(self):
        assert parse_expiry(date(2026, 11, 24)) == ExpirySelector("DATE", date(2026, 11, 24))

    @pytest.mark.parametrize(
        "text, kind",
        [
            ("WEEKLY", "WEEKLY"),
            ("weekly", "WEEKLY"),
            ("Monthly", "MONTHLY"),
            ("NEXT_WEEKLY", "NEXT_WEEKLY"),
            ("next weekly", "NEXT_WEEKLY"),
            ("NEXTWEEKLY", "NEXT_WEEKLY"),
            ("next-monthly", "NEXT_MONTHLY"),
            ("NEXTMONTHLY", "NEXT_MONTHLY"),
        ],
    )
    def test_relative_keywords(self, text, kind):
        assert parse_expiry(text) == ExpirySelector(kind)

    def test_canonical_text(self):
        assert str(parse_expiry("next weekly")) == "NEXT_WEEKLY"
        assert str(parse_expiry("24NOV26")) == "2026-11-24"

    @pytest.mark.parametrize("text", ["", "FORTNIGHTLY", "2026-13-01", "31-02-2026", "NOV2026"])
    def test_nonsense_is_refused_with_the_accepted_forms(self, text):
        with pytest.raises(ValueError, match="WEEKLY, MONTHLY"):
            parse_expiry(text)

    def test_a_date_kind_needs_a_date(self):
        with pytest.raises(ValueError):
            ExpirySelector("DATE")
        with pytest.raises(ValueError):
            ExpirySelector("WEEKLY", date(2026, 11, 24))


class TestStrike:
    @pytest.mark.parametrize(
        "value, expected, canonical",
        [
            (24500, StrikeSelector("PRICE", price=24500.0), "24500"),
            (24512.5, StrikeSelector("PRICE", price=24512.5), "24512.5"),
            ("24500", StrikeSelector("PRICE", price=24500.0), "24500"),
            ("24500.0", StrikeSelector("PRICE", price=24500.0), "24500"),
            ("ATM", StrikeSelector("ATM"), "ATM"),
            ("atm", StrikeSelector("ATM"), "ATM"),
            ("ATM+2", StrikeSelector("ATM", steps=2), "ATM+2"),
            ("ATM + 2", StrikeSelector("ATM", steps=2), "ATM+2"),
            ("ATM-1", StrikeSelector("ATM", steps=-1), "ATM-1"),
            ("ATM+0", StrikeSelector("ATM"), "ATM"),
            ("ITM2", StrikeSelector("ITM", steps=2), "ITM2"),
            ("ITM", StrikeSelector("ITM", steps=1), "ITM1"),
            ("otm 3", StrikeSelector("OTM", steps=3), "OTM3"),
            ("OTM", StrikeSelector("OTM", steps=1), "OTM1"),
        ],
    )
    def test_accepted_forms_and_their_canonical_text(self, value, expected, canonical):
        selector = parse_strike(value)
        assert selector == expected
        assert str(selector) == canonical

    @pytest.mark.parametrize(
        "value", [0, -100, "-24500", "ITM0", "ATM+", "ATM*2", "DEEP", "", "nan", "inf", True]
    )
    def test_nonsense_is_refused(self, value):
        with pytest.raises(ValueError):
            parse_strike(value)


class TestContinuousFuture:
    @pytest.mark.parametrize(
        "symbol, expected",
        [
            ("NIFTY1!", ("NIFTY", 1)),
            ("BANKNIFTY2!", ("BANKNIFTY", 2)),
            ("nifty1!", ("NIFTY", 1)),
            ("NSE:NIFTY1!", ("NIFTY", 1)),
            ("BAJAJ-AUTO1!", ("BAJAJ-AUTO", 1)),
            ("M&M1!", ("M&M", 1)),
        ],
    )
    def test_continuous_symbols(self, symbol, expected):
        assert parse_continuous_future(symbol) == expected

    @pytest.mark.parametrize("symbol", ["NIFTY", "NIFTY!", "NIFTY0!", "1!", "NSE:NIFTY26NOVFUT"])
    def test_other_symbols_are_not_continuous(self, symbol):
        assert parse_continuous_future(symbol) is None

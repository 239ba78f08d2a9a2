"""Amounts of money: minor units in each currency's ISO 4217 decimals, converted exactly."""

from decimal import Decimal

import pytest

from rapport import money


@pytest.mark.parametrize(
    ("currency", "places"),
    [("EUR", 2), ("usd", 2), ("JPY", 0), ("KRW", 0), ("XOF", 0), ("KWD", 3), ("TND", 3)]
    + [("CLF", 4), ("XXX", 2), ("ZZZ", 2)],
)
def test_a_currency_has_its_iso_4217_decimals_and_an_unknown_one_two(
    currency: str, places: int
) -> None:
    assert money.exponent(currency) == places


@pytest.mark.parametrize(
    ("sent", "currency", "minor", "text"),
    [
        ("1500", "JPY", 1500, "1500"),
        (1500, "JPY", 1500, "1500"),
        ("1.234", "KWD", 1234, "1.234"),
        (Decimal("-0.005"), "OMR", -5, "-0.005"),
        (59.9, "EUR", 5990, "59.90"),
        ("12.340", "EUR", 1234, "12.34"),
        ("1e2", "JPY", 100, "100"),
        (10, "KWD", 10000, "10.000"),
        (money.Exact("92233720368547758.07"), "USD", 2**63 - 1, "92233720368547758.07"),
        ("123456789012345678901234567890.12", "EUR", 12345678901234567890123456789012, None),
    ],
)
def test_an_amount_becomes_minor_units_and_back_exactly(
    sent: str | int | float | Decimal, currency: str, minor: int, text: str | None
) -> None:
    assert money.to_minor(sent, currency) == minor
    assert money.to_text(minor, currency) == (text if text is not None else str(sent))


@pytest.mark.parametrize(
    ("sent", "currency", "detail"),
    [
        ("19.999", "EUR", "19.999 has more decimals than EUR's 2"),
        ("15.5", "JPY", "15.5 has decimals, and JPY has none"),
        ("1.2345", "KWD", "1.2345 has more decimals than KWD's 3"),
        ("1e-999999", "EUR", "1e-999999 has more decimals than EUR's 2"),
    ],
)
def test_an_amount_finer_than_its_currency_is_refused_not_rounded(
    sent: str, currency: str, detail: str
) -> None:
    with pytest.raises(money.TooPrecise, match=detail):
        money.to_minor(sent, currency)


@pytest.mark.parametrize(
    "currency", ["XXX", "xau", "XAG", "XPT", "XPD", "XDR", "XTS", "XSU", "XUA"]
)
def test_an_amount_in_a_code_with_no_minor_unit_is_refused_but_zero_is_zero(
    currency: str,
) -> None:
    # ISO 4217 gives these "N.A." for the minor unit: they were read as 2 decimals.
    with pytest.raises(money.NoMinorUnit, match="has no minor unit in ISO 4217"):
        money.to_minor("5", currency)
    assert money.to_minor("0.00", currency) == 0


@pytest.mark.parametrize("sent", ["NaN", "Infinity", "abc", "", True, "1e999999", "9" * 5000])
def test_what_is_no_amount_or_too_large_is_a_value_error(sent: str | bool) -> None:
    with pytest.raises(ValueError) as caught:
        money.to_minor(sent, "EUR")
    assert not isinstance(caught.value, money.TooPrecise)
    assert len(str(caught.value)) < 80  # a huge amount is not echoed whole


def test_an_exact_number_is_a_float_that_keeps_its_text() -> None:
    number = money.Exact("900719925474099.33")
    assert number == 900719925474099.33 and str(number) == "900719925474099.33"


@pytest.mark.parametrize("text", ["1_000", "١٢٣", "１２", "12 000", "0x10"])
def test_an_amount_is_written_in_ascii_digits(text: str) -> None:
    # Decimal() read "1_000" as a thousand and Arabic-Indic or full-width digits as numbers:
    # an order total no one wrote that way was recorded.
    with pytest.raises(ValueError, match="not an amount"):
        money.to_minor(text, "EUR")

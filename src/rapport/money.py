"""Amounts of money: integer minor units in storage, decimal text at the edges.

How many minor units a currency's major unit holds is ISO 4217's "minor unit" exponent:
two for most, but none for the yen or the won (an order of 1500 JPY is 1500, not 15.00)
and three for the dinars of Bahrain, Iraq, Jordan, Kuwait, Libya and Tunisia and the
Omani rial. Every conversion between the two goes through this module, so that no other
code assumes a hundred.

For the codes whose minor unit ISO 4217 gives as "N.A." (XXX, no currency; the metals XAU,
XAG, XPT, XPD; units of account such as XDR; XTS, for testing) an amount is refused, not
read in 0 or 2 decimals: "N.A." says no minor unit exists, not that it is a whole one, so
no count of minor units is the amount that was sent.
"""

import re
from decimal import Decimal, InvalidOperation

# ISO 4217's exponents other than 2 (the list of 2025); a code not named here has 2.
_EXPONENTS = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}

# ISO 4217's codes whose minor unit is "N.A." (the list of 2025): no currency, the metals,
# units of account, the testing code.
NO_MINOR_UNIT = frozenset(
    ("XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX")
)


# More digits than any amount has (a BIGINT column holds 19): beyond, an amount is refused
# before its digits are multiplied out.
MAX_DIGITS = 40


class TooPrecise(ValueError):
    """An amount with more decimals than its currency has minor units (19.999 EUR)."""


class NoMinorUnit(ValueError):
    """An amount in a code ISO 4217 gives no minor unit (5 XAU, 5 XXX)."""


class Exact(float):
    """A JSON number as a float that remembers the text it was written as: a float alone
    cannot hold 92233720368547758.07, and its shortest text is not always what was sent.
    ``str()`` gives that text; everything else sees a float."""

    text: str

    def __new__(cls, text: str) -> "Exact":
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text


def exponent(currency: str) -> int:
    """How many decimals the currency's amounts have: 2 unless ISO 4217 says otherwise
    (and for a code it does not know). A code in ``NO_MINOR_UNIT`` has 2 here only to show
    the amounts stored in it before ``to_minor`` refused them."""
    return _EXPONENTS.get(currency.upper(), 2)


# An amount as text: ASCII digits, an optional sign, decimal point and exponent (a float's
# shortest text may have one: 1e-05).
_AMOUNT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def to_minor(value: str | int | float | Decimal, currency: str) -> int:
    """An amount (decimal text, a number of major units) in the currency's minor units,
    exactly: ("1500", "JPY") -> 1500, ("1.234", "KWD") -> 1234, (59.9, "EUR") -> 5990.
    ``TooPrecise`` for one with more decimals than the currency has ("19.999", "EUR"):
    rounding would record an amount nobody paid. ``NoMinorUnit`` for one other than 0 in a
    code of ``NO_MINOR_UNIT``. ``ValueError`` for what is no finite amount, or one of more
    than ``MAX_DIGITS`` digits. A float is read as its shortest
    text, an ``Exact`` as the text it came as."""
    if isinstance(value, bool):
        raise ValueError(f"{shown(value)} is not an amount")
    text = value if isinstance(value, Decimal) else str(value).strip()
    if isinstance(text, str) and not _AMOUNT.fullmatch(text):
        # Decimal() also reads "1_000", "١٢٣" (Arabic-Indic digits) and "Infinity".
        raise ValueError(f"{shown(value)} is not an amount")
    try:
        number = text if isinstance(text, Decimal) else Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"{shown(value)} is not an amount") from exc
    if not number.is_finite():
        raise ValueError(f"{shown(value)} is not an amount")
    # From the digits, not by Decimal arithmetic, which rounds to 28 digits and would
    # compute 10**999999 for "1e999999".
    sign, digits, exp = number.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    if not significant:
        return 0
    code = currency.upper()
    if code in NO_MINOR_UNIT:
        raise NoMinorUnit(
            f"{code} has no minor unit in ISO 4217: {shown(value)} {code} is no count of them"
        )
    places = exponent(currency)
    shift = int(exp) + len(digits) - len(significant) + places
    if shift < 0:
        raise TooPrecise(
            f"{shown(value)} has more decimals than {code}'s {places}"
            if places
            else f"{shown(value)} has decimals, and {code} has none"
        )
    if len(significant) + shift > MAX_DIGITS:
        raise ValueError(f"{shown(value)} is too large an amount")
    return (-1 if sign else 1) * int(significant + "0" * shift)


def shown(value: object) -> str:
    """A value as a problem's detail quotes it: at most 40 characters."""
    text = str(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def to_text(minor: int, currency: str) -> str:
    """An amount in minor units as its decimal text, exactly: (-1234, "EUR") -> "-12.34",
    (1500, "JPY") -> "1500", (1234, "KWD") -> "1.234". Not ``minor / 100``: a float is off
    by a cent or more past 2**53 minor units."""
    places = exponent(currency)
    sign = "-" if minor < 0 else ""
    if not places:
        return f"{sign}{abs(minor)}"
    units, fraction = divmod(abs(minor), 10**places)
    return f"{sign}{units}.{fraction:0{places}d}"

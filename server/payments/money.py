"""Money at the boundary: exact decimal text ↔ integer agorot (minor units). Never a float."""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Optional

CURRENCIES = ("ILS", "USD", "EUR", "GBP")  # both providers take these; all have two decimal places
SYMBOLS = {"ILS": "₪", "USD": "$", "EUR": "€", "GBP": "£"}
MAX_AMOUNT_MINOR = 100_000_000  # 1,000,000.00: far beyond a small business's payment link
_DECIMAL_TEXT = re.compile(r"^[0-9]+(\.[0-9]+)?$")


class InvalidAmount(ValueError):
    """The amount is not a positive value with at most two decimal places (message says why)."""


def minor_from_text(text: str) -> int:
    """"49.90" → 4990, "0.1" → 10; "10.005", "-1", "1e3" and "abc" raise `InvalidAmount`."""
    text = text.strip()
    if not _DECIMAL_TEXT.match(text):
        raise InvalidAmount('the amount must be a positive decimal such as "49.90"')
    minor = Decimal(text) * 100
    if minor != minor.to_integral_value():
        raise InvalidAmount("the amount has more than two decimal places")
    return int(minor)


def minor_from_provider(value: Any) -> Optional[int]:
    """A provider's amount (decimal text in major units) in agorot, or None if it is not one."""
    try:
        return minor_from_text(str(value))
    except InvalidAmount:
        return None


def check_minor(amount_minor: Any) -> int:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise InvalidAmount("amount_minor must be a whole number of agorot (cents)")
    if amount_minor <= 0:
        raise InvalidAmount("the amount must be greater than zero")
    if amount_minor > MAX_AMOUNT_MINOR:
        raise InvalidAmount("the amount is too large")
    return amount_minor


def to_major(amount_minor: int) -> Decimal:
    """4990 → Decimal("49.90"): what the providers' APIs take."""
    return (Decimal(amount_minor) / 100).quantize(Decimal("0.01"))


def major_text(amount_minor: int) -> str:
    return format(to_major(amount_minor), "f")


def display(amount_minor: int, currency: str) -> str:
    """For people: "49.90 ₪"."""
    return f"{major_text(amount_minor)} {SYMBOLS.get(currency, currency)}"

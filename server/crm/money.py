"""Money in, exactly: `amount` (a decimal string or a JSON number) or `amount_minor` → integer minor units.

`Decimal` does the conversion, so `"0.1"` is 10 agorot and `"10.005"` is refused rather than
rounded. A JSON number arrives as a float; its shortest repr (`49.9` → "49.9") is what the
client wrote, so it converts exactly too.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from server.crm.validation import invalid

CURRENCIES = ("ILS", "USD", "EUR", "GBP")  # all with two minor digits
DEFAULT_CURRENCY = "ILS"
MINOR_PER_MAJOR = 100
MAX_AMOUNT_MINOR = 100_000_000_000  # 1,000,000,000.00: far above any invoice, far below 2**53


def amount_to_minor(value: Any, field: str = "amount") -> int:
    """`"49.90"` → 4990. Negative, fractional agorot, non-finite or huge → 400 naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise invalid(field, f"{field} must be a decimal string such as \"49.90\"")
    text = value.strip() if isinstance(value, str) else repr(value)
    if len(text) > 40:
        raise invalid(field, f"{field} is too large")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise invalid(field, f"{field} must be a decimal string such as \"49.90\"") from None
    if not amount.is_finite():
        raise invalid(field, f"{field} must be a finite number")
    if amount < 0:
        raise invalid(field, f"{field} must not be negative")
    if amount > Decimal(MAX_AMOUNT_MINOR) / MINOR_PER_MAJOR:
        raise invalid(field, f"{field} is too large")
    return _exact_minor(amount, field)


def _exact_minor(amount: Decimal, field: str) -> int:
    """Scale by 100 with integer arithmetic: Decimal's context would round digits past its precision."""
    _sign, digits, exponent = amount.as_tuple()
    coefficient = int("".join(map(str, digits)) or "0")
    if coefficient == 0:
        return 0
    shift = exponent + 2  # the power of ten that turns the coefficient into minor units
    if shift >= 0:
        return coefficient * 10**shift  # bounded: amount <= MAX, so shift is small here
    if -shift > len(digits) or coefficient % 10**-shift:
        raise invalid(field, f"{field} has more than two decimal places")
    return coefficient // 10**-shift


def minor_amount(value: Any, field: str = "amount_minor") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, f"{field} must be a whole number of minor units (agorot)")
    if value < 0:
        raise invalid(field, f"{field} must not be negative")
    if value > MAX_AMOUNT_MINOR:
        raise invalid(field, f"{field} is too large")
    return value


def currency(value: Any, field: str = "currency") -> str:
    if not isinstance(value, str) or value not in CURRENCIES:
        raise invalid(field, f"{field} must be one of: {', '.join(CURRENCIES)}")
    return value


def amount_from_body(body: Mapping[str, Any]) -> int | None:
    """The amount a body sets, from `amount` or `amount_minor` (not both); None when it sets neither."""
    if body.get("amount") is not None and body.get("amount_minor") is not None:
        raise invalid("amount", "send amount or amount_minor, not both")
    if body.get("amount") is not None:
        return amount_to_minor(body["amount"])
    if body.get("amount_minor") is not None:
        return minor_amount(body["amount_minor"])
    return None


def format_minor(amount_minor: int) -> str:
    """4990 → "49.90": the decimal string shown beside `amount_minor`."""
    return f"{amount_minor // MINOR_PER_MAJOR}.{amount_minor % MINOR_PER_MAJOR:02d}"

"""Money, exactly: what clients and providers send ↔ integer minor units (agorot). One set of rules
for the CRM's deals, invoices and contracts and for payment links, so any amount one of them takes
the other takes too.

The rules:
- An amount is either `amount_minor`, a whole number of minor units (4990), or `amount` in major
  units: a decimal string ("49.90", "0.1", "10.000") or a JSON integer (12 → 1200). At most two
  decimals count: "10.005" is refused, never rounded.
- No JSON fractions (`49.9`): they arrive as binary floats, which can't hold most agorot values
  exactly, so the amount the client meant is unknowable. Send "49.9". No exponents ("1e3"), signs,
  separators ("1,5"), NaN or Infinity either: a decimal string is digits with an optional point.
- At most `MAX_AMOUNT_MINOR`, 1,000,000,000.00: far above any invoice, and far below 2**53, so a
  client that reads `amount_minor` as a double still reads it exactly.
- More than zero, except where a document may be empty: a deal, invoice or contract may be
  recorded before its amount is known, so 0 (their default) is allowed there (`allow_zero`). A
  payment is never 0: nobody can be asked to pay nothing.
- Currencies are ILS (the default), USD, EUR and GBP, all with two minor digits.

Every refusal is `DomainError(Problem.INVALID, "invalid_field", …, field=<the field>)`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Optional

from server.errors import DomainError, Problem

CURRENCIES = ("ILS", "USD", "EUR", "GBP")  # both payment providers take these; all have two decimals
DEFAULT_CURRENCY = "ILS"
SYMBOLS = {"ILS": "₪", "USD": "$", "EUR": "€", "GBP": "£"}
MINOR_PER_MAJOR = 100
MAX_AMOUNT_MINOR = 100_000_000_000  # 1,000,000,000.00
MAX_AMOUNT_TEXT = "1,000,000,000.00"
# Digits, then optionally a point and digits. ASCII only: "٤٩" is a number to Python, not to us.
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
_DECIMAL = re.compile(DECIMAL_PATTERN, re.ASCII)
_MAX_WHOLE_DIGITS = 18  # more than the cap has; int() is never handed an unbounded string


class _Malformed(ValueError):
    """Not an amount (the message says why, without naming the field)."""


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)


def parse_amount(value: Any, field: str = "amount", *, allow_zero: bool = False) -> int:
    """An `amount` in major units (decimal string or integer) → minor units: `"49.90"` → 4990."""
    if isinstance(value, float):
        raise _invalid(
            field,
            f'send {field} as a decimal string such as "49.90": a JSON fraction is a binary '
            "float, which can't hold every agorot value exactly",
        )
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _invalid(field, f'{field} must be a decimal string such as "49.90" (or a whole number)')
    if isinstance(value, int):
        minor = value * MINOR_PER_MAJOR if abs(value) <= MAX_AMOUNT_MINOR else MAX_AMOUNT_MINOR + 1
    else:
        try:
            minor = _decimal_text_to_minor(value)
        except _Malformed as exc:
            raise _invalid(field, f"{field} {exc}") from None
    return _in_range(minor, field, allow_zero=allow_zero)


def parse_minor(value: Any, field: str = "amount_minor", *, allow_zero: bool = False) -> int:
    """An `amount_minor`: a JSON integer of minor units (agorot)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, f"{field} must be a whole number of minor units (agorot)")
    return _in_range(value, field, allow_zero=allow_zero)


def from_provider(value: Any) -> Optional[int]:
    """A provider's amount in major units (PayPal's "49.90", Tranzila's notify "49.90" or its API's JSON
    number 49.9) in minor units, or None when it is not one. Only compared with the stored amount,
    never stored, so no range applies; a float is read through its shortest repr, which is the
    number the provider wrote ("49.9"), and a float that isn't a plain decimal matches nothing."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return _decimal_text_to_minor(repr(value) if isinstance(value, float) else str(value))
    except _Malformed:
        return None


def currency(value: Any, field: str = "currency") -> str:
    """Exactly one of `CURRENCIES` (upper case)."""
    if not isinstance(value, str) or value not in CURRENCIES:
        raise _invalid(field, f"{field} must be one of: {', '.join(CURRENCIES)}")
    return value


def to_major(amount_minor: int) -> Decimal:
    """4990 → Decimal("49.90"): what the providers' APIs take."""
    return (Decimal(amount_minor) / MINOR_PER_MAJOR).quantize(Decimal("0.01"))


def major_text(amount_minor: int) -> str:
    """4990 → "49.90": the decimal string shown beside `amount_minor` and sent to providers."""
    sign = "-" if amount_minor < 0 else ""
    whole, cents = divmod(abs(amount_minor), MINOR_PER_MAJOR)
    return f"{sign}{whole}.{cents:02d}"


def display(amount_minor: int, currency_code: str) -> str:
    """For people: "49.90 ₪"."""
    return f"{major_text(amount_minor)} {SYMBOLS.get(currency_code, currency_code)}"


def _decimal_text_to_minor(text: str) -> int:
    """Integer arithmetic on the digits: exact for any length, where a Decimal context would round."""
    text = text.strip()
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    if not _DECIMAL.match(digits):
        raise _Malformed('must be a decimal string such as "49.90"')
    if negative:
        raise _Malformed("must not be negative")
    whole, _, fraction = digits.partition(".")
    if fraction[2:].strip("0"):
        raise _Malformed("has more than two decimal places")
    whole = whole.lstrip("0") or "0"
    if len(whole) > _MAX_WHOLE_DIGITS:
        raise _Malformed(f"is more than {MAX_AMOUNT_TEXT}")
    return int(whole) * MINOR_PER_MAJOR + int(fraction[:2].ljust(2, "0"))


def _in_range(minor: int, field: str, *, allow_zero: bool) -> int:
    if minor < 0:
        raise _invalid(field, f"{field} must not be negative")
    if minor == 0 and not allow_zero:
        raise _invalid(field, f"{field} must be greater than zero")
    if minor > MAX_AMOUNT_MINOR:
        raise _invalid(field, f"{field} is more than {MAX_AMOUNT_TEXT}")
    return minor

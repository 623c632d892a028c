"""Phone numbers are stored in E.164 (`+9725…`); every other form is normalised here, at the edge.

Digits may arrive in any script: Arabic-Indic `٠٥٠…` from an Arabic keyboard, full-width `０５０…`
from an East Asian one. They are read as the ASCII digits they stand for, so the same number is
stored, matched and searched as one.
"""

from __future__ import annotations

import re
import unicodedata

DEFAULT_COUNTRY_CODE = "972"  # Israel: a local `05…` number becomes `+9725…`
_NOT_DIGITS = re.compile(r"[^0-9]")
_PLUS_SIGNS = ("+", "\uff0b", "\ufe62")  # plus, full-width plus, small plus


def ascii_digits(text: str) -> str:
    """`text` with every decimal digit of any script (`٣`, `３`, `३`…) as its ASCII digit."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)


class InvalidPhone(ValueError):
    pass


def to_e164(raw: str | None, country_code: str = DEFAULT_COUNTRY_CODE) -> str:
    """Normalise `whatsapp:+9725…`, `+972 50-…`, `9725…`, `05…` or `00972…` to `+9725…`."""
    if raw is None:
        raise InvalidPhone("phone number is missing")
    text = ascii_digits(str(raw).strip())
    if text.lower().startswith("whatsapp:"):
        text = text[len("whatsapp:") :]
    text = text.split("@", 1)[0].split(":", 1)[0]  # a WhatsApp JID: 9725…:12@s.whatsapp.net
    has_plus = text.startswith(_PLUS_SIGNS)
    digits = _NOT_DIGITS.sub("", text)
    if not has_plus:
        if digits.startswith("00"):
            digits = digits[2:]
        elif digits.startswith("0"):
            digits = country_code + digits[1:]
        elif not digits.startswith(country_code) and len(digits) <= 9:
            digits = country_code + digits
    if not 8 <= len(digits) <= 15 or digits.startswith("0"):
        raise InvalidPhone(f"not a phone number: {raw!r}")
    return "+" + digits


def try_e164(raw: str | None) -> str | None:
    try:
        return to_e164(raw)
    except InvalidPhone:
        return None


def search_variants(text: str) -> list[str]:
    """The E.164 form a staff member meant when typing `05…`, `+9725…` or `9725…` into a search box."""
    digits = _NOT_DIGITS.sub("", ascii_digits(text))
    if len(digits) < 3:
        return []
    variants = {digits}
    if digits.startswith("0"):
        variants.add(DEFAULT_COUNTRY_CODE + digits[1:])
    return sorted(variants)

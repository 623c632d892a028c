"""Text the database can store, for every area that takes text from outside.

PostgreSQL `text` cannot hold NUL characters, and a lone surrogate (JSON allows `"\\ud800"`) has no
UTF-8 encoding; either fails the INSERT with a driver error. Client input with them is refused
(`clean_text`: a 400 naming the field); text from a vendor, which can't be sent back to be fixed,
is stored without them (`storable_text`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from server.errors import DomainError, Problem

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: Any, field: str, *, max_length: int, allow_empty: bool = True) -> str:
    """The string as sent (not stripped: the documented limits apply to exactly what arrives), or
    `DomainError(INVALID, "invalid_field", field=field)` saying what is wrong with it."""
    if not isinstance(value, str):
        raise _invalid(field, f"{field} must be a string")
    if "\x00" in value:
        raise _invalid(field, f"{field} must not contain NUL characters")
    if _LONE_SURROGATE.search(value):
        raise _invalid(field, f"{field} is not valid Unicode text")
    if len(value) > max_length:
        raise _invalid(field, f"{field} is longer than {max_length} characters")
    if not allow_empty and not value.strip():
        raise _invalid(field, f"{field} must not be blank")
    return value


def storable_text(value: Any) -> str:
    """`value` as text (None is empty) without NUL characters, lone surrogates replaced by U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", str(value or "").replace("\x00", ""))


def storable_fields(form: Mapping[str, Any]) -> dict[str, str]:
    """A vendor's form (the first value of each field) with every key and value `storable_text`."""
    return {storable_text(key): storable_text(value) for key, value in form.items()}


def storable_json(value: Any) -> Any:
    """Parsed JSON from a vendor with every string in it (keys too) `storable_text`; other values as they are."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(key): storable_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    return value


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)

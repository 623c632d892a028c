"""Client input → typed values, or `400 {"error": "invalid_field", "message", "field"}`.

Every string bound into SQL passes through here first: NUL characters and lone surrogates are
refused (PostgreSQL cannot store them) and lengths are checked against the columns, so a
client's odd input is a 400, never a driver error turned 500.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping

from server.errors import DomainError, Problem
from server.phones import InvalidPhone, to_e164
from server.text import clean_text  # noqa: F401  (the crm's validators, v.clean_text)

MAX_ID = 2**31 - 1  # ids are 32-bit integer columns; a larger number names no row
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
# A date, or a date-time with optional seconds, fraction and offset (none means UTC). The OpenAPI
# document publishes the same pattern.
INSTANT_PATTERN = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$"
_DATE, _INSTANT = re.compile(DATE_PATTERN, re.ASCII), re.compile(INSTANT_PATTERN, re.ASCII)


def invalid(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)


def optional_text(value: Any, field: str, *, max_length: int) -> str:
    """A text field where null means empty."""
    return "" if value is None else clean_text(value, field, max_length=max_length)


def reject_unknown(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(unknown[0], f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def require(body: Mapping[str, Any], field: str) -> Any:
    if body.get(field) is None:
        raise invalid(field, f"{field} is required")
    return body[field]


def object_id(value: Any, field: str) -> int:
    """A row id given in a body (`customer_id`, `assignee`, …)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise invalid(field, f"{field} must be a positive integer id")
    return value


def boolean(value: Any, field: str) -> bool:
    """JSON true or false only: 0, 1, "true" or null are refused, not guessed at."""
    if not isinstance(value, bool):
        raise invalid(field, f"{field} must be true or false")
    return value


def choice(value: Any, field: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise invalid(field, f"{field} must be one of: {', '.join(allowed)}")
    return value


def phone(value: Any, field: str = "phone") -> str:
    text = clean_text(value, field, max_length=40, allow_empty=False)
    try:
        return to_e164(text)
    except InvalidPhone:
        raise invalid(field, f"{field} is not a phone number") from None


def email(value: Any, field: str = "email") -> str | None:
    if value is None:
        return None
    text = clean_text(value, field, max_length=254)
    if text and not _EMAIL.match(text):
        raise invalid(field, f"{field} is not an email address")
    return text.lower() or None


def iso_date(value: Any, field: str) -> str | None:
    """`YYYY-MM-DD` (a calendar date, e.g. an invoice's due date), or None."""
    if value is None:
        return None
    text = clean_text(value, field, max_length=10)
    if not text:
        return None
    try:
        if not _DATE.match(text):
            raise ValueError
        date.fromisoformat(text)
    except ValueError:
        raise invalid(field, f"{field} must be a date YYYY-MM-DD") from None
    return text


def labels(value: Any, field: str = "labels", *, max_count: int = 20, max_length: int = 32) -> list[str]:
    """A short list of short, non-blank strings; duplicates are dropped, order kept."""
    if not isinstance(value, list) or len(value) > max_count:
        raise invalid(field, f"{field} must be a list of at most {max_count} strings")
    result: list[str] = []
    for item in value:
        text = clean_text(item, field, max_length=max_length, allow_empty=False)
        if text not in result:
            result.append(text)
    return result


# ---- query-string parameters -------------------------------------------------------------------
# An absent parameter means "no filter" (or the default); an empty typed one (`limit=`) is a 400.


def query_text(args: Mapping[str, str], name: str, *, max_length: int = 200) -> str | None:
    raw = args.get(name)
    return None if raw is None else clean_text(raw, name, max_length=max_length).strip() or None


def query_choice(args: Mapping[str, str], name: str, allowed: Iterable[str]) -> str | None:
    raw = args.get(name)
    return None if raw is None else choice(raw, name, allowed)


def query_bool(args: Mapping[str, str], name: str) -> bool | None:
    raw = args.get(name)
    return None if raw is None else choice(raw, name, ("true", "false")) == "true"


def query_id(args: Mapping[str, str], name: str) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise invalid(name, f"{name} must be a positive integer id")
    return int(raw)


def query_int(args: Mapping[str, str], name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not minimum <= int(raw) <= maximum:
        raise invalid(name, f"{name} must be an integer from {minimum} to {maximum}")
    return int(raw)


def query_phone(args: Mapping[str, str], name: str = "phone") -> str | None:
    raw = args.get(name)
    return None if raw is None else phone(raw, name)


def query_time_range(
    args: Mapping[str, str], start: str = "from", end: str = "to"
) -> tuple[datetime | None, datetime | None]:
    """`from` (inclusive) and `to` (exclusive) as UTC datetimes; a date-only `to` includes that whole day."""
    lower = _query_instant(args, start, end_of_day=False)
    upper = _query_instant(args, end, end_of_day=True)
    if lower is not None and upper is not None and lower >= upper:
        raise invalid(end, f"{end} must be later than {start}")
    return lower, upper


def _query_instant(args: Mapping[str, str], name: str, *, end_of_day: bool) -> datetime | None:
    raw = args.get(name)
    if raw is None:
        return None
    message = f"{name} must be an ISO 8601 date (2024-05-01) or date-time (2024-05-01T09:30:00Z)"
    try:
        if _DATE.match(raw):
            day = date.fromisoformat(raw)
            instant = datetime.combine(day, time(), timezone.utc)
            return instant + timedelta(days=1) if end_of_day else instant
        if not _INSTANT.match(raw):
            raise ValueError
        instant = datetime.fromisoformat(raw)
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=timezone.utc)
        return instant.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise invalid(name, message) from None

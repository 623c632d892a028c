"""Keyset pagination, newest first: `{"items": [...], "next_cursor": "…" | null}`.

A page is `ORDER BY key DESC LIMIT n+1` below the last row seen, never an OFFSET: rows inserted
while a client pages sort above its cursor, so it sees no duplicate and skips no row, and the
cost of a page does not grow with its depth. The cursor is opaque to clients: URL-safe base64
of the JSON list of the last row's key values (e.g. `[created_at, id]`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute, Session

from server.crm.validation import MAX_ID, invalid, query_int
from server.db.models import UTCDateTime

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Keyset:
    """The columns a list is ordered by, newest first; the last one is the unique id (the tie-breaker)."""

    columns: tuple[QueryableAttribute[Any], ...]

    def encode(self, row: Any) -> str:
        values = [getattr(row, column.key) for column in self.columns]
        payload = [v.isoformat() if isinstance(v, datetime) else v for v in values]
        return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")

    def decode(self, cursor: str, field: str = "cursor") -> list[Any]:
        try:
            if len(cursor) > 200:
                raise ValueError
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            values = json.loads(raw)
            if not isinstance(values, list) or len(values) != len(self.columns):
                raise ValueError
            return [self._decode_value(column, value) for column, value in zip(self.columns, values, strict=True)]
        except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
            raise invalid(field, f"{field} is not a cursor this list returned") from None

    @staticmethod
    def _decode_value(column: QueryableAttribute[Any], value: Any) -> Any:
        if isinstance(column.type, UTCDateTime):
            if not isinstance(value, str):
                raise ValueError
            instant = datetime.fromisoformat(value)
            if instant.tzinfo is None:
                raise ValueError
            return instant  # the column type turns it into UTC
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
            raise ValueError
        return value

    def below(self, values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """Rows strictly after `values` in newest-first order (a row-value comparison: one index range)."""
        bounds = [sa.literal(value, column.type) for column, value in zip(self.columns, values, strict=True)]
        return sa.tuple_(*self.columns) < sa.tuple_(*bounds)

    def order_by(self) -> list[sa.ColumnElement]:
        return [column.desc() for column in self.columns]


@dataclass(frozen=True)
class PageRequest:
    limit: int
    after: list[Any] | None


def page_request(args: Mapping[str, str], keyset: Keyset) -> PageRequest:
    limit = query_int(args, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    cursor = args.get("cursor")
    return PageRequest(limit, keyset.decode(cursor) if cursor else None)


def fetch_page(
    session: Session, stmt: sa.Select, keyset: Keyset, request: PageRequest, render: Callable[[list[Any]], list[dict]]
) -> dict[str, Any]:
    """Run `stmt` (already filtered) one page at a time; `render` turns the page's rows into JSON items.

    `stmt` selects the keyed entity, alone (rows are entities) or first (rows are tuples)."""
    if request.after is not None:
        stmt = stmt.where(keyset.below(request.after))
    result = session.execute(stmt.order_by(*keyset.order_by()).limit(request.limit + 1))
    rows = list(result.scalars() if len(stmt.column_descriptions) == 1 else result)
    more = len(rows) > request.limit
    rows = rows[: request.limit]
    cursor = None
    if more:
        last = rows[-1]
        cursor = keyset.encode(last[0] if isinstance(last, sa.Row) else last)
    return {"items": render(rows), "next_cursor": cursor}

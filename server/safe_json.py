"""JSON from outside, parsed with a nesting limit.

`json.loads` recurses once per nesting level and raises `RecursionError` (not `ValueError`) a
thousand levels down, so `[[[[…` from any client would escape every `except ValueError` and end
as a 500. The standard library has no depth option, so the nesting is measured first: one linear
regular-expression pass over the brackets outside strings (skipped when the text doesn't even
contain `MAX_DEPTH` brackets), then the usual parser. Every failure is a `ValueError`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

MAX_DEPTH = 64  # our own messages nest 4 deep; no request or webhook we take needs more than a few

# A string (escapes included; an unterminated one runs to the end, so every match moves on and the
# pass stays linear), or an opening bracket (group 1), or a closing one (group 2).
_TOKENS_STR = re.compile(r'"(?:[^"\\]++|\\.)*+"?|([\[{])|([\]}])', re.DOTALL)
_TOKENS_BYTES = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|([\[{])|([\]}])', re.DOTALL)


class JsonTooDeep(ValueError):
    """The JSON nests deeper than the limit."""


def loads(raw: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(raw)`, or `ValueError` (`JsonTooDeep` when it nests deeper than `max_depth`)."""
    check_depth(raw, max_depth)
    return json.loads(raw)


def check_depth(raw: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> None:
    matches: Iterator[re.Match[str]] | Iterator[re.Match[bytes]]
    if isinstance(raw, str):
        opening, matches = raw.count("[") + raw.count("{"), _TOKENS_STR.finditer(raw)
    else:
        opening, matches = raw.count(b"[") + raw.count(b"{"), _TOKENS_BYTES.finditer(raw)
    if opening <= max_depth:
        return
    depth = 0
    for match in matches:
        kind = match.lastindex
        if kind == 1:
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep(f"the JSON nests deeper than {max_depth} levels")
        elif kind == 2:
            depth -= 1

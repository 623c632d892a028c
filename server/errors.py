"""The one error type services raise: what went wrong, in words a client can act on.

Services never speak HTTP. They raise `DomainError` with a `Problem` (the kind of failure), a
stable machine-readable `code`, a human `message` and, for input mistakes, the offending `field`.
`server.web` maps each `Problem` to an HTTP status and renders the one JSON error shape, so the same
mistake gets the same code and status on every endpoint.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class Problem(Enum):
    INVALID = "invalid"  # the input is malformed or breaks a rule (400)
    UNAUTHENTICATED = "unauthenticated"  # no or bad credentials, bad signature (401)
    FORBIDDEN = "forbidden"  # authenticated, but not allowed (403)
    NOT_FOUND = "not_found"  # no such thing, or not this business's (404)
    CONFLICT = "conflict"  # the current state forbids it (409)
    UNPROCESSABLE = "unprocessable"  # well-formed, but can't be done as asked (422)
    GONE = "gone"  # it existed and is no longer usable (410)
    TOO_LARGE = "too_large"  # a body or file over its limit (413)
    UNSUPPORTED_MEDIA = "unsupported_media"  # a content type we don't take (415)
    RATE_LIMITED = "rate_limited"  # too many tries; `retry_after` seconds in details (429)
    NOT_CONFIGURED = "not_configured"  # the feature or vendor is switched off here (501)
    UPSTREAM_FAILED = "upstream_failed"  # a vendor refused or failed (502)
    UNAVAILABLE = "unavailable"  # a dependency is down; try again later (503)


class DomainError(Exception):
    """Raise from any service: `DomainError(Problem.NOT_FOUND, "not_found", "no such invoice")`.

    `details` are extra JSON fields of the error body (for example `retry_after`, `success`).
    """

    def __init__(self, problem: Problem, code: str, message: str = "", *, field: str | None = None, **details: Any):
        super().__init__(message or code)
        self.problem = problem
        self.code = code
        self.message = message
        self.field = field
        self.details = details

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.details)
        return body

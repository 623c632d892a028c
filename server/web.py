"""HTTP plumbing shared by every blueprint: one JSON error shape, request ids, strict JSON bodies."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Flask, Request, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream

from server import safe_json
from server.db.engine import unavailable_error
from server.errors import DomainError, Problem
from server.logs import request_id_var

log = logging.getLogger("agentlocator.web")

_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    501: "not_implemented",
    502: "bad_gateway",
    503: "unavailable",
}


STATUS_BY_PROBLEM = {
    Problem.INVALID: 400,
    Problem.UNAUTHENTICATED: 401,
    Problem.FORBIDDEN: 403,
    Problem.NOT_FOUND: 404,
    Problem.CONFLICT: 409,
    Problem.UNPROCESSABLE: 422,
    Problem.GONE: 410,
    Problem.TOO_LARGE: 413,
    Problem.UNSUPPORTED_MEDIA: 415,
    Problem.RATE_LIMITED: 429,
    Problem.NOT_CONFIGURED: 501,
    Problem.UPSTREAM_FAILED: 502,
    Problem.UNAVAILABLE: 503,
}


class ApiError(Exception):
    """Raise anywhere in a request to answer `{"error": code, "message": message}` with `status`."""

    def __init__(self, status: int, code: str | None = None, message: str = "", **extra: Any):
        super().__init__(message or code)
        self.status = status
        self.code = code or _ERROR_CODES.get(status, "error")
        self.message = message
        self.extra = extra


def error_response(status: int, code: str | None = None, message: str = "", **extra: Any) -> Response:
    body = {"error": code or _ERROR_CODES.get(status, "error"), "message": message, **extra}
    response = jsonify(body)
    response.status_code = status
    return response


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it (also when it nests
    deeper than `safe_json.MAX_DEPTH`)."""
    if not request.data:
        if required:
            raise DomainError(Problem.INVALID, "invalid_json", "a JSON object body is required")
        return {}
    try:
        body = safe_json.loads(request.data)
    except safe_json.JsonTooDeep as exc:
        raise DomainError(Problem.INVALID, "invalid_json", str(exc)) from None
    except ValueError:
        raise DomainError(Problem.INVALID, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise DomainError(Problem.INVALID, "invalid_json", "the body must be a JSON object")
    return body


class _BodyOverLimit(LimitedStream):
    """A body without Content-Length (chunked) read up to MAX_CONTENT_LENGTH: werkzeug's stream
    stops there without a word, so a larger body would be silently cut and parsed as if whole.
    Reaching the limit with more still coming is a 413, as for a body whose length was declared."""

    def on_exhausted(self) -> None:
        if self._stream.read(1):
            raise RequestEntityTooLarge()

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted:
            self.on_exhausted()
        return data


class BoundedRequest(Request):
    """Flask's request, with streamed bodies held to MAX_CONTENT_LENGTH like declared ones."""

    @cached_property
    def stream(self):
        limit = self.max_content_length
        if (
            self.content_length is None
            and limit is not None
            and "wsgi.input_terminated" in self.environ
            and not self.shallow
        ):
            return _BodyOverLimit(self.environ["wsgi.input"], limit, is_max=True)
        return super().stream


def register_error_handlers(app: Flask) -> None:
    app.request_class = BoundedRequest  # a body over the limit is a 413 however it was sent

    @app.before_request
    def _assign_request_id() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex[:16]
        g.request_id_token = request_id_var.set(g.request_id)

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers["X-Request-Id"] = g.request_id
        return response

    @app.teardown_request
    def _clear_request_id(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Response:
        response = jsonify(exc.body())
        response.status_code = STATUS_BY_PROBLEM[exc.problem]
        if exc.problem in (Problem.RATE_LIMITED, Problem.UNAVAILABLE) and "retry_after" in exc.details:
            response.headers["Retry-After"] = str(exc.details["retry_after"])
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or ""
        if status == 413:
            message = f"the body is larger than {app.config.get('MAX_CONTENT_LENGTH')} bytes"
        response = error_response(status, None, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(sa.exc.SQLAlchemyError)
    def _database_error(exc: sa.exc.SQLAlchemyError) -> Response:
        # A full pool or an unreachable database is a 503 to retry, on every endpoint alike.
        unavailable = unavailable_error(exc)
        return _domain_error(unavailable) if unavailable is not None else _unexpected(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception(
            "unhandled error on %s %s",
            request.method,
            request.path,
            extra={"event": "unhandled_error", "path": request.path},
        )
        return error_response(
            500, "internal_error", "an internal error occurred; quote the request id", request_id=g.get("request_id")
        )

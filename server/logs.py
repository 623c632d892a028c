"""JSON-lines logging on stdout, one object per record, each with the request id when there is one.

`turn_metrics` and audit records are ordinary INFO records with structured fields, so an operator
can `grep '"event": "turn_metrics"'` or feed stdout to any log pipeline.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, Callable

import click

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _stamp_request_id(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """Wrap a log-record factory so that a record made during a request carries its id as
    `record.request_id`: the id travels with the record itself, to every handler (including ones
    that format it later, on another thread, outside the request's context)."""

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        request_id = request_id_var.get()
        if request_id:
            record.request_id = request_id
        return record

    make_record._agentlocator = True  # type: ignore[attr-defined]
    return make_record


def configure_logging(level: str) -> None:
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "_agentlocator", False):
        logging.setLogRecordFactory(_stamp_request_id(factory))
    root = logging.getLogger()
    if not any(getattr(h, "_agentlocator", False) for h in root.handlers):
        # The admin CLI (`flask --app main …`, loaded inside a click context) prints exactly one JSON
        # object on stdout for scripts to parse, so its log lines go to stderr instead.
        cli = click.get_current_context(silent=True) is not None
        handler = logging.StreamHandler(sys.stderr if cli else sys.stdout)
        handler.setFormatter(JsonFormatter())
        handler._agentlocator = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "werkzeug", "hpack", "openai", "httpx", "httpcore", "twilio.http_client", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """One structured record: `{"msg": event, "event": event, ...fields}` (the first three are
    positional only, so no field can be taken for them)."""
    logger.log(level, event, extra={"event": event, **fields})

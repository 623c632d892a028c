"""The agent's tools: functions the language model may call during a call or a WhatsApp chat.

A `Tool` has a name, a description the model reads (in English, saying what to say in Hebrew), a
JSON Schema for its arguments and a handler `handler(context, args) -> dict`. Tools are registered
at start-up (`register`) by `server.agent_tools`, which sits above the services they wrap
(appointments, payments, WhatsApp sending, the live call); this module knows none of them, so the
live-call engine and the WhatsApp auto-reply, which sit below those services, use the registry
without importing them.

`ToolBox` is one conversation's set of tools: the ones the business switched on
(`Business.agent_tools`, else each tool's `default_enabled`) for that channel. `ToolBox.run(name,
arguments_json)` never raises: unknown or switched-off tools, arguments that are not JSON or don't
match the schema (checked with `jsonschema` before the handler runs), a refusal (`DomainError`)
and a bug in a handler all come back as `{"error": ...}` for the model to read and talk around.
Every call is recorded as a `tool_calls` row with its arguments, result or error and timings.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Optional, TypeVar

import jsonschema
from sqlalchemy.orm import Session

from server.db.models import ToolCall, utcnow
from server.errors import DomainError
from server.logs import log_event

log = logging.getLogger("agentlocator.agent.tools")

T = TypeVar("T")
CHANNELS = ("call", "whatsapp")
MAX_ARGUMENT_CHARS = 8000  # a model's arguments for any of our tools are a few hundred characters
MAX_ERROR_CHARS = 500


def run_directly(unit_of_work: Callable[..., T], *args: Any) -> T:
    return unit_of_work(*args)


def _in_scope(database: Any, fn: Callable[[Session], T]) -> T:
    with database.scope() as session:
        return fn(session)


@dataclass
class ToolContext:
    """Who the agent is talking to and where: what a handler may act on.

    `run(fn)` runs `fn(session)` as one unit of work (committed on return). `offload(fn, *args)` is
    how the caller's engine runs blocking database work: the live-call engine runs it off the gevent
    hub on SQLite (`CallStore.run`), the WhatsApp job directly. Handlers never see Flask.
    """

    business_id: int
    channel: str  # "call" or "whatsapp"
    database: Any  # server.db.engine.Database
    settings: Any  # server.config.Settings
    offload: Callable[..., Any] = run_directly
    customer_id: Optional[int] = None
    phone: Optional[str] = None  # the customer's E.164 number, when known
    call_sid: Optional[str] = None
    call_id: Optional[int] = None
    turn_index: Optional[int] = None
    thread_id: Optional[int] = None
    message_id: Optional[int] = None  # the customer message a WhatsApp reply answers
    jobs: Any = None  # server.jobs.JobQueue, for work a tool hands to the jobs worker
    app_secret: str = field(default="", repr=False)  # signs the tokens a call transfer puts in URLs
    # Set by `end_call`: the live engine hangs up once the reply has been heard.
    hang_up_requested: bool = False

    def run(self, fn: Callable[[Session], T]) -> T:
        return self.offload(_in_scope, self.database, fn)


Handler = Callable[[ToolContext, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    label: str  # Hebrew, for the console's tool settings
    description: str  # for the model
    parameters: Mapping[str, Any]  # JSON Schema of the arguments (an object)
    handler: Handler
    channels: tuple[str, ...] = CHANNELS
    default_enabled: bool = True

    def spec(self) -> dict[str, Any]:
        """The tool as Chat Completions' `tools` parameter lists it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
        }


_REGISTRY: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    """Add (or replace: re-registering at start-up is harmless) a tool; its schema must be valid."""
    jsonschema.Draft202012Validator.check_schema(dict(tool.parameters))
    _REGISTRY[tool.name] = tool
    return tool


def registered() -> list[Tool]:
    return sorted(_REGISTRY.values(), key=lambda t: t.name)


def tool_named(name: str) -> Optional[Tool]:
    return _REGISTRY.get(name)


def enabled_tools(settings_by_name: Optional[Mapping[str, Any]], channel: str) -> list[Tool]:
    """The registered tools a business with `Business.agent_tools = settings_by_name` has on `channel`."""
    chosen = settings_by_name or {}
    return [
        tool for tool in registered() if channel in tool.channels and bool(chosen.get(tool.name, tool.default_enabled))
    ]


def tool_settings(settings_by_name: Optional[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every registered tool with whether this business has it on (the console's tool settings)."""
    chosen = settings_by_name or {}
    return [
        {
            "name": tool.name,
            "label": tool.label,
            "description": tool.description,
            "channels": list(tool.channels),
            "default_enabled": tool.default_enabled,
            "enabled": bool(chosen.get(tool.name, tool.default_enabled)),
        }
        for tool in registered()
    ]


@dataclass
class ToolOutcome:
    name: str
    arguments: Optional[dict[str, Any]]
    result: dict[str, Any]
    error: Optional[str]
    started_at: datetime
    finished_at: datetime
    duration_ms: int


@dataclass
class ToolBox:
    """The tools of one conversation; what the language model provider is handed."""

    context: ToolContext
    tools: list[Tool]
    outcomes: list[ToolOutcome] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic

    def __bool__(self) -> bool:
        return bool(self.tools)

    def specs(self) -> list[dict[str, Any]]:
        return [tool.spec() for tool in self.tools]

    def run(self, name: str, arguments_json: str) -> dict[str, Any]:
        """Run one tool call the model made; its result (or `{"error": ...}`) as the model will read it."""
        started_at, started = utcnow(), self.clock()
        arguments: Optional[dict[str, Any]] = None
        error: Optional[str] = None
        try:
            tool = self._tool(name)
            arguments = _parse_arguments(arguments_json)
            _validate(tool, arguments)
            result = tool.handler(self.context, arguments)
            if not isinstance(result, dict):
                raise TypeError(f"tool {name} returned {type(result).__name__}, not a dict")
            error = result.get("error") if isinstance(result.get("error"), str) else None
        except _Refused as exc:
            error = str(exc)
            result = {"error": error}
        except DomainError as exc:
            error = exc.message
            result = {"error": exc.message, "code": exc.code}
        except Exception as exc:  # a bug or an outage in a handler: the model is told, the call goes on
            log.exception("tool failed", extra={"event": "tool_failed", "tool": name})
            error = f"the tool failed ({type(exc).__name__})"
            result = {"error": error + "; tell the customer a staff member will follow up"}
        outcome = ToolOutcome(
            name=name[:64],
            arguments=arguments,
            result=result,
            error=error[:MAX_ERROR_CHARS] if error else None,
            started_at=started_at,
            finished_at=utcnow(),
            duration_ms=round((self.clock() - started) * 1000),
        )
        self.outcomes.append(outcome)
        self._record(outcome)
        log_event(
            log,
            "tool_call",
            business_id=self.context.business_id,
            channel=self.context.channel,
            call_sid=self.context.call_sid,
            thread_id=self.context.thread_id,
            tool=outcome.name,
            error=outcome.error,
            t_tool_ms=outcome.duration_ms,
        )
        return result

    def _tool(self, name: str) -> Tool:
        for tool in self.tools:
            if tool.name == name:
                return tool
        known = ", ".join(t.name for t in self.tools) or "none"
        raise _Refused(f"unknown tool {name[:64]!r}; the tools available are: {known}")

    def _record(self, outcome: ToolOutcome) -> None:
        context = self.context

        def insert(session: Session) -> None:
            session.add(
                ToolCall(
                    business_id=context.business_id,
                    channel=context.channel,
                    call_id=context.call_id,
                    turn_index=context.turn_index,
                    thread_id=context.thread_id,
                    message_id=context.message_id,
                    name=outcome.name,
                    arguments=outcome.arguments,
                    result=outcome.result,
                    error=outcome.error,
                    started_at=outcome.started_at,
                    finished_at=outcome.finished_at,
                )
            )

        try:
            context.run(insert)
        except Exception:  # the row is a record; losing it must not lose the customer's answer
            log.exception("tool call not recorded", extra={"event": "tool_call_not_recorded", "tool": outcome.name})


class _Refused(Exception):
    """The model's call can't be run as made (unknown tool, bad arguments): it gets this message."""


def _parse_arguments(arguments_json: str) -> dict[str, Any]:
    if len(arguments_json or "") > MAX_ARGUMENT_CHARS:
        raise _Refused(f"the arguments are longer than {MAX_ARGUMENT_CHARS} characters")
    try:
        arguments = json.loads(arguments_json or "{}")
    except ValueError:
        raise _Refused("the arguments are not valid JSON; call the tool again with a JSON object") from None
    if not isinstance(arguments, dict):
        raise _Refused("the arguments must be a JSON object")
    return arguments


def _validate(tool: Tool, arguments: dict[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(dict(tool.parameters)).iter_errors(arguments)
    )
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        raise _Refused(f"invalid arguments for {tool.name}: {where}: {error.message[:300]}")

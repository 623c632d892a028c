"""OpenAPI path items and schemas of `server/routes/agent_api.py`: tasks, tool calls, tool settings."""

from __future__ import annotations

from typing import Any

from server.crm.agent import TASK_FILTERS, TASK_STATUSES
from server.crm.validation import MAX_ID
from server.openapi import error_responses, json_response, obj, operation, path_param, query_param, ref

_CRM = "/api/crm"
STR = {"type": "string"}
STR_N = {"type": ["string", "null"]}
INT = {"type": "integer"}
INT_N = {"type": ["integer", "null"]}
DT = {"type": "string", "format": "date-time"}
DT_N = {"type": ["string", "null"], "format": "date-time"}
OBJ_N = {"type": ["object", "null"]}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Task": obj(
        {
            "id": INT,
            "kind": {**STR, "description": "message: the agent took a message for staff"},
            "status": {"type": "string", "enum": list(TASK_STATUSES)},
            "caller_name": STR,
            "phone": STR_N,
            "reason": STR,
            "callback_time": {**STR, "description": "when to call back, as the customer said it"},
            "customer": {
                "anyOf": [obj({"id": INT, "name": STR, "phone": STR_N}, ["id", "name", "phone"]), {"type": "null"}]
            },
            "call_id": INT_N,
            "thread_id": INT_N,
            "created_at": DT,
            "done_at": DT_N,
            "done_by_user_id": INT_N,
        },
        ["id", "kind", "status", "caller_name", "phone", "reason", "callback_time", "customer", "created_at"],
    ),
    "ToolCall": obj(
        {
            "id": INT,
            "channel": {"type": "string", "enum": ["call", "whatsapp"]},
            "call_id": INT_N,
            "turn_index": INT_N,
            "thread_id": INT_N,
            "message_id": INT_N,
            "name": STR,
            "arguments": {**OBJ_N, "description": "as the model gave them; null when they were not a JSON object"},
            "result": {**OBJ_N, "description": "what the model got back"},
            "error": {**STR_N, "description": "why the call failed or was refused"},
            "started_at": DT,
            "finished_at": DT,
            "duration_ms": INT,
        },
        ["id", "channel", "name", "arguments", "result", "error", "started_at", "finished_at", "duration_ms"],
    ),
    "AgentTool": obj(
        {
            "name": STR,
            "label": {**STR, "description": "Hebrew, for the console"},
            "description": {**STR, "description": "what the model is told"},
            "channels": {"type": "array", "items": {"type": "string", "enum": ["call", "whatsapp"]}},
            "default_enabled": {"type": "boolean"},
            "enabled": {"type": "boolean"},
        },
        ["name", "label", "description", "channels", "default_enabled", "enabled"],
    ),
}

_TOOLS = json_response(obj({"tools": {"type": "array", "items": ref("AgentTool")}}, ["tools"]))

OPENAPI_PATHS: dict[str, Any] = {
    f"{_CRM}/tasks": {
        "get": operation(
            "Tasks the agent left for staff (messages to call back), newest first",
            tags=["tasks"],
            parameters=[query_param("status", {"type": "string", "enum": list(TASK_FILTERS)}, "default open")],
            responses={
                "200": json_response(obj({"items": {"type": "array", "items": ref("Task")}}, ["items"])),
                **error_responses(400),
            },
        )
    },
    f"{_CRM}/tasks/{{task_id}}": {
        "patch": operation(
            "Mark a task done (or open again)",
            tags=["tasks"],
            parameters=[path_param("task_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID})],
            body=obj({"status": {"type": "string", "enum": list(TASK_STATUSES)}}, ["status"], closed=True),
            responses={"200": json_response(ref("Task")), **error_responses(400)},
        )
    },
    f"{_CRM}/tool_calls": {
        "get": operation(
            "The agent's tool calls in one call (call_sid) or one WhatsApp thread (thread_id), oldest first",
            tags=["calls"],
            parameters=[
                query_param("call_sid", {"type": "string", "minLength": 1, "maxLength": 64}),
                query_param("thread_id", {"type": "string", "pattern": "^[0-9]{1,10}$"}),
            ],
            responses={
                "200": json_response(obj({"items": {"type": "array", "items": ref("ToolCall")}}, ["items"])),
                **error_responses(400),
            },
        )
    },
    f"{_CRM}/agent_tools": {
        "get": operation(
            "The agent's tools and which are on for this business", tags=["business"], responses={"200": _TOOLS}
        ),
        "put": operation(
            "Switch the agent's tools on or off (tools not named keep their setting)",
            tags=["business"],
            role="owner",
            body=obj(
                {
                    "tools": {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": {"type": "boolean"},
                        "description": "tool name → on",
                    }
                },
                ["tools"],
                closed=True,
            ),
            responses={"200": _TOOLS, **error_responses(400)},
        ),
    },
}

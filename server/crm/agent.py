"""What the agent's tools leave in the CRM, as staff see it: the tasks it took for them (a message to
call back: open until marked done), the record of every tool call (by call or WhatsApp thread), and
which tools the business has switched on (`Business.agent_tools`; owners change it)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.agent.tools import registered, tool_settings
from server.crm.serializers import iso
from server.db.dao_crm import audit
from server.db.models import Business, Call, Customer, Task, Thread, ToolCall, utcnow
from server.errors import DomainError, Problem
from server.security.auth import MAX_ID, get_owned

TASK_STATUSES = ("open", "done")
TASK_FILTERS = (*TASK_STATUSES, "all")
TASKS_LIMIT = 200  # the inbox shows the newest; a business with more open tasks has bigger problems
TOOL_CALLS_LIMIT = 500
CALL_SID_MAX = 64


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)


# ---- tasks -------------------------------------------------------------------------------------
def task_json(task: Task, customer: Optional[Customer]) -> dict[str, Any]:
    return {
        "id": task.id,
        "kind": task.kind,
        "status": task.status,
        "caller_name": task.caller_name,
        "phone": task.phone,
        "reason": task.reason,
        "callback_time": task.callback_time,
        "customer": {"id": customer.id, "name": customer.name, "phone": customer.phone} if customer else None,
        "call_id": task.call_id,
        "thread_id": task.thread_id,
        "created_at": iso(task.created_at),
        "done_at": iso(task.done_at),
        "done_by_user_id": task.done_by_user_id,
    }


def list_tasks(session: Session, business_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    """The business's tasks, newest first: `status=open` (the default), `done` or `all`."""
    status = args.get("status", "open")
    if status not in TASK_FILTERS:
        raise _invalid("status", f"status must be one of: {', '.join(TASK_FILTERS)}")
    stmt = (
        sa.select(Task, Customer)
        .outerjoin(Customer, Task.customer_id == Customer.id)
        .where(Task.business_id == business_id)
        .order_by(Task.id.desc())
        .limit(TASKS_LIMIT)
    )
    if status != "all":
        stmt = stmt.where(Task.status == status)
    return {"items": [task_json(task, customer) for task, customer in session.execute(stmt)]}


def update_task(
    session: Session, business_id: int, task_id: int, user_id: int, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Mark a task done (or open again): `{"status": "done" | "open"}`."""
    task = get_owned(session, Task, business_id, task_id)
    unknown = sorted(set(body) - {"status"})
    if unknown:
        raise _invalid(unknown[0], f"unknown field {unknown[0]!r}")
    status = body.get("status")
    if status not in TASK_STATUSES:
        raise _invalid("status", "status must be done or open")
    if status != task.status:
        task.status = status
        task.done_at = utcnow() if status == "done" else None
        task.done_by_user_id = user_id if status == "done" else None
        audit(session, business_id, f"user:{user_id}", f"task.{status}", "task", task.id)
    session.flush()
    customer = session.get(Customer, task.customer_id) if task.customer_id else None
    return task_json(task, customer)


# ---- tool calls --------------------------------------------------------------------------------
def tool_call_json(row: ToolCall) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel": row.channel,
        "call_id": row.call_id,
        "turn_index": row.turn_index,
        "thread_id": row.thread_id,
        "message_id": row.message_id,
        "name": row.name,
        "arguments": row.arguments,
        "result": row.result,
        "error": row.error,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "duration_ms": max(0, round((row.finished_at - row.started_at).total_seconds() * 1000)),
    }


def tool_calls_of_call(session: Session, call: Call) -> list[dict[str, Any]]:
    rows = session.scalars(
        sa.select(ToolCall).where(ToolCall.call_id == call.id).order_by(ToolCall.id).limit(TOOL_CALLS_LIMIT)
    )
    return [tool_call_json(row) for row in rows]


def list_tool_calls(session: Session, business_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    """The tool calls of one call (`call_sid`) or one WhatsApp thread (`thread_id`), oldest first."""
    call_sid, thread_raw = args.get("call_sid"), args.get("thread_id")
    if (call_sid is None) == (thread_raw is None):
        raise _invalid("call_sid", "give call_sid or thread_id")
    stmt = sa.select(ToolCall).where(ToolCall.business_id == business_id)
    if call_sid is not None:
        if len(call_sid) > CALL_SID_MAX or "\x00" in call_sid:
            raise DomainError(Problem.NOT_FOUND, "not_found", "no such call")
        call = get_owned(session, Call, business_id, call_sid, column="call_sid")
        stmt = stmt.where(ToolCall.call_id == call.id)
    else:
        if (
            not (thread_raw or "").isascii()
            or not (thread_raw or "").isdigit()
            or not 1 <= int(thread_raw or 0) <= MAX_ID
        ):
            raise _invalid("thread_id", "thread_id must be a thread's id")
        thread = get_owned(session, Thread, business_id, int(thread_raw or 0))
        stmt = stmt.where(ToolCall.thread_id == thread.id)
    rows = session.scalars(stmt.order_by(ToolCall.id).limit(TOOL_CALLS_LIMIT))
    return {"items": [tool_call_json(row) for row in rows]}


# ---- which tools are on ------------------------------------------------------------------------
def get_agent_tools(session: Session, business_id: int) -> dict[str, Any]:
    business = session.get_one(Business, business_id)
    return {"tools": tool_settings(business.agent_tools)}


def set_agent_tools(session: Session, business_id: int, actor: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Switch tools on or off: `{"tools": {"take_message": true, "send_payment_link": false}}`.
    Tools not named keep their setting; unknown names are refused."""
    unknown_fields = sorted(set(body) - {"tools"})
    if unknown_fields:
        raise _invalid(unknown_fields[0], f"unknown field {unknown_fields[0]!r}")
    changes = body.get("tools")
    if not isinstance(changes, dict) or not changes:
        raise _invalid("tools", "tools must be an object of tool name → true/false")
    known = {tool.name for tool in registered()}
    for name, value in changes.items():
        if name not in known:
            raise _invalid("tools", f"unknown tool {name[:64]!r}")
        if not isinstance(value, bool):
            raise _invalid("tools", f"{name} must be true or false")
    business = session.get_one(Business, business_id, with_for_update=True)
    business.agent_tools = {**(business.agent_tools or {}), **changes}
    audit(session, business_id, actor, "business.agent_tools", "business", business_id, **changes)
    session.flush()
    return {"tools": tool_settings(business.agent_tools)}

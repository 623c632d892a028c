"""`take_message`: the agent leaves staff a message (who, what they need, when to call back) as an
open task on the customer, shown in the console's inbox until someone marks it done."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from server.agent.tools import Tool, ToolContext, register
from server.db.models import Customer, Task
from server.logs import log_event
from server.phones import InvalidPhone, to_e164

log = logging.getLogger("agentlocator.agent_tools")


def take_message(context: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    phone = context.phone
    if args.get("phone"):
        try:
            phone = to_e164(args["phone"])
        except InvalidPhone:
            return {"error": "that phone number is not valid; ask the customer to say it again digit by digit"}

    def store(session: Session) -> int:
        caller_name = args.get("caller_name", "").strip()
        customer = session.get(Customer, context.customer_id) if context.customer_id else None
        if customer is not None and customer.business_id == context.business_id and caller_name and not customer.name:
            customer.name = caller_name  # the caller told us who they are: the CRM learns it too
        task = Task(
            business_id=context.business_id,
            customer_id=customer.id if customer is not None and customer.business_id == context.business_id else None,
            call_id=context.call_id,
            thread_id=context.thread_id,
            kind="message",
            caller_name=caller_name,
            phone=phone,
            reason=args["reason"].strip(),
            callback_time=args.get("callback_time", "").strip(),
            status="open",
        )
        session.add(task)
        session.flush()
        return task.id

    task_id = context.run(store)
    log_event(log, "agent_task_created", business_id=context.business_id, task_id=task_id, channel=context.channel)
    return {
        "ok": True,
        "task_id": task_id,
        "next": "Tell the customer their message was passed on and a staff member will get back to them.",
    }


register(
    Tool(
        name="take_message",
        label="השארת הודעה לצוות",
        description=(
            "Leave a message for the business's staff when the customer needs something you can't do "
            "(a question you can't answer, a request for a call back). Collect who they are, what they "
            "need and when to call back first; don't call it twice for the same request."
        ),
        parameters={
            "type": "object",
            "properties": {
                "caller_name": {"type": "string", "maxLength": 200, "description": "the customer's name"},
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 2000,
                    "description": "what the customer needs, in Hebrew",
                },
                "callback_time": {
                    "type": "string",
                    "maxLength": 200,
                    "description": "when to call back, as the customer said it",
                },
                "phone": {
                    "type": "string",
                    "maxLength": 32,
                    "description": "a number to call back, only if different from the one they called from",
                },
            },
            "required": ["reason"],
            "additionalProperties": False,
        },
        handler=take_message,
    )
)

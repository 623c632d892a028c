"""`end_call`: the agent ends a live call after its goodbye (the `[END_CALL]` marker's successor)."""

from __future__ import annotations

from typing import Any

from server.agent.tools import Tool, ToolContext, register


def end_call(context: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    context.hang_up_requested = True
    return {"ok": True, "next": "Say a short, warm goodbye in Hebrew now; the call is hung up once it has been heard."}


register(
    Tool(
        name="end_call",
        label="סיום שיחה",
        description=(
            "End the phone call. Call it when the conversation is over: the caller said goodbye or has "
            "nothing more to ask. Then say one short goodbye sentence in Hebrew; the line is hung up "
            "after it has been heard."
        ),
        parameters={
            "type": "object",
            "properties": {"reason": {"type": "string", "maxLength": 200, "description": "why the call ends"}},
            "additionalProperties": False,
        },
        handler=end_call,
        channels=("call",),
    )
)

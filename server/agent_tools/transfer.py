"""`transfer_to_person`: the agent hands a live call to a person at the business
(`server.voice.transfer`), during the business's opening hours (the appointment book's)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Optional

from sqlalchemy.orm import Session

from server.agent.tools import Tool, ToolContext, register
from server.appointments.schedule import business_zone, open_intervals, weekly_hours
from server.voice import transfer


def open_now(session: Session, business_id: int, at: datetime) -> Optional[bool]:
    """Whether `at` falls in the business's opening hours (exceptions included); None when it has set
    no weekly hours at all, which `transfer_to_person` takes as open."""
    if not any(weekly_hours(session, business_id).values()):
        return None
    today = at.astimezone(business_zone(session, business_id)).date()
    # The day before too: its hours may run past midnight into today.
    return any(
        start <= at < end for start, end in open_intervals(session, business_id, today - timedelta(days=1), today)
    )


def transfer_to_person(context: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    if context.call_sid is None:
        return {"error": "there is no phone call to transfer in this conversation"}
    desk = transfer.TransferDesk(
        settings=context.settings, app_secret=context.app_secret, run=context.run, is_open=open_now
    )
    # Once Twilio has the new TwiML it stops our stream itself; the session then ends as usual.
    return transfer.transfer_to_person(
        desk, business_id=context.business_id, call_sid=context.call_sid, reason=str(args.get("reason", ""))
    )


register(
    Tool(
        name=transfer.TOOL_NAME,
        label="העברה לנציג אנושי",
        description=transfer.TOOL_DESCRIPTION,
        parameters=transfer.TOOL_PARAMETERS,
        handler=transfer_to_person,
        channels=("call",),
        default_enabled=False,  # the owner turns it on once the business has a forwarding number
    )
)

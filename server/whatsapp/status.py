"""Delivery statuses of outgoing messages: the CRM's vocabulary and the rule that they only move forward.

CRM statuses: `queued` (stored, not yet accepted by a provider) → `sent` (the provider took it)
→ `delivered` → `read`, plus `failed`. Providers report out of order (a `delivered` callback may
arrive after `read`), so a report that would move a message backwards is ignored.

`failed` ends the line with one exception: a later `delivered` or `read` for the same provider
message id wins over it, because it proves the customer's phone got the message (Twilio can
report `undelivered` and still deliver on a retry). A `failed` after `delivered`/`read` is ignored.
"""
from __future__ import annotations

import logging
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db.events import publish_message_status
from server.db.models import Message, utcnow
from server.logs import log_event

log = logging.getLogger("agentlocator.whatsapp")

PROGRESS = ("queued", "sent", "delivered", "read")
MAX_ERROR_CODE = Message.__table__.c.error_code.type.length
FAILED = "failed"

# Twilio's MessageStatus values (MessageEnumStatus) → the CRM's. `receiving`/`received` belong to
# inbound messages and are deliberately absent: like any unknown value they are ignored.
TWILIO_STATUSES = {
    "accepted": "queued", "scheduled": "queued", "queued": "queued", "sending": "queued",
    "sent": "sent", "delivered": "delivered", "partially_delivered": "delivered", "read": "read",
    "undelivered": FAILED, "failed": FAILED, "canceled": FAILED,
}
# The bridge reports sent/delivered/read/failed, the CRM's own words (baileys-bridge/README.md).
BAILEYS_STATUSES = {name: name for name in ("sent", "delivered", "read", FAILED)}
STATUSES_BY_PROVIDER = {"twilio": TWILIO_STATUSES, "baileys": BAILEYS_STATUSES}


def apply_status(session: Session, provider: str, provider_message_id: str, reported: str, *,
                 error_code: Optional[str] = None, error_message: Optional[str] = None) -> bool:
    """Apply a provider's delivery report (`reported` in the provider's own words) to the outgoing
    message it names; True when the message moved forward.

    Unknown statuses and unknown message ids are logged and ignored: the provider would only retry.
    """
    status = STATUSES_BY_PROVIDER[provider].get(reported)
    if status is None:
        log_event(log, "whatsapp_status_ignored", provider=provider, status=reported, reason="unknown status")
        return False
    message_id = session.scalar(sa.select(Message.id).where(Message.provider == provider,
                                                            Message.provider_message_id == provider_message_id))
    if message_id is None:
        log_event(log, "whatsapp_status_ignored", provider=provider, status=reported, reason="unknown message")
        return False
    changed = advance_status(session, message_id, status, error_code=error_code, error_message=error_message)
    log_event(log, "whatsapp_status", provider=provider, message_id=message_id, status=status, applied=changed)
    return changed


def predecessors(new: str) -> tuple[str, ...]:
    """The statuses from which `new` is a step forward."""
    if new == FAILED:
        return ("queued", "sent")
    earlier = PROGRESS[:PROGRESS.index(new)]
    return earlier + (FAILED,) if new in ("delivered", "read") else earlier


def advance_status(session: Session, message_id: int, new: str, *, error_code: Optional[str] = None,
                   error_message: Optional[str] = None) -> bool:
    """Apply `new` to an outgoing message if it moves it forward; True when it changed.

    One conditional UPDATE, so two reports handled at once by two workers can't move a message
    backwards (the later writer re-checks the condition against the row the first one wrote).
    """
    # A provider's error code has no documented length; the column has.
    errors = {"error_code": error_code and error_code[:MAX_ERROR_CODE], "error_message": error_message} \
        if new == FAILED else {"error_code": None, "error_message": None}
    changed = session.execute(
        sa.update(Message).where(Message.id == message_id, Message.direction == "out",
                                 Message.status.in_(predecessors(new)))
        .values(status=new, updated_at=utcnow(), **errors).execution_options(synchronize_session=False)).rowcount
    if changed == 1:
        publish_message_status(session, message_id)  # the console shows the tick at once
    return changed == 1

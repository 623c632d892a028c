"""Delivery statuses of outgoing messages: the CRM's vocabulary and the rule that they only move forward.

CRM statuses: `queued` (stored, not yet accepted by a provider) → `sent` (the provider took it)
→ `delivered` → `read`, plus `failed`. Providers report out of order (a `delivered` callback may
arrive after `read`), so a report that would move a message backwards is ignored.

`failed` ends the line with one exception: a later `delivered` or `read` for the same provider
message id wins over it, because it proves the customer's phone got the message (Twilio can
report `undelivered` and still deliver on a retry). A `failed` after `delivered`/`read` is ignored.

A report can arrive before its message has the provider's id: the send stores that id only once the
provider has answered, and the provider may call back first. Such a report waits in
`pending_statuses` and is applied (by the same rules) once the id is stored (`settle_pending`,
called by the send); one whose message never takes that id is pruned after a day.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.engine import rows_affected
from server.db.events import publish_message_status
from server.db.models import Message, PendingStatus, string_length, utcnow
from server.logs import log_event

log = logging.getLogger("agentlocator.whatsapp")

PROGRESS = ("queued", "sent", "delivered", "read")
MAX_ERROR_CODE = string_length(Message, "error_code")
MAX_PROVIDER_ID = string_length(Message, "provider_message_id")
FAILED = "failed"
# A report kept for a message without its provider id yet. `queued` and `sent` are left out: the
# send itself marks the message `sent` when it stores the id, so they could never move it.
KEPT_FOR_LATER = ("delivered", "read", FAILED)
PENDING_RETENTION = timedelta(days=1)

# Twilio's MessageStatus values (MessageEnumStatus) → the CRM's. `receiving`/`received` belong to
# inbound messages and are deliberately absent: like any unknown value they are ignored.
TWILIO_STATUSES = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "read",
    "undelivered": FAILED,
    "failed": FAILED,
    "canceled": FAILED,
}
# The bridge reports sent/delivered/read/failed, the CRM's own words (baileys-bridge/README.md).
BAILEYS_STATUSES = {name: name for name in ("sent", "delivered", "read", FAILED)}
STATUSES_BY_PROVIDER = {"twilio": TWILIO_STATUSES, "baileys": BAILEYS_STATUSES}


def apply_status(
    session: Session,
    provider: str,
    provider_message_id: str,
    reported: str,
    *,
    error_code: Optional[str] = None,
    error_message: Optional[str] = None,
) -> bool:
    """Apply a provider's delivery report (`reported` in the provider's own words) to the outgoing
    message it names; True when the message moved forward.

    Unknown statuses are logged and ignored: the provider would only retry. A report for a message id
    not stored yet is kept for later (`keep_for_later`), which commits `session`.
    """
    status = STATUSES_BY_PROVIDER[provider].get(reported)
    if status is None:
        log_event(log, "whatsapp_status_ignored", provider=provider, status=reported, reason="unknown status")
        return False
    message_id = _message_id(session, provider, provider_message_id)
    if message_id is None:
        return keep_for_later(
            session, provider, provider_message_id, status, error_code=error_code, error_message=error_message
        )
    changed = advance_status(session, message_id, status, error_code=error_code, error_message=error_message)
    log_event(log, "whatsapp_status", provider=provider, message_id=message_id, status=status, applied=changed)
    # Reports kept while the send was storing the id, should the send not have settled them itself.
    return settle_pending(session, provider, provider_message_id) or changed


def _message_id(session: Session, provider: str, provider_message_id: str) -> Optional[int]:
    return session.scalar(
        sa.select(Message.id).where(Message.provider == provider, Message.provider_message_id == provider_message_id)
    )


def keep_for_later(
    session: Session,
    provider: str,
    provider_message_id: str,
    status: str,
    *,
    error_code: Optional[str] = None,
    error_message: Optional[str] = None,
) -> bool:
    """Keep the report `status` (the CRM's word) for a message that doesn't have this provider id
    yet, and apply it at once if the send stored the id meanwhile; True when a message moved.

    Commits `session` before looking for the message again. The send commits the id before it looks
    here (`settle_pending`): as each side writes, commits and only then reads what the other wrote,
    at least one of them sees both, however the two interleave.
    """
    if not provider_message_id or len(provider_message_id) > MAX_PROVIDER_ID:
        log_event(log, "whatsapp_status_ignored", provider=provider, status=status, reason="no usable message id")
        return False
    if status not in KEPT_FOR_LATER:
        log_event(log, "whatsapp_status_ignored", provider=provider, status=status, reason="unknown message")
        return False
    row = {
        "provider": provider,
        "provider_message_id": provider_message_id,
        "status": status,
        "error_code": error_code and error_code[:MAX_ERROR_CODE],
        "error_message": error_message,
        "received_at": utcnow(),
    }
    try:
        with session.begin_nested():
            session.execute(sa.insert(PendingStatus).values(**row))
    except IntegrityError:
        pass  # the same report delivered again: kept once
    pruned = rows_affected(
        session.execute(
            sa.delete(PendingStatus)
            .where(PendingStatus.received_at < utcnow() - PENDING_RETENTION)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()
    log_event(log, "whatsapp_status_pending", provider=provider, status=status, pruned=pruned)
    return settle_pending(session, provider, provider_message_id)


def settle_pending(session: Session, provider: str, provider_message_id: str) -> bool:
    """Apply the reports kept for `provider_message_id` once a message has it; True when it moved.

    Called right after the send commits the provider's id, and by a report that finds its message.
    Whoever deletes a kept row applies it, so the send and a concurrent callback never both do.
    The order they are applied in doesn't matter: each one only ever moves the message forward.
    """
    kept = session.execute(
        sa.select(PendingStatus.id, PendingStatus.status, PendingStatus.error_code, PendingStatus.error_message)
        .where(PendingStatus.provider == provider, PendingStatus.provider_message_id == provider_message_id)
        .order_by(PendingStatus.id)
    ).all()
    if not kept:
        return False
    message_id = _message_id(session, provider, provider_message_id)
    if message_id is None:
        return False
    changed = False
    for row in kept:
        taken = rows_affected(
            session.execute(
                sa.delete(PendingStatus).where(PendingStatus.id == row.id).execution_options(synchronize_session=False)
            )
        )
        if taken == 1:
            applied = advance_status(
                session, message_id, row.status, error_code=row.error_code, error_message=row.error_message
            )
            log_event(
                log,
                "whatsapp_status",
                provider=provider,
                message_id=message_id,
                status=row.status,
                applied=applied,
                pending=True,
            )
            changed = applied or changed
    return changed


def predecessors(new: str) -> tuple[str, ...]:
    """The statuses from which `new` is a step forward."""
    if new == FAILED:
        return ("queued", "sent")
    earlier = PROGRESS[: PROGRESS.index(new)]
    return earlier + (FAILED,) if new in ("delivered", "read") else earlier


def advance_status(
    session: Session,
    message_id: int,
    new: str,
    *,
    error_code: Optional[str] = None,
    error_message: Optional[str] = None,
) -> bool:
    """Apply `new` to an outgoing message if it moves it forward; True when it changed.

    One conditional UPDATE, so two reports handled at once by two workers can't move a message
    backwards (the later writer re-checks the condition against the row the first one wrote).
    """
    # A provider's error code has no documented length; the column has.
    errors = (
        {"error_code": error_code and error_code[:MAX_ERROR_CODE], "error_message": error_message}
        if new == FAILED
        else {"error_code": None, "error_message": None}
    )
    changed = rows_affected(
        session.execute(
            sa.update(Message)
            .where(Message.id == message_id, Message.direction == "out", Message.status.in_(predecessors(new)))
            .values(status=new, updated_at=utcnow(), **errors)
            .execution_options(synchronize_session=False)
        )
    )
    if changed == 1:
        publish_message_status(session, message_id)  # the console shows the tick at once
    return changed == 1

"""Which business a Baileys bridge event belongs to.

The bridge runs one instance (one linked WhatsApp account) per business and names it in every
event (`business_id`): a message is stored under that business and no other, whatever number it
was written to. An event naming a business that does not exist here is refused (404, logged): the
bridge drops it instead of retrying. An event without `business_id` comes from a bridge of before
instances; it keeps the old routing by the number written to. A delivery report names a message
by its WhatsApp id only: one about another business's message is dropped.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db.models import Business, Message, Thread
from server.errors import DomainError, Problem
from server.logs import log_event

log = logging.getLogger("agentlocator.whatsapp")
MAX_BUSINESS_ID = 2**63 - 1


def event_business_id(session: Session, event: Mapping[str, Any]) -> Optional[int]:
    """The event's business, checked to exist; None for an event of a bridge of before instances."""
    raw = event.get("business_id")
    if raw is None:
        log_event(log, "bridge_event_without_business", logging.WARNING, event_type=event.get("event"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= MAX_BUSINESS_ID:
        raise DomainError(Problem.INVALID, "invalid_event", "business_id must be a positive integer")
    if session.get(Business, raw) is None:
        log_event(
            log,
            "bridge_event_unknown_business",
            logging.WARNING,
            business_id=raw,
            event_type=event.get("event"),
            provider_message_id=event.get("id"),
        )
        raise DomainError(Problem.NOT_FOUND, "unknown_business", f"no business {raw} here; the event was not stored")
    return raw


def status_is_for(session: Session, business_id: Optional[int], provider_message_id: str) -> bool:
    """Whether a delivery report from `business_id`'s instance may touch the message it names: not
    when that message was sent by another business (logged, and the report dropped)."""
    if business_id is None:
        return True
    owner = session.scalar(
        sa.select(Thread.business_id)
        .join(Message, Message.thread_id == Thread.id)
        .where(Message.provider == "baileys", Message.provider_message_id == provider_message_id)
    )
    if owner is None or owner == business_id:
        return True
    log_event(
        log,
        "bridge_status_other_business",
        logging.WARNING,
        business_id=business_id,
        owner_business_id=owner,
        provider_message_id=provider_message_id,
    )
    return False

"""What each WhatsApp webhook does once its route has checked the signature: one function per webhook.

Each stores what the provider reported (a customer's message, a delivery status, the bridge's
connection state) in the request's session, idempotently, and answers the id of a customer message
the AI should answer, or None. The AI reply itself must wait until the webhook's response is out
and the message committed (`auto_reply.schedule_auto_reply`): a provider waiting on a slow model
would time out and deliver the message again.

Content that is authentic but unusable is `DomainError(INVALID)`. A message to a number no
business owns is logged and dropped: the provider would only retry it.
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

from sqlalchemy.orm import Session

from server.errors import DomainError, Problem
from server.logs import log_event
from server.text import storable_fields
from server.whatsapp.auto_reply import needs_reply
from server.whatsapp.bridge_state import record_bridge_state
from server.whatsapp.inbound import (
    InvalidInbound,
    StoredInbound,
    baileys_inbound,
    bridge_event,
    is_twilio_status_callback,
    store_inbound,
    twilio_inbound,
)
from server.whatsapp.status import apply_status

log = logging.getLogger("agentlocator.whatsapp")


def receive_twilio(session: Session, form: Mapping[str, str]) -> Optional[int]:
    """Twilio's inbound webhook: a customer's message, or a delivery status (an account whose
    callbacks all point here sends those too)."""
    if is_twilio_status_callback(form):
        receive_twilio_status(session, form)
        return None
    try:
        inbound = twilio_inbound(form)
    except InvalidInbound as exc:
        raise DomainError(Problem.INVALID, "invalid_webhook", str(exc)) from None
    return _to_answer(store_inbound(session, inbound))


def receive_twilio_status(session: Session, form: Mapping[str, str]) -> None:
    """Twilio's status callback for a message we sent (`MessageStatus`, and on failure `ErrorCode`)."""
    form = storable_fields(form)  # a NUL would fail even the lookup on PostgreSQL
    apply_status(
        session,
        "twilio",
        form.get("MessageSid") or form.get("SmsSid") or "",
        (form.get("MessageStatus") or "").lower(),
        error_code=form.get("ErrorCode") or None,
        error_message=form.get("ErrorMessage") or None,
    )


def receive_bridge_event(session: Session, raw: bytes) -> Optional[int]:
    """One event of the Baileys bridge (its raw JSON body): `connection`, `status` or `message`."""
    try:
        event = bridge_event(raw)
    except InvalidInbound as exc:
        raise DomainError(Problem.INVALID, "invalid_event", str(exc)) from None
    if event["event"] == "connection":
        record_bridge_state(session, event["state"], event.get("qr", False))
        log_event(log, "baileys_connection", state=event["state"], qr=event.get("qr", False))
        return None
    if event["event"] == "status":
        apply_status(session, "baileys", event["id"], event["status"])
        return None
    return _to_answer(store_inbound(session, baileys_inbound(event)))


def _to_answer(stored: Optional[StoredInbound]) -> Optional[int]:
    return stored.message.id if needs_reply(stored) else None

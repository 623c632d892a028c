"""What each WhatsApp webhook does once its route has checked the signature: one function per webhook.

Each stores what the provider reported (a customer's message, a delivery status, the bridge's
connection state) in the request's session, idempotently, and answers the id of a customer message
the AI should answer, or None. The AI reply itself must wait until the webhook's response is out
and the message committed (`auto_reply.schedule_auto_reply`): a provider waiting on a slow model
would time out and deliver the message again.

Content that is authentic but unusable is `DomainError(INVALID)`. A message to a number no
business owns is logged and dropped: the provider would only retry it.

Media are stored with their message (`server.media`): the bridge's bytes at once, Twilio's URLs as
`pending` items that the `wa_media_download` job fetches once the message is committed; that job,
not the webhook, then asks for the AI reply, so the AI never answers before the media is kept. A
stored voice note is marked `transcript_status = "pending"` in the same transaction and its
transcription queued once that commits (`server.whatsapp.voice_notes`).
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session, SessionTransaction

from server.errors import DomainError, Problem
from server.jobs import JobQueue
from server.logs import log_event
from server.text import storable_fields
from server.whatsapp.auto_reply import needs_reply
from server.whatsapp.bridge_routing import event_business_id, status_is_for
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
from server.whatsapp.media_download import audio_stored, queue_media_download
from server.whatsapp.status import apply_status
from server.whatsapp.voice_notes import queue_transcription

log = logging.getLogger("agentlocator.whatsapp")


def receive_twilio(session: Session, form: Mapping[str, str], jobs: JobQueue) -> Optional[int]:
    """Twilio's inbound webhook: a customer's message, or a delivery status (an account whose
    callbacks all point here sends those too)."""
    if is_twilio_status_callback(form):
        receive_twilio_status(session, form, jobs)
        return None
    try:
        inbound = twilio_inbound(form)
    except InvalidInbound as exc:
        raise DomainError(Problem.INVALID, "invalid_webhook", str(exc)) from None
    stored = store_inbound(session, inbound, jobs.context.settings)
    if stored is not None and any(item.status == "pending" for item in stored.media):
        message_id = stored.message.id
        after_commit(session, lambda: queue_media_download(jobs, message_id))
        return None  # the download job asks for the reply once the media is kept
    _after_media(session, jobs, stored)
    return _to_answer(stored)


def receive_twilio_status(session: Session, form: Mapping[str, str], jobs: Optional[JobQueue] = None) -> None:
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


def receive_bridge_event(session: Session, raw: bytes, jobs: JobQueue) -> Optional[int]:
    """One event of the Baileys bridge (its raw JSON body): `connection`, `status` or `message`."""
    try:
        event = bridge_event(raw)
    except InvalidInbound as exc:
        raise DomainError(Problem.INVALID, "invalid_event", str(exc)) from None
    business_id = event_business_id(session, event)  # the bridge instance it came from
    if event["event"] == "connection":
        record_bridge_state(session, business_id, event["state"], event.get("qr", False))
        log_event(log, "baileys_connection", business_id=business_id, state=event["state"], qr=event.get("qr", False))
        return None
    if event["event"] == "status":
        if status_is_for(session, business_id, event["id"]):
            apply_status(session, "baileys", event["id"], event["status"])
        return None
    stored = store_inbound(session, baileys_inbound(event, business_id), jobs.context.settings)
    _after_media(session, jobs, stored)
    return _to_answer(stored)


def _to_answer(stored: Optional[StoredInbound]) -> Optional[int]:
    return stored.message.id if needs_reply(stored) else None


def _after_media(session: Session, jobs: JobQueue, stored: Optional[StoredInbound]) -> None:
    """A stored voice note waits for its transcript: marked pending now, its job queued after the commit."""
    if stored is not None and audio_stored(stored.message, stored.media):
        message_id = stored.message.id
        after_commit(session, lambda: queue_transcription(jobs, message_id))


AFTER_COMMIT = "whatsapp_after_commit"
COMMITTING = "whatsapp_committing"


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run `action` once this transaction has committed: a job queued sooner could run before the
    rows it reads are visible. A rollback forgets it (the webhook's queued payload stores the message
    again and asks again)."""
    if AFTER_COMMIT not in session.info:
        session.info[AFTER_COMMIT] = []
        sa.event.listen(session, "after_commit", _committed)
        sa.event.listen(session, "after_transaction_end", _transaction_ended)
    session.info[AFTER_COMMIT].append(action)


def _committed(session: Session) -> None:
    # Also called when a savepoint is released; only the end of the whole transaction counts.
    session.info[COMMITTING] = True


def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    committed = session.info.pop(COMMITTING, False)
    if transaction.parent is not None:  # a savepoint: the transaction goes on
        return
    actions, session.info[AFTER_COMMIT] = session.info[AFTER_COMMIT], []
    if committed:
        for action in actions:
            action()

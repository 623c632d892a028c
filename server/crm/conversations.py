"""Working a thread: the thread list, a thread with its messages page by page, marking it read,
status/assignee/labels, taking the conversation over from the AI (`ai_paused`), and the staff reply,
which goes out through the one WhatsApp send service (same routing, same 24-hour rule as
`/api/whatsapp/send`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.config import Settings
from server.crm import serializers as out
from server.crm import validation as v
from server.crm.pagination import PageRequest, fetch_page, page_request
from server.crm.queries import MESSAGES_KEYSET, THREAD_STATUSES, THREADS_KEYSET, thread_rows, threads_query
from server.db.dao_crm import audit
from server.db.models import Customer, Message, Thread, User
from server.errors import DomainError, Problem
from server.media import media_of_messages
from server.security.auth import get_owned
from server.whatsapp.outgoing_media import outgoing_media
from server.whatsapp.send import send_whatsapp

REPLY_TEXT_MAX = 4096  # WhatsApp's limit for one text message
PROVIDERS = ("auto", "twilio", "baileys")


def list_threads(session: Session, business_id: int, user_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    """By latest activity; `assignee=me` means `user_id`."""
    stmt = threads_query(session, business_id, user_id, args)
    return fetch_page(
        session,
        stmt,
        THREADS_KEYSET,
        page_request(args, THREADS_KEYSET),
        lambda rows: [out.thread_json(*row) for row in rows],
    )


def thread_detail(session: Session, business_id: int, thread_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    """The thread, its customer in full, and the first page of its messages (`args` pages them)."""
    thread = get_owned(session, Thread, business_id, thread_id)
    customer = session.get_one(Customer, thread.customer_id)
    return {
        **out.thread_json(thread, customer),
        "customer": out.customer_json(customer),
        "messages": messages_page(session, thread, args),
    }


def thread_messages(session: Session, business_id: int, thread_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    return messages_page(session, get_owned(session, Thread, business_id, thread_id), args)


def messages_page(session: Session, thread: Thread, args: Mapping[str, str]) -> dict[str, Any]:
    """Newest first. `cursor` continues a listing; `before=<message id>` starts below that message."""
    request = page_request(args, MESSAGES_KEYSET)
    before = v.query_id(args, "before")
    if before is not None:
        if request.after is not None:
            raise v.invalid("before", "send cursor or before, not both")
        anchor = session.scalar(sa.select(Message).where(Message.id == before, Message.thread_id == thread.id))
        if anchor is None:
            raise v.invalid("before", f"message {before} is not in this thread")
        request = PageRequest(request.limit, [anchor.created_at, anchor.id])
    stmt = sa.select(Message).where(Message.business_id == thread.business_id, Message.thread_id == thread.id)
    return fetch_page(session, stmt, MESSAGES_KEYSET, request, lambda rows: messages_json(session, rows))


def messages_json(session: Session, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The messages as the API shows them, each with its media items (one query for the page)."""
    attachments = media_of_messages(session, [message.id for message in messages])
    return [out.message_json(message, attachments.get(message.id)) for message in messages]


def mark_read(session: Session, business_id: int, thread_id: int) -> dict[str, Any]:
    thread = get_owned(session, Thread, business_id, thread_id)
    thread.unread_count = 0
    return _thread_json(session, thread)


def _thread_json(session: Session, thread: Thread) -> dict[str, Any]:
    """As the thread list shows it: with its customer and newest message."""
    return out.thread_json(*session.execute(thread_rows(thread.business_id).where(Thread.id == thread.id)).one())


def update_thread(session: Session, thread: Thread, actor: str, body: Mapping[str, Any]) -> dict[str, Any]:
    v.reject_unknown(body, ("status", "assignee", "labels", "ai_paused"))
    changes: dict[str, Any] = {}
    if "status" in body:
        changes["status"] = v.choice(body["status"], "status", THREAD_STATUSES)
    if "assignee" in body:
        changes["assignee_user_id"] = _assignee(session, thread.business_id, body["assignee"])
    if "labels" in body:
        changes["labels"] = v.labels(body["labels"])
    if "ai_paused" in body:  # read by the AI auto-reply (server/whatsapp/auto_reply.py) before it answers
        changes["ai_paused"] = v.boolean(body["ai_paused"], "ai_paused")
    changed = {name: value for name, value in changes.items() if getattr(thread, name) != value}
    if changed:
        before = {name: getattr(thread, name) for name in changed}
        for name, value in changed.items():
            setattr(thread, name, value)
        session.flush()
        audit(session, thread.business_id, actor, "thread.updated", "thread", thread.id, before=before, after=changed)
    return _thread_json(session, thread)


def _assignee(session: Session, business_id: int, value: Any) -> int | None:
    if value is None:
        return None
    user_id = v.object_id(value, "assignee")
    if session.scalar(sa.select(User.id).where(User.id == user_id, User.business_id == business_id)) is None:
        raise v.invalid("assignee", f"user {user_id} is not a user of this business")
    return user_id


def reply(
    session: Session,
    settings: Settings,
    thread: Thread,
    sender: User,
    body: Mapping[str, Any],
    idempotency_header: str | None,
    *,
    app_secret: str = "",
    upload: tuple[bytes, str | None, str | None] | None = None,
) -> dict[str, Any]:
    """Send the staff reply to the thread's customer on WhatsApp; answers as `/api/whatsapp/send`
    does, plus the thread the message is stored in and the stored message. A failed send raises the
    send service's `DomainError`, with the same two added once the (failed) message is stored.
    A file goes with it as an `upload` or as `media_id` in the body (`text` is then its caption;
    `app_secret` signs the link Twilio fetches it from).

    On a voice thread the reply still goes to the caller's phone on WhatsApp, and is stored in the
    customer's WhatsApp thread, where the customer's answer will arrive.
    """
    v.reject_unknown(body, ("text", "provider", "content_sid", "content_variables", "idempotency_key", "media_id"))
    text = v.clean_text(body["text"], "text", max_length=REPLY_TEXT_MAX) if body.get("text") is not None else None
    content_sid = (
        v.clean_text(body["content_sid"], "content_sid", max_length=64) if body.get("content_sid") is not None else None
    )
    has_file = upload is not None or body.get("media_id") is not None
    if not (text or "").strip() and not (content_sid or "").strip() and not has_file:
        raise v.invalid("text", "text is required (or content_sid, a WhatsApp template, or a file)")
    variables = body.get("content_variables")
    if variables is not None and not isinstance(variables, (dict, str)):
        raise v.invalid("content_variables", "content_variables must be an object or a JSON string")
    provider = v.choice(body.get("provider", "auto"), "provider", PROVIDERS)
    key = body.get("idempotency_key", idempotency_header)
    if key is not None:
        key = v.clean_text(key, "idempotency_key", max_length=128, allow_empty=False)
    customer = session.get(Customer, thread.customer_id)
    address = customer.phone or customer.wa_lid if customer else None
    if not address:
        raise DomainError(Problem.CONFLICT, "no_address", "this customer has neither a phone number nor a WhatsApp id")
    media_id, media = outgoing_media(
        session, settings, app_secret, thread.business_id, upload=upload, media_id=body.get("media_id")
    )
    try:
        result = send_whatsapp(
            session,
            settings,
            thread.business_id,
            to=address,
            text=text,
            provider=provider,
            content_sid=content_sid,
            content_variables=variables,
            idempotency_key=key,
            sender_user_id=sender.id,
            media=media,
            media_id=media_id,
        )
    except DomainError as exc:
        exc.details.update(_stored(session, exc.details.get("message_id")))
        raise
    return {**result.to_json(), **_stored(session, result.message_id)}


def _stored(session: Session, message_id: int | None) -> dict[str, Any]:
    """Where the reply is stored: its thread and the message (none when nothing was stored)."""
    stored = session.get(Message, message_id) if message_id else None
    if stored is None:
        return {"thread_id": None}
    return {"thread_id": stored.thread_id, "stored_message": messages_json(session, [stored])[0]}

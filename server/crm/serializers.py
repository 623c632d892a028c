"""Rows → the JSON the CRM API answers. Times are ISO 8601 in UTC; money is integer minor units
(`amount_minor`) with the decimal string beside it (`amount`) for display."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from server.db.models import (
    ApiToken,
    AuditLog,
    Call,
    CallTurn,
    Contract,
    Customer,
    Deal,
    Invoice,
    Media,
    Message,
    Payment,
    Thread,
    User,
)
from server.media import media_json
from server.money import major_text

PREVIEW_CHARS = 200


def iso(value: Optional[datetime]) -> Optional[str]:
    return None if value is None else value.isoformat()


def preview(text: Optional[str]) -> str:
    text = text or ""
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def customer_json(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "phone": customer.phone,
        "name": customer.name,
        "email": customer.email,
        "wa_lid": customer.wa_lid,
        "notes": customer.notes,
        "merged_into_id": customer.merged_into_id,
        "created_at": iso(customer.created_at),
        "updated_at": iso(customer.updated_at),
    }


def customer_summary(customer: Optional[Customer]) -> Optional[dict[str, Any]]:
    if customer is None:
        return None
    return {"id": customer.id, "phone": customer.phone, "name": customer.name}


def call_json(call: Call) -> dict[str, Any]:
    """A call as listed: everything but the transcript and turns, which `GET /calls/<sid>` adds."""
    return {
        "id": call.id,
        "call_sid": call.call_sid,
        "customer_id": call.customer_id,
        "thread_id": call.thread_id,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "status": call.status,
        "stream_status": call.stream_status,
        "outcome": call.outcome,
        "started_at": iso(call.started_at),
        "ended_at": iso(call.ended_at),
        "duration_seconds": call.duration_seconds,
        "recording_url": call.recording_url,
        "transcript_preview": preview(call.transcript),
        "created_at": iso(call.created_at),
    }


def call_detail_json(call: Call, turns: list[CallTurn], voicemail: Optional[Message]) -> dict[str, Any]:
    return {
        **call_json(call),
        "stream_sid": call.stream_sid,
        "stream_error": call.stream_error,
        "stream_started_at": iso(call.stream_started_at),
        "recording_sid": call.recording_sid,
        "transcript": call.transcript or "",
        "turns": [turn_json(t) for t in turns],
        "voicemail": message_json(voicemail) if voicemail is not None else None,
        "updated_at": iso(call.updated_at),
    }


def turn_json(turn: CallTurn) -> dict[str, Any]:
    return {
        "turn_index": turn.turn_index,
        "user_text": turn.user_text,
        "agent_text": turn.agent_text,
        "interrupted": bool(turn.interrupted),
        "created_at": iso(turn.created_at),
        "metrics": {
            "t_audio_ms": turn.t_audio_ms,
            "t_nlp_ms": turn.t_nlp_ms,
            "t_tts_ms": turn.t_tts_ms,
            "t_total_ms": turn.t_total_ms,
            "t_first_audio_ms": turn.t_first_audio_ms,
            # Preemptive generation: "used" / "dropped" / "none", replies thrown away and their characters.
            "preemptive": turn.preemptive or "none",
            "preemptive_dropped": turn.preemptive_dropped or 0,
            "preemptive_dropped_chars": turn.preemptive_dropped_chars or 0,
        },
    }


def message_json(message: Message, attachments: Optional[list[Media]] = None) -> dict[str, Any]:
    """`media` is the provider's description kept with the message (a voicemail's recording, a
    location); `attachments` are the media items kept in the media store (`server.media`)."""
    return {
        "id": message.id,
        "thread_id": message.thread_id,
        "direction": message.direction,
        "kind": message.kind,
        "body": message.body,
        "provider": message.provider,
        "provider_message_id": message.provider_message_id,
        "status": message.status,
        "error_code": message.error_code,
        "error_message": message.error_message,
        "media": message.media or [],
        "attachments": [media_json(item) for item in attachments or []],
        "transcript": message.transcript,
        "transcript_status": message.transcript_status,
        "transcript_error": message.transcript_error,
        "sender_user_id": message.sender_user_id,
        "call_id": message.call_id,
        "created_at": iso(message.created_at),
        "updated_at": iso(message.updated_at),
    }


def message_preview(message: Optional[Message]) -> Optional[dict[str, Any]]:
    if message is None:
        return None
    return {
        "id": message.id,
        "direction": message.direction,
        "kind": message.kind,
        "body": preview(message.body),
        "status": message.status,
        "created_at": iso(message.created_at),
    }


def thread_json(thread: Thread, customer: Optional[Customer], last_message: Optional[Message] = None) -> dict[str, Any]:
    return {
        "id": thread.id,
        "channel": thread.channel,
        "status": thread.status,
        "assignee": thread.assignee_user_id,
        "labels": list(thread.labels or []),
        "unread_count": thread.unread_count,
        "ai_paused": thread.ai_paused,
        "last_activity_at": iso(thread.last_activity_at),
        "last_inbound_at": iso(thread.last_inbound_at),
        "created_at": iso(thread.created_at),
        "customer": customer_summary(customer),
        "last_message": message_preview(last_message),
    }


def document_json(document: Deal | Invoice | Contract) -> dict[str, Any]:
    body = {
        "id": document.id,
        "customer_id": document.customer_id,
        "title": document.title,
        "amount_minor": document.amount_minor,
        "amount": major_text(document.amount_minor),
        "currency": document.currency,
        "status": document.status,
        "notes": document.notes,
        "created_at": iso(document.created_at),
        "updated_at": iso(document.updated_at),
    }
    if isinstance(document, Invoice):
        body.update(
            deal_id=document.deal_id, number=document.number, due_date=document.due_date, payment_id=document.payment_id
        )
    elif isinstance(document, Contract):
        body.update(deal_id=document.deal_id, body=document.body)
    return body


def payment_summary(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "invoice_id": payment.invoice_id,
        "amount_minor": payment.amount_minor,
        "amount": major_text(payment.amount_minor),
        "currency": payment.currency,
        "description": payment.description,
        "provider": payment.provider,
        "status": payment.status,
        "created_at": iso(payment.created_at),
        "paid_at": iso(payment.paid_at),
    }


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "created_at": iso(user.created_at),
        "disabled": user.disabled_at is not None,
    }


def staff_json(user: User) -> dict[str, Any]:
    """A colleague as every role may see them: who they are, not when or how their account was made.
    `name` is null while users have no display name; the console shows the email then."""
    return {
        "id": user.id,
        "name": None,
        "email": user.email,
        "role": user.role,
        "disabled": user.disabled_at is not None,
    }


def token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "user_id": token.user_id,
        "name": token.name,
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at),
        "revoked_at": iso(token.revoked_at),
    }


def audit_json(row: AuditLog) -> dict[str, Any]:
    return {
        "id": row.id,
        "actor": row.actor,
        "action": row.action,
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "details": row.details or {},
        "created_at": iso(row.created_at),
    }

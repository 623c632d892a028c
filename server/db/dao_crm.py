"""Data access shared by calls, both WhatsApp routes and the CRM API: one CRM, no duplicates.

Every insert that a provider may replay is idempotent on a unique key: a concurrent duplicate
loses the race inside a SAVEPOINT and the existing row is returned instead.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable, Optional, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.models import AuditLog, Business, BusinessNumber, Call, CallTurn, Customer, Message, Thread, utcnow
from server.logs import log_event

log = logging.getLogger("agentlocator.crm")
T = TypeVar("T")


def _insert_or_get(session: Session, make: Callable[[], T], find: Callable[[], Optional[T]]) -> tuple[T, bool]:
    """Insert `make()`; if a unique key says it already exists, return `find()` instead."""
    existing = find()
    if existing is not None:
        return existing, False
    row = make()
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = find()
        if existing is None:
            raise
        return existing, False
    return row, True


def business_by_number(session: Session, number: str, kind: str) -> Optional[Business]:
    return session.scalar(
        sa.select(Business).join(BusinessNumber).where(BusinessNumber.number == number, BusinessNumber.kind == kind)
    )


def upsert_customer(
    session: Session, business_id: int, *, phone: str | None = None, name: str | None = None, lid: str | None = None
) -> Customer:
    """Find the customer by phone (or WhatsApp LID), creating it when new; fill in what was missing.

    When a LID-only customer's phone number becomes known, that customer is merged into the one
    holding the number (its threads and calls move with it).
    """
    if not phone and not lid:
        raise ValueError("a customer needs a phone number or a WhatsApp LID")
    by_phone = (
        session.scalar(sa.select(Customer).where(Customer.business_id == business_id, Customer.phone == phone))
        if phone
        else None
    )
    by_lid = (
        session.scalar(
            sa.select(Customer).where(
                Customer.business_id == business_id, Customer.wa_lid == lid, Customer.merged_into_id.is_(None)
            )
        )
        if lid
        else None
    )
    if by_phone is not None and by_lid is not None and by_phone.id != by_lid.id:
        merge_customers(session, source=by_lid, target=by_phone)
    customer = by_phone or by_lid
    if customer is None:
        customer = _insert_or_get(
            session,
            lambda: Customer(business_id=business_id, phone=phone, wa_lid=lid, name=name or ""),
            lambda: (
                session.scalar(sa.select(Customer).where(Customer.business_id == business_id, Customer.phone == phone))
                if phone
                else None
            ),
        )[0]
    if phone and not customer.phone:
        customer.phone = phone
    if lid and not customer.wa_lid:
        customer.wa_lid = lid
    if name and not customer.name:
        customer.name = name
    session.flush()
    return customer


def merge_customers(session: Session, *, source: Customer, target: Customer) -> None:
    """Move everything of `source` (a LID-only duplicate) onto `target`, then retire `source`."""
    for thread in session.scalars(sa.select(Thread).where(Thread.customer_id == source.id)):
        twin = session.scalar(
            sa.select(Thread).where(Thread.customer_id == target.id, Thread.channel == thread.channel)
        )
        if twin is None:
            thread.customer_id = target.id
        else:
            session.execute(sa.update(Message).where(Message.thread_id == thread.id).values(thread_id=twin.id))
            twin.last_activity_at = max(twin.last_activity_at, thread.last_activity_at)
            twin.unread_count += thread.unread_count
            twin.ai_paused = twin.ai_paused or thread.ai_paused  # it is one customer: staff took them over
            session.delete(thread)
    session.execute(sa.update(Call).where(Call.customer_id == source.id).values(customer_id=target.id))
    target.wa_lid = target.wa_lid or source.wa_lid
    target.name = target.name or source.name
    source.wa_lid = None
    source.merged_into_id = target.id
    session.flush()
    audit(session, target.business_id, "system", "customer.merged", "customer", target.id, merged_customer_id=source.id)


def upsert_thread(session: Session, business_id: int, customer_id: int, channel: str) -> Thread:
    def find() -> Thread | None:
        return session.scalar(
            sa.select(Thread).where(
                Thread.business_id == business_id, Thread.customer_id == customer_id, Thread.channel == channel
            )
        )

    thread, _ = _insert_or_get(
        session, lambda: Thread(business_id=business_id, customer_id=customer_id, channel=channel), find
    )
    return thread


def insert_message(
    session: Session,
    thread: Thread,
    *,
    direction: str,
    body: str = "",
    provider: str | None = None,
    provider_message_id: str | None = None,
    status: str | None = None,
    kind: str = "text",
    media: list | None = None,
    sender_user_id: int | None = None,
    call_id: int | None = None,
    at: datetime | None = None,
) -> tuple[Message, bool]:
    """Store a message once. Returns `(message, created)`; a replay returns the stored row and False."""
    if direction not in ("in", "out"):
        raise ValueError("direction must be 'in' or 'out'")

    def find() -> Optional[Message]:
        if not (provider and provider_message_id):
            return None
        return session.scalar(
            sa.select(Message).where(Message.provider == provider, Message.provider_message_id == provider_message_id)
        )

    message, created = _insert_or_get(
        session,
        lambda: Message(
            business_id=thread.business_id,
            thread_id=thread.id,
            direction=direction,
            body=body or "",
            kind=kind,
            provider=provider,
            provider_message_id=provider_message_id,
            status=status or ("received" if direction == "in" else "queued"),
            media=media or [],
            sender_user_id=sender_user_id,
            call_id=call_id,
            created_at=at or utcnow(),
        ),
        find,
    )
    if created:
        now = at or utcnow()
        thread.last_activity_at = now
        if direction == "in":
            thread.last_inbound_at = now
            thread.unread_count = (thread.unread_count or 0) + 1
            if thread.status == "resolved":
                thread.status = "open"  # a customer writing again reopens the conversation
        session.flush()
        audit(
            session,
            thread.business_id,
            "system" if sender_user_id is None else f"user:{sender_user_id}",
            "message.created",
            "message",
            message.id,
            direction=direction,
            provider=provider,
            thread_id=thread.id,
        )
    return message, created


def create_call(
    session: Session, business_id: int, *, call_sid: str, from_number: str, to_number: str, status: str = "ringing"
) -> tuple[Call, bool]:
    """Create the call row (and the caller's customer + voice thread). A Twilio retry returns the same row."""

    def make() -> Call:
        customer = upsert_customer(session, business_id, phone=from_number) if from_number else None
        thread = upsert_thread(session, business_id, customer.id, "voice") if customer else None
        return Call(
            business_id=business_id,
            call_sid=call_sid,
            from_number=from_number,
            to_number=to_number,
            status=status,
            customer_id=customer.id if customer else None,
            thread_id=thread.id if thread else None,
        )

    return _insert_or_get(session, make, lambda: call_by_sid(session, call_sid))


def call_by_sid(session: Session, call_sid: str) -> Optional[Call]:
    return session.scalar(sa.select(Call).where(Call.call_sid == call_sid))


def add_call_turn(
    session: Session,
    call: Call,
    *,
    turn_index: int,
    user_text: str,
    agent_text: str,
    interrupted: bool = False,
    **metrics: Any,
) -> CallTurn:
    def find() -> CallTurn | None:
        return session.scalar(sa.select(CallTurn).where(CallTurn.call_id == call.id, CallTurn.turn_index == turn_index))

    turn, _ = _insert_or_get(
        session,
        lambda: CallTurn(
            call_id=call.id,
            turn_index=turn_index,
            user_text=user_text,
            agent_text=agent_text,
            interrupted=interrupted,
            **metrics,
        ),
        find,
    )
    return turn


def audit(
    session: Session,
    business_id: Optional[int],
    actor: str,
    action: str,
    entity_type: str,
    entity_id: Any,
    **details: Any,
) -> AuditLog:
    """One audit row and one JSON INFO log line: who did what to which object, and when."""
    row = AuditLog(
        business_id=business_id,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=None if entity_id is None else str(entity_id),
        details=details,
    )
    session.add(row)
    session.flush()
    log_event(
        log,
        "audit",
        business_id=business_id,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=row.entity_id,
        details=details,
    )
    return row

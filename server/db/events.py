"""Console events: a row in `events` for each change a staff console should hear about.

Kinds and payloads (the payload is ids only; the console fetches what it shows through the API):

    message         {thread_id, message_id}                       a message stored (in or out), or its text filled in
    message_status  {thread_id, message_id, status, error?}        an outgoing message's delivery status moved
    thread          {thread_id}                                    a thread created or changed (status, assignee,
                                                                   labels, AI paused, unread count, last activity)
    call            {call_sid}                                     a call row or one of its turns written
    payment         {payment_id, status, invoice_id?}              a payment created or its status moved
    appointment     {appointment_id, status}                       an appointment booked, moved or cancelled

Rows are written inside the transaction that makes the change, so an event exists exactly when the
change committed, whichever worker or instance made it. Changes made through the ORM are captured
at flush by `capture_events` (installed on every `Database`'s session factory), so no writer has to
remember to publish; the few writes done as one conditional SQL UPDATE (a delivery status, a
payment transition) call `publish_event` themselves.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Iterable, Optional, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from server.db.models import Appointment, Call, CallTurn, Event, Message, Payment, Thread, utcnow

KINDS = ("message", "message_status", "thread", "call", "payment", "appointment")
RETENTION = timedelta(hours=24)
# Thread columns that are the AI reply's own bookkeeping: changing them tells staff nothing.
_THREAD_BOOKKEEPING = {"ai_reply_lease_token", "ai_reply_lease_until", "ai_replied_through_id"}
_SENT_KEY = "console_events_sent"


def publish_event(session: Session, business_id: int, kind: str, **payload: Any) -> None:
    """Write one event in the session's current transaction (it becomes visible when that commits)."""
    _insert(session, [(business_id, kind, payload)])


def _insert(session: Session, events: Iterable[tuple[int, str, dict[str, Any]]]) -> None:
    sent: set[str] = session.info.setdefault(_SENT_KEY, set())
    rows = []
    for business_id, kind, payload in events:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        # The same change flushed twice in one transaction is told once.
        key = json.dumps([business_id, kind, payload], sort_keys=True, default=str)
        if key in sent:
            continue
        sent.add(key)
        rows.append({"business_id": business_id, "kind": kind, "payload": payload, "created_at": utcnow()})
    if rows:
        session.connection().execute(sa.insert(Event), rows)


def capture_events(sessions: sessionmaker) -> None:
    """Publish the events of every ORM change flushed by sessions of `sessions`."""
    sa.event.listen(sessions, "after_flush", _after_flush)
    sa.event.listen(sessions, "after_transaction_end", _forget_sent)


def _forget_sent(session: Session, _transaction: Any) -> None:
    # Cleared at the end of any transaction, savepoints included: a rolled-back savepoint may have
    # taken its events with it, and telling a change twice is harmless while missing one is not.
    session.info.pop(_SENT_KEY, None)


def _after_flush(session: Session, _flush_context: Any) -> None:
    """Runs while the flush's history is still readable: what was inserted, and which columns changed."""
    events: list[tuple[int, str, dict[str, Any]]] = []
    turn_call_ids: set[int] = set()
    for obj in session.new:
        if isinstance(obj, Message):
            events.append((obj.business_id, "message", {"thread_id": obj.thread_id, "message_id": obj.id}))
        elif isinstance(obj, Thread):
            events.append((obj.business_id, "thread", {"thread_id": obj.id}))
        elif isinstance(obj, Call):
            events.append((obj.business_id, "call", {"call_sid": obj.call_sid}))
        elif isinstance(obj, CallTurn):
            turn_call_ids.add(obj.call_id)
        elif isinstance(obj, Payment):
            events.append((obj.business_id, "payment", _payment_payload(obj)))
        elif isinstance(obj, Appointment):
            events.append((obj.business_id, "appointment", {"appointment_id": obj.id, "status": obj.status}))
    for obj in session.dirty:
        changed = _changed_columns(obj)
        if not changed:
            continue
        if isinstance(obj, Message):
            if "status" in changed:
                events.append((obj.business_id, "message_status", _status_payload(obj)))
            if changed & {"body", "media", "thread_id"}:
                events.append((obj.business_id, "message", {"thread_id": obj.thread_id, "message_id": obj.id}))
        elif isinstance(obj, Thread) and changed - _THREAD_BOOKKEEPING:
            events.append((obj.business_id, "thread", {"thread_id": obj.id}))
        elif isinstance(obj, Call):
            events.append((obj.business_id, "call", {"call_sid": obj.call_sid}))
        elif isinstance(obj, Payment) and "status" in changed:
            events.append((obj.business_id, "payment", _payment_payload(obj)))
        elif isinstance(obj, Appointment) and changed & {"starts_at", "status"}:
            events.append((obj.business_id, "appointment", {"appointment_id": obj.id, "status": obj.status}))
    if turn_call_ids:
        rows = session.connection().execute(
            sa.select(Call.business_id, Call.call_sid).where(Call.id.in_(sorted(turn_call_ids)))
        )
        events.extend((business_id, "call", {"call_sid": call_sid}) for business_id, call_sid in rows)
    if events:
        _insert(session, events)


def _changed_columns(obj: Any) -> set[str]:
    state = sa.inspect(obj)
    return {attr.key for attr in state.attrs if attr.history.has_changes()}


def _status_payload(message: Message) -> dict[str, Any]:
    payload: dict[str, Any] = {"thread_id": message.thread_id, "message_id": message.id, "status": message.status}
    if message.status == "failed" and message.error_code:
        payload["error"] = message.error_code
    return payload


def _payment_payload(payment: Payment) -> dict[str, Any]:
    payload: dict[str, Any] = {"payment_id": payment.id, "status": payment.status}
    if payment.invoice_id is not None:
        payload["invoice_id"] = payment.invoice_id
    return payload


def publish_message_status(session: Session, message_id: int) -> None:
    """The `message_status` event of a message whose status was changed by a plain SQL UPDATE."""
    row = session.execute(
        sa.select(Message.business_id, Message.thread_id, Message.status, Message.error_code).where(
            Message.id == message_id
        )
    ).one_or_none()
    if row is None:
        return
    payload: dict[str, Any] = {"thread_id": row.thread_id, "message_id": message_id, "status": row.status}
    if row.status == "failed" and row.error_code:
        payload["error"] = row.error_code
    publish_event(session, row.business_id, "message_status", **payload)


def publish_payment(session: Session, payment: Payment) -> None:
    """The `payment` event of a payment whose status was changed by a plain SQL UPDATE (then refreshed)."""
    publish_event(session, payment.business_id, "payment", **_payment_payload(payment))


# ---- reading and pruning ----------------------------------------------------------------------


def latest_event_id(session: Session) -> int:
    return session.scalar(sa.select(sa.func.max(Event.id))) or 0


def events_after(
    session: Session,
    after_id: int,
    *,
    business_id: Optional[int] = None,
    also_ids: Iterable[int] = (),
    limit: int = 500,
) -> list[Event]:
    """Events with an id above `after_id` (plus any of `also_ids`), oldest first."""
    condition = Event.id > after_id
    also = sorted(set(also_ids))
    if also:
        condition = sa.or_(condition, Event.id.in_(also))
    stmt = sa.select(Event).where(condition)
    if business_id is not None:
        stmt = stmt.where(Event.business_id == business_id)
    return list(session.scalars(stmt.order_by(Event.id).limit(limit)))


def prune_events(session: Session, *, now: Optional[datetime] = None, keep: timedelta = RETENTION) -> int:
    """Delete events older than `keep`; the number deleted."""
    cutoff = (now or utcnow()) - keep
    result = cast(CursorResult[Any], session.execute(sa.delete(Event).where(Event.created_at < cutoff)))
    return result.rowcount or 0

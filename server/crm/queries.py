"""The filters of each list endpoint, as SQLAlchemy statements scoped to one business.

Text search (`q`) matches every word the user typed. On PostgreSQL a word matches a whole word
through `to_tsvector('simple', …)`, which a GIN expression index serves (migration 0400; a voice
note's transcript has its own, 0821, and a thread search ORs the two into one bitmap scan); on
SQLite each word matches as a substring (LIKE). Whole words, not prefixes (`word:*`), because the
planner has statistics for words but guesses for prefixes: a guess made it walk every call,
newest first, running to_tsvector on each, for a word found in one call in 500 (400 ms, not 1).
Phone numbers match in whatever form the user typed (`05…`, `+9725…`, `9725…`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute, Session, aliased

from server.crm import validation as v
from server.crm.pagination import Keyset
from server.db.models import AuditLog, Call, CallTurn, Customer, Message, Thread
from server.phones import search_variants
from server.security.auth import scoped

_WORD = re.compile(r"[^\W_]+")
MAX_SEARCH_WORDS = 8
THREAD_STATUSES = ("open", "pending", "resolved")
CHANNELS = ("whatsapp", "voice")

CALLS_KEYSET = Keyset((Call.created_at, Call.id))
THREADS_KEYSET = Keyset((Thread.last_activity_at, Thread.id))
MESSAGES_KEYSET = Keyset((Message.created_at, Message.id))
CUSTOMERS_KEYSET = Keyset((Customer.created_at, Customer.id))
AUDIT_KEYSET = Keyset((AuditLog.id,))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains(column: QueryableAttribute[Any], text: str) -> sa.ColumnElement[bool]:
    return column.ilike(f"%{_like_escape(text)}%", escape="\\")


def words_match(session: Session, column: QueryableAttribute[Any], q: str) -> sa.ColumnElement[bool]:
    """Every word of `q` occurs in `column` (see the module docstring for how, per database)."""
    words = _WORD.findall(q)[:MAX_SEARCH_WORDS]
    if not words:
        return sa.false()
    if session.get_bind().dialect.name == "postgresql":
        simple: sa.ColumnClause[Any] = sa.literal_column("'simple'")
        query = " & ".join(words)
        return sa.func.to_tsvector(simple, column).op("@@")(sa.func.to_tsquery(simple, query))
    return sa.and_(*(contains(column, word) for word in words))


def phone_matches(column: QueryableAttribute[Any], q: str) -> sa.ColumnElement[bool]:
    """`column` (E.164) contains the digits typed, read as local (`05…`) or international (`9725…`)."""
    variants = search_variants(q)
    if not variants:
        return sa.false()
    return sa.or_(*(column.like(f"%{digits}%") for digits in variants))


def call_turns_and_voicemail(session: Session, call: Call) -> tuple[list[CallTurn], Message | None]:
    """The call's turns in order, and the caller's voicemail (the newest, should Twilio record twice)."""
    turns = session.scalars(sa.select(CallTurn).where(CallTurn.call_id == call.id).order_by(CallTurn.turn_index))
    voicemail = session.scalar(
        sa.select(Message)
        .where(Message.business_id == call.business_id, Message.call_id == call.id, Message.kind == "voicemail")
        .order_by(Message.id.desc())
        .limit(1)
    )
    return list(turns), voicemail


def calls_query(session: Session, business_id: int, args: Mapping[str, str]) -> sa.Select:
    stmt = scoped(Call, business_id)
    status = v.query_text(args, "status", max_length=24)
    if status:
        stmt = stmt.where(Call.status == status)
    start, end = v.query_time_range(args)
    if start is not None:
        stmt = stmt.where(Call.created_at >= start)
    if end is not None:
        stmt = stmt.where(Call.created_at < end)
    phone = v.query_phone(args)
    if phone:
        stmt = stmt.where(Call.from_number == phone)
    q = v.query_text(args, "q")
    if q:
        stmt = stmt.where(words_match(session, Call.transcript, q))
    return stmt


# Aliases (built once: an alias per request costs more than the query) keep the subqueries apart
# from the Customer and Message that thread rows select.
_newer, _searched, _matched = aliased(Message), aliased(Message), aliased(Customer)
_NEWEST_MESSAGE_ID = (
    sa.select(_newer.id)
    .where(_newer.thread_id == Thread.id)
    .order_by(_newer.created_at.desc(), _newer.id.desc())
    .limit(1)
    .correlate(Thread)
    .scalar_subquery()
)


def thread_rows(business_id: int) -> sa.Select:
    """(thread, its customer, its newest message or None) rows of the business, in one query:
    the newest message is one index probe per thread."""
    return (
        scoped(Thread, business_id)
        .add_columns(Customer, Message)
        .join(Customer, Customer.id == Thread.customer_id)
        .outerjoin(Message, Message.id == _NEWEST_MESSAGE_ID)
    )


def threads_query(session: Session, business_id: int, user_id: int, args: Mapping[str, str]) -> sa.Select:
    """The business's thread rows (see `thread_rows`); `assignee=me` means `user_id`."""
    stmt = thread_rows(business_id)
    channel = v.query_choice(args, "channel", CHANNELS)
    if channel:
        stmt = stmt.where(Thread.channel == channel)
    status = v.query_choice(args, "status", THREAD_STATUSES)
    if status:
        stmt = stmt.where(Thread.status == status)
    unread = v.query_bool(args, "unread")
    if unread is not None:
        stmt = stmt.where(Thread.unread_count > 0 if unread else Thread.unread_count == 0)
    assignee = args.get("assignee")
    if assignee == "me":
        stmt = stmt.where(Thread.assignee_user_id == user_id)
    elif assignee == "none":
        stmt = stmt.where(Thread.assignee_user_id.is_(None))
    elif assignee is not None:
        stmt = stmt.where(Thread.assignee_user_id == v.query_id(args, "assignee"))
    q = v.query_text(args, "q")
    if q:
        # Two uncorrelated subqueries on the thread's own columns: each runs once (the messages one
        # through the full-text index), where conditions spanning the join made PostgreSQL compare
        # every thread with every customer.
        customers_named = sa.select(_matched.id).where(
            _matched.business_id == business_id, sa.or_(contains(_matched.name, q), phone_matches(_matched.phone, q))
        )
        # A voice note is found by its transcript's words: its own index on PostgreSQL (0821), and
        # the two lookups joined by OR (a bitmap OR of both indexes, where one index over body and
        # transcript glued together would need every query to repeat that exact expression).
        threads_with_words = sa.select(_searched.thread_id).where(
            _searched.business_id == business_id,
            sa.or_(words_match(session, _searched.body, q), words_match(session, _searched.transcript, q)),
        )
        stmt = stmt.where(sa.or_(Thread.customer_id.in_(customers_named), Thread.id.in_(threads_with_words)))
    return stmt


def customers_query(business_id: int, args: Mapping[str, str]) -> sa.Select:
    stmt = scoped(Customer, business_id).where(Customer.merged_into_id.is_(None))
    q = v.query_text(args, "q")
    if q:
        stmt = stmt.where(
            sa.or_(contains(Customer.name, q), contains(Customer.email, q), phone_matches(Customer.phone, q))
        )
    return stmt


def documents_query(model, business_id: int, args: Mapping[str, str], statuses: tuple[str, ...]) -> sa.Select:
    stmt = scoped(model, business_id)
    status = v.query_choice(args, "status", statuses)
    if status:
        stmt = stmt.where(model.status == status)
    customer_id = v.query_id(args, "customer_id")
    if customer_id:
        stmt = stmt.where(model.customer_id == customer_id)
    return stmt


def audit_query(business_id: int, args: Mapping[str, str]) -> sa.Select:
    stmt = scoped(AuditLog, business_id)
    for name, column, length in (
        ("entity_type", AuditLog.entity_type, 32),
        ("entity_id", AuditLog.entity_id, 64),
        ("action", AuditLog.action, 64),
        ("actor", AuditLog.actor, 64),
    ):
        value = v.query_text(args, name, max_length=length)
        if value:
            stmt = stmt.where(column == value)
    return stmt

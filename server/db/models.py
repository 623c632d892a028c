"""The CRM's tables. Money is integer agorot, phone numbers E.164, time UTC.

Schema changes go through additive files in `migrations/`; this module describes the result.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A point in time: stored as UTC, always read back as an aware UTC datetime, on every database.

    PostgreSQL's `timestamptz` answers in the connection's time zone; SQLite has no time zone type
    and answers naive datetimes. Both come back here as UTC, so code compares and formats read
    values without fix-ups. A naive datetime is refused on the way in: its zone would be a guess.
    The DDL is the plain `DateTime(timezone=True)`, as the migrations create it.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given for a UTC column: give it a time zone")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Optional[datetime], dialect: Dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: stored as the UTC wall-clock time
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow, nullable=False)


def _updated() -> Mapped[datetime]:
    return mapped_column(default=utcnow, onupdate=utcnow, nullable=False)


def _business_fk() -> Mapped[int]:
    return mapped_column(ForeignKey("businesses.id"), nullable=False, index=True)


class Business(Base):
    __tablename__ = "businesses"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Its Twilio WhatsApp sender, when it isn't its first WhatsApp number: another of its WhatsApp
    # numbers (E.164) or a Messaging Service SID (MG…). See server.whatsapp.send.
    twilio_sender: Mapped[Optional[str]] = mapped_column(String(40))
    ai_instructions: Mapped[str] = mapped_column(Text, default="")
    opening_line: Mapped[str] = mapped_column(Text, default="")
    greeting_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    payments_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    default_payment_provider: Mapped[Optional[str]] = mapped_column(String(20))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Jerusalem")
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created()
    # The agent's tools this business switched on or off (tool name → bool); a tool not named here
    # has its default (server/agent/tools.py).
    agent_tools: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)

    numbers: Mapped[list["BusinessNumber"]] = relationship(back_populates="business", lazy="selectin")

    def numbers_of(self, kind: str) -> list[str]:
        return [n.number for n in self.numbers if n.kind == kind]

    def feature(self, name: str, default: bool = False) -> bool:
        return bool((self.features or {}).get(name, default))

    # Handing a live call to a person (server/voice/transfer.py): the number the call is forwarded
    # to (E.164; None: the AI never transfers) and what that person hears before the caller is put
    # through.
    transfer_number: Mapped[Optional[str]] = mapped_column(String(32))
    transfer_announcement: Mapped[str] = mapped_column(Text, default="", server_default="")


class BusinessNumber(Base):
    """A phone number the business answers on: `voice` (Twilio number) or `whatsapp`."""

    __tablename__ = "business_numbers"
    __table_args__ = (UniqueConstraint("number", "kind", name="uq_business_numbers_number_kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    number: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    business: Mapped[Business] = relationship(back_populates="numbers")


class PaymentGateway(Base):
    __tablename__ = "payment_gateways"
    __table_args__ = (UniqueConstraint("business_id", "provider", name="uq_payment_gateways_business_provider"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    provider: Mapped[str] = mapped_column(String(20))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created()


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _created()
    disabled_at: Mapped[Optional[datetime]]  # set by an owner: no sign-in, no token works


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored, so a leaked table grants nothing."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = _created()
    last_used_at: Mapped[Optional[datetime]]
    revoked_at: Mapped[Optional[datetime]]
    # Who made it: the user themselves (signing in), an owner or admin (for someone else), or None
    # (the admin CLI). No foreign key: a column added later can't gain one on SQLite.
    created_by_user_id: Mapped[Optional[int]] = mapped_column(Integer)


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("business_id", "phone", name="uq_customers_business_phone"),
        Index("ix_customers_business_lid", "business_id", "wa_lid"),
        Index("ix_customers_business_created", "business_id", "created_at", "id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    phone: Mapped[Optional[str]] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200), default="")
    wa_lid: Mapped[Optional[str]] = mapped_column(String(64))
    email: Mapped[Optional[str]] = mapped_column(String(254))
    notes: Mapped[str] = mapped_column(Text, default="")
    merged_into_id: Mapped[Optional[int]] = mapped_column(ForeignKey("customers.id"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Thread(Base):
    """One conversation per customer and channel (`whatsapp` or `voice`), like a Chatwoot conversation."""

    __tablename__ = "threads"
    __table_args__ = (
        UniqueConstraint("business_id", "customer_id", "channel", name="uq_threads_customer_channel"),
        Index("ix_threads_business_activity", "business_id", "last_activity_at", "id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")
    assignee_user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    labels: Mapped[list[Any]] = mapped_column(default=list)
    unread_count: Mapped[int] = mapped_column(Integer, default=0)
    last_activity_at: Mapped[datetime] = _created()
    last_inbound_at: Mapped[Optional[datetime]]
    # Held by the worker writing an AI auto-reply for this thread (server/whatsapp/auto_reply.py).
    ai_reply_lease_token: Mapped[Optional[str]] = mapped_column(String(32))
    ai_reply_lease_until: Mapped[Optional[datetime]]
    ai_replied_through_id: Mapped[Optional[int]] = mapped_column(Integer)  # newest message an AI reply answered
    # Staff took the conversation over: no AI auto-reply in this thread until they hand it back.
    ai_paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = _created()


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("provider", "provider_message_id", name="uq_messages_provider_id"),
        Index("ix_messages_thread_id", "thread_id", "id"),
        Index("ix_messages_thread_created", "thread_id", "created_at", "id"),
        Index("ix_messages_call_id", "call_id"),
        Index("ix_messages_body_fts", text("to_tsvector('simple', body)"), postgresql_using="gin").ddl_if(
            dialect="postgresql"
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id"))
    direction: Mapped[str] = mapped_column(String(4))
    kind: Mapped[str] = mapped_column(String(16), default="text")
    body: Mapped[str] = mapped_column(Text, default="")
    provider: Mapped[Optional[str]] = mapped_column(String(16))
    provider_message_id: Mapped[Optional[str]] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="received")
    error_code: Mapped[Optional[str]] = mapped_column(String(32))
    error_message: Mapped[Optional[str]] = mapped_column(Text)
    media: Mapped[list[Any]] = mapped_column(default=list)
    sender_user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    call_id: Mapped[Optional[int]] = mapped_column(ForeignKey("calls.id"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    # A voice note's transcript; `transcript_status` is `pending` while transcription runs (the AI
    # auto-reply waits for it), then `done` or `failed` (with `transcript_error`).
    transcript: Mapped[Optional[str]] = mapped_column(Text)
    transcript_status: Mapped[Optional[str]] = mapped_column(String(16))
    transcript_error: Mapped[Optional[str]] = mapped_column(Text)


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_business_created", "business_id", "created_at", "id"),
        Index("ix_calls_business_from", "business_id", "from_number"),
        Index("ix_calls_transcript_fts", text("to_tsvector('simple', transcript)"), postgresql_using="gin").ddl_if(
            dialect="postgresql"
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    customer_id: Mapped[Optional[int]] = mapped_column(ForeignKey("customers.id"), index=True)
    thread_id: Mapped[Optional[int]] = mapped_column(ForeignKey("threads.id"))
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    stream_sid: Mapped[Optional[str]] = mapped_column(String(64))
    from_number: Mapped[str] = mapped_column(String(32), default="")
    to_number: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(24), default="ringing")
    stream_status: Mapped[Optional[str]] = mapped_column(String(24))
    stream_error: Mapped[Optional[str]] = mapped_column(Text)
    outcome: Mapped[Optional[str]] = mapped_column(String(32))
    started_at: Mapped[datetime] = _created()
    stream_started_at: Mapped[Optional[datetime]]
    stream_ended_at: Mapped[Optional[datetime]]
    ended_at: Mapped[Optional[datetime]]
    duration_seconds: Mapped[Optional[int]] = mapped_column(Integer)
    recording_url: Mapped[Optional[str]] = mapped_column(String(500))
    recording_sid: Mapped[Optional[str]] = mapped_column(String(64))
    transcript: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class CallTurn(Base):
    __tablename__ = "call_turns"
    __table_args__ = (UniqueConstraint("call_id", "turn_index", name="uq_call_turns_call_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"))
    turn_index: Mapped[int] = mapped_column(Integer)
    user_text: Mapped[str] = mapped_column(Text, default="")
    agent_text: Mapped[str] = mapped_column(Text, default="")
    t_audio_ms: Mapped[Optional[int]] = mapped_column(Integer)
    t_nlp_ms: Mapped[Optional[int]] = mapped_column(Integer)
    t_tts_ms: Mapped[Optional[int]] = mapped_column(Integer)
    t_total_ms: Mapped[Optional[int]] = mapped_column(Integer)
    t_first_audio_ms: Mapped[Optional[int]] = mapped_column(Integer)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()
    # Preemptive generation (server/voice/preemptive.py): "used" (the reply was written before the
    # final transcript and kept), "dropped" (a reply written ahead was thrown away) or "none"; how
    # many were thrown away for this turn and how many characters of reply text they had written.
    preemptive: Mapped[str] = mapped_column(String(8), default="none", server_default="none")
    preemptive_dropped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    preemptive_dropped_chars: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class _Document:
    """Columns shared by deals, invoices and contracts."""

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[Optional[int]] = mapped_column(ForeignKey("customers.id"))
    title: Mapped[str] = mapped_column(String(200), default="")
    amount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="ILS")
    status: Mapped[str] = mapped_column(String(16))
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Deal(_Document, Base):
    __tablename__ = "deals"
    __table_args__ = (Index("ix_deals_business_created", "business_id", "created_at", "id"),)
    business_id: Mapped[int] = _business_fk()


class Invoice(_Document, Base):
    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_business_created", "business_id", "created_at", "id"),)
    business_id: Mapped[int] = _business_fk()
    deal_id: Mapped[Optional[int]] = mapped_column(ForeignKey("deals.id"))
    number: Mapped[Optional[str]] = mapped_column(String(40))
    due_date: Mapped[Optional[str]] = mapped_column(String(10))
    payment_id: Mapped[Optional[int]] = mapped_column(Integer)  # no FK: payments also point here


class Contract(_Document, Base):
    __tablename__ = "contracts"
    __table_args__ = (Index("ix_contracts_business_created", "business_id", "created_at", "id"),)
    business_id: Mapped[int] = _business_fk()
    deal_id: Mapped[Optional[int]] = mapped_column(ForeignKey("deals.id"))
    body: Mapped[str] = mapped_column(Text, default="")


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("business_id", "idempotency_key", name="uq_payments_idempotency"),
        Index("uq_payments_provider_txn", "provider", "provider_txn_id", unique=True),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    customer_id: Mapped[Optional[int]] = mapped_column(ForeignKey("customers.id"))
    invoice_id: Mapped[Optional[int]] = mapped_column(ForeignKey("invoices.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="ILS")
    description: Mapped[str] = mapped_column(Text, default="")
    provider: Mapped[str] = mapped_column(String(20))
    provider_ref: Mapped[Optional[str]] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), default="created")
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(128))
    link_token: Mapped[str] = mapped_column(String(64), unique=True)
    notify_nonce: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    notify_consumed_at: Mapped[Optional[datetime]]
    provider_txn_id: Mapped[Optional[str]] = mapped_column(String(128))
    provider_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    expires_at: Mapped[Optional[datetime]]
    paid_at: Mapped[Optional[datetime]]
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_business_id", "business_id", "id"),
        Index("ix_audit_log_business_entity", "business_id", "entity_type", "entity_id", "id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[Optional[int]] = mapped_column(ForeignKey("businesses.id"))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[Optional[str]] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created()


class IdempotencyRecord(Base):
    """The stored answer to a request made with an `Idempotency-Key`, shared by every worker."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("business_id", "scope", "key", name="uq_idempotency_scope_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    scope: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(128))
    status_code: Mapped[Optional[int]] = mapped_column(Integer)
    response: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = _created()


class ServiceState(Base):
    """Small shared state that must hold across workers (e.g. the Baileys bridge's connection)."""

    __tablename__ = "service_state"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = _updated()


class RateLimitWindow(Base):
    """One fixed-window counter of a rate limit (sign-in tries per address and per account), shared
    by every worker and instance through the database when no Redis is configured. `key` is a
    digest, so no address or e-mail address is stored; `expires_at` is in epoch seconds."""

    __tablename__ = "rate_limit_windows"
    __table_args__ = (Index("ix_rate_limit_windows_expires_at", "expires_at"),)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)


class Event(Base):
    """A change a staff console should hear about (`server/db/events.py` writes them, the console's
    live stream reads them by id). Pruned after a day: they are notifications, not history."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_business_id", "business_id", "id"),
        Index("ix_events_created_at", "created_at"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created()


class PendingStatus(Base):
    """A WhatsApp delivery status whose message doesn't have the provider's id yet: the send stores
    that id once the provider answers, and the status callback can come first. `server/whatsapp/status.py`
    applies it when the id is stored and prunes it after a day if no message ever takes that id.
    `status` is already in the CRM's words."""

    __tablename__ = "pending_statuses"
    __table_args__ = (
        UniqueConstraint("provider", "provider_message_id", "status", name="uq_pending_statuses_report"),
        Index("ix_pending_statuses_received_at", "received_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[Optional[str]] = mapped_column(String(32))
    error_message: Mapped[Optional[str]] = mapped_column(Text)
    received_at: Mapped[datetime] = _created()


class Media(Base):
    """One picture, voice note, video, document or sticker of a WhatsApp message (or a file staff
    uploaded to send: `message_id` is null until it is sent). The bytes live in the media store under
    `storage_key` (business id and sha256, never a sender-given name); `mime_type` is sniffed from the
    bytes. `status`: `pending` (Twilio media not downloaded yet, `source_url` set), `stored`, or
    `rejected` (too large, not allowed, download failed: `error_code`/`error_message`, no bytes kept).
    `file_name` is for display and the download's name only."""

    __tablename__ = "media"
    __table_args__ = (
        Index("ix_media_business_id", "business_id"),
        Index("ix_media_message_id", "message_id"),
        Index("ix_media_created_at", "created_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"), nullable=False)
    message_id: Mapped[Optional[int]] = mapped_column(ForeignKey("messages.id"))
    kind: Mapped[str] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[Optional[str]] = mapped_column(String(64))
    storage_key: Mapped[Optional[str]] = mapped_column(String(255))
    file_name: Mapped[Optional[str]] = mapped_column(String(255))
    caption: Mapped[Optional[str]] = mapped_column(Text)
    duration_seconds: Mapped[Optional[int]] = mapped_column(Integer)
    voice_note: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[Optional[str]] = mapped_column(String(32))
    error_message: Mapped[Optional[str]] = mapped_column(Text)
    source_url: Mapped[Optional[str]] = mapped_column(String(1000))
    created_at: Mapped[datetime] = _created()


class ToolCall(Base):
    """One tool the agent ran: in a call turn (`call_id` + `turn_index`: the turn row is written when
    the turn ends, so the pair links them) or while answering a WhatsApp message (`thread_id` +
    `message_id`, the customer message being answered). `error` is set when the arguments were
    invalid or the tool failed; `result` is what the model got back."""

    __tablename__ = "tool_calls"
    __table_args__ = (
        Index("ix_tool_calls_business_id", "business_id"),
        Index("ix_tool_calls_call_turn", "call_id", "turn_index"),
        Index("ix_tool_calls_message_id", "message_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"), nullable=False)
    channel: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[Optional[int]] = mapped_column(ForeignKey("calls.id"))
    turn_index: Mapped[Optional[int]] = mapped_column(Integer)
    thread_id: Mapped[Optional[int]] = mapped_column(ForeignKey("threads.id"))
    message_id: Mapped[Optional[int]] = mapped_column(ForeignKey("messages.id"))
    name: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    result: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    error: Mapped[Optional[str]] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(nullable=False)
    finished_at: Mapped[datetime] = mapped_column(nullable=False)
    created_at: Mapped[datetime] = _created()


class Task(Base):
    """Something staff must do for a customer, left by the agent (`kind = "message"`: who called,
    what they need, when to call back). `status`: `open`, then `done` (with who and when)."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_business_status", "business_id", "status", "id"),
        Index("ix_tasks_customer_id", "customer_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"), nullable=False)
    customer_id: Mapped[Optional[int]] = mapped_column(ForeignKey("customers.id"))
    call_id: Mapped[Optional[int]] = mapped_column(ForeignKey("calls.id"))
    thread_id: Mapped[Optional[int]] = mapped_column(ForeignKey("threads.id"))
    kind: Mapped[str] = mapped_column(String(16), default="message")
    caller_name: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[Optional[str]] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    callback_time: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    done_at: Mapped[Optional[datetime]]
    done_by_user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = _created()


def string_length(model: type[Base], column: str) -> int:
    """The declared length of `model`'s String column: what longer input is cut to or refused at."""
    column_type = model.__table__.c[column].type
    if not isinstance(column_type, String) or column_type.length is None:
        raise TypeError(f"{model.__name__}.{column} is not a String column with a length")
    return column_type.length


# ---- the appointment book (server/appointments/) ----------------------------------------------


class AppointmentBook(Base):
    """A business's appointment settings: how many appointments may overlap (`capacity`, the staff
    who can serve at once), the grid free starts are offered on, and the calendar feed's secret
    (only its SHA-256 is stored: the owner sees the link once, when rotating it)."""

    __tablename__ = "appointment_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"), unique=True)
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    slot_minutes: Mapped[int] = mapped_column(Integer, default=15)
    feed_token_hash: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    feed_rotated_at: Mapped[Optional[datetime]]
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class AppointmentService(Base):
    """Something a customer books: its name, length and price. Archived, never deleted: booked
    appointments keep pointing at it."""

    __tablename__ = "appointment_services"
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    name: Mapped[str] = mapped_column(String(200))
    duration_minutes: Mapped[int] = mapped_column(Integer)
    price_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="ILS")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class OpeningHours(Base):
    """One open interval of a weekday, in the business's local wall-clock time: `weekday` 0 is
    Sunday … 6 Saturday (the Israeli week, as JavaScript counts), minutes after local midnight."""

    __tablename__ = "opening_hours"
    __table_args__ = (Index("ix_opening_hours_business_weekday", "business_id", "weekday"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"))
    weekday: Mapped[int] = mapped_column(Integer)
    opens_minute: Mapped[int] = mapped_column(Integer)
    closes_minute: Mapped[int] = mapped_column(Integer)


class ScheduleException(Base):
    """A local date that differs from the week: closed, or open only `opens_minute`–`closes_minute`."""

    __tablename__ = "schedule_exceptions"
    __table_args__ = (UniqueConstraint("business_id", "day", name="uq_schedule_exceptions_business_day"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, local
    closed: Mapped[bool] = mapped_column(Boolean, default=True)
    opens_minute: Mapped[Optional[int]] = mapped_column(Integer)
    closes_minute: Mapped[Optional[int]] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(200), default="")


class Appointment(Base):
    __tablename__ = "appointments"
    __table_args__ = (Index("ix_appointments_business_starts", "business_id", "starts_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = _business_fk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("appointment_services.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="booked")  # booked | cancelled
    source: Mapped[str] = mapped_column(String(16))  # call | whatsapp | console
    notes: Mapped[str] = mapped_column(Text, default="")
    revision: Mapped[int] = mapped_column(Integer, default=0)  # the calendar feed's SEQUENCE: +1 per move/cancel
    cancelled_at: Mapped[Optional[datetime]]
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class AppointmentSeat(Base):
    """One seat (0 … capacity-1) held by a booked appointment for one time unit (5 minutes, UTC).
    The unique key on (business, seat, unit) is what makes double booking impossible: two
    bookings racing for the last seat both insert, and the database lets exactly one commit."""

    __tablename__ = "appointment_seats"
    __table_args__ = (
        # unit first: the same uniqueness, and the index also serves "which seats are taken in [start, end)".
        UniqueConstraint("business_id", "unit_start", "seat", name="uq_appointment_seats_business_unit_seat"),
        Index("ix_appointment_seats_appointment", "appointment_id"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"))
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id"))
    seat: Mapped[int] = mapped_column(Integer)
    unit_start: Mapped[datetime]

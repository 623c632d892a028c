"""CRM test data, written through the same DAO the webhooks and the voice engine use."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from server.db.dao_crm import add_call_turn, create_call, insert_message, upsert_customer, upsert_thread
from server.db.models import ApiToken, Contract, Deal, Invoice, Media, Payment, Task, Thread, User

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def seed_call(
    db,
    business_id: int,
    *,
    sid: str,
    caller: str = "+972501234567",
    to: str = "+97235550001",
    at: datetime | None = None,
    status: str = "completed",
    transcript: str = "",
    turns: tuple[tuple[str, str], ...] = (),
) -> int:
    with db.scope() as session:
        call, _ = create_call(session, business_id, call_sid=sid, from_number=caller, to_number=to, status=status)
        if at is not None:
            call.created_at = call.started_at = at
        call.transcript, call.duration_seconds = transcript, 42
        for index, (user_text, agent_text) in enumerate(turns):
            add_call_turn(
                session,
                call,
                turn_index=index,
                user_text=user_text,
                agent_text=agent_text,
                t_audio_ms=120,
                t_nlp_ms=400 + index,
                t_tts_ms=90,
                t_total_ms=610 + index,
                t_first_audio_ms=700,
            )
        return call.id


def seed_message(
    db,
    business_id: int,
    *,
    phone: str = "+972501234567",
    body: str = "שלום",
    name: str = "",
    direction: str = "in",
    channel: str = "whatsapp",
    at: datetime | None = None,
    kind: str = "text",
    call_id: int | None = None,
) -> tuple[int, int]:
    """Store one message (in the customer's thread on `channel`); returns (thread id, message id)."""
    with db.scope() as session:
        customer = upsert_customer(session, business_id, phone=phone, name=name or None)
        thread = upsert_thread(session, business_id, customer.id, channel)
        message, _ = insert_message(
            session,
            thread,
            direction=direction,
            body=body,
            kind=kind,
            call_id=call_id,
            provider="twilio",
            provider_message_id="SM" + secrets.token_hex(16),
            at=at,
        )
        return thread.id, message.id


@dataclass
class SeededBusiness:
    """One of everything, for access tests."""

    customer_id: int
    whatsapp_thread_id: int
    voice_thread_id: int
    message_id: int
    call_sid: str
    deal_id: int
    invoice_id: int
    contract_id: int
    payment_id: int
    agent_user_id: int
    token_id: int
    media_id: int = 0
    task_id: int = 0

    def ids(self) -> dict[str, object]:
        """Values for each path parameter of the CRM routes."""
        return {
            "thread_id": self.whatsapp_thread_id,
            "customer_id": self.customer_id,
            "call_sid": self.call_sid,
            "token_id": self.token_id,
            "payment_id": self.payment_id,
            "provider": "paypal",
            "invoice_id": self.invoice_id,
            "user_id": self.agent_user_id,
            "document_id": {"deals": self.deal_id, "invoices": self.invoice_id, "contracts": self.contract_id},
            "media_id": self.media_id,
            "task_id": self.task_id,
        }


def seed_business(db, business_id: int, *, phone: str = "+972501234567", label: str = "a") -> SeededBusiness:
    sid = f"CA{label}{secrets.token_hex(15)}"
    call_id = seed_call(
        db,
        business_id,
        sid=sid,
        caller=phone,
        transcript="לקוח: שלום\nסוכן: שלום, במה אפשר לעזור?",
        turns=(("שלום", "שלום, במה אפשר לעזור?"),),
    )
    thread_id, message_id = seed_message(db, business_id, phone=phone, body="אני רוצה לקבוע תור", name="Dana")
    with db.scope() as session:
        voice_thread = session.query(Thread).filter_by(business_id=business_id, channel="voice").one()
        insert_message(
            session,
            voice_thread,
            direction="in",
            kind="voicemail",
            body="",
            call_id=call_id,
            provider="twilio",
            provider_message_id="RE" + secrets.token_hex(16),
            media=[{"url": "https://api.twilio.com/rec.wav", "content_type": "audio/x-wav"}],
        )
        customer_id = voice_thread.customer_id
        deal = Deal(
            business_id=business_id, customer_id=customer_id, title="Haircut package", amount_minor=30000, status="open"
        )
        session.add(deal)
        session.flush()
        invoice = Invoice(
            business_id=business_id,
            customer_id=customer_id,
            deal_id=deal.id,
            title="Invoice",
            amount_minor=30000,
            status="issued",
        )
        contract = Contract(
            business_id=business_id,
            customer_id=customer_id,
            deal_id=deal.id,
            title="Contract",
            body="terms",
            status="draft",
        )
        session.add_all([invoice, contract])
        session.flush()
        payment = Payment(
            business_id=business_id,
            customer_id=customer_id,
            invoice_id=invoice.id,
            amount_minor=30000,
            provider="paypal",
            link_token=secrets.token_hex(16),
        )
        session.add(payment)
        agent = User(
            business_id=business_id,
            email=f"agent-{label}-{secrets.token_hex(3)}@example.test",
            password_hash="-",
            role="agent",
        )
        session.add(agent)
        session.flush()
        token = ApiToken(user_id=agent.id, token_hash=secrets.token_hex(32), name="seeded")
        session.add(token)
        # A picture the customer sent that was not kept (no file is needed to test who may ask for it).
        media = Media(
            business_id=business_id,
            message_id=message_id,
            kind="image",
            mime_type="image/jpeg",
            size=20_000_000,
            status="rejected",
            error_code="too_large",
            error_message="the file is larger than the 16777216 bytes kept per item",
        )
        session.add(media)
        # A message the agent took for staff.
        task = Task(business_id=business_id, customer_id=customer_id, phone=phone, reason="לחזור ללקוח")
        session.add(task)
        session.flush()
        return SeededBusiness(
            customer_id,
            thread_id,
            voice_thread.id,
            message_id,
            sid,
            deal.id,
            invoice.id,
            contract.id,
            payment.id,
            agent.id,
            token.id,
            media.id,
            task.id,
        )


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)

"""A payment link in one step, from an invoice or from a conversation: create the payment and, when
asked, send its link to the customer on WhatsApp.

The payment is committed before anything is sent, so a failed or refused send never loses it: the
answer then carries the payment and `whatsapp.status = "failed"` with the reason, and staff can
resend the link by hand. Repeating a request with the same `Idempotency-Key` answers the same
payment, and the WhatsApp send (keyed on the payment) goes out once.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from sqlalchemy.orm import Session

from server import money
from server.config import Settings
from server.crm import validation as v
from server.db.models import Customer, Invoice, Thread, User
from server.errors import DomainError, Problem
from server.payments import service as payments
from server.payments.accounts import PROVIDERS
from server.security.auth import get_owned
from server.whatsapp.send import send_whatsapp


def invoice_payment_link(
    session: Session,
    settings: Settings,
    business_id: int,
    actor: User,
    invoice_id: int,
    body: Mapping[str, Any],
    idempotency_key: Optional[str],
) -> tuple[int, dict[str, Any]]:
    invoice = get_owned(session, Invoice, business_id, invoice_id)  # another business's: 404 whatever the body
    v.reject_unknown(body, ("provider", "send_whatsapp"))
    provider = _provider(body.get("provider"))
    send = body.get("send_whatsapp", False)
    if not isinstance(send, bool):
        raise v.invalid("send_whatsapp", "send_whatsapp must be true or false")
    recipient = _recipient(session, invoice.customer_id) if send else None
    payment, created = payments.create_payment(
        session,
        settings,
        business_id=business_id,
        actor=f"user:{actor.id}",
        body={"invoice_id": invoice.id, "provider": provider},
        idempotency_key=idempotency_key,
    )
    return _answer(session, settings, business_id, actor, payment, created, recipient)


def thread_payment_link(
    session: Session,
    settings: Settings,
    business_id: int,
    actor: User,
    thread_id: int,
    body: Mapping[str, Any],
    idempotency_key: Optional[str],
) -> tuple[int, dict[str, Any]]:
    thread = get_owned(session, Thread, business_id, thread_id)
    v.reject_unknown(body, ("amount", "currency", "description", "provider"))
    provider = _provider(body.get("provider"))
    if body.get("amount") is None:
        raise v.invalid("amount", "amount is required")
    if not isinstance(body.get("description"), str) or not body["description"].strip():
        raise v.invalid("description", "description is required")
    recipient = _recipient(session, thread.customer_id)
    request = {
        "amount": body["amount"],
        "description": body["description"],
        "provider": provider,
        "customer_id": thread.customer_id,
    }
    if "currency" in body:
        request["currency"] = body["currency"]
    payment, created = payments.create_payment(
        session,
        settings,
        business_id=business_id,
        actor=f"user:{actor.id}",
        body=request,
        idempotency_key=idempotency_key,
    )
    return _answer(session, settings, business_id, actor, payment, created, recipient)


def _provider(raw: Any) -> Optional[str]:
    # null or absent: the business's default provider (the payments service decides)
    return None if raw is None else v.choice(raw, "provider", PROVIDERS)


def _recipient(session: Session, customer_id: Optional[int]) -> str:
    """Where the customer gets WhatsApp: their phone, else their WhatsApp LID."""
    customer = session.get(Customer, customer_id) if customer_id is not None else None
    address = customer and (customer.phone or customer.wa_lid)
    if not address:
        raise DomainError(
            Problem.CONFLICT,
            "no_whatsapp_recipient",
            "the customer has no phone number or WhatsApp address to send the link to",
        )
    return address


def link_text(description: str, amount_minor: int, currency: str, url: str) -> str:
    """The WhatsApp message: what it is for, how much, and the link (on its own line, so it stays tappable)."""
    lines = [description.strip()] if description.strip() else []
    lines += [f"לתשלום {money.display(amount_minor, currency)}:", url]
    return "\n".join(lines)


def _answer(
    session: Session,
    settings: Settings,
    business_id: int,
    actor: User,
    payment: Any,
    created: bool,
    recipient: Optional[str],
) -> tuple[int, dict[str, Any]]:
    view = payments.payment_view(settings, payment)
    # Kept whatever the send does: the link exists and may be resent.
    session.commit()
    whatsapp: Optional[dict[str, Any]] = None
    if recipient is not None:
        try:
            result = send_whatsapp(
                session,
                settings,
                business_id,
                to=recipient,
                text=link_text(payment.description, payment.amount_minor, payment.currency, view["url"]),
                idempotency_key=f"payment-link-{payment.id}",
                sender_user_id=actor.id,
            )
            whatsapp = {"status": "sent", "message_id": result.message_id}
        except DomainError as refusal:  # not taken by any provider; a failed message stays in the thread
            session.rollback()
            whatsapp = {
                "status": "failed",
                "message_id": refusal.details.get("message_id"),
                "error": refusal.code,
                "message": refusal.message,
            }
        session.commit()
    return (201 if created else 200), {"payment": view, "url": view["url"], "whatsapp": whatsapp}

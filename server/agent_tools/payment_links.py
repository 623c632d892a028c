"""`send_payment_link`: a payment link for an open invoice of the customer (or a service's price from
the appointment book), created by the payments service and sent to the customer's WhatsApp through
the one send service, which keeps WhatsApp's 24-hour rule (outside the window, Twilio takes only
templates: the send is refused and the model is told, so it can say staff will send it)."""

from __future__ import annotations

import logging
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import money
from server.agent.tools import Tool, ToolContext, register
from server.appointments import get_service
from server.db.models import Invoice
from server.errors import DomainError
from server.logs import log_event
from server.payments.service import create_payment, payment_link
from server.whatsapp.send import send_whatsapp

log = logging.getLogger("agentlocator.agent_tools")

ACTOR = "agent"


def send_payment_link(context: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    if not context.phone:
        return {"error": "the customer's phone number is unknown, so no WhatsApp message can be sent"}
    return context.run(lambda session: _create_and_send(session, context, args))


def _create_and_send(session: Session, context: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"customer_id": context.customer_id}
    what: str
    if "service_id" in args:
        service = _service_price(session, context.business_id, args["service_id"])
        if service is None:
            return {"error": "no such service with a price; use find_slots to list the services"}
        name, amount_minor, currency = service
        body.update(amount_minor=amount_minor, currency=currency, description=name)
        what = f"service-{args['service_id']}"
    else:
        invoice = _invoice(session, context, args.get("invoice_id"))
        if isinstance(invoice, dict):
            return invoice
        body["invoice_id"] = invoice.id
        what = f"invoice-{invoice.id}"
    # One link per conversation and item, however often the model asks (a retry, a repeated request).
    conversation = context.call_sid or f"message-{context.message_id}"
    key = f"agent-{conversation}-{what}"[:128]
    payment, _created = create_payment(
        session, context.settings, business_id=context.business_id, actor=ACTOR, body=body, idempotency_key=key
    )
    link = payment_link(context.settings, payment)
    amount = money.display(payment.amount_minor, payment.currency)
    text = f"קישור לתשלום{' על ' + payment.description if payment.description else ''} ({amount}): {link}"
    session.commit()  # the payment exists whatever the send does
    try:
        sent = send_whatsapp(
            session, context.settings, context.business_id, to=context.phone or "", text=text, idempotency_key=key
        )
    except DomainError as exc:
        log_event(log, "agent_payment_link_not_sent", logging.WARNING, business_id=context.business_id, error=exc.code)
        return {
            "sent": False,
            "payment_id": payment.id,
            "error": f"the link was created but could not be sent on WhatsApp ({exc.code}): tell the customer "
            "a staff member will send it",
        }
    return {
        "sent": True,
        "payment_id": payment.id,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "amount": amount,
        "message_id": sent.message_id,
        "next": "Tell the customer the payment link was sent to their WhatsApp.",
    }


def _invoice(session: Session, context: ToolContext, invoice_id: Optional[int]) -> Invoice | dict[str, Any]:
    """The invoice to pay: the one named (it must be this customer's), else the customer's only open one."""
    query = sa.select(Invoice).where(Invoice.business_id == context.business_id, Invoice.status == "issued")
    if context.customer_id is None:
        return {"error": "this customer has no invoices"}
    query = query.where(Invoice.customer_id == context.customer_id)
    if invoice_id is not None:
        invoice = session.scalar(query.where(Invoice.id == invoice_id))
        return invoice if invoice is not None else {"error": "no open invoice with that id for this customer"}
    open_invoices = session.scalars(query.order_by(Invoice.id)).all()
    if not open_invoices:
        return {"error": "this customer has no open invoice"}
    if len(open_invoices) > 1:
        return {
            "error": "the customer has several open invoices: ask which one, then call again with its invoice_id",
            "open_invoices": [
                {"invoice_id": i.id, "title": i.title, "number": i.number, "amount_minor": i.amount_minor}
                for i in open_invoices
            ],
        }
    return open_invoices[0]


def _service_price(session: Session, business_id: int, service_id: int) -> Optional[tuple[str, int, str]]:
    """(name, price in minor units, currency) of the appointment book's service, if it has a price."""
    try:
        service = get_service(session, business_id, service_id, active_only=True)
    except DomainError:
        return None
    return (service.name, service.price_minor, service.currency) if service.price_minor > 0 else None


register(
    Tool(
        name="send_payment_link",
        label="שליחת קישור לתשלום",
        description=(
            "Send the customer a payment link on WhatsApp, for their open invoice (invoice_id, or none "
            "when they have only one) or for a service's price (service_id). The conversation goes on "
            "while it is sent; afterwards tell them it was sent."
        ),
        parameters={
            "type": "object",
            "properties": {
                "invoice_id": {"type": "integer", "minimum": 1},
                "service_id": {"type": "integer", "minimum": 1},
            },
            "additionalProperties": False,
            "not": {"required": ["invoice_id", "service_id"]},
        },
        handler=send_payment_link,
        default_enabled=False,
    )
)

"""The payment state machine: created → pending → paid | failed | expired, and paid → refunded.

Transitions only go forward, and each one is a single conditional UPDATE (`… WHERE status IN
(allowed sources) [AND extra conditions]`). Two workers racing on the same payment (PayPal's
return and its webhook, or a replayed notification) cannot both win: the loser's UPDATE matches no
row and changes nothing. Only the winner writes the audit row and marks the invoice paid.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.dao_crm import audit
from server.db.events import publish_payment
from server.db.models import Invoice, Payment, utcnow
from server.logs import log_event

log = logging.getLogger("agentlocator.payments")

NEXT = {
    "created": ("pending", "expired"),
    "pending": ("paid", "failed", "expired"),
    "paid": ("refunded",),
}
FINAL = ("failed", "expired", "refunded")


class DuplicateTransaction(Exception):
    """The provider transaction id already paid another payment (unique per provider)."""


def sources_of(target: str) -> list[str]:
    return [source for source, targets in NEXT.items() if target in targets]


def transition(session: Session, payment: Payment, target: str, actor: str, *, where: Iterable[Any] = (),
               values: dict[str, Any] | None = None, **details: Any) -> bool:
    """Move `payment` to `target` if its current status allows it (and `where` holds); True if moved.

    Raises `DuplicateTransaction` when `values` carry a provider_txn_id that another payment owns."""
    previous = payment.status
    statement = (sa.update(Payment)
                 .where(Payment.id == payment.id, Payment.status.in_(sources_of(target)), *where)
                 .values(status=target, updated_at=utcnow(), **(values or {}))
                 .execution_options(synchronize_session=False))
    try:
        with session.begin_nested():
            moved = session.execute(statement).rowcount == 1
    except IntegrityError:
        raise DuplicateTransaction(str((values or {}).get("provider_txn_id"))) from None
    session.refresh(payment)
    if not moved:
        log_event(log, "payment_transition_skipped", payment_id=payment.id, status=payment.status, target=target)
        return False
    audit(session, payment.business_id, actor, f"payment.{target}", "payment", payment.id,
          from_status=previous, **details)
    publish_payment(session, payment)  # an open console sees the payment (and its invoice) move
    if target == "paid" and payment.invoice_id is not None:
        _mark_invoice_paid(session, payment, actor)
    return True


def _mark_invoice_paid(session: Session, payment: Payment, actor: str) -> None:
    invoice = session.get(Invoice, payment.invoice_id)
    if invoice is None or invoice.status == "paid":
        return
    invoice.status = "paid"
    invoice.payment_id = payment.id
    session.flush()
    audit(session, payment.business_id, actor, "invoice.paid", "invoice", invoice.id, payment_id=payment.id)


def reject(session: Session, payment: Payment, actor: str, reasons: list[str], **details: Any) -> None:
    """A notification or capture that must not pay this payment: logged and audited, nothing else.

    Committed at once, because the caller answers with an error status (which rolls back)."""
    log_event(log, "payment_notification_rejected", logging.WARNING, payment_id=payment.id, reasons=reasons,
              **details)
    audit(session, payment.business_id, actor, "payment.notification_rejected", "payment", payment.id,
          reasons=reasons, **details)
    session.commit()

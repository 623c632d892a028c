"""The payment state machine, and where money the providers report is allowed to go.

    created → pending → paid → refunded
    pending → awaiting_confirm → paid (an owner confirms what the gateway could not)
    awaiting_confirm → rejected (an owner finds no such charge in the terminal: a forged notification)
    pending | awaiting_confirm | expired | failed → refund_required → refunded
    created | pending → expired;  pending → failed

Transitions only go forward, and each one is a single conditional UPDATE (`… WHERE status IN
(allowed sources) [AND extra conditions]`). Two workers racing on the same payment (PayPal's
return and its webhook, or a replayed notification) cannot both win: the loser's UPDATE matches no
row and changes nothing. Only the winner writes the audit row.

Money is applied by `settle` only. It is `paid` when the server confirmed it with the gateway (or an
owner did, by hand) and the payment may still take money: a link that is still open, for an
invoice that is issued and not paid by another payment. Confirmed money for anything else (a
voided invoice, an invoice paid already, a link closed meanwhile) is `refund_required`: the
business must see it and give it back. Money the server could not confirm is `awaiting_confirm`.

`rejected` is final and takes no money: an owner looked for the charge in the gateway's own reports
and it isn't there, so the notification that made it `awaiting_confirm` was forged. Its nonce is
used up already, so the notification replayed changes nothing; a real payment needs a new link.
It is not `failed` (a declined card), which may still receive money from a page left open.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.dao_crm import audit
from server.db.engine import rows_affected
from server.db.events import publish_payment
from server.db.models import Invoice, Payment, utcnow
from server.logs import log_event

log = logging.getLogger("agentlocator.payments")

NEXT = {
    "created": ("pending", "expired"),
    "pending": ("paid", "awaiting_confirm", "refund_required", "failed", "expired"),
    "awaiting_confirm": ("paid", "refund_required", "rejected"),
    # A closed link can still receive money (the payer was already on the provider's page).
    "expired": ("refund_required",),
    "failed": ("refund_required",),
    "paid": ("refunded",),
    "refund_required": ("refunded",),
}
FINAL = ("refunded", "rejected")
STATUSES = (*NEXT, *FINAL)
# The states in which a link still takes money: the checkout may be opened, a capture applied.
OPEN = ("created", "pending")
# The states money may still arrive in (and be applied by `settle`).
RECEIVING = ("pending", "awaiting_confirm", "expired", "failed")


class DuplicateTransaction(Exception):
    """The provider transaction id already paid another payment (unique per provider)."""


def sources_of(target: str) -> list[str]:
    return [source for source, targets in NEXT.items() if target in targets]


def transition(
    session: Session,
    payment: Payment,
    target: str,
    actor: str,
    *,
    where: Iterable[Any] = (),
    values: dict[str, Any] | None = None,
    **details: Any,
) -> bool:
    """Move `payment` to `target` if its current status allows it (and `where` holds); True if moved.

    Raises `DuplicateTransaction` when `values` carry a provider_txn_id that another payment owns."""
    previous = payment.status
    statement = (
        sa.update(Payment)
        .where(Payment.id == payment.id, Payment.status.in_(sources_of(target)), *where)
        .values(status=target, updated_at=utcnow(), **(values or {}))
        .execution_options(synchronize_session=False)
    )
    try:
        with session.begin_nested():
            moved = rows_affected(session.execute(statement)) == 1
    except IntegrityError:
        raise DuplicateTransaction(str((values or {}).get("provider_txn_id"))) from None
    session.refresh(payment)
    if not moved:
        log_event(log, "payment_transition_skipped", payment_id=payment.id, status=payment.status, target=target)
        return False
    audit(
        session, payment.business_id, actor, f"payment.{target}", "payment", payment.id, from_status=previous, **details
    )
    publish_payment(session, payment)  # an open console sees the payment (and its invoice) move
    return True


def settle(
    session: Session,
    payment: Payment,
    actor: str,
    *,
    confirmed: bool,
    where: Iterable[Any] = (),
    values: dict[str, Any] | None = None,
    **details: Any,
) -> str:
    """Apply money the provider reports taken for `payment`; the status reached, or "unchanged".

    `confirmed`: the server checked it with the gateway itself (or an owner confirmed it). The
    invoice is read row-locked first (as a void does), so a void and a payment can't both win.
    Raises `DuplicateTransaction` like `transition`."""
    where = list(where)
    for _ in range(2):  # once more if the payment moved meanwhile (a link expiring as money arrives)
        if payment.status not in RECEIVING:
            log_event(log, "payment_settle_skipped", payment_id=payment.id, status=payment.status)
            return "unchanged"
        invoice = _locked_invoice(session, payment)
        reasons = refund_reasons(payment, invoice)
        moved_values = dict(values or {})
        extra: dict[str, Any] = {}
        if reasons:
            # Confirmed or not, this money can't be kept; staff check the gateway before refunding.
            target, extra["reasons"] = "refund_required", reasons
        elif confirmed:
            target, moved_values["paid_at"] = "paid", utcnow()
        else:
            target = "awaiting_confirm"
        before = payment.status
        if transition(session, payment, target, actor, where=where, values=moved_values, **details, **extra):
            if target == "paid" and invoice is not None:
                _mark_invoice_paid(session, invoice, payment, actor)
            return target
        if payment.status == before:
            return "unchanged"
    return "unchanged"


def refund_reasons(payment: Payment, invoice: Optional[Invoice]) -> list[str]:
    """Why money for `payment` (still receiving, so not what paid its invoice) can't be kept; empty:
    it can. The invoice's reason comes first: a void closes the invoice's links, and the void is
    what the business needs to know."""
    if invoice is not None and invoice.status != "issued":
        # paid (by another link, or by hand), void, or a draft (a link made before links needed an issue)
        return [f"invoice_{invoice.status}"]
    if payment.status in ("expired", "failed"):
        return ["payment_closed"]
    return []


def invoice_payable(invoice: Optional[Invoice]) -> bool:
    """Whether a link may be made (or opened) for `invoice`: issued, and not paid."""
    return invoice is None or invoice.status == "issued"


def _locked_invoice(session: Session, payment: Payment) -> Optional[Invoice]:
    if payment.invoice_id is None:
        return None
    return session.scalar(
        sa.select(Invoice)
        .where(Invoice.id == payment.invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _mark_invoice_paid(session: Session, invoice: Invoice, payment: Payment, actor: str) -> None:
    if invoice.status == "paid":
        return
    invoice.status = "paid"
    invoice.payment_id = payment.id
    invoice.updated_at = utcnow()
    session.flush()
    audit(session, payment.business_id, actor, "invoice.paid", "invoice", invoice.id, payment_id=payment.id)
    # The invoice is settled: its other links must not take the same money twice.
    close_invoice_links(session, invoice.id, actor, "invoice_paid")


def close_invoice_links(session: Session, invoice_id: int, actor: str, reason: str) -> list[int]:
    """Expire the invoice's links that could still take money (its void, or its payment by another
    link); the ids expired. Call with the invoice row locked."""
    expired = []
    for payment in session.scalars(
        sa.select(Payment).where(Payment.invoice_id == invoice_id, Payment.status.in_(OPEN)).order_by(Payment.id)
    ):
        if transition(session, payment, "expired", actor, reason=reason):
            expired.append(payment.id)
    return expired


def reject(session: Session, payment: Payment, actor: str, reasons: list[str], **details: Any) -> None:
    """A notification or capture that must not pay this payment: logged and audited, nothing else.

    Committed at once, because the caller answers with an error status (which rolls back)."""
    log_event(log, "payment_notification_rejected", logging.WARNING, payment_id=payment.id, reasons=reasons, **details)
    audit(
        session,
        payment.business_id,
        actor,
        "payment.notification_rejected",
        "payment",
        payment.id,
        reasons=reasons,
        **details,
    )
    session.commit()

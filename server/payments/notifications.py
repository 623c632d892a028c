"""What providers tell us: PayPal captures and webhooks, Tranzila's notify POST. Only these mark paid.

PayPal: a capture counts only when its status is COMPLETED, its amount and currency are the
stored ones, and its order is one we created for this payment. Webhooks are verified by PayPal
(`verify-webhook-signature`) before anything is read from them.

Tranzila's notify POST is not signed, and its address (with the per-payment nonce) passes through
the payer's browser, so the notification alone proves nothing. It is checked for (1) the nonce,
used up atomically together with the status move, so a replay finds it consumed; (2) Response
"000", our terminal, and the stored amount and currency; (3) the transaction index being unique
per provider, so one real charge cannot pay two links. It pays only when the server confirmed it
with Tranzila itself (`POST /v1/transactions`, which needs the terminal's API keys) and the
fetched transaction agrees. Without API keys the payment waits as `awaiting_confirm` until an
owner confirms it by hand (`service.confirm_payment`).

Where confirmed money goes (paid, or refund_required for a void invoice) is decided by
`states.settle`.

Each handler returns the outcome it reached ("paid", "ignored", …), which the provider is told with
a 200, or raises `DomainError` when the delivery must be refused (401, 400) or sent again later
(503: nothing changed).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import safe_json
from server.config import Settings
from server.db.dao_crm import audit
from server.db.models import Payment, utcnow
from server.errors import DomainError, Problem
from server.logs import log_event
from server.money import from_provider
from server.payments.accounts import TranzilaAccount, provider_account
from server.payments.states import RECEIVING, DuplicateTransaction, reject, settle, transition
from server.providers.base import ProviderError, ProviderTimeout
from server.providers.payment_http import PaymentProviderError, PaymentProviderUnavailable
from server.providers.paypal import WEBHOOK_HEADERS, HeaderLookup, PayPalClient, first_capture
from server.providers.tranzila import APPROVED, CURRENCY_CODES
from server.security.auth import MAX_ID

log = logging.getLogger("agentlocator.payments")

PAYPAL_EVENTS = (
    "CHECKOUT.ORDER.APPROVED",
    "PAYMENT.CAPTURE.COMPLETED",
    "PAYMENT.CAPTURE.DENIED",
    "PAYMENT.CAPTURE.REFUNDED",
)
# Capture refusals after which the payer must approve again (PayPal sends them back to approve).
PAYER_MUST_ACT = ("ORDER_NOT_APPROVED", "INSTRUMENT_DECLINED", "PAYER_ACTION_REQUIRED")
# What we keep of a Tranzila notification: never card data (ccno, TranzilaTK, expiry …).
TRANZILA_FIELDS_KEPT = ("Response", "sum", "currency", "supplier", "terminal_name", "index", "ConfirmationCode")
# Tranzila's transaction index: a plain number (ASCII digits only: "²".isdigit() is true, int() refuses it).
TRANZILA_INDEX = re.compile(r"[0-9]{1,18}")


# ---- PayPal ------------------------------------------------------------------------------------
def order_ids(payment: Payment) -> list[str]:
    return list((payment.provider_data or {}).get("order_ids", []))


def capture_and_apply(session: Session, client: PayPalClient, payment: Payment, order_id: str, actor: str) -> str:
    """Capture one of this payment's orders and apply the result.

    Returns "paid", "pending", "failed", "rejected", "unchanged" or "payer_action_required"; raises
    `ProviderError` when PayPal cannot be reached (nothing changed then)."""
    if order_id not in order_ids(payment):
        reject(session, payment, actor, ["order_not_ours"], order_id=order_id)
        return "rejected"
    try:
        # The same request id from the return page and the webhook: PayPal answers the second with
        # the first's result instead of refusing it.
        order = client.capture_order(order_id, request_id=f"agentlocator-{payment.id}-capture-{order_id}")
    except PaymentProviderError as exc:
        if isinstance(exc, PaymentProviderUnavailable):
            raise
        if exc.name == "ORDER_ALREADY_CAPTURED":
            order = client.get_order(order_id)
        elif exc.name in PAYER_MUST_ACT:
            log_event(log, "paypal_capture_needs_payer", payment_id=payment.id, order_id=order_id, issue=exc.name)
            return "payer_action_required"
        else:
            raise
    return apply_capture(session, payment, first_capture(order), order_id=order_id, actor=actor)


def apply_capture(
    session: Session, payment: Payment, capture: Optional[Mapping[str, Any]], *, order_id: Optional[str], actor: str
) -> str:
    """Apply a PayPal capture object (from a capture answer or a PAYMENT.CAPTURE.* webhook)."""
    if capture is None:
        return "pending"
    status = capture.get("status")
    capture_id = capture.get("id")
    related = ((capture.get("supplementary_data") or {}).get("related_ids") or {}).get("order_id") or order_id
    reasons = []
    if related and related not in order_ids(payment):
        reasons.append("order_not_ours")
    if capture.get("custom_id") not in (None, str(payment.id)):
        reasons.append("custom_id_mismatch")
    if status == "COMPLETED":
        amount = capture.get("amount") or {}
        if amount.get("currency_code") != payment.currency:
            reasons.append("currency_mismatch")
        if from_provider(amount.get("value")) != payment.amount_minor:
            reasons.append("amount_mismatch")
        if not capture_id:
            reasons.append("capture_without_id")
    if reasons:
        reject(
            session, payment, actor, reasons, capture_id=capture_id, capture_status=status, amount=capture.get("amount")
        )
        return "rejected"
    if status == "COMPLETED":
        try:
            # PayPal's own answer (a capture we made, or a webhook PayPal verified): confirmed.
            return settle(
                session,
                payment,
                actor,
                confirmed=True,
                values={"provider_txn_id": capture_id},
                capture_id=capture_id,
                order_id=related,
            )
        except DuplicateTransaction:
            reject(session, payment, actor, ["transaction_already_used"], capture_id=capture_id)
            return "rejected"
    if status in ("DECLINED", "FAILED"):
        moved = transition(session, payment, "failed", actor, capture_id=capture_id, capture_status=status)
        return "failed" if moved else "unchanged"
    return "pending"


def paypal_webhook(session: Session, settings: Settings, raw: bytes, headers: HeaderLookup) -> str:
    """The outcome: "ignored" (not about a payment of ours), or what `apply_capture` / `_refund` reached."""
    try:
        event = safe_json.loads(raw)
    except safe_json.JsonTooDeep as exc:
        raise DomainError(Problem.INVALID, "invalid_json", str(exc)) from None
    except ValueError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("resource"), dict):
        raise DomainError(Problem.INVALID, "invalid_json", "expected a PayPal webhook event")
    event_type, resource = event.get("event_type"), event["resource"]
    _check_resource(resource)
    payment = _payment_for_event(session, resource) if event_type in PAYPAL_EVENTS else None
    if payment is None:
        # Nothing of ours would change, so there is nothing to verify.
        log_event(log, "paypal_webhook_ignored", event_type=event_type, event_id=event.get("id"))
        return "ignored"
    account = provider_account(session, settings, payment.business_id, "paypal")
    if account is None or not account.webhook_id:
        log_event(log, "paypal_webhook_unconfigured", logging.WARNING, payment_id=payment.id)
        raise DomainError(Problem.NOT_CONFIGURED, "provider_not_configured", "PayPal webhook id not configured")
    client = account.client(settings)
    try:
        genuine = all(headers.get(name) for name in WEBHOOK_HEADERS.values()) and client.verify_webhook_signature(
            headers=headers, raw_event=raw, webhook_id=account.webhook_id
        )
    except (ProviderTimeout, PaymentProviderUnavailable) as exc:
        raise _try_later(payment, exc) from None
    except PaymentProviderError as exc:  # PayPal refused the verification request itself
        log_event(log, "paypal_webhook_verification_refused", logging.WARNING, payment_id=payment.id, error=str(exc))
        genuine = False
    if not genuine:
        log_event(log, "paypal_webhook_unverified", logging.WARNING, event_id=event.get("id"), payment_id=payment.id)
        raise DomainError(Problem.UNAUTHENTICATED, "invalid_signature", "PayPal did not verify this delivery")
    try:
        if event_type == "CHECKOUT.ORDER.APPROVED":
            outcome = (
                capture_and_apply(session, client, payment, str(resource.get("id")), "paypal")
                if payment.status == "pending"
                else "unchanged"
            )
        elif event_type == "PAYMENT.CAPTURE.REFUNDED":
            outcome = _refund(session, payment, resource)
        else:
            outcome = apply_capture(session, payment, resource, order_id=None, actor="paypal")
    except ProviderError as exc:
        raise _try_later(payment, exc) from None
    log_event(
        log,
        "paypal_webhook_processed",
        event_type=event_type,
        event_id=event.get("id"),
        payment_id=payment.id,
        outcome=outcome,
    )
    return outcome


def _try_later(payment: Payment, exc: ProviderError) -> DomainError:
    """PayPal failed us mid-way; nothing changed, and a 503 makes PayPal deliver the event again."""
    log_event(log, "paypal_webhook_provider_error", logging.WARNING, payment_id=payment.id, error=str(exc))
    return DomainError(Problem.UNAVAILABLE, "unavailable", "PayPal could not complete the check; deliver again later")


def _refund(session: Session, payment: Payment, refund: Mapping[str, Any]) -> str:
    capture_id = _refunded_capture_id(refund)
    if capture_id and capture_id != payment.provider_txn_id:
        reject(session, payment, "paypal", ["refund_of_other_capture"], refund_id=refund.get("id"))
        return "rejected"
    refunded_minor = from_provider((refund.get("amount") or {}).get("value"))
    moved = transition(
        session,
        payment,
        "refunded",
        "paypal",
        refund_id=refund.get("id"),
        refunded_minor=refunded_minor,
        full_refund=refunded_minor == payment.amount_minor,
    )
    return "refunded" if moved else "unchanged"


def _refunded_capture_id(refund: Mapping[str, Any]) -> Optional[str]:
    for link in refund.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "up" and "/captures/" in str(link.get("href", "")):
            return str(link["href"]).rstrip("/").rsplit("/", 1)[-1]
    return None


def _bad_field(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)


def _check_resource(resource: Mapping[str, Any]) -> None:
    """The resource fields we read have the shapes PayPal gives them, or the event is a 400 before
    anything is looked up or asked of PayPal (a verified event could still never be applied)."""
    for name in ("id", "status", "custom_id"):
        if resource.get(name) is not None and not isinstance(resource[name], str):
            raise _bad_field(name, f"{name} must be a string")
    units = resource.get("purchase_units")
    if units is not None and not (
        isinstance(units, list)
        and all(isinstance(unit, dict) and isinstance(unit.get("custom_id"), (str, type(None))) for unit in units)
    ):
        raise _bad_field("purchase_units", "purchase_units must be a list of objects (custom_id a string)")
    supplementary = resource.get("supplementary_data")
    if supplementary is not None:
        related = supplementary.get("related_ids") if isinstance(supplementary, dict) else None
        if (
            not isinstance(supplementary, dict)
            or not isinstance(related, (dict, type(None)))
            or not isinstance((related or {}).get("order_id"), (str, type(None)))
        ):
            raise _bad_field(
                "supplementary_data", "supplementary_data must be an object whose related_ids.order_id is a string"
            )
    for name, kind in (("links", list), ("amount", dict)):
        if resource.get(name) is not None and not isinstance(resource[name], kind):
            raise _bad_field(name, f"{name} must be {'a list' if kind is list else 'an object'}")


def _custom_payment_id(custom_id: Optional[str]) -> Optional[int]:
    """The payment id a custom_id names; None when it is no number at all (another integration's
    label). A number that can't be one of our ids ("²", thirty digits) is a 400, never a query."""
    if not custom_id or not custom_id.isdigit():
        return None
    if not custom_id.isascii() or len(custom_id) > len(str(MAX_ID)) or not 1 <= int(custom_id) <= MAX_ID:
        raise _bad_field("custom_id", "custom_id is not a payment id")
    return int(custom_id)


def _payment_for_event(session: Session, resource: Mapping[str, Any]) -> Optional[Payment]:
    """Our payment named by a webhook resource (shapes checked by `_check_resource`): by custom_id,
    else order id, else refunded capture id."""
    units = resource.get("purchase_units") or [{}]
    payment_id = _custom_payment_id(resource.get("custom_id") or units[0].get("custom_id"))
    paypal = sa.select(Payment).where(Payment.provider == "paypal")
    if payment_id is not None:
        payment = session.scalar(paypal.where(Payment.id == payment_id))
        if payment is not None:
            return payment
    order_id = (
        resource.get("id")
        if "purchase_units" in resource
        else ((resource.get("supplementary_data") or {}).get("related_ids") or {}).get("order_id")
    )
    if order_id:
        payment = session.scalar(paypal.where(Payment.provider_ref == str(order_id)))
        if payment is not None:
            return payment
    capture_id = _refunded_capture_id(resource)
    return session.scalar(paypal.where(Payment.provider_txn_id == capture_id)) if capture_id else None


# ---- Tranzila ----------------------------------------------------------------------------------
def tranzila_notify(session: Session, settings: Settings, nonce: str, fields: Mapping[str, Any]) -> str:
    """The outcome: "paid", "awaiting_confirm", "refund_required", "declined" or "already_processed"."""
    payment = session.scalar(sa.select(Payment).where(Payment.notify_nonce == nonce, Payment.provider == "tranzila"))
    if payment is None:
        log_event(log, "tranzila_notify_unknown", logging.WARNING)
        raise DomainError(Problem.NOT_FOUND, "not_found", "unknown notification address")
    received = {name: str(fields[name]) for name in TRANZILA_FIELDS_KEPT if name in fields}
    # A link closed meanwhile (expired, failed) still takes a charge made on a page already open:
    # `settle` records it as refund_required.
    if payment.notify_consumed_at is not None or payment.status not in RECEIVING:
        log_event(log, "tranzila_notify_replayed", payment_id=payment.id, status=payment.status)
        return "already_processed"
    if received.get("Response") != APPROVED:
        if payment.status != "pending":
            return "already_processed"
        # A declined card: the payer may still try another one on the same page, so nothing is used up.
        audit(
            session,
            payment.business_id,
            "tranzila",
            "payment.declined",
            "payment",
            payment.id,
            response=received.get("Response"),
        )
        return "declined"
    terminal = str((payment.provider_data or {}).get("terminal") or "")
    reasons = _notify_mismatches(payment, received, terminal)
    if reasons:
        reject(session, payment, "tranzila", reasons, received=received)
        raise _rejected("the notification does not match this payment")
    index = received["index"]
    account = provider_account(session, settings, payment.business_id, "tranzila")
    confirmed = isinstance(account, TranzilaAccount) and account.has_api_keys
    if isinstance(account, TranzilaAccount) and confirmed:
        try:
            transaction = account.client(settings).get_transaction(terminal=terminal, index=int(index))
        except ProviderError as exc:
            log_event(log, "tranzila_requery_failed", logging.WARNING, payment_id=payment.id, error=str(exc))
            raise DomainError(
                Problem.UNAVAILABLE, "unavailable", "Tranzila could not be asked to confirm; try again later"
            ) from None
        reasons = _transaction_mismatches(payment, transaction)
        if reasons:
            reject(session, payment, "tranzila", reasons, received=received)
            raise _rejected("Tranzila does not confirm this transaction")
    else:
        log_event(log, "tranzila_notify_unconfirmed", logging.WARNING, payment_id=payment.id)
    try:
        outcome = settle(
            session,
            payment,
            "tranzila",
            confirmed=confirmed,
            where=[Payment.notify_nonce == nonce, Payment.notify_consumed_at.is_(None)],
            values={"notify_consumed_at": utcnow(), "provider_txn_id": index},
            transaction_index=index,
            confirmation_code=received.get("ConfirmationCode"),
            verified_by="transaction_query" if confirmed else "notification",
        )
    except DuplicateTransaction:
        reject(session, payment, "tranzila", ["transaction_already_used"], received=received)
        raise _rejected("this transaction already paid another payment") from None
    return "already_processed" if outcome == "unchanged" else outcome


def _rejected(message: str) -> DomainError:
    """A notification that must not pay this payment (already audited by `reject`)."""
    return DomainError(Problem.INVALID, "notification_rejected", message)


def _notify_mismatches(payment: Payment, received: Mapping[str, str], terminal: Optional[str]) -> list[str]:
    reasons = []
    if not received.get("index"):
        reasons.append("index_missing")
    elif not TRANZILA_INDEX.fullmatch(received["index"]):
        reasons.append("index_invalid")
    if not terminal or received.get("supplier", received.get("terminal_name")) != terminal:
        reasons.append("terminal_mismatch")
    return reasons + _money_mismatches(payment, received.get("currency"), received.get("sum"))


def _transaction_mismatches(payment: Payment, transaction: Optional[Mapping[str, Any]]) -> list[str]:
    if transaction is None:
        return ["transaction_not_found"]
    reasons = [] if str(transaction.get("processor_response_code")) == APPROVED else ["transaction_not_approved"]
    return reasons + _money_mismatches(
        payment, transaction.get("currency"), transaction.get("amount"), prefix="transaction_"
    )


def _money_mismatches(payment: Payment, currency: Any, amount: Any, *, prefix: str = "") -> list[str]:
    """Tranzila writes the currency as its numeric code (hosted page) or the ISO code (other products)."""
    reasons = []
    if str(currency) not in (CURRENCY_CODES.get(payment.currency), payment.currency):
        reasons.append(f"{prefix}currency_mismatch")
    if from_provider(amount) != payment.amount_minor:
        reasons.append(f"{prefix}amount_mismatch")
    return reasons

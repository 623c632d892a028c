"""Creating a payment link: the checks, in their fixed order, then one idempotent insert.

The order (each step has its own test): authentication (the route's decorator) → another
business's customer or invoice 404 → payments off on this server 501 → off for this business 403
→ the provider (explicit, else the business's default, else PayPal) unknown 400 / without
credentials 501 → amount, currency, description, Idempotency-Key 400 (an invoice already paid, or not
issued, 409).

Amounts follow `server.money`: a payment is never 0, and may be as large as any invoice.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, Mapping, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import money
from server.config import Settings
from server.db.dao_crm import _insert_or_get, audit
from server.db.models import Business, Customer, Invoice, Payment, utcnow
from server.errors import DomainError, Problem
from server.payments.accounts import LABELS, PROVIDERS, provider_account
from server.payments.states import invoice_payable, settle, transition
from server.security.auth import MAX_ID
from server.urls import abs_url

DEFAULT_PROVIDER = "paypal"
MAX_DESCRIPTION = 500
MAX_IDEMPOTENCY_KEY = 128
MAX_NOTE = 500


def create_payment(
    session: Session,
    settings: Settings,
    *,
    business_id: int,
    actor: str,
    body: Mapping[str, Any],
    idempotency_key: Optional[str],
) -> tuple[Payment, bool]:
    """The payment for this request, and whether it was created now (False: an Idempotency-Key repeat)."""
    customer = _owned(session, Customer, business_id, body.get("customer_id"), "customer_id")
    invoice = _owned(session, Invoice, business_id, body.get("invoice_id"), "invoice_id")
    business = session.get_one(Business, business_id)
    if not settings.payments_enabled:
        raise DomainError(
            Problem.NOT_CONFIGURED, "payments_disabled", "payments are switched off on this server (PAYMENTS_ENABLED)"
        )
    if not business.payments_enabled:
        raise DomainError(
            Problem.FORBIDDEN, "payments_disabled_for_business", "payments are not enabled for this business"
        )
    provider = _provider(body.get("provider"), business)
    if provider_account(session, settings, business_id, provider) is None:
        raise DomainError(Problem.NOT_CONFIGURED, "provider_not_configured", f"{LABELS[provider]} not configured")
    amount_minor, currency = _amount(body, invoice)
    description = _description(body.get("description"), invoice)
    key = _idempotency_key(idempotency_key)
    if invoice is not None and invoice.status == "paid":
        raise DomainError(Problem.CONFLICT, "invoice_already_paid", "this invoice is already paid")
    if not invoice_payable(invoice):
        raise DomainError(
            Problem.CONFLICT,
            "invoice_not_payable",
            f"this invoice is {invoice.status!r}: only an issued invoice can be paid by link",
            status=invoice.status,
        )

    request = {
        "amount_minor": amount_minor,
        "currency": currency,
        "provider": provider,
        "customer_id": customer.id if customer else (invoice.customer_id if invoice else None),
        "invoice_id": invoice.id if invoice else None,
    }

    def make() -> Payment:
        return Payment(
            business_id=business_id,
            description=description,
            status="created",
            idempotency_key=key,
            link_token=secrets.token_urlsafe(32),
            notify_nonce=secrets.token_urlsafe(32) if provider == "tranzila" else None,
            expires_at=utcnow() + timedelta(days=settings.payment_link_ttl_days),
            provider_data={},
            **request,
        )

    if key is None:
        payment, created = make(), True
        session.add(payment)
        session.flush()
    else:
        payment, created = _insert_or_get(
            session,
            make,
            lambda: session.scalar(
                sa.select(Payment).where(Payment.business_id == business_id, Payment.idempotency_key == key)
            ),
        )
    if not created:
        if any(getattr(payment, name) != value for name, value in request.items()):
            raise DomainError(
                Problem.CONFLICT, "idempotency_key_reused", "this Idempotency-Key was used for a different payment"
            )
        return payment, False
    if invoice is not None:
        invoice.payment_id = payment.id
    audit(
        session,
        business_id,
        actor,
        "payment.created",
        "payment",
        payment.id,
        provider=provider,
        amount_minor=amount_minor,
        currency=currency,
        invoice_id=request["invoice_id"],
        customer_id=request["customer_id"],
        idempotency_key=key,
    )
    return payment, True


def payment_link(settings: Settings, payment: Payment) -> str:
    return abs_url(settings.base_url, f"/pay/{payment.link_token}")


def payment_view(settings: Settings, payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.id,
        "status": payment.status,
        "url": payment_link(settings, payment),
        "provider": payment.provider,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "description": payment.description,
        "customer_id": payment.customer_id,
        "invoice_id": payment.invoice_id,
        "created_at": _iso(payment.created_at),
        "expires_at": _iso(payment.expires_at),
        "paid_at": _iso(payment.paid_at),
    }


def get_payment(session: Session, settings: Settings, business_id: int, payment_id: int) -> dict[str, Any]:
    return payment_view(settings, _payment(session, business_id, payment_id))


def confirm_payment(
    session: Session, settings: Settings, business_id: int, payment_id: int, actor: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """An owner confirms by hand a payment the server could not confirm with the gateway (a Tranzila
    terminal without API keys), having seen the charge in the gateway's own reports. It becomes
    paid, or refund_required when its invoice can no longer take it (voided meanwhile)."""
    note = _note(body)
    payment = _payment(session, business_id, payment_id)
    outcome = "unchanged"
    if payment.status == "awaiting_confirm":
        outcome = settle(session, payment, actor, confirmed=True, verified_by="staff", note=note)
    if outcome == "unchanged":  # not awaiting, or another owner's confirmation (or rejection) won
        raise _not_awaiting(payment, "confirmed")
    return payment_view(settings, payment)


def reject_payment(
    session: Session, settings: Settings, business_id: int, payment_id: int, actor: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """An owner rejects a payment awaiting confirmation whose charge the gateway's own reports don't
    show: the notification was forged. It becomes `rejected` (final, no money; its invoice stays
    as it was, so a new link can be sent)."""
    note = _note(body)
    payment = _payment(session, business_id, payment_id)
    # The conditional UPDATE decides a race with a confirmation: whichever lands second finds the
    # payment moved and answers 409.
    if not transition(session, payment, "rejected", actor, verified_by="staff", note=note):
        raise _not_awaiting(payment, "rejected")
    return payment_view(settings, payment)


def _note(body: Mapping[str, Any]) -> Optional[str]:
    """The optional note of a confirmation or rejection (kept in the audit row), the only field."""
    unknown = sorted(set(body) - {"note"})
    if unknown:
        raise _invalid(unknown[0], f"unknown field {unknown[0]!r}; only note")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise _invalid("note", f"note must be a string of at most {MAX_NOTE} characters")
    return (note or "").strip() or None


def _not_awaiting(payment: Payment, verb: str) -> DomainError:
    return DomainError(
        Problem.CONFLICT,
        "payment_not_awaiting_confirmation",
        f"this payment is {payment.status!r}: only a payment awaiting confirmation can be {verb}",
        status=payment.status,
    )


def _payment(session: Session, business_id: int, payment_id: int) -> Payment:
    payment = None
    if 1 <= payment_id <= MAX_ID:
        payment = session.scalar(sa.select(Payment).where(Payment.id == payment_id, Payment.business_id == business_id))
    if payment is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such payment")
    return payment


def set_business_payments(session: Session, business_id: int, actor: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The owner switches payments on or off and picks the default provider; answers the new settings."""
    unknown = sorted(set(body) - {"payments_enabled", "default_payment_provider"})
    if unknown:
        raise _invalid(unknown[0], f"unknown field {unknown[0]!r}")
    business = session.get_one(Business, business_id)
    if "payments_enabled" in body:
        if not isinstance(body["payments_enabled"], bool):
            raise _invalid("payments_enabled", "payments_enabled must be true or false")
        business.payments_enabled = body["payments_enabled"]
    if "default_payment_provider" in body:
        default = body["default_payment_provider"]
        if default is not None and default not in PROVIDERS:
            raise _invalid(
                "default_payment_provider", f"default_payment_provider must be one of {', '.join(PROVIDERS)} or null"
            )
        business.default_payment_provider = default
    session.flush()
    audit(
        session,
        business_id,
        actor,
        "business.payments_updated",
        "business",
        business_id,
        **{name: body[name] for name in ("payments_enabled", "default_payment_provider") if name in body},
    )
    return business_payments_view(session, business_id)


def business_payments_view(session: Session, business_id: int) -> dict[str, Any]:
    business = session.get_one(Business, business_id)
    return {
        "payments_enabled": business.payments_enabled,
        "default_payment_provider": business.default_payment_provider,
    }


def _iso(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)


def _owned(session: Session, model, business_id: int, raw: Any, field: str):
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _invalid(field, f"{field} must be an integer id")
    row = None
    if 1 <= raw <= MAX_ID:
        row = session.scalar(sa.select(model).where(model.id == raw, model.business_id == business_id))
    if row is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", f"no such {field.removesuffix('_id')}")
    return row


def _provider(raw: Any, business: Business) -> str:
    provider = raw if raw is not None else (business.default_payment_provider or DEFAULT_PROVIDER)
    if not isinstance(provider, str) or provider.strip().lower() not in PROVIDERS:
        raise _invalid("provider", f"provider must be one of {', '.join(PROVIDERS)} (or null)")
    return provider.strip().lower()


def _amount(body: Mapping[str, Any], invoice: Optional[Invoice]) -> tuple[int, str]:
    """The amount in minor units and the currency: from the body, else the invoice's."""
    raw_currency = body.get("currency", invoice.currency if invoice else money.DEFAULT_CURRENCY)
    # Payment links take the code in any case and spacing ("usd"); the money rules take it exact.
    currency = money.currency(raw_currency.strip().upper() if isinstance(raw_currency, str) else raw_currency)
    if invoice is not None and invoice.currency != currency:
        raise _invalid("currency", f"the invoice is in {invoice.currency}")
    if "amount" in body and "amount_minor" in body:
        raise _invalid("amount", "send amount or amount_minor, not both")
    if "amount" in body:
        return money.parse_amount(body["amount"], "amount"), currency
    if "amount_minor" in body:
        return money.parse_minor(body["amount_minor"], "amount_minor"), currency
    if invoice is None:
        raise _invalid("amount", "amount (or amount_minor) is required")
    if invoice.amount_minor <= 0:
        raise _invalid("amount", "the invoice has no amount to pay: send amount (or amount_minor)")
    return invoice.amount_minor, currency


def _description(raw: Any, invoice: Optional[Invoice]) -> str:
    if raw is None:
        return (invoice.title or (f"חשבונית {invoice.number}" if invoice.number else "")) if invoice else ""
    if not isinstance(raw, str) or len(raw) > MAX_DESCRIPTION:
        raise _invalid("description", f"description must be a string of at most {MAX_DESCRIPTION} characters")
    return raw.strip()


def _idempotency_key(raw: Optional[str]) -> Optional[str]:
    """The `Idempotency-Key` header (a header, not a body field: it has its own code, as on every endpoint)."""
    if raw is None or raw.strip() == "":
        return None
    key = raw.strip()
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise DomainError(
            Problem.INVALID,
            "invalid_idempotency_key",
            f"Idempotency-Key must be printable ASCII, at most {MAX_IDEMPOTENCY_KEY} characters",
        )
    return key

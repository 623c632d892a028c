"""The customer's side: the stable link `/pay/<token>` and the pages the providers send the payer back to.

The link is ours, so it can travel on WhatsApp and outlive any provider object. Opening it creates
the provider's checkout on demand: a PayPal order (approve links die after 3 h; a fresh one is
still reused, an older one replaced) or a Tranzila hosted page with a Handshake V2 token (or a
Payment Request, created once). Every answer to the customer is a short Hebrew page or a redirect,
never an error dump; provider failures are logged and shown as "try again later".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional, Union

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.config import Settings
from server.db.models import Business, Customer, Invoice, Payment, utcnow
from server.logs import log_event
from server.money import major_text, to_major
from server.payments.accounts import PayPalAccount, TranzilaAccount, provider_account
from server.payments.notifications import capture_and_apply, order_ids
from server.payments.states import invoice_payable, transition
from server.providers.base import ProviderError, ProviderTimeout
from server.providers.payment_http import PaymentProviderError, PaymentProviderUnavailable
from server.providers.paypal import approve_link
from server.providers.tranzila import CURRENCY_CODES, iframe_url
from server.urls import abs_url

log = logging.getLogger("agentlocator.payments")

# PayPal lets the payer approve for 3 hours after the order is created; keep a margin for the payer.
PAYPAL_ORDER_REUSE_SECONDS = 3 * 3600 - 15 * 60
# Link-preview fetchers (WhatsApp shows a preview of every link it is sent): they get the page only.
PREVIEW_AGENTS = ("whatsapp", "facebookexternalhit", "telegrambot", "twitterbot", "slackbot", "skypeuripreview")
STATUS_PAGES = {
    "paid": 200,
    "awaiting_confirm": 200,
    "refunded": 410,
    "refund_required": 410,
    "failed": 410,
    "expired": 410,
    "rejected": 410,
}


@dataclass
class Page:
    kind: str  # one of pages.TEXTS
    status: int
    payment: Optional[Payment] = None
    retry: bool = False  # offer a link back to /pay/<token>


@dataclass
class Redirect:
    url: str


Outcome = Union[Page, Redirect]


def is_link_preview(method: str, user_agent: str) -> bool:
    agent = user_agent.lower()
    return method == "HEAD" or any(name in agent for name in PREVIEW_AGENTS)


def open_link(session: Session, settings: Settings, token: str, *, preview: bool) -> Outcome:
    payment = _by_token(session, token)
    if payment is None:
        return Page("not_found", 404)
    if payment.status in STATUS_PAGES:
        return Page(payment.status, STATUS_PAGES[payment.status], payment)
    if _expire_if_due(session, payment) or _expire_if_invoice_closed(session, payment):
        return Page("expired", 410, payment)
    if preview:
        return Page("preview", 200, payment)
    business = session.get_one(Business, payment.business_id)
    account = provider_account(session, settings, payment.business_id, payment.provider)
    if not (settings.payments_enabled and business.payments_enabled) or account is None:
        log_event(
            log,
            "payment_link_unavailable",
            logging.WARNING,
            payment_id=payment.id,
            provider=payment.provider,
            configured=account is not None,
        )
        return Page("unavailable", 503, payment)
    try:
        if isinstance(account, PayPalAccount):
            url = _paypal_checkout(session, settings, payment, account, business)
        else:
            url = _tranzila_checkout(session, settings, payment, account)
    except ProviderError as exc:
        return provider_failure(payment, exc)
    if payment.status == "created":
        transition(session, payment, "pending", "customer", provider_ref=payment.provider_ref)
    return Redirect(url)


def paypal_return(session: Session, settings: Settings, token: str, order_id: str) -> Outcome:
    """PayPal sent the payer back (`?token=<order id>`): capture now; the webhook is the backstop."""
    payment = _by_token(session, token)
    if payment is None or payment.provider != "paypal":
        return Page("not_found", 404)
    if payment.status != "pending":
        return _status_page(payment)
    account = provider_account(session, settings, payment.business_id, "paypal")
    if account is None:
        return Page("unavailable", 503, payment)
    try:
        outcome = capture_and_apply(session, account.client(settings), payment, order_id, "customer")
    except ProviderError as exc:
        return provider_failure(payment, exc)
    if outcome == "rejected":
        return Page("rejected", 502, payment)
    if outcome == "payer_action_required":
        return Page("declined", 200, payment, retry=True)
    return _status_page(payment)


def return_page(session: Session, token: str, kind: str) -> Page:
    """The page behind a provider's success ("done"), failure ("failed") or cancel ("cancel") URL."""
    payment = _by_token(session, token)
    if payment is None:
        return Page("not_found", 404)
    if payment.status != "pending" or kind == "done":
        return _status_page(payment)
    return Page("cancelled" if kind == "cancel" else "declined", 200, payment, retry=True)


def provider_failure(payment: Payment, exc: ProviderError) -> Page:
    unavailable = isinstance(exc, (ProviderTimeout, PaymentProviderUnavailable))
    log_event(
        log,
        "payment_provider_error",
        logging.WARNING,
        payment_id=payment.id,
        provider=payment.provider,
        error=str(exc),
        kind=type(exc).__name__,
    )
    return Page("provider_error", 503 if unavailable else 502, payment, retry=True)


def _status_page(payment: Payment) -> Page:
    """After a return: paid, still being confirmed, or final. Shown with 200 (the payer did nothing wrong)."""
    if payment.status in ("created", "pending"):
        return Page("processing", 200, payment)
    return Page(payment.status, 200, payment)


def _by_token(session: Session, token: str) -> Optional[Payment]:
    if not token or len(token) > 64:
        return None
    return session.scalar(sa.select(Payment).where(Payment.link_token == token))


def _expire_if_due(session: Session, payment: Payment) -> bool:
    if payment.expires_at is None or payment.expires_at > utcnow():
        return False
    transition(session, payment, "expired", "system")
    session.commit()  # kept although the customer's answer is a 410
    return True


def _expire_if_invoice_closed(session: Session, payment: Payment) -> bool:
    """A link whose invoice can no longer be paid (voided, or paid by another link) takes no money,
    even one left open by a void that raced its creation, or one made before links needed an issue."""
    invoice = session.get(Invoice, payment.invoice_id) if payment.invoice_id is not None else None
    if invoice is None or invoice_payable(invoice):
        return False
    transition(session, payment, "expired", "system", reason=f"invoice_{invoice.status}")
    session.commit()  # kept although the customer's answer is a 410
    return True


def _paypal_checkout(
    session: Session, settings: Settings, payment: Payment, account: PayPalAccount, business: Business
) -> str:
    data = dict(payment.provider_data or {})
    current = data.get("order")
    if current and time.time() - current["created_at"] < PAYPAL_ORDER_REUSE_SECONDS:
        return current["approve_url"]
    known = order_ids(payment)
    token = payment.link_token
    order = account.client(settings).create_order(
        # Numbered per attempt: a retry of the same attempt gets the same order back from PayPal.
        request_id=f"agentlocator-{payment.id}-order-{len(known) + 1}",
        currency=payment.currency,
        value=major_text(payment.amount_minor),
        custom_id=str(payment.id),
        description=payment.description,
        brand_name=business.name,
        return_url=abs_url(settings.base_url, f"/pay/{token}/return"),
        cancel_url=abs_url(settings.base_url, f"/pay/{token}/cancel"),
    )
    url = approve_link(order)
    if not url or not order.get("id"):
        raise PaymentProviderError("paypal", "order answer without an id or approve link")
    payment.provider_ref = order["id"]
    payment.provider_data = {
        **data,
        "order": {"id": order["id"], "approve_url": url, "created_at": int(time.time())},
        "order_ids": known + [order["id"]] if order["id"] not in known else known,
    }
    session.flush()
    return url


def _tranzila_checkout(session: Session, settings: Settings, payment: Payment, account: TranzilaAccount) -> str:
    data = {**(payment.provider_data or {}), "terminal": account.terminal, "mode": account.mode}
    token, base = payment.link_token, settings.base_url
    urls = {
        "notify": abs_url(base, f"/webhook/tranzila/{payment.notify_nonce}"),
        "success": abs_url(base, f"/pay/{token}/done"),
        "fail": abs_url(base, f"/pay/{token}/failed"),
    }
    client = account.client(settings)
    if account.mode == "payment_request":
        if "payment_request" not in data:
            pr_id, pr_link = client.create_payment_request(_payment_request_body(session, payment, account, urls))
            data["payment_request"] = {"id": pr_id, "link": pr_link}
            payment.provider_ref = pr_id or None
        url = data["payment_request"]["link"]
    else:
        params = {
            "sum": major_text(payment.amount_minor),
            "currency": CURRENCY_CODES[payment.currency],
            "cred_type": "1",
            "tranmode": "A",
            "lang": "il",
            "pdesc": payment.description[:100],
            "notify_url_address": urls["notify"],
            "success_url_address": urls["success"],
            "fail_url_address": urls["fail"],
            "DCdisable": f"agentlocator-{payment.id}",
        }
        if account.has_api_keys:
            params["thtk"] = client.create_handshake(terminal=account.terminal, amount=to_major(payment.amount_minor))
        url = iframe_url(settings.tranzila_iframe_base_url, account.terminal, params)
    payment.provider_data = data
    session.flush()
    return url


def _payment_request_body(session: Session, payment: Payment, account: TranzilaAccount, urls: dict) -> dict:
    body = {
        "terminal_name": account.terminal,
        "created_via": "TRAPI",
        "action_type": 1,
        "response_language": "hebrew",
        "request_currency": payment.currency,
        "payments_number": 1,
        "payment_plans": [1],
        "payment_methods": [1],
        "items": [
            {
                "name": payment.description or "תשלום",
                "unit_price": to_major(payment.amount_minor),
                "type": "I",
                "units_number": 1,
                "unit_type": 1,
                "price_type": "G",
                "currency_code": payment.currency,
            }
        ],
        # Not in Tranzila's published example; confirm with Tranzila that the terminal honours them.
        "notify_url": urls["notify"],
        "success_url": urls["success"],
        "failure_url": urls["fail"],
    }
    customer = session.get(Customer, payment.customer_id) if payment.customer_id else None
    if customer is not None and customer.name:
        body["client"] = {"name": customer.name, **({"email": customer.email} if customer.email else {})}
    return body

"""Money hardening: nothing forged is paid, payments keep to the invoice state machine, and malformed
provider input is a clear 4xx with nothing stored."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import sqlalchemy as sa

from server.app_state import services
from server.db.models import AuditLog, Invoice, Payment, PaymentGateway
from tests.conftest import add_user
from tests.payments_support import (  # noqa: F401
    add_invoice,
    audit_actions,
    business_owner,
    create_link,
    created_link,
    invoice_row,
    path_of,
    pay_app,
    pay_client,
    payment_env,
    payment_row,
    paypal,
    paypal_server,
    shop,
    tranzila,
    tranzila_server,
)

NO_KEYS = {"TRANZILA_API_APP_KEY": "", "TRANZILA_API_SECRET": ""}


@pytest.fixture
def keyless_app(make_app, paypal, tranzila):
    """A Tranzila terminal without API keys: the hosted page works, nothing can be re-queried."""
    return make_app(**payment_env(paypal, tranzila, **NO_KEYS))


def _open(client, link) -> str:
    response = client.get(path_of(link["url"]))
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def _forged_notification(hosted_page: str, *, index: str = "424242") -> tuple[str, dict[str, str]]:
    """What a payer can build from the hosted page's address alone, without paying anything."""
    parts = urlsplit(hosted_page)
    params = dict(parse_qsl(parts.query))
    terminal = parts.path.strip("/").split("/")[0]
    form = {
        "Response": "000",
        "sum": params["sum"],
        "currency": params["currency"],
        "supplier": terminal,
        "index": index,
        "ConfirmationCode": "0000000",
    }
    return path_of(params["notify_url_address"]), form


def _audit(app, payment_id: int) -> list[AuditLog]:
    with services(app).database.scope() as session:
        return list(
            session.scalars(
                sa.select(AuditLog)
                .where(AuditLog.entity_type == "payment", AuditLog.entity_id == str(payment_id))
                .order_by(AuditLog.id)
            )
        )


def _count(app, model) -> int:
    with services(app).database.scope() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


def _void(client, tenant, invoice_id: int) -> None:
    response = client.post(f"/api/crm/invoices/{invoice_id}/status", json={"status": "void"}, headers=tenant.headers)
    assert response.status_code == 200, response.get_json()


# ---- 1. a Tranzila terminal without API keys: notifications wait for staff ------------------------
def test_a_forged_notification_without_api_keys_pays_nothing(keyless_app, tranzila):
    client = keyless_app.test_client()
    owner = business_owner(keyless_app, payments_enabled=True)
    invoice_id = add_invoice(keyless_app, owner.business_id)
    link = created_link(client, owner, provider="tranzila", invoice_id=invoice_id)
    hosted_page = _open(client, link)
    payment = payment_row(keyless_app, link["payment_id"])
    assert payment.notify_nonce in hosted_page  # the payer sees the notify address: it proves nothing

    path, form = _forged_notification(hosted_page)
    response = client.post(path, data=form)
    assert response.status_code == 200 and response.get_json() == {"status": "awaiting_confirm"}
    forged = payment_row(keyless_app, payment.id)
    assert forged.status == "awaiting_confirm" and forged.paid_at is None
    assert invoice_row(keyless_app, invoice_id).status == "issued"
    seen = client.get(f"/api/crm/payments/{payment.id}", headers=owner.headers).get_json()
    assert seen["status"] == "awaiting_confirm" and seen["paid_at"] is None
    assert audit_actions(keyless_app, payment.id)[-1] == "payment.awaiting_confirm"
    assert _audit(keyless_app, payment.id)[-1].details["verified_by"] == "notification"
    # Replayed, or replayed with other numbers: the nonce is used up.
    assert client.post(path, data=form).get_json() == {"status": "already_processed"}
    assert client.post(path, data={**form, "index": "424243"}).get_json() == {"status": "already_processed"}
    assert payment_row(keyless_app, payment.id).status == "awaiting_confirm"
    # The payer's link doesn't offer to pay again, and says the business will confirm.
    page = client.get(path_of(link["url"]))
    assert page.status_code == 200 and "Location" not in page.headers
    assert "העסק יאשר" in page.get_data(as_text=True)
    assert tranzila.requests_to("transactions") == []


def test_the_owner_confirms_an_awaiting_payment_by_hand(keyless_app, tranzila):
    client = keyless_app.test_client()
    owner = business_owner(keyless_app, payments_enabled=True)
    agent = add_user(services(keyless_app).database, owner.business_id, "agent")
    stranger = business_owner(keyless_app, name="Garage Moshe", payments_enabled=True)
    invoice_id = add_invoice(keyless_app, owner.business_id)
    link = created_link(client, owner, provider="tranzila", invoice_id=invoice_id)
    confirm = f"/api/crm/payments/{link['payment_id']}/confirm"

    not_yet = client.post(confirm, headers=owner.headers)
    assert not_yet.status_code == 409 and not_yet.get_json()["error"] == "payment_not_awaiting_confirmation"
    notification = tranzila.pay(_open(client, link))  # a real charge on the terminal
    assert client.post(path_of(notification.url), data=notification.form).get_json() == {"status": "awaiting_confirm"}

    assert client.post(confirm, headers=agent.headers).status_code == 403
    assert client.post(confirm, headers=stranger.headers).status_code == 404
    for missing in (0, 2**31, 10**30):
        assert client.post(f"/api/crm/payments/{missing}/confirm", headers=owner.headers).status_code == 404
    wrong = client.post(confirm, json={"reason": "x"}, headers=owner.headers)
    assert wrong.status_code == 400 and wrong.get_json()["field"] == "reason"
    long_note = client.post(confirm, json={"note": "x" * 501}, headers=owner.headers)
    assert long_note.status_code == 400 and long_note.get_json()["field"] == "note"
    assert payment_row(keyless_app, link["payment_id"]).status == "awaiting_confirm"

    done = client.post(confirm, json={"note": "seen in the terminal's report"}, headers=owner.headers)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "paid" and done.get_json()["paid_at"]
    paid = payment_row(keyless_app, link["payment_id"])
    assert paid.status == "paid" and paid.provider_txn_id == notification.form["index"]
    invoice = invoice_row(keyless_app, invoice_id)
    assert invoice.status == "paid" and invoice.payment_id == paid.id
    last = _audit(keyless_app, paid.id)[-1]
    assert last.action == "payment.paid" and last.actor == f"user:{owner.user_id}"
    assert last.details["verified_by"] == "staff" and last.details["note"] == "seen in the terminal's report"
    again = client.post(confirm, headers=owner.headers)
    assert again.status_code == 409 and again.get_json()["status"] == "paid"


def test_a_confirmation_for_an_invoice_voided_meanwhile_needs_a_refund(keyless_app, tranzila):
    client = keyless_app.test_client()
    owner = business_owner(keyless_app, payments_enabled=True)
    invoice_id = add_invoice(keyless_app, owner.business_id)
    link = created_link(client, owner, provider="tranzila", invoice_id=invoice_id)
    notification = tranzila.pay(_open(client, link))
    client.post(path_of(notification.url), data=notification.form)
    _void(client, owner, invoice_id)
    assert payment_row(keyless_app, link["payment_id"]).status == "awaiting_confirm"  # money may be there
    done = client.post(f"/api/crm/payments/{link['payment_id']}/confirm", headers=owner.headers)
    assert done.status_code == 200 and done.get_json()["status"] == "refund_required"
    assert invoice_row(keyless_app, invoice_id).status == "void"


def test_the_owner_rejects_a_forged_awaiting_payment(keyless_app, tranzila):
    client = keyless_app.test_client()
    owner = business_owner(keyless_app, payments_enabled=True)
    agent = add_user(services(keyless_app).database, owner.business_id, "agent")
    stranger = business_owner(keyless_app, name="Garage Moshe", payments_enabled=True)
    invoice_id = add_invoice(keyless_app, owner.business_id)
    link = created_link(client, owner, provider="tranzila", invoice_id=invoice_id)
    reject = f"/api/crm/payments/{link['payment_id']}/reject"

    not_yet = client.post(reject, headers=owner.headers)
    assert not_yet.status_code == 409 and not_yet.get_json()["error"] == "payment_not_awaiting_confirmation"
    assert not_yet.get_json()["status"] == "created"
    path, form = _forged_notification(_open(client, link))
    assert client.post(path, data=form).get_json() == {"status": "awaiting_confirm"}

    assert client.post(reject, headers=agent.headers).status_code == 403
    assert client.post(reject, headers=stranger.headers).status_code == 404
    for missing in (0, 2**31, 10**30):
        assert client.post(f"/api/crm/payments/{missing}/reject", headers=owner.headers).status_code == 404
    wrong = client.post(reject, json={"reason": "x"}, headers=owner.headers)
    assert wrong.status_code == 400 and wrong.get_json()["field"] == "reason"
    for note in ("x" * 501, 7):
        bad = client.post(reject, json={"note": note}, headers=owner.headers)
        assert bad.status_code == 400 and bad.get_json()["field"] == "note"
    assert payment_row(keyless_app, link["payment_id"]).status == "awaiting_confirm"

    done = client.post(reject, json={"note": " not in the terminal's report "}, headers=owner.headers)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "rejected" and done.get_json()["paid_at"] is None
    rejected = payment_row(keyless_app, link["payment_id"])
    assert rejected.status == "rejected" and rejected.paid_at is None
    assert invoice_row(keyless_app, invoice_id).status == "issued"  # a new link may be sent
    last = _audit(keyless_app, rejected.id)[-1]
    assert last.action == "payment.rejected" and last.actor == f"user:{owner.user_id}"
    assert last.details == {
        "from_status": "awaiting_confirm",
        "verified_by": "staff",
        "note": "not in the terminal's report",
    }
    # Final: neither a second rejection, nor a confirmation, nor the notification replayed moves it.
    again = client.post(reject, headers=owner.headers)
    assert again.status_code == 409 and again.get_json()["status"] == "rejected"
    late = client.post(f"/api/crm/payments/{link['payment_id']}/confirm", headers=owner.headers)
    assert late.status_code == 409 and late.get_json()["status"] == "rejected"
    assert client.post(path, data=form).get_json() == {"status": "already_processed"}
    assert payment_row(keyless_app, link["payment_id"]).status == "rejected"
    # The payer's link says it could not be confirmed, and offers no checkout.
    page = client.get(path_of(link["url"]))
    assert page.status_code == 410 and "לא הצלחנו לאשר את התשלום" in page.get_data(as_text=True)
    assert tranzila.requests_to("transactions") == []


def test_a_confirmed_payment_cannot_be_rejected(keyless_app, tranzila):
    client = keyless_app.test_client()
    owner = business_owner(keyless_app, payments_enabled=True)
    invoice_id = add_invoice(keyless_app, owner.business_id)
    link = created_link(client, owner, provider="tranzila", invoice_id=invoice_id)
    notification = tranzila.pay(_open(client, link))
    client.post(path_of(notification.url), data=notification.form)
    confirmed = client.post(f"/api/crm/payments/{link['payment_id']}/confirm", headers=owner.headers)
    assert confirmed.status_code == 200 and confirmed.get_json()["status"] == "paid"
    refused = client.post(f"/api/crm/payments/{link['payment_id']}/reject", json={"note": "x"}, headers=owner.headers)
    assert refused.status_code == 409 and refused.get_json() == {
        "error": "payment_not_awaiting_confirmation",
        "status": "paid",
        "message": "this payment is 'paid': only a payment awaiting confirmation can be rejected",
    }
    assert payment_row(keyless_app, link["payment_id"]).status == "paid"
    assert invoice_row(keyless_app, invoice_id).status == "paid"
    assert "payment.rejected" not in audit_actions(keyless_app, link["payment_id"])


def test_readyz_warns_about_terminals_without_api_keys(keyless_app, pay_app):
    warned = keyless_app.test_client().get("/readyz")
    assert warned.status_code == 200 and warned.get_json()["status"] == "ready"
    [warning] = warned.get_json()["warnings"]
    assert warning["code"] == "tranzila_without_api_keys" and "confirm" in warning["message"]

    assert pay_app.test_client().get("/readyz").get_json()["warnings"] == []
    tenant = business_owner(pay_app, payments_enabled=True)
    with services(pay_app).database.scope() as session:  # its own terminal, without keys
        session.add(
            PaymentGateway(
                business_id=tenant.business_id, provider="tranzila", enabled=True, settings={"terminal": "own-terminal"}
            )
        )
    [warning] = pay_app.test_client().get("/readyz").get_json()["warnings"]
    assert warning["code"] == "tranzila_without_api_keys" and warning["businesses"] == 1


# ---- 2. payments keep to the invoice state machine ----------------------------------------------
def test_links_only_for_issued_unpaid_invoices(pay_app, pay_client, shop):
    for status, code in (
        ("draft", "invoice_not_payable"),
        ("void", "invoice_not_payable"),
        ("paid", "invoice_already_paid"),
    ):
        invoice_id = add_invoice(pay_app, shop.business_id, status=status)
        response = create_link(pay_client, shop, invoice_id=invoice_id)
        assert response.status_code == 409, (status, response.get_json())
        assert response.get_json()["error"] == code
    assert _count(pay_app, Payment) == 0
    issued = add_invoice(pay_app, shop.business_id, status="issued")
    assert create_link(pay_client, shop, invoice_id=issued).status_code == 201


def test_voiding_an_invoice_expires_its_open_links(pay_app, pay_client, shop, paypal):
    invoice_id = add_invoice(pay_app, shop.business_id)
    unopened = created_link(pay_client, shop, invoice_id=invoice_id)
    opened = created_link(pay_client, shop, invoice_id=invoice_id, amount="10.00")
    _open(pay_client, opened)
    unrelated = created_link(pay_client, shop)
    _void(pay_client, shop, invoice_id)
    for link in (unopened, opened):
        assert payment_row(pay_app, link["payment_id"]).status == "expired"
        assert pay_client.get(path_of(link["url"])).status_code == 410
        expired = _audit(pay_app, link["payment_id"])[-1]
        assert expired.action == "payment.expired" and expired.details["reason"] == "invoice_void"
        assert expired.actor == f"user:{shop.user_id}"
    assert payment_row(pay_app, unrelated["payment_id"]).status == "created"


def test_a_paypal_capture_for_a_voided_invoice_needs_a_refund(pay_app, pay_client, shop, paypal):
    invoice_id = add_invoice(pay_app, shop.business_id)
    link = created_link(pay_client, shop, invoice_id=invoice_id)
    approve = requests.get(_open(pay_client, link), allow_redirects=False, timeout=5)
    assert approve.status_code == 302  # the payer approved on PayPal
    _void(pay_client, shop, invoice_id)
    [approved] = paypal.events("CHECKOUT.ORDER.APPROVED")
    raw, headers = paypal.signed(approved)
    assert pay_client.post("/webhook/paypal", data=raw, headers=headers).get_json() == {"status": "unchanged"}
    assert paypal.requests_to("capture") == []  # a closed link captures nothing
    order_id = payment_row(pay_app, link["payment_id"]).provider_ref
    # Captured anyway (another worker that had already started, or by hand in PayPal).
    requests.post(
        f"{paypal.url}/v2/checkout/orders/{order_id}/capture",
        timeout=5,
        headers={"Authorization": f"Bearer {next(iter(paypal.tokens))}"},
    )
    [completed] = paypal.events("PAYMENT.CAPTURE.COMPLETED")
    raw, headers = paypal.signed(completed)
    assert pay_client.post("/webhook/paypal", data=raw, headers=headers).get_json() == {"status": "refund_required"}
    payment = payment_row(pay_app, link["payment_id"])
    assert payment.status == "refund_required" and payment.provider_txn_id == completed["resource"]["id"]
    assert invoice_row(pay_app, invoice_id).status == "void"
    assert (
        pay_client.get(f"/api/crm/payments/{payment.id}", headers=shop.headers).get_json()["status"]
        == "refund_required"
    )
    required = _audit(pay_app, payment.id)[-1]
    assert required.action == "payment.refund_required" and required.details["reasons"] == ["invoice_void"]
    raw, headers = paypal.signed(completed)  # delivered again: nothing more happens
    assert pay_client.post("/webhook/paypal", data=raw, headers=headers).get_json() == {"status": "unchanged"}
    raw, headers = paypal.signed(paypal.refund(completed["resource"]["id"]))  # the business refunds it
    assert pay_client.post("/webhook/paypal", data=raw, headers=headers).get_json() == {"status": "refunded"}
    assert invoice_row(pay_app, invoice_id).status == "void"


def test_a_capture_racing_a_void_leaves_the_invoice_void(pay_app, pay_client, shop, paypal):
    invoice_id = add_invoice(pay_app, shop.business_id)
    link = created_link(pay_client, shop, invoice_id=invoice_id)
    back = requests.get(_open(pay_client, link), allow_redirects=False, timeout=5).headers["Location"]
    with services(pay_app).database.scope() as session:  # voided between the link's checks and the capture
        session.get(Invoice, invoice_id).status = "void"
    page = pay_client.get(path_of(back))
    assert page.status_code == 200 and "יחזיר" in page.get_data(as_text=True)
    assert payment_row(pay_app, link["payment_id"]).status == "refund_required"
    assert invoice_row(pay_app, invoice_id).status == "void"


def test_an_invoice_paid_by_hand_takes_no_more_money_by_link(pay_app, pay_client, shop, paypal):
    invoice_id = add_invoice(pay_app, shop.business_id)
    link = created_link(pay_client, shop, invoice_id=invoice_id)  # the invoice's latest link (its payment_id)
    requests.get(_open(pay_client, link), allow_redirects=False, timeout=5)  # the payer approved on PayPal
    settled = pay_client.post(f"/api/crm/invoices/{invoice_id}/status", json={"status": "paid"}, headers=shop.headers)
    assert settled.status_code == 200  # paid in cash meanwhile
    assert payment_row(pay_app, link["payment_id"]).status == "expired"
    assert _audit(pay_app, link["payment_id"])[-1].details["reason"] == "invoice_paid"
    order_id = payment_row(pay_app, link["payment_id"]).provider_ref
    requests.post(
        f"{paypal.url}/v2/checkout/orders/{order_id}/capture",
        timeout=5,
        headers={"Authorization": f"Bearer {next(iter(paypal.tokens))}"},
    )
    [completed] = paypal.events("PAYMENT.CAPTURE.COMPLETED")
    raw, headers = paypal.signed(completed)
    assert pay_client.post("/webhook/paypal", data=raw, headers=headers).get_json() == {"status": "refund_required"}
    assert _audit(pay_app, link["payment_id"])[-1].details["reasons"] == ["invoice_paid"]
    assert invoice_row(pay_app, invoice_id).status == "paid"


def test_tranzila_money_for_a_voided_invoice_needs_a_refund(pay_app, pay_client, shop, tranzila):
    invoice_id = add_invoice(pay_app, shop.business_id)
    link = created_link(pay_client, shop, provider="tranzila", invoice_id=invoice_id)
    hosted_page = _open(pay_client, link)
    _void(pay_client, shop, invoice_id)
    notification = tranzila.pay(hosted_page)  # the payer was already on Tranzila's page
    response = pay_client.post(path_of(notification.url), data=notification.form)
    assert response.get_json() == {"status": "refund_required"}
    assert payment_row(pay_app, link["payment_id"]).status == "refund_required"
    assert invoice_row(pay_app, invoice_id).status == "void"
    assert len(tranzila.requests_to("transactions")) == 1  # confirmed with Tranzila first


def test_a_second_payment_for_a_paid_invoice_needs_a_refund(pay_app, pay_client, shop, tranzila):
    invoice_id = add_invoice(pay_app, shop.business_id)
    first = created_link(pay_client, shop, provider="tranzila", invoice_id=invoice_id)
    second = created_link(
        pay_client, shop, provider="tranzila", invoice_id=invoice_id, amount="49.90", description="again"
    )
    first_page, second_page = _open(pay_client, first), _open(pay_client, second)
    paid = tranzila.pay(first_page)
    assert pay_client.post(path_of(paid.url), data=paid.form).get_json() == {"status": "paid"}
    assert payment_row(pay_app, second["payment_id"]).status == "expired"  # the invoice is paid: no more links
    twice = tranzila.pay(second_page)
    assert pay_client.post(path_of(twice.url), data=twice.form).get_json() == {"status": "refund_required"}
    invoice = invoice_row(pay_app, invoice_id)
    assert invoice.status == "paid" and invoice.payment_id == first["payment_id"]
    assert _audit(pay_app, second["payment_id"])[-1].details["reasons"] == ["invoice_paid"]


# ---- 3. malformed provider input: a clear 4xx, nothing stored -------------------------------------
@pytest.mark.parametrize(
    "fields, field",
    [
        ({"custom_id": "²"}, "custom_id"),
        ({"custom_id": "1" * 30}, "custom_id"),
        ({"custom_id": "1" * 5000}, "custom_id"),
        ({"custom_id": 7}, "custom_id"),
        ({"supplementary_data": "x"}, "supplementary_data"),
        ({"supplementary_data": {"related_ids": "x"}}, "supplementary_data"),
        ({"supplementary_data": {"related_ids": {"order_id": ["x"]}}}, "supplementary_data"),
        ({"purchase_units": 5}, "purchase_units"),
        ({"purchase_units": ["x"]}, "purchase_units"),
        ({"links": 5}, "links"),
        ({"amount": "49.90"}, "amount"),
        ({"id": {"x": 1}}, "id"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_malformed_paypal_webhook_fields_are_a_400(pay_app, pay_client, shop, paypal, fields, field):
    link = created_link(pay_client, shop)
    _open(pay_client, link)
    audit_rows = _count(pay_app, AuditLog)
    event = {
        "id": "WH-1",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "resource": {"id": "CAP1", "status": "COMPLETED", "custom_id": str(link["payment_id"]), **fields},
    }
    raw, headers = paypal.signed(event)
    response = pay_client.post("/webhook/paypal", data=raw, headers=headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_field" and response.get_json()["field"] == field
    assert _count(pay_app, AuditLog) == audit_rows
    assert payment_row(pay_app, link["payment_id"]).status == "pending"
    assert paypal.requests_to("verify_webhook") == []


def test_deeply_nested_json_on_the_payment_webhooks_is_a_400(pay_app, pay_client, shop, tranzila):
    deep = b'{"resource": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = pay_client.post("/webhook/paypal", data=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_json"
    link = created_link(pay_client, shop, provider="tranzila")
    _open(pay_client, link)
    nonce = payment_row(pay_app, link["payment_id"]).notify_nonce
    response = pay_client.post(f"/webhook/tranzila/{nonce}", data=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_json"
    assert payment_row(pay_app, link["payment_id"]).status == "pending"


@pytest.mark.parametrize("index", ["²", "٣", "9" * 200, "-1", " 12"])
def test_a_tranzila_index_must_be_plain_digits(keyless_app, pay_app, tranzila, index):
    for app in (pay_app, keyless_app):
        client = app.test_client()
        tenant = business_owner(app, payments_enabled=True)
        link = created_link(client, tenant, provider="tranzila")
        path, form = _forged_notification(_open(client, link), index=index)
        response = client.post(path, data=form)
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.get_json()["error"] == "notification_rejected"
        assert payment_row(app, link["payment_id"]).status == "pending"
        assert _audit(app, link["payment_id"])[-1].details["reasons"] == ["index_invalid"]


def test_a_json_notification_with_nested_values_is_rejected_cleanly(pay_app, pay_client, shop, tranzila):
    link = created_link(pay_client, shop, provider="tranzila")
    path, form = _forged_notification(_open(pay_client, link))
    response = pay_client.post(
        path,
        data=json.dumps({**form, "sum": {"value": "49.90"}, "index": [1]}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and response.get_json()["error"] == "notification_rejected"
    assert payment_row(pay_app, link["payment_id"]).status == "pending"

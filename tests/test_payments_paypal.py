"""PayPal end to end against the fake: link → order → payer approves → return → capture → webhooks."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, urlsplit

import requests
import sqlalchemy as sa

from server.app_state import services
from server.db.models import Payment, PaymentGateway
from tests.conftest import TEST_BASE_URL
from tests.payments_support import (  # noqa: F401
    add_invoice,
    audit_actions,
    business_owner,
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


def _open(client, link: dict, **headers):
    return client.get(path_of(link["url"]), headers=headers)


def _approve(approve_url: str, *, cancel: bool = False) -> str:
    """The payer approves (or cancels) on PayPal; returns where PayPal sends their browser."""
    response = requests.get(approve_url + ("&cancel=1" if cancel else ""), allow_redirects=False, timeout=5)
    assert response.status_code == 302
    return response.headers["Location"]


def _deliver(client, paypal, event, **kwargs):
    raw, headers = paypal.signed(event, **kwargs)
    return client.post("/webhook/paypal", data=raw, headers=headers)


def test_full_flow_link_order_approve_return_capture_and_webhooks(pay_app, pay_client, shop, paypal):
    invoice_id = add_invoice(pay_app, shop.business_id)
    link = created_link(pay_client, shop, invoice_id=invoice_id, description="תספורת")
    opened = _open(pay_client, link)
    assert opened.status_code == 302
    approve_url = opened.headers["Location"]
    assert approve_url.startswith(f"{paypal.url}/checkoutnow?token=")
    assert opened.headers["Referrer-Policy"] == "no-referrer"
    payment = payment_row(pay_app, link["payment_id"])
    assert payment.status == "pending" and payment.provider_ref

    [token_call] = paypal.requests_to("token")
    assert (
        token_call.headers["Authorization"]
        == "Basic " + base64.b64encode(f"{paypal.client_id}:{paypal.client_secret}".encode()).decode()
    )
    [create] = paypal.requests_to("create_order")
    assert create.headers["Authorization"].startswith("Bearer A21AA")
    assert create.headers["Paypal-Request-Id"] == f"agentlocator-{payment.id}-order-1"
    order = json.loads(create.body)
    assert order["intent"] == "CAPTURE"
    assert order["purchase_units"][0]["amount"] == {"currency_code": "ILS", "value": "49.90"}
    assert order["purchase_units"][0]["custom_id"] == str(payment.id)
    experience = order["payment_source"]["paypal"]["experience_context"]
    token = link["url"].rsplit("/", 1)[-1]
    assert experience["return_url"] == f"{TEST_BASE_URL}/pay/{token}/return"
    assert experience["cancel_url"] == f"{TEST_BASE_URL}/pay/{token}/cancel"

    back = _approve(approve_url)
    assert back.startswith(f"{TEST_BASE_URL}/pay/{token}/return?token={payment.provider_ref}")
    page = pay_client.get(path_of(back))
    assert page.status_code == 200
    assert "התשלום התקבל" in page.get_data(as_text=True)
    [capture] = paypal.requests_to("capture")
    assert capture.headers["Paypal-Request-Id"] == f"agentlocator-{payment.id}-capture-{payment.provider_ref}"
    paid = payment_row(pay_app, payment.id)
    assert paid.status == "paid" and paid.paid_at is not None and paid.provider_txn_id
    assert invoice_row(pay_app, invoice_id).status == "paid"
    assert audit_actions(pay_app, payment.id) == ["payment.created", "payment.pending", "payment.paid"]
    assert pay_client.get(f"/api/crm/payments/{payment.id}", headers=shop.headers).get_json()["status"] == "paid"

    # PayPal's webhooks arrive after the return: verified, and they change nothing now.
    for event in paypal.outbox:
        for _ in range(2):  # each one replayed
            response = _deliver(pay_client, paypal, event)
            assert response.status_code == 200
            assert response.get_json()["status"] == "unchanged"
    assert len(paypal.requests_to("verify_webhook")) == 4
    assert audit_actions(pay_app, payment.id) == ["payment.created", "payment.pending", "payment.paid"]
    # The link now shows the paid page; returning again captures nothing.
    assert _open(pay_client, link).status_code == 200
    assert pay_client.get(path_of(back)).status_code == 200
    assert len(paypal.requests_to("capture")) == 1


def test_the_webhook_alone_completes_a_payment_whose_payer_never_came_back(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    _approve(_open(pay_client, link).headers["Location"])  # the payer closes the tab after approving
    [approved] = paypal.events("CHECKOUT.ORDER.APPROVED")
    response = _deliver(pay_client, paypal, approved)
    assert response.get_json() == {"status": "paid"}
    assert payment_row(pay_app, link["payment_id"]).status == "paid"
    [completed] = paypal.events("PAYMENT.CAPTURE.COMPLETED")
    assert _deliver(pay_client, paypal, completed).get_json() == {"status": "unchanged"}


def test_the_capture_webhook_marks_paid_and_a_refund_follows(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    _approve(_open(pay_client, link).headers["Location"])
    order_id = payment_row(pay_app, link["payment_id"]).provider_ref
    # Captured elsewhere (say, by a worker that crashed before saving): the capture webhook decides.
    requests.post(
        f"{paypal.url}/v2/checkout/orders/{order_id}/capture",
        timeout=5,
        headers={"Authorization": f"Bearer {next(iter(paypal.tokens))}"},
    )
    [completed] = paypal.events("PAYMENT.CAPTURE.COMPLETED")
    assert _deliver(pay_client, paypal, completed).get_json() == {"status": "paid"}
    refund = paypal.refund(completed["resource"]["id"])
    assert _deliver(pay_client, paypal, refund).get_json() == {"status": "refunded"}
    assert _deliver(pay_client, paypal, refund).get_json() == {"status": "unchanged"}
    assert _deliver(pay_client, paypal, completed).get_json() == {"status": "unchanged"}  # refunded stays refunded
    assert payment_row(pay_app, link["payment_id"]).status == "refunded"
    assert audit_actions(pay_app, link["payment_id"])[-2:] == ["payment.paid", "payment.refunded"]


def test_an_unverified_webhook_changes_nothing(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    _approve(_open(pay_client, link).headers["Location"])
    [approved] = paypal.events("CHECKOUT.ORDER.APPROVED")
    raw, headers = paypal.signed(approved)
    tampered = raw.replace(b'"APPROVED"', b'"APPROVED" ', 1).replace(b"49.90", b"0.01")
    assert pay_client.post("/webhook/paypal", data=tampered, headers=headers).status_code == 401
    unsigned = {k: v for k, v in headers.items() if not k.startswith("PAYPAL-")}
    assert pay_client.post("/webhook/paypal", data=raw, headers=unsigned).status_code == 401
    _, other_headers = paypal.signed(approved, webhook_id="WH-SOMEONE-ELSE")
    assert pay_client.post("/webhook/paypal", data=raw, headers=other_headers).status_code == 401
    assert pay_client.post("/webhook/paypal", data=b"{not json", headers=headers).status_code == 400
    assert payment_row(pay_app, link["payment_id"]).status == "pending"
    assert paypal.requests_to("capture") == []
    assert audit_actions(pay_app, link["payment_id"]) == ["payment.created", "payment.pending"]


def test_paypal_down_during_verification_asks_for_a_redelivery(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    _approve(_open(pay_client, link).headers["Location"])
    [approved] = paypal.events("CHECKOUT.ORDER.APPROVED")
    paypal.fail("verify_webhook", status=500)
    assert _deliver(pay_client, paypal, approved).status_code == 503
    paypal.fail("capture", status=502)
    assert _deliver(pay_client, paypal, approved).status_code == 503
    assert payment_row(pay_app, link["payment_id"]).status == "pending"
    assert _deliver(pay_client, paypal, approved).get_json() == {"status": "paid"}


def test_events_for_unknown_payments_are_acknowledged_and_ignored(pay_client, paypal):
    event = {
        "id": "WH-1",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "resource": {"id": "CAP1", "status": "COMPLETED", "custom_id": "999999"},
    }
    assert _deliver(pay_client, paypal, event).get_json() == {"status": "ignored"}
    other_type = {"id": "WH-2", "event_type": "BILLING.SUBSCRIPTION.CREATED", "resource": {}}
    assert _deliver(pay_client, paypal, other_type).get_json() == {"status": "ignored"}
    assert paypal.requests_to("verify_webhook") == []


def test_a_tampered_capture_amount_is_rejected_and_audited(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    back = _approve(_open(pay_client, link).headers["Location"])
    paypal.capture_amount = {"currency_code": "ILS", "value": "0.01"}
    page = pay_client.get(path_of(back))
    assert page.status_code == 502
    assert "לא הצלחנו לאשר" in page.get_data(as_text=True)
    assert payment_row(pay_app, link["payment_id"]).status == "pending"
    assert audit_actions(pay_app, link["payment_id"])[-1] == "payment.notification_rejected"
    [completed] = paypal.events("PAYMENT.CAPTURE.COMPLETED")
    assert _deliver(pay_client, paypal, completed).get_json() == {"status": "rejected"}
    assert payment_row(pay_app, link["payment_id"]).status == "pending"


def test_a_return_naming_another_order_captures_nothing(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    _open(pay_client, link)
    token = link["url"].rsplit("/", 1)[-1]
    assert pay_client.get(f"/pay/{token}/return?token=SOMEONEELSESORDER").status_code == 502
    assert paypal.requests_to("capture") == []
    assert payment_row(pay_app, link["payment_id"]).status == "pending"


def test_a_declined_capture_fails_the_payment_and_a_pending_one_waits(pay_app, pay_client, shop, paypal):
    declined = created_link(pay_client, shop)
    back = _approve(_open(pay_client, declined).headers["Location"])
    paypal.capture_status = "DECLINED"
    assert "התשלום נכשל" in pay_client.get(path_of(back)).get_data(as_text=True)
    assert payment_row(pay_app, declined["payment_id"]).status == "failed"
    assert _open(pay_client, declined).status_code == 410

    waiting = created_link(pay_client, shop)
    back = _approve(_open(pay_client, waiting).headers["Location"])
    paypal.capture_status = "PENDING"
    page = pay_client.get(path_of(back))
    assert page.status_code == 200 and 'http-equiv="refresh"' in page.get_data(as_text=True)
    assert payment_row(pay_app, waiting["payment_id"]).status == "pending"


def test_returning_before_approval_or_cancelling_offers_to_try_again(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    approve_url = _open(pay_client, link).headers["Location"]
    token = link["url"].rsplit("/", 1)[-1]
    order_id = payment_row(pay_app, link["payment_id"]).provider_ref
    early = pay_client.get(f"/pay/{token}/return?token={order_id}")
    assert early.status_code == 200 and f'href="/pay/{token}"' in early.get_data(as_text=True)
    cancelled = pay_client.get(path_of(_approve(approve_url, cancel=True)))
    assert cancelled.status_code == 200 and "התשלום בוטל" in cancelled.get_data(as_text=True)
    assert payment_row(pay_app, link["payment_id"]).status == "pending"


def test_a_fresh_order_is_reused_and_an_expired_one_replaced(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    first = _open(pay_client, link).headers["Location"]
    assert _open(pay_client, link).headers["Location"] == first
    assert len(paypal.requests_to("create_order")) == 1
    with services(pay_app).database.scope() as session:  # 3 hours later
        payment = session.get(Payment, link["payment_id"])
        data = dict(payment.provider_data)
        data["order"] = {**data["order"], "created_at": int(time.time()) - 3 * 3600}
        payment.provider_data = data
    second = _open(pay_client, link).headers["Location"]
    assert second != first
    [_, create] = paypal.requests_to("create_order")
    assert create.headers["Paypal-Request-Id"].endswith("-order-2")
    # The payer may still come back through the first order: it is ours, so it is captured.
    assert pay_client.get(path_of(_approve(first))).status_code == 200
    assert payment_row(pay_app, link["payment_id"]).status == "paid"


def test_the_access_token_is_cached_and_renewed_when_refused(pay_client, shop, paypal):
    for _ in range(3):
        _open(pay_client, created_link(pay_client, shop))
    assert paypal.token_requests == 1
    assert len(paypal.requests_to("create_order")) == 3
    paypal.tokens.clear()  # PayPal revoked it early: one 401, a new token, the call again
    assert _open(pay_client, created_link(pay_client, shop)).status_code == 302
    assert paypal.token_requests == 2
    assert [
        r.headers["Authorization"] == "Bearer " + next(iter(paypal.tokens)) for r in paypal.requests_to("create_order")
    ][-2:] == [False, True]


def test_link_pages_for_unknown_expired_and_previewed_links(pay_app, pay_client, shop, paypal):
    unknown = pay_client.get("/pay/no-such-token")
    assert unknown.status_code == 404
    html = unknown.get_data(as_text=True)
    assert 'dir="rtl"' in html and "הקישור לא נמצא" in html and "Traceback" not in html
    assert unknown.headers["Content-Security-Policy"].startswith("default-src 'none'")

    link = created_link(pay_client, shop)
    preview = pay_client.get(path_of(link["url"]), headers={"User-Agent": "WhatsApp/2.23.20.0 A"})
    assert preview.status_code == 200 and "49.90" in preview.get_data(as_text=True)
    assert pay_client.head(path_of(link["url"])).status_code == 200
    assert paypal.requests_to("create_order") == []
    assert payment_row(pay_app, link["payment_id"]).status == "created"

    with services(pay_app).database.scope() as session:
        session.execute(
            sa.update(Payment).where(Payment.id == link["payment_id"]).values(expires_at=sa.func.current_timestamp())
        )
    expired = _open(pay_client, link)
    assert expired.status_code == 410 and "תוקף הקישור פג" in expired.get_data(as_text=True)
    assert payment_row(pay_app, link["payment_id"]).status == "expired"
    assert audit_actions(pay_app, link["payment_id"]) == ["payment.created", "payment.expired"]


def test_provider_failures_show_a_hebrew_try_later_page(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, PAYMENTS_HTTP_TIMEOUT_SECONDS="0.3"))
    client = app.test_client()
    tenant = business_owner(app, payments_enabled=True)
    link = created_link(client, tenant)
    paypal.fail("create_order", status=500)
    page = _open(client, link)
    assert page.status_code == 503
    assert "נסו שוב" in page.get_data(as_text=True) and "Traceback" not in page.get_data(as_text=True)
    paypal.stall("create_order", seconds=1)
    assert _open(client, link).status_code == 503
    assert payment_row(app, link["payment_id"]).status == "created"
    assert _open(client, link).status_code == 302  # PayPal is back


def test_refused_credentials_give_a_502_page(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, PAYPAL_CLIENT_ID="unknown-client"))
    client = app.test_client()
    tenant = business_owner(app, payments_enabled=True)
    page = _open(client, created_link(client, tenant))
    assert page.status_code == 502
    assert "שירות התשלומים" in page.get_data(as_text=True)


def test_a_business_paypal_account_is_used_for_its_links_and_webhooks(pay_app, pay_client, shop, paypal):
    paypal.add_account("biz-client", "biz-secret", "WH-BIZ")
    with services(pay_app).database.scope() as session:
        session.add(
            PaymentGateway(
                business_id=shop.business_id,
                provider="paypal",
                settings={"client_id": "biz-client", "client_secret": "biz-secret", "webhook_id": "WH-BIZ"},
            )
        )
    link = created_link(pay_client, shop)
    _approve(_open(pay_client, link).headers["Location"])
    order_id = payment_row(pay_app, link["payment_id"]).provider_ref
    assert paypal.order_owner[order_id] == "biz-client"
    [approved] = paypal.events("CHECKOUT.ORDER.APPROVED")
    assert _deliver(pay_client, paypal, approved).status_code == 401  # signed for the server's webhook
    assert _deliver(pay_client, paypal, approved, webhook_id="WH-BIZ").get_json() == {"status": "paid"}
    verify = paypal.requests_to("verify_webhook")[-1]
    assert json.loads(verify.body)["webhook_id"] == "WH-BIZ"


def test_the_webhook_needs_a_configured_webhook_id(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, PAYPAL_WEBHOOK_ID=""))
    client = app.test_client()
    tenant = business_owner(app, payments_enabled=True)
    link = created_link(client, tenant)
    _approve(_open(client, link).headers["Location"])
    [approved] = paypal.events("CHECKOUT.ORDER.APPROVED")
    response = _deliver(client, paypal, approved)
    assert response.status_code == 501
    assert payment_row(app, link["payment_id"]).status == "pending"


def test_the_return_url_carries_paypals_order_token(pay_app, pay_client, shop, paypal):
    link = created_link(pay_client, shop)
    back = _approve(_open(pay_client, link).headers["Location"])
    query = parse_qs(urlsplit(back).query)
    assert query["token"] == [payment_row(pay_app, link["payment_id"]).provider_ref]
    assert query["PayerID"] == ["FAKEPAYER123"]

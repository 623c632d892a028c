"""Tranzila end to end against the fake: link → handshake → hosted page → notify → re-query."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from server.app_state import services
from server.db.models import Payment
from server.providers import tranzila as tranzila_client
from testkit.fakes.tranzila_server import HandshakeMismatch
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


def _open(client, link):
    response = client.get(path_of(link["url"]))
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def _notify(client, notification, **changes):
    return client.post(path_of(notification.url), data={**notification.form, **changes})


def _link(client, tenant, **body):
    return created_link(client, tenant, provider="tranzila", **body)


def test_full_flow_handshake_hosted_page_notify_and_requery(pay_app, pay_client, shop, tranzila):
    invoice_id = add_invoice(pay_app, shop.business_id)
    link = _link(pay_client, shop, invoice_id=invoice_id, description="טיפול פנים")
    hosted_page = _open(pay_client, link)
    assert hosted_page.startswith(f"{tranzila.url}/{tranzila.terminal}/iframenew.php?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(hosted_page).query).items()}
    token = link["url"].rsplit("/", 1)[-1]
    payment = payment_row(pay_app, link["payment_id"])
    assert payment.status == "pending"
    assert params["sum"] == "49.90" and params["currency"] == "1"
    assert params["notify_url_address"] == f"{TEST_BASE_URL}/webhook/tranzila/{payment.notify_nonce}"
    assert params["success_url_address"] == f"{TEST_BASE_URL}/pay/{token}/done"
    assert params["fail_url_address"] == f"{TEST_BASE_URL}/pay/{token}/failed"
    assert payment.notify_nonce not in params["success_url_address"] + params["fail_url_address"]
    [handshake] = tranzila.requests_to("handshake")
    assert json.loads(handshake.body, parse_float=Decimal) == {
        "terminal_name": tranzila.terminal,
        "sum": Decimal("49.90"),
    }
    assert b'"sum":49.90' in handshake.body  # a JSON number with its exact digits
    assert tranzila.handshakes[params["thtk"]] == Decimal("49.90")

    notification = tranzila.pay(hosted_page)
    response = _notify(pay_client, notification)
    assert response.status_code == 200 and response.get_json() == {"status": "paid"}
    [requery] = tranzila.requests_to("transactions")
    assert json.loads(requery.body) == {
        "terminal_name": tranzila.terminal,
        "transaction_index": int(notification.form["index"]),
    }
    paid = payment_row(pay_app, payment.id)
    assert paid.status == "paid" and paid.notify_consumed_at is not None
    assert paid.provider_txn_id == notification.form["index"]
    assert invoice_row(pay_app, invoice_id).status == "paid"
    assert "התשלום התקבל" in pay_client.get(path_of(notification.browser_url)).get_data(as_text=True)

    # A replay, even a tampered one, changes nothing: the nonce is used up.
    assert _notify(pay_client, notification).get_json() == {"status": "already_processed"}
    assert _notify(pay_client, notification, sum="1.00").get_json() == {"status": "already_processed"}
    assert len(tranzila.requests_to("transactions")) == 1
    assert audit_actions(pay_app, payment.id) == ["payment.created", "payment.pending", "payment.paid"]


def test_a_tampered_amount_is_rejected_and_the_genuine_notification_still_counts(pay_app, pay_client, shop, tranzila):
    link = _link(pay_client, shop)
    notification = tranzila.pay(_open(pay_client, link))
    for forged in ({"sum": "0.01"}, {"currency": "2"}, {"supplier": "another-terminal"}, {"index": ""}):
        response = _notify(pay_client, notification, **forged)
        assert response.status_code == 400, forged
        assert response.get_json()["error"] == "notification_rejected"
    assert payment_row(pay_app, link["payment_id"]).status == "pending"
    assert audit_actions(pay_app, link["payment_id"]).count("payment.notification_rejected") == 4
    assert tranzila.requests_to("transactions") == []
    assert _notify(pay_client, notification).get_json() == {"status": "paid"}


def test_the_requery_must_agree(pay_app, pay_client, shop, tranzila):
    link = _link(pay_client, shop)
    notification = tranzila.pay(_open(pay_client, link))
    index = int(notification.form["index"])
    tranzila.transactions[index]["amount"] = "4.99"  # Tranzila's record says otherwise
    assert _notify(pay_client, notification).status_code == 400
    tranzila.transactions[index]["amount"] = "49.90"
    tranzila.transactions[index]["processor_response_code"] = "004"
    assert _notify(pay_client, notification).status_code == 400
    del tranzila.transactions[index]
    assert _notify(pay_client, notification).status_code == 400  # an index Tranzila does not know
    assert payment_row(pay_app, link["payment_id"]).status == "pending"
    rejections = audit_actions(pay_app, link["payment_id"]).count("payment.notification_rejected")
    assert rejections == 3


def test_one_transaction_cannot_pay_two_links(pay_app, pay_client, shop, tranzila):
    first, second = _link(pay_client, shop), _link(pay_client, shop)
    paid = tranzila.pay(_open(pay_client, first))
    _open(pay_client, second)
    assert _notify(pay_client, paid).get_json() == {"status": "paid"}
    nonce = payment_row(pay_app, second["payment_id"]).notify_nonce
    replayed_elsewhere = pay_client.post(f"/webhook/tranzila/{nonce}", data=paid.form)
    assert replayed_elsewhere.status_code == 400
    assert payment_row(pay_app, second["payment_id"]).status == "pending"


def test_a_declined_card_keeps_the_link_open_for_another_try(pay_app, pay_client, shop, tranzila):
    link = _link(pay_client, shop)
    hosted_page = _open(pay_client, link)
    declined = tranzila.pay(hosted_page, response="004")
    assert _notify(pay_client, declined).get_json() == {"status": "declined"}
    page = pay_client.get(path_of(declined.browser_url))
    assert page.status_code == 200 and "לתשלום" in page.get_data(as_text=True)
    assert payment_row(pay_app, link["payment_id"]).status == "pending"
    assert _notify(pay_client, tranzila.pay(hosted_page)).get_json() == {"status": "paid"}
    assert audit_actions(pay_app, link["payment_id"])[-2:] == ["payment.declined", "payment.paid"]


def test_money_taken_for_a_link_closed_meanwhile_needs_a_refund(pay_app, pay_client, shop, tranzila):
    link = _link(pay_client, shop)
    notification = tranzila.pay(_open(pay_client, link))
    with services(pay_app).database.scope() as session:  # the link expired before Tranzila's notification came
        session.get(Payment, link["payment_id"]).status = "expired"
    assert _notify(pay_client, notification).get_json() == {"status": "refund_required"}
    payment = payment_row(pay_app, link["payment_id"])
    assert payment.status == "refund_required" and payment.paid_at is None
    assert payment.provider_txn_id == notification.form["index"]
    assert audit_actions(pay_app, link["payment_id"])[-1] == "payment.refund_required"
    assert _notify(pay_client, notification).get_json() == {"status": "already_processed"}


def test_unknown_notification_address_and_done_page_before_the_notification(pay_app, pay_client, shop, tranzila):
    assert pay_client.post("/webhook/tranzila/not-a-nonce", data={"Response": "000"}).status_code == 404
    link = _link(pay_client, shop)
    notification = tranzila.pay(_open(pay_client, link))
    early = pay_client.post(path_of(notification.browser_url), data=notification.form)
    assert early.status_code == 200 and "התשלום בבדיקה" in early.get_data(as_text=True)


def test_the_hosted_page_rejects_a_sum_other_than_the_handshake(pay_client, shop, tranzila):
    hosted_page = _open(pay_client, _link(pay_client, shop))
    with pytest.raises(HandshakeMismatch):
        tranzila.pay(hosted_page.replace("sum=49.90", "sum=0.10"))


def test_a_terminal_without_api_keys_uses_the_plain_hosted_page(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, TRANZILA_API_APP_KEY="", TRANZILA_API_SECRET=""))
    client = app.test_client()
    tenant = business_owner(app, payments_enabled=True)
    link = _link(client, tenant)
    hosted_page = _open(client, link)
    assert "thtk=" not in hosted_page
    notification = tranzila.pay(hosted_page)
    # Nothing could confirm it with Tranzila: it waits for an owner (tests/test_payments_hardening.py).
    assert _notify(client, notification).get_json() == {"status": "awaiting_confirm"}
    assert payment_row(app, link["payment_id"]).status == "awaiting_confirm"
    assert tranzila.requests_to("handshake") == [] and tranzila.requests_to("transactions") == []
    assert _notify(client, notification).get_json() == {"status": "already_processed"}


def test_payment_request_mode(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, TRANZILA_PAYMENT_MODE="payment_request"))
    client = app.test_client()
    tenant = business_owner(app, payments_enabled=True)
    link = _link(client, tenant, amount="120.00", description="שיעור פרטי")
    pr_link = _open(client, link)
    assert pr_link.startswith(f"{tranzila.url}/pr/")
    assert _open(client, link) == pr_link  # created once, then reused
    [request] = tranzila.requests_to("payment_request")
    body = json.loads(request.body, parse_float=Decimal)
    assert body["items"][0]["unit_price"] == Decimal("120.00") and body["request_currency"] == "ILS"
    payment = payment_row(app, link["payment_id"])
    assert body["notify_url"] == f"{TEST_BASE_URL}/webhook/tranzila/{payment.notify_nonce}"
    assert payment.provider_ref == str(next(iter(tranzila.payment_requests)))
    notification = tranzila.pay_request(pr_link)
    assert _notify(client, notification).get_json() == {"status": "paid"}
    assert payment_row(app, link["payment_id"]).status == "paid"


def test_tranzila_errors_show_a_hebrew_try_later_page(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila))
    client = app.test_client()
    tenant = business_owner(app, payments_enabled=True)
    link = _link(client, tenant)
    tranzila.fail("handshake", status=503)
    page = client.get(path_of(link["url"]))
    assert page.status_code == 503 and "נסו שוב" in page.get_data(as_text=True)
    wrong_keys = make_app(**payment_env(paypal, tranzila, TRANZILA_API_SECRET="not-the-secret"))
    client = wrong_keys.test_client()
    tenant = business_owner(wrong_keys, name="B", payments_enabled=True)
    page = client.get(path_of(_link(client, tenant)["url"]))
    assert page.status_code == 502 and "Traceback" not in page.get_data(as_text=True)


def test_a_requery_failure_leaves_the_payment_for_the_next_notification(pay_app, pay_client, shop, tranzila):
    link = _link(pay_client, shop)
    notification = tranzila.pay(_open(pay_client, link))
    tranzila.fail("transactions", status=500)
    assert _notify(pay_client, notification).status_code == 503
    assert payment_row(pay_app, link["payment_id"]).status == "pending"
    assert _notify(pay_client, notification).get_json() == {"status": "paid"}


# ---- the access token, against a vector computed independently --------------------------------------
VECTOR = {
    "app_key": "test-app-key-123",
    "secret": "test-secret-456",
    "time": "1700000000",
    "nonce": "0123456789abcdef" * 5,
}
# HMAC-SHA256(key = "test-secret-456" + "1700000000" + nonce, message = "test-app-key-123"), hex, computed
# once with `openssl dgst -sha256 -hmac` and written down here.
VECTOR_TOKEN = "c2491bff9e2692bb7215a9f67aad3da036e8fb8f541bb4ee32f0fc2b2f481ab3"


def test_the_access_token_matches_the_documented_algorithm():
    independent = hmac.new(
        (VECTOR["secret"] + VECTOR["time"] + VECTOR["nonce"]).encode(), VECTOR["app_key"].encode(), hashlib.sha256
    ).hexdigest()
    assert independent == VECTOR_TOKEN
    assert (
        tranzila_client.access_token(VECTOR["app_key"], VECTOR["secret"], VECTOR["time"], VECTOR["nonce"])
        == VECTOR_TOKEN
    )


def test_auth_headers_carry_seconds_and_an_80_hex_nonce():
    headers = tranzila_client.auth_headers("key", "secret")
    assert set(headers) == {
        "X-tranzila-api-app-key",
        "X-tranzila-api-request-time",
        "X-tranzila-api-nonce",
        "X-tranzila-api-access-token",
    }
    assert len(headers["X-tranzila-api-request-time"]) == 10  # seconds, not milliseconds
    assert len(headers["X-tranzila-api-nonce"]) == 80
    assert headers["X-tranzila-api-access-token"] == tranzila_client.access_token(
        "key", "secret", headers["X-tranzila-api-request-time"], headers["X-tranzila-api-nonce"]
    )

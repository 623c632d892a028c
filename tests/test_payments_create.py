"""`POST /api/crm/payments/create`: each status rule in its fixed order, amounts, idempotency."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.models import Customer, Payment, PaymentGateway
from tests.conftest import TEST_BASE_URL, add_user
from tests.payments_support import (  # noqa: F401
    add_invoice,
    audit_actions,
    business_owner,
    create_link,
    created_link,
    invoice_row,
    pay_app,
    pay_client,
    payment_env,
    paypal,
    paypal_server,
    shop,
    tranzila,
    tranzila_server,
)


def _customer(app, business_id: int) -> int:
    with services(app).database.scope() as session:
        customer = Customer(business_id=business_id, phone="+972501234567", name="Noa")
        session.add(customer)
        session.flush()
        return customer.id


@pytest.fixture
def stranger(pay_app):
    """Another business (payments enabled), whose customer and invoice must stay invisible."""
    tenant = business_owner(pay_app, name="Garage Moshe", payments_enabled=True)
    return tenant, _customer(pay_app, tenant.business_id), add_invoice(pay_app, tenant.business_id)


# ---- 1. 401 -------------------------------------------------------------------------------------
def test_401_without_or_with_a_bad_token(pay_client):
    assert pay_client.post("/api/crm/payments/create", json={"amount": "1"}).status_code == 401
    response = pay_client.post(
        "/api/crm/payments/create", json={"amount": "1"}, headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


# ---- 2. 404 (before every payments check) -------------------------------------------------------
def test_404_for_another_business_customer_or_invoice_comes_before_payments_checks(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, PAYMENTS_ENABLED="false", PAYPAL_CLIENT_ID=""))
    mine = business_owner(app)  # payments not enabled, provider not configured, server switched off
    other = business_owner(app, name="Other")
    client = app.test_client()
    for body in (
        {"customer_id": _customer(app, other.business_id)},
        {"invoice_id": add_invoice(app, other.business_id)},
        {"customer_id": 987654},
        {"invoice_id": 987654},
    ):
        response = create_link(client, mine, amount="-5", **body)
        assert response.status_code == 404, body
        assert response.get_json()["error"] == "not_found"


# ---- 3. 501 payments_disabled -----------------------------------------------------------------------
def test_501_when_payments_are_off_system_wide_comes_before_403_and_provider(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, PAYMENTS_ENABLED="false", PAYPAL_CLIENT_ID=""))
    tenant = business_owner(app)  # the business has not enabled payments either
    response = create_link(app.test_client(), tenant, amount="abc", provider="paypal")
    assert response.status_code == 501
    assert response.get_json()["error"] == "payments_disabled"


# ---- 4. 403 payments_disabled_for_business ----------------------------------------------------------
def test_403_when_the_business_has_not_enabled_payments_comes_before_provider_and_amount(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, PAYPAL_CLIENT_ID=""))
    tenant = business_owner(app)
    response = create_link(app.test_client(), tenant, amount="abc", provider="nonsense")
    assert response.status_code == 403
    assert response.get_json()["error"] == "payments_disabled_for_business"


# ---- 5. 501 provider not configured -----------------------------------------------------------------
@pytest.mark.parametrize(
    "provider, missing, message",
    [
        ("paypal", {"PAYPAL_CLIENT_SECRET": ""}, "PayPal not configured"),
        ("tranzila", {"TRANZILA_TERMINAL": ""}, "Tranzila not configured"),
        # a Payment Request is an API call: a terminal without API keys cannot make one
        (
            "tranzila",
            {"TRANZILA_PAYMENT_MODE": "payment_request", "TRANZILA_API_SECRET": ""},
            "Tranzila not configured",
        ),
    ],
)
def test_501_when_the_chosen_provider_has_no_credentials(make_app, paypal, tranzila, provider, missing, message):
    app = make_app(**payment_env(paypal, tranzila, **missing))
    tenant = business_owner(app, payments_enabled=True)
    response = create_link(app.test_client(), tenant, amount="abc", provider=provider)
    assert response.status_code == 501
    assert response.get_json() == {"error": "provider_not_configured", "message": message}


def test_the_provider_is_the_explicit_one_else_the_business_default_else_paypal(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila, PAYPAL_CLIENT_ID=""))  # only Tranzila is configured
    client = app.test_client()
    plain = business_owner(app, payments_enabled=True)
    assert create_link(client, plain).get_json()["message"] == "PayPal not configured"
    assert create_link(client, plain, provider="tranzila").status_code == 201
    prefers_tranzila = business_owner(app, name="B", payments_enabled=True, default_payment_provider="tranzila")
    assert create_link(client, prefers_tranzila).get_json()["provider"] == "tranzila"
    assert create_link(client, prefers_tranzila, provider="paypal").status_code == 501


def test_business_gateway_credentials_come_first_and_a_disabled_gateway_means_not_configured(
    make_app, paypal, tranzila
):
    app = make_app(**payment_env(paypal, tranzila, PAYPAL_CLIENT_ID=""))
    tenant = business_owner(app, payments_enabled=True)
    client = app.test_client()
    with services(app).database.scope() as session:
        session.add(
            PaymentGateway(
                business_id=tenant.business_id,
                provider="paypal",
                settings={"client_id": "biz-id", "client_secret": "biz-secret"},
            )
        )
        session.add(PaymentGateway(business_id=tenant.business_id, provider="tranzila", enabled=False, settings={}))
    assert create_link(client, tenant, provider="paypal").status_code == 201
    response = create_link(client, tenant, provider="tranzila")  # the server has Tranzila keys, the business said no
    assert response.status_code == 501
    assert response.get_json()["message"] == "Tranzila not configured"


# ---- 6. 400 amount, currency, provider -------------------------------------------------------------
AMOUNTS = [
    ({"amount": "49.90"}, 4990),
    ({"amount": "0.1"}, 10),
    ({"amount": "7"}, 700),
    ({"amount": 12}, 1200),
    ({"amount": "10.50", "currency": "usd"}, 1050),
    ({"amount_minor": 4990}, 4990),
    ({"amount_minor": 1}, 1),
]
BAD_INPUTS = [  # (body, the field named); each is 400 invalid_field
    ({"amount": "10.005"}, "amount"),
    ({"amount": "-1"}, "amount"),
    ({"amount": "0"}, "amount"),
    ({"amount": "0.00"}, "amount"),
    ({"amount": "abc"}, "amount"),
    ({"amount": "1e3"}, "amount"),
    ({"amount": 49.9}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": None}, "amount"),
    ({"amount_minor": 0}, "amount_minor"),
    ({"amount_minor": -5}, "amount_minor"),
    ({"amount_minor": "4990"}, "amount_minor"),
    ({"amount": "1", "amount_minor": 100}, "amount"),
    ({}, "amount"),
    ({"amount": "1000000000.01"}, "amount"),
    ({"amount_minor": 100_000_000_001}, "amount_minor"),
    ({"amount": "1", "currency": "XYZ"}, "currency"),
    ({"amount": "1", "currency": 1}, "currency"),
    ({"amount": "1", "provider": "stripe"}, "provider"),
    ({"amount": "1", "provider": 5}, "provider"),
    ({"amount": "1", "description": "x" * 501}, "description"),
    ({"amount": "1", "customer_id": "7"}, "customer_id"),
]


def test_amounts_convert_exactly_to_agorot(pay_client, shop):
    for body, amount_minor in AMOUNTS:
        response = pay_client.post("/api/crm/payments/create", json=body, headers=shop.headers)
        assert response.status_code == 201, (body, response.get_json())
        assert response.get_json()["amount_minor"] == amount_minor, body


def test_400_for_a_bad_amount_currency_or_provider(pay_client, shop):
    for body, field in BAD_INPUTS:
        response = pay_client.post("/api/crm/payments/create", json=body, headers=shop.headers)
        assert response.status_code == 400, (body, response.get_json())
        answer = response.get_json()
        assert (answer["error"], answer["field"]) == ("invalid_field", field), body
        assert answer["message"], body


def test_amounts_up_to_the_documents_cap_get_links(pay_client, shop):
    """One set of money rules: any amount an invoice may carry can be paid by link (also over ₪1M)."""
    for body, amount_minor in (
        ({"amount": "2500000.50"}, 250_000_050),
        ({"amount": 10**9}, 100_000_000_000),
        ({"amount_minor": 100_000_000_000}, 100_000_000_000),
    ):
        response = pay_client.post("/api/crm/payments/create", json=body, headers=shop.headers)
        assert response.status_code == 201, (body, response.get_json())
        assert response.get_json()["amount_minor"] == amount_minor, body


def test_an_invoice_over_a_million_gets_a_payment_link(pay_client, shop):
    invoice = pay_client.post(
        "/api/crm/invoices", json={"title": "שיפוץ", "amount": "1500000.00"}, headers=shop.headers
    )
    assert invoice.status_code == 201, invoice.get_json()
    issued = pay_client.post(
        f"/api/crm/invoices/{invoice.get_json()['id']}/status", json={"status": "issued"}, headers=shop.headers
    )
    assert issued.status_code == 200, issued.get_json()
    response = pay_client.post(
        "/api/crm/payments/create", json={"invoice_id": invoice.get_json()["id"]}, headers=shop.headers
    )
    assert response.status_code == 201, response.get_json()
    assert (response.get_json()["amount_minor"], response.get_json()["currency"]) == (150_000_000, "ILS")


def test_an_invoice_without_an_amount_needs_one_in_the_request(pay_app, pay_client, shop):
    """An invoice may be empty (0); a payment may not: the request must name the amount."""
    invoice_id = add_invoice(pay_app, shop.business_id, amount_minor=0)
    response = pay_client.post("/api/crm/payments/create", json={"invoice_id": invoice_id}, headers=shop.headers)
    assert response.status_code == 400
    assert (response.get_json()["error"], response.get_json()["field"]) == ("invalid_field", "amount")
    assert create_link(pay_client, shop, invoice_id=invoice_id, amount="80").get_json()["amount_minor"] == 8000


def test_400_for_a_malformed_body_or_key(pay_client, shop):
    response = pay_client.post("/api/crm/payments/create", data="{", headers=shop.headers)
    assert response.status_code == 400
    response = create_link(pay_client, shop, key="x" * 129)
    assert response.get_json()["error"] == "invalid_idempotency_key"


# ---- the answer -------------------------------------------------------------------------------------
def test_the_answer_is_an_unguessable_absolute_link_and_the_creation_is_audited(pay_app, pay_client, shop):
    body = created_link(pay_client, shop, description="תספורת", customer_id=_customer(pay_app, shop.business_id))
    assert body["status"] == "created"
    assert body["url"].startswith(f"{TEST_BASE_URL}/pay/")
    token = body["url"].rsplit("/", 1)[-1]
    assert len(token) >= 43  # 32 random bytes
    assert audit_actions(pay_app, body["payment_id"]) == ["payment.created"]
    other = created_link(pay_client, shop)
    assert other["url"] != body["url"]
    got = pay_client.get(f"/api/crm/payments/{body['payment_id']}", headers=shop.headers)
    assert got.get_json()["description"] == "תספורת"


def test_another_business_cannot_read_the_payment(pay_app, pay_client, shop, stranger):
    body = created_link(pay_client, shop)
    assert pay_client.get(f"/api/crm/payments/{body['payment_id']}", headers=stranger[0].headers).status_code == 404


def test_an_agent_may_create_links(pay_app, pay_client, shop):
    agent = add_user(services(pay_app).database, shop.business_id, "agent")
    assert create_link(pay_client, agent).status_code == 201


# ---- invoices -----------------------------------------------------------------------------------------
def test_an_invoice_gives_the_default_amount_and_a_paid_invoice_is_refused(pay_app, pay_client, shop):
    invoice_id = add_invoice(pay_app, shop.business_id, amount_minor=12000)
    body = pay_client.post("/api/crm/payments/create", json={"invoice_id": invoice_id}, headers=shop.headers).get_json()
    assert body["amount_minor"] == 12000 and body["invoice_id"] == invoice_id
    assert invoice_row(pay_app, invoice_id).payment_id == body["payment_id"]
    paid_invoice = add_invoice(pay_app, shop.business_id, status="paid")
    response = create_link(pay_client, shop, invoice_id=paid_invoice)
    assert response.status_code == 409
    assert response.get_json()["error"] == "invoice_already_paid"


# ---- Idempotency-Key -------------------------------------------------------------------------------------
def test_a_repeated_idempotency_key_returns_the_same_payment(pay_app, pay_client, shop, stranger):
    first = create_link(pay_client, shop, key="order-17")
    second = create_link(pay_client, shop, key="order-17")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.get_json() == second.get_json()
    assert create_link(pay_client, stranger[0], key="order-17").status_code == 201  # keys are per business
    reused = create_link(pay_client, shop, key="order-17", amount="50.00")
    assert reused.status_code == 409
    assert reused.get_json()["error"] == "idempotency_key_reused"
    assert audit_actions(pay_app, first.get_json()["payment_id"]) == ["payment.created"]


def test_concurrent_requests_with_one_key_create_one_payment(pay_app, shop):
    barrier = threading.Barrier(4)
    answers = []

    def post():
        client = pay_app.test_client()
        barrier.wait()
        response = create_link(client, shop, key="race")
        answers.append((response.status_code, response.get_json()["payment_id"]))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(code for code, _ in answers) == [200, 200, 200, 201]
    assert len({payment_id for _, payment_id in answers}) == 1
    with services(pay_app).database.scope() as session:
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(Payment).where(Payment.idempotency_key == "race"))
            == 1
        )

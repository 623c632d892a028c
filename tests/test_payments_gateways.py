"""The owner's payment settings: enabling payments, choosing the default, storing write-only credentials."""

from __future__ import annotations

import json

import sqlalchemy as sa

from server.app_state import services
from server.db.models import AuditLog, PaymentGateway
from tests.conftest import add_user
from tests.payments_support import (  # noqa: F401
    business_owner,
    created_link,
    pay_app,
    pay_client,
    payment_env,
    paypal,
    paypal_server,
    shop,
    tranzila,
    tranzila_server,
)


def test_the_owner_enables_payments_and_picks_the_default_provider(make_app, paypal, tranzila):
    app = make_app(**payment_env(paypal, tranzila))
    client = app.test_client()
    owner = business_owner(app)
    assert client.post("/api/crm/payments/create", json={"amount": "5"}, headers=owner.headers).status_code == 403
    agent = add_user(services(app).database, owner.business_id, "agent")
    assert (
        client.put("/api/crm/payments/settings", json={"payments_enabled": True}, headers=agent.headers).status_code
        == 403
    )
    response = client.put(
        "/api/crm/payments/settings",
        headers=owner.headers,
        json={"payments_enabled": True, "default_payment_provider": "tranzila"},
    )
    assert response.get_json() == {"payments_enabled": True, "default_payment_provider": "tranzila"}
    assert created_link(client, owner)["provider"] == "tranzila"
    assert client.get("/api/crm/payments/settings", headers=owner.headers).get_json()["payments_enabled"] is True
    for bad in ({"payments_enabled": "yes"}, {"default_payment_provider": "stripe"}, {"colour": "red"}):
        assert client.put("/api/crm/payments/settings", json=bad, headers=owner.headers).status_code == 400, bad


def test_gateway_secrets_are_write_only(pay_app, pay_client, shop):
    response = pay_client.put(
        "/api/crm/payments/gateways/paypal",
        headers=shop.headers,
        json={"client_id": "biz-client", "client_secret": "s3cr3t-value", "webhook_id": "WH-9"},
    )
    assert response.status_code == 200
    view = response.get_json()
    assert view["settings"] == {"client_id": "biz-client", "webhook_id": "WH-9"}
    assert view["secrets_set"] == {"client_secret": True}
    assert view["business_credentials_complete"] is True
    listed = pay_client.get("/api/crm/payments/gateways", headers=shop.headers).get_json()
    everything = json.dumps(listed) + json.dumps(view)
    assert "s3cr3t-value" not in everything
    assert [g["provider"] for g in listed["gateways"]] == ["paypal", "tranzila"]
    with services(pay_app).database.scope() as session:
        row = session.scalar(sa.select(PaymentGateway).where(PaymentGateway.business_id == shop.business_id))
        # stored sealed (secrets at rest), opened by the app's key only
        assert row.settings["client_secret"].startswith("enc:v1:") and "s3cr3t" not in json.dumps(row.settings)
        assert services(pay_app).secrets_box.open(row.settings["client_secret"]) == "s3cr3t-value"
        details = [
            a.details for a in session.scalars(sa.select(AuditLog).where(AuditLog.action == "payment_gateway.updated"))
        ]
    assert details == [{"provider": "paypal", "changed": ["client_id", "client_secret", "webhook_id"]}]
    assert "s3cr3t-value" not in json.dumps(details)

    # fields left out stay; null clears; the secret is never echoed
    kept = pay_client.put("/api/crm/payments/gateways/paypal", json={"webhook_id": None}, headers=shop.headers)
    assert kept.get_json()["secrets_set"] == {"client_secret": True}
    assert kept.get_json()["settings"] == {"client_id": "biz-client", "webhook_id": None}


def test_gateway_updates_are_validated_and_owner_only(pay_app, pay_client, shop):
    agent = add_user(services(pay_app).database, shop.business_id, "agent")
    assert (
        pay_client.put("/api/crm/payments/gateways/paypal", json={"client_id": "x"}, headers=agent.headers).status_code
        == 403
    )
    assert pay_client.get("/api/crm/payments/gateways", headers=agent.headers).status_code == 403
    assert pay_client.put("/api/crm/payments/gateways/stripe", json={}, headers=shop.headers).status_code == 404
    for provider, bad in (
        ("paypal", {"terminal": "x"}),
        ("tranzila", {"mode": "cgi"}),
        ("paypal", {"client_id": 5}),
        ("paypal", {"enabled": "no"}),
        ("tranzila", {"terminal": "t" * 201}),
    ):
        response = pay_client.put(f"/api/crm/payments/gateways/{provider}", json=bad, headers=shop.headers)
        assert response.status_code == 400, bad


def test_a_business_terminal_replaces_the_servers(pay_app, pay_client, shop, tranzila):
    response = pay_client.put(
        "/api/crm/payments/gateways/tranzila", headers=shop.headers, json={"terminal": "bizterminal"}
    )
    assert response.get_json()["business_credentials_complete"] is True
    link = created_link(pay_client, shop, provider="tranzila")
    opened = pay_client.get(link["url"].split("agent.example.test", 1)[1])
    assert opened.headers["Location"].startswith(f"{tranzila.url}/bizterminal/iframenew.php?")
    assert "thtk=" not in opened.headers["Location"]  # the business gave no API keys: never the server's
    off = pay_client.put("/api/crm/payments/gateways/tranzila", json={"enabled": False}, headers=shop.headers)
    assert off.get_json()["enabled"] is False
    response = pay_client.post(
        "/api/crm/payments/create", json={"amount": "5", "provider": "tranzila"}, headers=shop.headers
    )
    assert response.status_code == 501

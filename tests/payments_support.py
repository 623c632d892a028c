"""Fixtures and helpers shared by the payments tests (imported by each `tests/test_payments_*.py`)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.models import AuditLog, Business, Invoice, Payment, User
from server.providers import paypal as paypal_client
from server.security.auth import issue_token
from testkit.fakes.paypal_server import FakePayPal
from testkit.fakes.tranzila_server import FakeTranzila
from tests.conftest import TEST_BASE_URL, Tenant


@pytest.fixture(scope="session")
def paypal_server():
    with FakePayPal() as fake:
        yield fake


@pytest.fixture(scope="session")
def tranzila_server():
    with FakeTranzila() as fake:
        yield fake


@pytest.fixture
def paypal(paypal_server) -> FakePayPal:
    paypal_server.reset()
    # Each test starts with a cold token cache, so that it sees its own OAuth call.
    paypal_client._token_cache.clear()
    return paypal_server


@pytest.fixture
def tranzila(tranzila_server) -> FakeTranzila:
    tranzila_server.reset()
    return tranzila_server


def payment_env(paypal: FakePayPal, tranzila: FakeTranzila, **overrides: str) -> dict[str, str]:
    """Environment variables pointing the app at both fakes (system-wide credentials)."""
    env = {
        "PAYPAL_CLIENT_ID": paypal.client_id,
        "PAYPAL_CLIENT_SECRET": paypal.client_secret,
        "PAYPAL_WEBHOOK_ID": paypal.webhook_id,
        "PAYPAL_API_BASE_URL": paypal.url,
        "TRANZILA_TERMINAL": tranzila.terminal,
        "TRANZILA_API_APP_KEY": tranzila.app_key,
        "TRANZILA_API_SECRET": tranzila.secret,
        "TRANZILA_API_BASE_URL": tranzila.url,
        "TRANZILA_IFRAME_BASE_URL": tranzila.url,
        "PAYMENTS_HTTP_TIMEOUT_SECONDS": "3",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


@pytest.fixture
def pay_app(make_app, paypal, tranzila):
    return make_app(**payment_env(paypal, tranzila))


@pytest.fixture
def pay_client(pay_app):
    return pay_app.test_client()


def business_owner(app, *, name: str = "Salon Dana", **business_fields: Any) -> Tenant:
    """A business and its owner's bearer token, without `create_tenant`'s password hashing (these owners
    only ever use tokens, and scrypt would dominate the run time of these tests)."""
    with services(app).database.scope() as session:
        business = Business(name=name, **business_fields)
        session.add(business)
        session.flush()
        user = User(
            business_id=business.id, email=f"owner-{uuid.uuid4().hex[:8]}@example.test", password_hash="", role="owner"
        )
        session.add(user)
        session.flush()
        return Tenant(business.id, user.id, issue_token(session, user), "", "")


@pytest.fixture
def shop(pay_app) -> Tenant:
    """A business with payments enabled, and its owner's token."""
    return business_owner(pay_app, payments_enabled=True)


def path_of(url: str) -> str:
    """The path and query of an absolute URL of the app (what the test client requests)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == TEST_BASE_URL, url
    return parts.path + (f"?{parts.query}" if parts.query else "")


def create_link(client, tenant, *, key: str | None = None, **body: Any):
    headers = dict(tenant.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/api/crm/payments/create", json={"amount": "49.90", **body}, headers=headers)


def created_link(client, tenant, **body: Any) -> dict[str, Any]:
    response = create_link(client, tenant, **body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def payment_row(app, payment_id: int) -> Payment:
    with services(app).database.scope() as session:
        return session.get(Payment, payment_id)


def audit_actions(app, payment_id: int) -> list[str]:
    with services(app).database.scope() as session:
        return list(
            session.scalars(
                sa.select(AuditLog.action)
                .where(AuditLog.entity_type == "payment", AuditLog.entity_id == str(payment_id))
                .order_by(AuditLog.id)
            )
        )


def add_invoice(app, business_id: int, *, amount_minor: int = 4990, status: str = "issued", **fields: Any) -> int:
    with services(app).database.scope() as session:
        invoice = Invoice(
            business_id=business_id, amount_minor=amount_minor, currency="ILS", status=status, title="ייעוץ", **fields
        )
        session.add(invoice)
        session.flush()
        return invoice.id


def invoice_row(app, invoice_id: int) -> Invoice:
    with services(app).database.scope() as session:
        return session.get(Invoice, invoice_id)

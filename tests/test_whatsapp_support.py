"""Shared pieces of the WhatsApp tests: the providers' side of each webhook, the fakes wired into an
app, and small DB readers. (No tests here; the `test_whatsapp_*` modules import from it.)"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Callable

import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from server.app_state import services
from server.db.models import Customer, Message, Thread
from server.security import bridge_hmac
from testkit.fakes.bridge import FakeBridge
from testkit.fakes.twilio_rest import FakeTwilioRest
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN, Tenant, create_tenant

WA_SECRET = "test-wa-shared-secret"
WA_PREVIOUS_SECRET = "test-wa-previous-secret"
TWILIO_SENDER = "+97235550999"  # TWILIO_WA_FROM
CUSTOMER = "+972501234567"
TWILIO_INBOUND = "/webhook/whatsapp/twilio"
TWILIO_STATUS = "/webhook/whatsapp/twilio/status"
BAILEYS = "/webhook/whatsapp/baileys"
SEND = "/api/whatsapp/send"


# ---- Twilio's side -------------------------------------------------------------------------
def new_message_sid() -> str:
    return "SM" + secrets.token_hex(16)


def twilio_form(
    to: str, *, sid: str | None = None, from_: str = CUSTOMER, body: str = "שלום, יש תור מחר?", **extra: str
) -> dict[str, str]:
    """The form Twilio posts for an inbound WhatsApp message."""
    sid = sid or new_message_sid()
    return {
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ProfileName": "דנה",
        "MessageType": "text",
        "SmsSid": sid,
        "WaId": from_.lstrip("+"),
        "SmsStatus": "received",
        "Body": body,
        "To": f"whatsapp:{to}",
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": sid,
        "AccountSid": BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
        "From": f"whatsapp:{from_}",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def status_form(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
        "From": f"whatsapp:{TWILIO_SENDER}",
        "To": f"whatsapp:{CUSTOMER}",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def post_twilio(client, path: str, form: dict[str, str], *, signature: str | None = None):
    """POST `form` as Twilio does, signed over the public URL with the account's auth token."""
    if signature is None:
        signature = RequestValidator(TEST_TWILIO_TOKEN).compute_signature(TEST_BASE_URL + path, form)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    return finished(client.post(path, data=form, headers=headers))


# ---- the bridge's side ---------------------------------------------------------------------
def bridge_message(
    to: str,
    *,
    msg_id: str | None = None,
    from_: str | None = CUSTOMER,
    lid: str | None = None,
    text: str = "שלום, אפשר לקבוע תור?",
    push_name: str = "דנה",
) -> dict[str, Any]:
    phone_or_lid = (from_ or lid or "").lstrip("+")
    chat = f"{phone_or_lid}@s.whatsapp.net" if from_ else lid
    return {
        "event": "message",
        "id": msg_id or "3EB0" + secrets.token_hex(8).upper(),
        "chat": chat,
        "from": from_,
        "lid": lid,
        "push_name": push_name,
        "text": text,
        "timestamp": int(time.time()),
        "to": to,
    }


def post_bridge(
    client,
    event: dict[str, Any] | bytes,
    *,
    secret: str = WA_SECRET,
    timestamp: int | None = None,
    header: str | None = None,
):
    raw = event if isinstance(event, bytes) else json.dumps(event, ensure_ascii=False).encode("utf-8")
    if header is None:
        header = bridge_hmac.sign(secret, raw, timestamp)
    headers = {bridge_hmac.HEADER: header} if header else {}
    return finished(client.post(BAILEYS, data=raw, headers={"Content-Type": "application/json", **headers}))


def finished(response):
    """Read and close the response as a WSGI server does (which runs its `call_on_close` callbacks)."""
    response.get_data()
    response.close()
    return response


# ---- the app with its fakes ----------------------------------------------------------------
@pytest.fixture(scope="module")
def bridge_server():
    with FakeBridge(WA_SECRET) as fake:
        yield fake


@pytest.fixture
def bridge(bridge_server):
    """The module's bridge fake, answering as a new one does with nothing recorded (and so one app, lent
    from the session's pool, serves every test that points at it)."""
    return bridge_server.reset()


@pytest.fixture(scope="module")
def twilio_server():
    with FakeTwilioRest(account_sid=BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], auth_token=TEST_TWILIO_TOKEN) as fake:
        yield fake


@pytest.fixture
def twilio_api(twilio_server):
    """The module's Twilio REST fake, emptied and answering normally (stopping a server costs 0.5 s)."""
    twilio_server.succeed("Messages")
    twilio_server.requests.clear()
    twilio_server.messages.clear()
    return twilio_server


@pytest.fixture
def wa_env(bridge, twilio_api) -> Callable[..., dict[str, str]]:
    """Environment for an app with both providers enabled and pointed at the fakes."""

    def env(**overrides: str) -> dict[str, str]:
        return {
            "ENABLE_WA_TWILIO": "true",
            "TWILIO_WA_FROM": f"whatsapp:{TWILIO_SENDER}",
            "TWILIO_API_BASE_URL": twilio_api.url,
            "TWILIO_API_TIMEOUT_SECONDS": "1",
            "ENABLE_WA_BAILEYS": "true",
            "WA_SHARED_SECRET": WA_SECRET,
            "WA_BAILEYS_URL": bridge.url,
            "WA_BAILEYS_TIMEOUT_SECONDS": "1",
            "WA_PROVIDER_PRIORITY": "baileys,twilio",
            **overrides,
        }

    return env


@pytest.fixture
def wa_client(wa_app):
    """A client of the test module's `wa_app`."""
    return wa_app.test_client()


@pytest.fixture
def wa_db(wa_app):
    return services(wa_app).database


@pytest.fixture
def tenant(wa_db) -> Tenant:
    """Business A on the module's app (conftest's `tenant` would build a second app for it)."""
    return create_tenant(wa_db)


# ---- reading the CRM -----------------------------------------------------------------------
def messages(db, **where: Any) -> list[Message]:
    with db.scope() as session:
        query = sa.select(Message).order_by(Message.id)
        for name, value in where.items():
            query = query.where(getattr(Message, name) == value)
        return list(session.scalars(query))


def customers(db, business_id: int) -> list[Customer]:
    with db.scope() as session:
        return list(
            session.scalars(sa.select(Customer).where(Customer.business_id == business_id).order_by(Customer.id))
        )


def threads(db, business_id: int) -> list[Thread]:
    with db.scope() as session:
        return list(session.scalars(sa.select(Thread).where(Thread.business_id == business_id).order_by(Thread.id)))


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)

"""Each business on its own Twilio WhatsApp sender: staff sends and AI replies go out from the
business's own number or Messaging Service (the REST fake records From / MessagingServiceSid and,
like Twilio, refuses a From that isn't one of the account's senders); TWILIO_WA_FROM only for a
business with neither. Admins set the sender through the admin API."""

from __future__ import annotations

import pytest

from server.db.models import Business
from testkit.jobs import InProcessJobs
from tests.conftest import create_tenant
from tests.test_whatsapp_auto_reply import llm, llm_server, replies, set_auto_reply  # noqa: F401
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    SEND,
    TWILIO_INBOUND,
    TWILIO_SENDER,
    bridge,
    bridge_server,
    post_twilio,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_env,
    wait_for,
)

SERVICE_SID = "MG" + "a1" * 16
SENDER_URL = "/api/admin/businesses/{}/whatsapp_sender"


@pytest.fixture
def app(make_app, wa_env, llm):  # noqa: F811
    """The app with its background jobs (the AI replies) run as the jobs worker would."""
    app = make_app(**wa_env(WA_PROVIDER_PRIORITY="twilio", OPENAI_API_KEY=llm.api_key, OPENAI_BASE_URL=llm.base_url))
    with InProcessJobs(app):
        yield app


@pytest.fixture
def wa_db(app):
    from server.app_state import services

    return services(app).database


@pytest.fixture
def senders(twilio_api):  # noqa: F811
    """The account's WhatsApp senders, as Twilio knows them: the two businesses' numbers and the default."""
    twilio_api.whatsapp_senders = {f"whatsapp:{n}" for n in ("+97235550002", "+97235550102", TWILIO_SENDER)}
    yield twilio_api
    twilio_api.whatsapp_senders = None


@pytest.fixture
def admin(wa_db):
    return create_tenant(wa_db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")


def staff_send(client, tenant, text: str):
    return client.post(SEND, json={"to": CUSTOMER, "text": text, "provider": "twilio"}, headers=tenant.headers)


def test_two_businesses_reply_from_their_own_senders(app, wa_db, senders, admin):
    client = app.test_client()
    salon = create_tenant(wa_db)
    garage = create_tenant(wa_db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102")
    as_admin = admin.headers
    response = client.put(SENDER_URL.format(garage.business_id), json={"twilio_sender": SERVICE_SID}, headers=as_admin)
    assert response.status_code == 200 and response.get_json() == {
        "id": garage.business_id,
        "twilio_sender": SERVICE_SID,
    }
    assert staff_send(client, salon, "שלום מהמספרה").status_code == 200
    assert staff_send(client, garage, "שלום מהמוסך").status_code == 200
    salon_send, garage_send = senders.requests_for("Messages")
    assert salon_send.form["From"] == "whatsapp:+97235550002" and "MessagingServiceSid" not in salon_send.form
    assert garage_send.form["MessagingServiceSid"] == SERVICE_SID and "From" not in garage_send.form


def test_ai_replies_leave_from_the_business_sender(app, wa_db, senders, llm):  # noqa: F811
    client = app.test_client()
    garage = create_tenant(wa_db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102")
    set_auto_reply(wa_db, garage.business_id)
    llm.replies_for["מתי אתם פתוחים?"] = "א-ה 8:00-17:00"
    assert post_twilio(client, TWILIO_INBOUND, twilio_form(garage.whatsapp, body="מתי אתם פתוחים?")).status_code == 204
    [reply] = wait_for(lambda: replies(wa_db), timeout=15)
    assert (reply.provider, reply.status) == ("twilio", "sent")
    [request] = senders.requests_for("Messages")
    assert request.form["From"] == "whatsapp:+97235550102" and request.form["Body"] == "א-ה 8:00-17:00"


def test_a_business_without_a_sender_uses_the_default(app, wa_db, senders):
    client = app.test_client()
    tenant = create_tenant(wa_db)
    with wa_db.scope() as session:
        business = session.get_one(Business, tenant.business_id)
        for number in list(business.numbers):
            if number.kind == "whatsapp":
                business.numbers.remove(number)
                session.delete(number)
    assert staff_send(client, tenant, "שלום").status_code == 200
    [request] = senders.requests_for("Messages")
    assert request.form["From"] == f"whatsapp:{TWILIO_SENDER}"


def test_another_of_its_numbers_as_the_sender(app, wa_db, senders, admin):
    client = app.test_client()
    salon = create_tenant(wa_db)
    assigned = client.put(
        f"/api/admin/businesses/{salon.business_id}/numbers",
        json={"whatsapp_numbers": ["+97235550002", "+97235550102"]},
        headers=admin.headers,
    )
    assert assigned.status_code == 200, assigned.get_json()
    chosen = client.put(
        SENDER_URL.format(salon.business_id), json={"twilio_sender": "035550102"}, headers=admin.headers
    )
    assert chosen.get_json()["twilio_sender"] == "+97235550102"
    assert staff_send(client, salon, "שלום").status_code == 200
    assert senders.requests_for("Messages")[-1].form["From"] == "whatsapp:+97235550102"
    # The number taken away again: the business falls back to its first number, not a stranger's.
    client.put(
        f"/api/admin/businesses/{salon.business_id}/numbers",
        json={"whatsapp_numbers": ["+97235550002"]},
        headers=admin.headers,
    )
    assert staff_send(client, salon, "שוב שלום").status_code == 200
    assert senders.requests_for("Messages")[-1].form["From"] == "whatsapp:+97235550002"
    cleared = client.put(SENDER_URL.format(salon.business_id), json={"twilio_sender": None}, headers=admin.headers)
    assert cleared.get_json() == {"id": salon.business_id, "twilio_sender": None}


def test_twilio_refuses_a_sender_it_does_not_know(app, wa_db, senders):
    client = app.test_client()
    salon = create_tenant(wa_db, whatsapp="+97235550777")  # not registered with Twilio
    response = staff_send(client, salon, "שלום")
    assert response.status_code == 502 and response.get_json()["error"] == "send_failed"
    assert "63007" in response.get_json()["message"]


@pytest.mark.parametrize(
    "body, status, error, field",
    [
        ({"twilio_sender": "+97235550999"}, 422, "not_a_business_number", "twilio_sender"),
        ({"twilio_sender": "MG123"}, 400, "invalid_field", "twilio_sender"),
        ({"twilio_sender": 7}, 400, "invalid_field", "twilio_sender"),
        ({}, 400, "invalid_field", "twilio_sender"),
        ({"twilio_sender": None, "sender": "x"}, 400, "invalid_field", "sender"),
    ],
)
def test_bad_senders_are_refused(app, wa_db, admin, body, status, error, field):
    salon = create_tenant(wa_db)
    response = app.test_client().put(SENDER_URL.format(salon.business_id), json=body, headers=admin.headers)
    assert response.status_code == status, response.get_json()
    assert (response.get_json()["error"], response.get_json().get("field")) == (error, field)
    with wa_db.scope() as session:
        assert session.get_one(Business, salon.business_id).twilio_sender is None


def test_only_admins_set_senders_and_only_of_real_businesses(app, wa_db, admin):
    client = app.test_client()
    salon = create_tenant(wa_db)
    owner = client.put(SENDER_URL.format(salon.business_id), json={"twilio_sender": SERVICE_SID}, headers=salon.headers)
    assert owner.status_code == 403
    missing = client.put(SENDER_URL.format(999_999), json={"twilio_sender": SERVICE_SID}, headers=admin.headers)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    broken = client.put(
        SENDER_URL.format(salon.business_id),
        data="{not json",
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert broken.status_code == 400

"""No field of a signed WhatsApp webhook turns it into a 500, on PostgreSQL (the stricter database:
bounded VARCHARs, no NUL in text, no unpaired surrogate in JSON); what can be stored is stored,
normalised: truncated to its column, without NULs, lone surrogates replaced."""

from __future__ import annotations

import itertools
import json
import string
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app_factory import create_app
from server.app_state import services
from server.db.models import Business, BusinessNumber, Customer, Message, ServiceState
from tests.conftest import make_settings, truncate_all
from tests.test_whatsapp_support import (
    CUSTOMER,
    TWILIO_INBOUND,
    TWILIO_STATUS,
    WA_SECRET,
    bridge_message,
    post_bridge,
    post_twilio,
    twilio_form,
)

EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# A form can carry any character but a lone surrogate (it has no UTF-8 to send); JSON's `\ud800`
# escapes can carry those too.
form_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
json_text = st.text(st.characters(), max_size=300)
long_text = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=150, max_size=2000),
    st.just("ש" * 201),
    st.just("a\x00" * 150),
)
ids = st.one_of(
    st.text(string.ascii_letters + string.digits, min_size=1, max_size=40),
    json_text,
    st.text(min_size=120, max_size=400),
)


@pytest.fixture(scope="module")
def pg_app(pg_database, tmp_path_factory):
    jobs = tmp_path_factory.mktemp("jobs") / "jobs.db"
    app = create_app(
        make_settings(
            DATABASE_URL=pg_database, JOBS_URL=f"sqlite:///{jobs}", WA_SHARED_SECRET=WA_SECRET, LOG_LEVEL="WARNING"
        )
    )
    app.config["TESTING"] = True
    yield app
    services(app).database.engine.dispose()


@pytest.fixture
def setup(pg_app, pg_database):
    """Call for a fresh start (each hypothesis example): a new business with numbers of its own."""
    truncate_all(pg_database)
    numbers = itertools.count(1000000)
    database = services(pg_app).database

    def fresh():
        whatsapp = f"+9723{next(numbers)}"
        with database.scope() as session:
            business = Business(name="סלון דנה")
            session.add(business)
            session.flush()
            session.add(BusinessNumber(business_id=business.id, number=whatsapp, kind="whatsapp"))
            tenant = SimpleNamespace(business_id=business.id, whatsapp=whatsapp)
        return pg_app.test_client(), database, tenant

    return fresh


def assert_no_500(response, sent) -> None:
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True), sent)


# ---- Twilio: inbound message ---------------------------------------------------------------------
@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "MessageSid": ids,
            "Body": st.one_of(form_text, long_text),
            "ProfileName": st.one_of(form_text, long_text),
            "NumMedia": form_text,
            "MediaUrl0": form_text,
            "MediaContentType0": form_text,
            "Latitude": form_text,
            "Longitude": form_text,
            "Address": form_text,
            "Label": form_text,
            "MessageType": form_text,
            "From": st.one_of(form_text, st.just("whatsapp:" + CUSTOMER)),
            "WaId": form_text,
            "MessageStatus": st.sampled_from(["", "received", "delivered", "x" * 300]),
        },
    )
)
def test_any_signed_twilio_inbound_field_is_never_a_500(setup, fields):
    client, database, tenant = setup()
    form = {**twilio_form(tenant.whatsapp), **{k: v.replace("\r", "") for k, v in fields.items()}}
    response = post_twilio(client, TWILIO_INBOUND, form)
    assert_no_500(response, form)


@FUZZ
@given(name=st.one_of(form_text, long_text), body=st.one_of(form_text, long_text))
def test_a_twilio_message_with_any_profile_name_and_body_is_stored(setup, name, body):
    client, database, tenant = setup()
    form = twilio_form(tenant.whatsapp, body=body.replace("\r", ""), ProfileName=name.replace("\r", ""))
    assert post_twilio(client, TWILIO_INBOUND, form).status_code == 204
    with database.scope() as session:
        [message] = session.scalars(sa.select(Message).where(Message.business_id == tenant.business_id)).all()
        [customer] = session.scalars(sa.select(Customer).where(Customer.business_id == tenant.business_id)).all()
    assert message.body == form["Body"].replace("\x00", "")
    assert customer.name == form["ProfileName"].replace("\x00", "")[:200]


# ---- Twilio: status callback ---------------------------------------------------------------------
@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "MessageSid": ids,
            "MessageStatus": st.one_of(form_text, st.sampled_from(["failed", "undelivered", "read"])),
            "ErrorCode": st.one_of(form_text, long_text),
            "ErrorMessage": st.one_of(form_text, long_text),
        },
    )
)
def test_any_signed_twilio_status_field_is_never_a_500(setup, fields):
    client, database, tenant = setup()
    form = {"AccountSid": "AC" + "0" * 32, "MessageSid": "SM" + "1" * 32, **fields}
    form = {k: v.replace("\r", "") for k, v in form.items()}
    assert_no_500(post_twilio(client, TWILIO_STATUS, form), form)


# ---- the Baileys bridge --------------------------------------------------------------------------
def _bridge_post(client, event):
    raw = json.dumps(event, ensure_ascii=True).encode("ascii")  # `\ud800` escapes survive as such
    return post_bridge(client, raw)


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "id": ids,
            "chat": ids,
            "from": st.one_of(st.none(), json_text, st.just(CUSTOMER)),
            "lid": st.one_of(st.none(), json_text, json_text.map(lambda s: s + "@lid"), st.just("9" * 70 + "@lid")),
            "push_name": st.one_of(st.none(), json_text, long_text),
            "text": st.one_of(json_text, long_text),
            "timestamp": st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), json_text),
        },
    )
)
def test_any_signed_bridge_message_field_is_never_a_500(setup, fields):
    client, database, tenant = setup()
    event = {**bridge_message(tenant.whatsapp), **fields}
    assert_no_500(_bridge_post(client, event), event)


@FUZZ
@given(name=st.one_of(json_text, long_text), text=st.one_of(json_text, long_text))
def test_a_bridge_message_with_any_push_name_and_text_is_stored(setup, name, text):
    client, database, tenant = setup()
    response = _bridge_post(client, bridge_message(tenant.whatsapp, text=text, push_name=name))
    assert response.status_code == 204, response.get_data(as_text=True)
    with database.scope() as session:
        assert len(session.scalars(sa.select(Message).where(Message.business_id == tenant.business_id)).all()) == 1
        [customer] = session.scalars(sa.select(Customer).where(Customer.business_id == tenant.business_id)).all()
    assert len(customer.name) <= 200 and "\x00" not in customer.name


@FUZZ
@given(
    event=st.one_of(
        st.fixed_dictionaries({"event": st.just("status"), "id": ids, "status": json_text}),
        st.fixed_dictionaries(
            {"event": st.just("connection"), "state": json_text, "qr": st.one_of(st.booleans(), json_text)}
        ),
        st.dictionaries(json_text, st.one_of(json_text, st.integers(), st.none()), max_size=5).map(
            lambda extra: {**extra, "event": "message"}
        ),
    )
)
def test_any_signed_bridge_status_or_connection_event_is_never_a_500(setup, event):
    client, database, tenant = setup()
    assert_no_500(_bridge_post(client, event), event)


def test_a_connection_state_the_database_cannot_store_is_stored_without_it(setup):
    client, database, tenant = setup()
    response = _bridge_post(client, {"event": "connection", "state": "op\x00en\ud800", "qr": False})
    assert response.status_code == 204
    with database.scope() as session:
        assert session.get(ServiceState, "baileys_bridge").value["state"] == "open\ufffd"


def test_a_200_character_name_limit_and_a_lone_surrogate_by_example(setup):
    client, database, tenant = setup()
    form = twilio_form(tenant.whatsapp, ProfileName="ש" * 500)
    assert post_twilio(client, TWILIO_INBOUND, form).status_code == 204
    event = bridge_message(tenant.whatsapp, from_="+972507654321", text="שלום \ud83d", push_name="x\ud800" * 300)
    assert _bridge_post(client, event).status_code == 204
    with database.scope() as session:
        names = sorted(session.scalars(sa.select(Customer.name).where(Customer.business_id == tenant.business_id)))
        bodies = session.scalars(
            sa.select(Message.body).where(Message.business_id == tenant.business_id).order_by(Message.id)
        ).all()
    assert names == sorted(["ש" * 200, ("x\ufffd" * 100)])
    assert bodies[-1] == "שלום \ufffd"

"""Bad input from outside is a clear 4xx with nothing stored, never a 500; phone numbers typed in any
script's digits are the same number."""

from __future__ import annotations

import json
import time

import pytest
import requests
import sqlalchemy as sa

from server.db.models import Business, Call, Message
from server.phones import search_variants, to_e164
from server.voice.protocol import ProtocolError, parse_message
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, add_user
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    TWILIO_INBOUND,
    WA_SECRET,
    bridge,
    bridge_message,
    bridge_server,
    customers,
    messages,
    post_bridge,
    post_twilio,
    tenant,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_client,
    wa_db,
    wa_env,
)

CUSTOMERS = "/api/crm/customers"
ARABIC_INDIC = str.maketrans("0123456789+", "٠١٢٣٤٥٦٧٨٩+")
FULL_WIDTH = str.maketrans("0123456789+", "０１２３４５６７８９＋")


@pytest.fixture
def wa_app(make_app):
    return make_app(WA_SHARED_SECRET=WA_SECRET)


def nested(depth: int) -> str:
    return '{"name": ' + "[" * depth + "]" * depth + ', "phone": "0501234567"}'


# ---- the bridge's signature header ---------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [
        "t=²,v1=" + "0" * 64,  # a digit to str.isdigit, not to int()
        "t=" + "9" * 5000 + ",v1=" + "0" * 64,  # over int()'s 4300-digit limit
        "t=٣,v1=" + "0" * 64,  # an Arabic-Indic digit
        pytest.param(
            f"t={int(time.time())},v1=²",  # hmac.compare_digest refuses non-ASCII text
            id="t=now,v1=²",
        ),  # (an id that is the same in every process)
    ],
)
def test_a_malformed_bridge_signature_is_401_and_stores_nothing(wa_client, wa_db, tenant, header):
    response = post_bridge(wa_client, bridge_message(tenant.whatsapp), header=header)
    assert (response.status_code, response.json["error"]) == (401, "invalid_signature")
    assert response.json["message"] == "malformed signature header"
    assert messages(wa_db) == []


# ---- X-Business-Id -------------------------------------------------------------------------------
@pytest.mark.parametrize("acting_for", ["²", "٣", "9" * 5000, "99999999999"])
def test_an_admin_naming_a_business_that_is_no_number_gets_404(client, db, tenant, acting_for):
    admin = add_user(db, tenant.business_id, "admin")
    response = client.get(CUSTOMERS, headers={**admin.headers, "X-Business-Id": acting_for})
    assert (response.status_code, response.json["error"]) == (404, "not_found")
    assert client.get(CUSTOMERS, headers={**admin.headers, "X-Business-Id": str(tenant.business_id)}).status_code == 200


# ---- deeply nested JSON --------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [65, 5000, 200_000])
def test_deeply_nested_json_is_400_invalid_json_and_stores_nothing(client, db, tenant, depth):
    response = client.post(CUSTOMERS, data=nested(depth), content_type="application/json", headers=tenant.headers)
    assert (response.status_code, response.json["error"]) == (400, "invalid_json")
    assert "nests deeper than 64" in response.json["message"]
    login = client.post("/api/auth/login", data="[" * depth, content_type="application/json")
    assert (login.status_code, login.json["error"]) == (400, "invalid_json")
    assert customers(db, tenant.business_id) == []


def test_json_nested_up_to_the_limit_and_brackets_inside_strings_still_parse(client, db, tenant):
    body = nested(63).replace('"phone"', '"notes": "' + "[{" * 500 + '", "phone"')
    response = client.post(CUSTOMERS, data=body, content_type="application/json", headers=tenant.headers)
    # parsed: the error is about the (valid JSON) name field, not the JSON
    assert (response.status_code, response.json["error"], response.json["field"]) == (400, "invalid_field", "name")


def test_a_deeply_nested_media_stream_message_is_a_protocol_error():
    for raw in ("[" * 30_000, '{"event": "media", "media": ' + '{"a":' * 10_000 + "}" * 10_000 + "}"):
        with pytest.raises(ProtocolError, match="nests deeper"):
            parse_message(raw)


# ---- a body streamed without Content-Length ------------------------------------------------------
@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('chunked') / 'app.db'}"
    with GunicornServer({**BASE_TEST_ENV, "DATABASE_URL": url}) as server:
        yield server


def chunks(body: bytes, size: int = 64 * 1024):
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.slow
def test_a_chunked_body_over_the_limit_is_413_like_a_sized_one(gunicorn_server):
    login = gunicorn_server.url + "/api/auth/login"
    big = json.dumps({"email": "a@b.example", "password": "x" * 2_500_000}).encode()
    sized = requests.post(login, data=big, headers={"Content-Type": "application/json"}, timeout=10)
    assert (sized.status_code, sized.json()["error"]) == (413, "payload_too_large")
    chunked = requests.post(login, data=chunks(big), headers={"Content-Type": "application/json"}, timeout=10)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert (chunked.status_code, chunked.json()["error"]) == (413, "payload_too_large")
    assert chunked.json()["message"] == sized.json()["message"]
    # below the limit, and exactly at it, a chunked body is read whole
    for size in (200_000, 1024 * 1024):
        fits = json.dumps({"email": "a@b.example", "password": ""}).encode()
        fits = fits[:-1] + b" " * (size - len(fits)) + b"}"
        assert len(fits) == size
        response = requests.post(login, data=chunks(fits), headers={"Content-Type": "application/json"}, timeout=10)
        assert (response.status_code, response.json()["field"]) == (400, "password"), size
    assert "Traceback" not in gunicorn_server.logs()


# ---- phone numbers in any script's digits --------------------------------------------------------
@pytest.mark.parametrize(
    "typed",
    [
        "٠٥٠١٢٣٤٥٦٧",
        "۰۵۰۱۲۳۴۵۶۷",
        "０５０-１２３-４５６７",
        "＋９７２５０１２３４５６７",
        "whatsapp:+٩٧٢٥٠١٢٣٤٥٦٧",
        "९७२५०१२३४५६७",
    ],
)
def test_digits_of_any_script_are_read_as_ascii_digits(typed):
    assert to_e164(typed) == "+972501234567"


def test_search_variants_read_digits_of_any_script():
    assert search_variants("٠٥٠١٢") == search_variants("05012") == ["05012", "9725012"]


def test_whatsapp_from_and_to_in_other_digits_reach_the_same_customer_and_business(wa_client, wa_db, tenant):
    assert post_twilio(wa_client, TWILIO_INBOUND, twilio_form(tenant.whatsapp)).status_code == 204
    form = twilio_form(tenant.whatsapp.translate(FULL_WIDTH))
    form["From"] = "whatsapp:" + CUSTOMER.translate(ARABIC_INDIC)
    assert post_twilio(wa_client, TWILIO_INBOUND, form).status_code == 204
    event = bridge_message(tenant.whatsapp.translate(ARABIC_INDIC), from_=CUSTOMER.translate(FULL_WIDTH))
    assert post_bridge(wa_client, event, secret=WA_SECRET).status_code == 204
    [customer] = customers(wa_db, tenant.business_id)
    assert customer.phone == CUSTOMER
    assert len(messages(wa_db, direction="in")) == 3


def test_a_customer_typed_in_arabic_indic_digits_is_stored_in_ascii_and_found(client, db, tenant):
    response = client.post(CUSTOMERS, json={"phone": "٠٥٠١٢٣٤٥٦٧", "name": "דנה"}, headers=tenant.headers)
    assert response.status_code == 201 and response.json["phone"] == "+972501234567"
    duplicate = client.post(CUSTOMERS, json={"phone": "０５０１２３４５６７"}, headers=tenant.headers)
    assert (duplicate.status_code, duplicate.json["error"]) == (409, "duplicate_phone")
    found = client.get(CUSTOMERS, query_string={"q": "٠٥٠١٢٣"}, headers=tenant.headers)
    assert [c["phone"] for c in found.json["items"]] == ["+972501234567"]


def test_the_business_numbers_an_operator_types_are_stored_in_ascii(app, db):
    result = app.test_cli_runner().invoke(
        args=[
            "create-business",
            "--name",
            "סלון",
            "--phone",
            "٠٣-٥٥٥-٠٠٠١",
            "--whatsapp",
            "＋９７２ ３ ５５５ ０００２",
        ]
    )
    assert result.exit_code == 0, result.output
    business_id = json.loads(result.output.strip().splitlines()[-1])["id"]
    with db.scope() as session:
        business = session.get(Business, business_id)
        assert (business.numbers_of("voice"), business.numbers_of("whatsapp")) == (["+97235550001"], ["+97235550002"])


# ---- call webhooks: odd numbers in signed fields -------------------------------------------------
@pytest.mark.parametrize("duration", ["²", "٣", "9" * 20, "-5", ""])
def test_a_call_or_recording_duration_that_is_no_count_of_seconds_is_stored_as_unknown(client, db, tenant, duration):
    def post(path, params):
        return client.post(path, data=params, headers=signature_header(TEST_BASE_URL + path, params))

    call_sid = new_call_sid()
    assert post("/webhook/incoming_call", voice_params(call_sid, to=tenant.phone)).status_code == 200
    recording = voice_params(
        call_sid,
        to=tenant.phone,
        RecordingSid="RE" + "1" * 32,
        RecordingStatus="completed",
        RecordingUrl="https://api.twilio.com/recordings/RE1",
        RecordingDuration=duration,
    )
    assert post("/webhook/recording_status", recording).status_code == 204
    ended = voice_params(call_sid, to=tenant.phone, status="completed", CallDuration=duration)
    assert post("/webhook/call_status", ended).status_code == 204
    with db.scope() as session:
        call = session.scalar(sa.select(Call).where(Call.call_sid == call_sid))
        [voicemail] = session.scalars(sa.select(Message).where(Message.call_id == call.id)).all()
    assert (call.status, call.duration_seconds) == ("completed", None)
    assert voicemail.media[0]["duration_seconds"] is None


def test_a_recording_whose_sid_or_url_no_column_holds_is_ignored(client, db, tenant):
    call_sid = new_call_sid()
    path = "/webhook/incoming_call"
    params = voice_params(call_sid, to=tenant.phone)
    assert client.post(path, data=params, headers=signature_header(TEST_BASE_URL + path, params)).status_code == 200
    path = "/webhook/recording_status"
    for sid, url in (("RE" + "1" * 100, "https://api.twilio.com/r"), ("RE1", "https://api.twilio.com/" + "r" * 600)):
        params = voice_params(
            call_sid, to=tenant.phone, RecordingSid=sid, RecordingUrl=url, RecordingStatus="completed"
        )
        response = client.post(path, data=params, headers=signature_header(TEST_BASE_URL + path, params))
        assert response.status_code == 204
    with db.scope() as session:
        assert session.scalars(sa.select(Message).where(Message.kind == "voicemail")).all() == []


def test_content_variables_nested_too_deep_are_a_400(make_app, wa_env, tenant, bridge, twilio_api):
    client = make_app(**wa_env()).test_client()
    body = {"to": CUSTOMER, "content_sid": "HX1", "content_variables": "[" * 5000 + "]" * 5000, "provider": "twilio"}
    response = client.post("/api/whatsapp/send", json=body, headers=tenant.headers)
    assert (response.status_code, response.json["error"], response.json["field"]) == (
        400,
        "invalid_content_variables",
        "content_variables",
    )
    assert twilio_api.requests_for("Messages") == []

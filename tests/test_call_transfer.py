"""Handing a live call to a person (server/voice/transfer.py): the business's forwarding settings, the
`transfer_to_person` handler against the Twilio REST fake (opening hours, refusals, a REST failure,
another business's call), the whisper and the `<Dial action>` webhooks (signatures, unknown calls,
answered and unanswered dials)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from server.agent_tools.transfer import open_now
from server.appointments.schedule import set_exception, set_weekly_hours
from server.db.dao_crm import create_call
from server.db.models import AuditLog, Business, Call
from server.security.call_token import transfer_token
from server.voice.transfer import DIAL_RESULT_PATH, WHISPER_PATH, TransferDesk, in_own_session, transfer_to_person
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN, create_tenant, make_settings

APP_SECRET = BASE_TEST_ENV["APP_SECRET"]
CALLER = "+972501234567"
FORWARD_TO = "+972541112233"
# 2026-03-01 is a Sunday; Asia/Jerusalem is UTC+2 then.
SUNDAY_10_LOCAL = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
SUNDAY_22_LOCAL = datetime(2026, 3, 1, 20, 0, tzinfo=timezone.utc)
WORKING_WEEK = [{"weekday": day, "opens": "09:00", "closes": "17:00"} for day in range(5)]  # Sunday–Thursday


@pytest.fixture(scope="module")
def twilio_rest():
    with FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as fake:
        yield fake


@pytest.fixture
def app(make_app, twilio_rest):
    return make_app(TWILIO_API_BASE_URL=twilio_rest.url, WATCHDOG_SECONDS="600")


@pytest.fixture
def db(app):
    from server.app_state import services

    return services(app).database


@pytest.fixture
def tenant(db):
    tenant = create_tenant(db, name="סלון דנה", phone="+97235550001", whatsapp="+97235550002")
    with db.scope() as session:
        business = session.get_one(Business, tenant.business_id)
        business.transfer_number = FORWARD_TO
        business.transfer_announcement = "שיחה מהעוזרת של סלון דנה"
        set_weekly_hours(session, tenant.business_id, WORKING_WEEK)
    return tenant


def live_call(db, business_id: int, *, to: str = "+97235550001") -> str:
    sid = new_call_sid()
    with db.scope() as session:
        create_call(session, business_id, call_sid=sid, from_number=CALLER, to_number=to, status="in-progress")
    return sid


def desk(db, twilio_rest, at: datetime = SUNDAY_10_LOCAL) -> TransferDesk:
    settings = make_settings(TWILIO_API_BASE_URL=twilio_rest.url)
    return TransferDesk(
        settings=settings, app_secret=APP_SECRET, run=in_own_session(db), is_open=open_now, clock=lambda: at
    )


def call_row(db, sid: str) -> Call:
    with db.scope() as session:
        call = session.scalar(sa.select(Call).where(Call.call_sid == sid))
        session.expunge(call)
        return call


def post(client, path, params, *, signed=True, token=TEST_TWILIO_TOKEN):
    headers = signature_header(TEST_BASE_URL + path, params, token) if signed else {}
    return client.post(path, data=params, headers=headers)


def twiml(response) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    return ET.fromstring(response.data)


# ---- settings ---------------------------------------------------------------------------------
def test_owner_sets_the_forwarding_number_in_any_format_and_the_announcement(client, tenant, db):
    response = client.patch(
        "/api/crm/business",
        json={"transfer_number": "054-999-8877", "transfer_announcement": "  שיחה מהבוט  "},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["transfer_number"] == "+972549998877" and body["transfer_announcement"] == "  שיחה מהבוט  "
    assert client.get("/api/crm/business", headers=tenant.headers).get_json()["transfer_number"] == "+972549998877"
    cleared = client.patch("/api/crm/business", json={"transfer_number": None}, headers=tenant.headers)
    assert cleared.status_code == 200 and cleared.get_json()["transfer_number"] is None


@pytest.mark.parametrize(
    "body, field",
    [
        ({"transfer_number": "not a phone"}, "transfer_number"),
        ({"transfer_number": 972541112233}, "transfer_number"),
        ({"transfer_announcement": "x" * 301}, "transfer_announcement"),
        ({"transfer_announcement": "a\x00b"}, "transfer_announcement"),
    ],
)
def test_bad_transfer_settings_are_refused_naming_the_field(client, tenant, db, body, field):
    response = client.patch("/api/crm/business", json=body, headers=tenant.headers)
    assert response.status_code == 400 and response.get_json()["field"] == field
    with db.scope() as session:
        assert session.get_one(Business, tenant.business_id).transfer_number == FORWARD_TO


# ---- the handler ------------------------------------------------------------------------------
def test_outside_opening_hours_nothing_is_transferred_and_the_model_takes_a_message(db, tenant, twilio_rest):
    sid = live_call(db, tenant.business_id)
    result = transfer_to_person(
        desk(db, twilio_rest, SUNDAY_22_LOCAL), business_id=tenant.business_id, call_sid=sid, reason="רוצה לדבר עם דנה"
    )
    assert result["transferred"] is False and result["why"] == "closed"
    assert "closed" in result["instruction"] and "message" in result["instruction"]
    assert twilio_rest.requests_for("Calls", sid) == []
    assert call_row(db, sid).outcome is None


def test_a_closed_day_exception_wins_over_the_weekly_hours(db, tenant, twilio_rest):
    with db.scope() as session:
        set_exception(session, tenant.business_id, "2026-03-01", {"closed": True})
    sid = live_call(db, tenant.business_id)
    result = transfer_to_person(
        desk(db, twilio_rest, SUNDAY_10_LOCAL), business_id=tenant.business_id, call_sid=sid, reason=""
    )
    assert result["why"] == "closed" and twilio_rest.requests_for("Calls", sid) == []


def test_in_opening_hours_the_call_gets_a_dial_to_the_forwarding_number(db, tenant, twilio_rest):
    sid = live_call(db, tenant.business_id)
    result = transfer_to_person(
        desk(db, twilio_rest), business_id=tenant.business_id, call_sid=sid, reason="רוצה לדבר עם דנה על צבע"
    )
    assert result["transferred"] is True
    [update] = twilio_rest.requests_for("Calls", sid)
    assert update.method == "POST" and update.auth_user == BASE_TEST_ENV["TWILIO_ACCOUNT_SID"]
    root = ET.fromstring(update.form["Twiml"])
    assert [child.tag for child in root] == ["Say", "Dial"]
    assert root.find("Say").get("language") == "he-IL" and root.find("Say").text
    dial = twilio_rest.dial_of(sid)
    assert dial["number"] == FORWARD_TO
    assert dial["action"] == TEST_BASE_URL + DIAL_RESULT_PATH and dial["timeout"] == "20"
    assert dial["answerOnBridge"] == "true" and dial["callerId"] == CALLER
    whisper = urlsplit(dial["number_attributes"]["url"])
    assert f"{whisper.scheme}://{whisper.netloc}{whisper.path}" == TEST_BASE_URL + WHISPER_PATH
    assert parse_qs(whisper.query)["token"][0]
    call = call_row(db, sid)
    assert call.outcome == "transferred" and call.ended_at is None
    with db.scope() as session:
        [entry] = session.scalars(sa.select(AuditLog).where(AuditLog.action == "call.transferred")).all()
        assert entry.entity_id == sid and entry.details["to"] == FORWARD_TO
    again = transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=sid, reason="")
    assert again["why"] == "already_transferred" and len(twilio_rest.requests_for("Calls", sid)) == 1


def test_a_business_without_hours_is_open_and_one_without_a_number_never_transfers(db, tenant, twilio_rest):
    with db.scope() as session:
        set_weekly_hours(session, tenant.business_id, [])
    sid = live_call(db, tenant.business_id)
    assert transfer_to_person(
        desk(db, twilio_rest, SUNDAY_22_LOCAL), business_id=tenant.business_id, call_sid=sid, reason=""
    )["transferred"]
    with db.scope() as session:
        session.get_one(Business, tenant.business_id).transfer_number = None
    other = live_call(db, tenant.business_id)
    result = transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=other, reason="")
    assert result["why"] == "no_transfer_number" and twilio_rest.requests_for("Calls", other) == []


def test_a_rest_failure_is_an_error_for_the_model_and_the_call_goes_on(db, tenant, twilio_rest):
    sid = live_call(db, tenant.business_id)
    twilio_rest.fail("Calls", code=20003, status=401, sid=sid, times=1)
    result = transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=sid, reason="")
    assert result["transferred"] is False and "error" in result and "message" in result["instruction"]
    assert TEST_TWILIO_TOKEN not in str(result)
    call = call_row(db, sid)
    assert call.outcome is None and call.ended_at is None  # the AI goes on with the caller
    # once Twilio takes it again, the same call can be transferred
    assert transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=sid, reason="")[
        "transferred"
    ]


def test_another_business_call_or_an_unknown_or_finished_one_is_not_transferred(db, tenant, twilio_rest):
    other = create_tenant(db, name="מוסך משה", phone="+97235550101", whatsapp="+97235550102")
    theirs = live_call(db, other.business_id, to="+97235550101")
    result = transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=theirs, reason="")
    assert result["why"] == "unknown_call"
    unknown = transfer_to_person(
        desk(db, twilio_rest), business_id=tenant.business_id, call_sid=new_call_sid(), reason=""
    )
    assert unknown["why"] == "unknown_call"
    over = live_call(db, tenant.business_id)
    with db.scope() as session:
        session.scalar(sa.select(Call).where(Call.call_sid == over)).status = "completed"
    assert (
        transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=over, reason="")["why"]
        == "call_over"
    )
    assert twilio_rest.requests_for("Calls", theirs) == [] and twilio_rest.requests_for("Calls", over) == []
    assert call_row(db, theirs).outcome is None


# ---- the whisper ------------------------------------------------------------------------------
def test_the_whisper_tells_the_person_who_calls_and_why(client, db, tenant):
    sid = live_call(db, tenant.business_id)
    path = f"{WHISPER_PATH}?token={transfer_token(APP_SECRET, sid, 'רוצה לדבר עם דנה')}"
    params = {**voice_params(new_call_sid(), to=FORWARD_TO, from_=CALLER), "Direction": "outbound-dial"}
    root = twiml(post(client, path, params))
    say = root.find("Say")
    assert say.get("language") == "he-IL"
    assert "שיחה מהעוזרת של סלון דנה" in say.text and "0 5 0 1 2 3 4 5 6 7" in say.text
    assert "רוצה לדבר עם דנה" in say.text
    assert post(client, path, params, token="wrong").status_code == 403


def test_a_forged_or_expired_whisper_token_is_a_404(client, db, tenant):
    sid = live_call(db, tenant.business_id)
    params = voice_params(new_call_sid(), to=FORWARD_TO)
    for token in (
        transfer_token("another secret", sid, "x"),
        transfer_token(APP_SECRET, sid, "x", issued_at=time.time() - 3600),
        "garbage",
    ):
        response = post(client, f"{WHISPER_PATH}?token={token}", params)
        assert response.status_code == 404 and response.get_json()["error"] in {"unknown_transfer", "not_found"}
    assert post(client, WHISPER_PATH, params).status_code == 404


# ---- the end of the dial ----------------------------------------------------------------------
def dial_params(sid: str, status: str) -> dict[str, str]:
    return voice_params(sid, status="in-progress", DialCallStatus=status, DialCallSid=new_call_sid())


@pytest.mark.parametrize(
    "status, outcome",
    [
        ("no-answer", "transfer_no_answer"),
        ("busy", "transfer_busy"),
        ("failed", "transfer_failed"),
        ("canceled", "transfer_canceled"),
    ],
)
def test_an_unanswered_dial_takes_a_message_and_the_crm_says_so(client, db, tenant, twilio_rest, status, outcome):
    sid = live_call(db, tenant.business_id)
    assert transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=sid, reason="")[
        "transferred"
    ]
    for _ in range(2):  # Twilio retries: the same answer, one audit entry
        root = twiml(post(client, DIAL_RESULT_PATH, dial_params(sid, status)))
        assert [child.tag for child in root] == ["Play", "Record", "Hangup"]
    assert call_row(db, sid).outcome == outcome
    with db.scope() as session:
        [entry] = session.scalars(sa.select(AuditLog).where(AuditLog.action == "call.transfer_unanswered")).all()
        assert entry.details["dial_status"] == status
    detail = client.get(f"/api/crm/calls/{sid}", headers=tenant.headers).get_json()
    assert detail["outcome"] == outcome


def test_an_answered_dial_hangs_up(client, db, tenant, twilio_rest):
    sid = live_call(db, tenant.business_id)
    transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=sid, reason="")
    params = {**dial_params(sid, "completed"), "DialCallDuration": "42"}
    root = twiml(post(client, DIAL_RESULT_PATH, params))
    assert [child.tag for child in root] == ["Hangup"]
    assert call_row(db, sid).outcome == "transferred"
    with db.scope() as session:
        [entry] = session.scalars(sa.select(AuditLog).where(AuditLog.action == "call.transfer_answered")).all()
        assert entry.details["dial_seconds"] == 42


def test_dial_result_refuses_a_wrong_signature_an_unknown_call_and_a_missing_status(client, db, tenant):
    sid = live_call(db, tenant.business_id)
    forged = post(client, DIAL_RESULT_PATH, dial_params(sid, "no-answer"), token="not-twilio")
    assert forged.status_code == 403 and forged.get_json()["error"] == "invalid_signature"
    unsigned = post(client, DIAL_RESULT_PATH, dial_params(sid, "no-answer"), signed=False)
    assert unsigned.status_code == 403
    assert call_row(db, sid).outcome is None
    unknown = post(client, DIAL_RESULT_PATH, dial_params(new_call_sid(), "no-answer"))
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "unknown_call"
    missing = post(client, DIAL_RESULT_PATH, voice_params(sid, status="in-progress"))
    assert missing.status_code == 400 and missing.get_json()["field"] == "DialCallStatus"


def test_stream_ended_of_a_transferred_call_adds_no_voicemail(client, db, tenant, twilio_rest):
    sid = live_call(db, tenant.business_id)
    transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=sid, reason="")
    root = twiml(post(client, "/webhook/stream_ended", voice_params(sid, status="in-progress")))
    assert list(root) == []


def test_the_engine_sends_no_voicemail_redirect_over_a_transfer(db, tenant, twilio_rest):
    from server.voice.engine import VoiceEngine

    settings = make_settings(TWILIO_API_BASE_URL=twilio_rest.url)
    engine = VoiceEngine(settings, db, APP_SECRET)
    sid = live_call(db, tenant.business_id)
    assert transfer_to_person(desk(db, twilio_rest), business_id=tenant.business_id, call_sid=sid, reason="")[
        "transferred"
    ]
    # The AI pipeline fails just after the transfer: the session's fallback must not replace the <Dial>.
    assert engine._redirect(sid, "2 failed turn(s)") is True
    assert len(twilio_rest.requests_for("Calls", sid)) == 1
    other = live_call(db, tenant.business_id)
    assert engine._redirect(other, "2 failed turn(s)") is True  # a call not transferred still goes to voicemail
    [redirect] = twilio_rest.requests_for("Calls", other)
    assert "<Record" in redirect.form["Twiml"]

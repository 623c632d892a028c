"""Twilio Voice webhooks: signatures, TwiML, status callbacks, voicemail, degraded mode, replays."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import xml.etree.ElementTree as ET

import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.models import AuditLog, Business, Call, Message, Thread
from server.security.call_token import call_token_is_valid
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN, create_tenant

AI_ENV = {
    "OPENAI_API_KEY": "sk-test",
    "GOOGLE_SPEECH_EMULATOR_HOST": "127.0.0.1:9",
    "GOOGLE_TTS_EMULATOR_HOST": "127.0.0.1:9",
}
SIGNED_ROUTES = [
    "/webhook/incoming_call",
    "/webhook/stream_status",
    "/webhook/stream_ended",
    "/webhook/recording_done",
    "/webhook/call_status",
    "/webhook/recording_status",
]


def independent_signature(token: str, url: str, params: dict[str, str] | list[tuple[str, str]]) -> str:
    """Twilio's algorithm written out: base64(HMAC-SHA1(token, url + key1 + value1 + key2 + …)), keys sorted."""
    pairs = sorted(params.items() if isinstance(params, dict) else params)
    payload = url + "".join(key + value for key, value in pairs)
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


@pytest.fixture(scope="module")
def twilio_rest():
    """Only ever its address is used here (no test waits for the watchdog), so one serves the module and
    the apps pointed at it are lent again from test to test."""
    with FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as fake:
        yield fake


@pytest.fixture
def voice_app(make_app, twilio_rest):
    """AI mode; the watchdog is armed but far off, and any REST call would reach only the fake."""

    def build(**env):
        return make_app(**{**AI_ENV, "TWILIO_API_BASE_URL": twilio_rest.url, "WATCHDOG_SECONDS": "600", **env})

    return build


@pytest.fixture
def app(voice_app):
    return voice_app()


def post(client, path, params, *, base_url=TEST_BASE_URL, signed=True, **kwargs):
    headers = signature_header(base_url.rstrip("/") + path, params) if signed else {}
    headers.update(kwargs.pop("headers", {}))
    return client.post(path, data=params, headers=headers, **kwargs)


def twiml(response) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.data)
    assert root.tag == "Response"
    return root


def tags(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


def assert_absolute(url: str, scheme: str = "https") -> None:
    assert url.startswith(f"{scheme}://"), url
    assert "//" not in url.split("://", 1)[1], url


def assert_voicemail(root: ET.Element, base: str = TEST_BASE_URL) -> None:
    assert tags(root) == ["Play", "Record", "Hangup"]
    assert root[0].text == f"{base}/static/tts/fallback_he.mp3"
    record = root[1].attrib
    assert record["action"] == f"{base}/webhook/recording_done" and record["method"] == "POST"
    assert record["recordingStatusCallback"] == f"{base}/webhook/recording_status"
    assert record["recordingStatusCallbackMethod"] == "POST"
    assert int(record["maxLength"]) > 0 and record["playBeep"] == "true"


def call_row(db, call_sid) -> Call | None:
    with db.scope() as session:
        return session.scalar(sa.select(Call).where(Call.call_sid == call_sid))


def start_call(client, tenant, call_sid=None):
    call_sid = call_sid or new_call_sid()
    response = post(client, "/webhook/incoming_call", voice_params(call_sid, to=tenant.phone))
    assert response.status_code == 200
    return call_sid


# ---- signatures ------------------------------------------------------------------------------


def test_sdk_signature_over_public_url_is_accepted(client, tenant):
    params = voice_params(new_call_sid(), to=tenant.phone)
    assert post(client, "/webhook/incoming_call", params).status_code == 200


def test_independent_implementation_matches_and_is_accepted(client, tenant):
    params = voice_params(new_call_sid(), to=tenant.phone)
    url = TEST_BASE_URL + "/webhook/incoming_call"
    signature = independent_signature(TEST_TWILIO_TOKEN, url, params)
    assert signature == signature_header(url, params)["X-Twilio-Signature"]
    response = client.post("/webhook/incoming_call", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200


def test_signature_with_explicit_default_port_is_accepted(client, tenant):
    params = voice_params(new_call_sid(), to=tenant.phone)
    signature = independent_signature(TEST_TWILIO_TOKEN, "https://agent.example.test:443/webhook/incoming_call", params)
    response = client.post("/webhook/incoming_call", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200


def test_query_string_is_part_of_the_signed_url(client, tenant):
    params = voice_params(new_call_sid(), to=tenant.phone)
    with_query = TEST_BASE_URL + "/webhook/incoming_call?source=main"
    ok = client.post(
        "/webhook/incoming_call?source=main",
        data=params,
        headers={"X-Twilio-Signature": independent_signature(TEST_TWILIO_TOKEN, with_query, params)},
    )
    assert ok.status_code == 200
    signed_without_query = independent_signature(TEST_TWILIO_TOKEN, TEST_BASE_URL + "/webhook/incoming_call", params)
    response = client.post(
        "/webhook/incoming_call?source=main", data=params, headers={"X-Twilio-Signature": signed_without_query}
    )
    assert response.status_code == 403


def test_request_through_a_proxy_on_another_host_is_checked_against_public_base_url(client, tenant):
    params = voice_params(new_call_sid(), to=tenant.phone)
    proxy = {
        "base_url": "http://10.0.0.7:8080",
        "headers": {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http", "X-Forwarded-Port": "81"},
    }
    public = signature_header(TEST_BASE_URL + "/webhook/incoming_call", params)
    response = client.post(
        "/webhook/incoming_call", data=params, base_url=proxy["base_url"], headers={**proxy["headers"], **public}
    )
    assert response.status_code == 200
    # a signature over what the app saw (or what the forwarded headers claim) is not Twilio's
    for seen in ("http://10.0.0.7:8080", "http://evil.example", "https://evil.example"):
        signature = independent_signature(TEST_TWILIO_TOKEN, seen + "/webhook/incoming_call", params)
        response = client.post(
            "/webhook/incoming_call",
            data=params,
            base_url=proxy["base_url"],
            headers={**proxy["headers"], "X-Twilio-Signature": signature},
        )
        assert response.status_code == 403, seen


def test_public_base_url_with_a_path_prefix(voice_app, db):
    app = voice_app(PUBLIC_BASE_URL="https://agent.example.test/voice/")
    tenant = create_tenant(db)
    params = voice_params(new_call_sid(), to=tenant.phone)
    response = post(app.test_client(), "/webhook/incoming_call", params, base_url="https://agent.example.test/voice")
    root = twiml(response)
    assert root.find("Connect").get("action") == "https://agent.example.test/voice/webhook/stream_ended"


@pytest.mark.parametrize("path", SIGNED_ROUTES)
def test_missing_signature_is_403_json_and_logged(client, tenant, path, caplog):
    params = voice_params(new_call_sid(), to=tenant.phone)
    with caplog.at_level(logging.WARNING):
        response = post(client, path, params, signed=False)
    assert response.status_code == 403
    assert response.get_json()["error"] == "invalid_signature"
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "twilio_signature_rejected"]
    assert record.reason == "missing X-Twilio-Signature"
    assert record.url == TEST_BASE_URL + path


@pytest.mark.parametrize("path", SIGNED_ROUTES)
def test_wrong_signature_is_403(client, tenant, path, caplog):
    params = voice_params(new_call_sid(), to=tenant.phone)
    headers = signature_header(TEST_BASE_URL + path, params, token="another-accounts-token")
    with caplog.at_level(logging.WARNING):
        response = client.post(path, data=params, headers=headers)
    assert response.status_code == 403 and response.get_json()["error"] == "invalid_signature"
    assert any("does not match" in getattr(r, "reason", "") for r in caplog.records)


def test_tampered_parameter_is_403(client, tenant):
    params = voice_params(new_call_sid(), to=tenant.phone)
    headers = signature_header(TEST_BASE_URL + "/webhook/incoming_call", params)
    response = client.post("/webhook/incoming_call", data={**params, "From": "+972509999999"}, headers=headers)
    assert response.status_code == 403


def test_repeated_parameters_are_signed_and_accepted(client, tenant):
    params = voice_params(new_call_sid(), to=tenant.phone)
    signature = independent_signature(
        TEST_TWILIO_TOKEN, TEST_BASE_URL + "/webhook/recording_done", [*params.items(), ("Tag", "b"), ("Tag", "a")]
    )
    response = client.post(
        "/webhook/recording_done", data={**params, "Tag": ["b", "a"]}, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200


def test_no_auth_token_configured_rejects_everything(voice_app, db):
    app = voice_app(TWILIO_AUTH_TOKEN="")
    tenant = create_tenant(db)
    response = post(app.test_client(), "/webhook/incoming_call", voice_params(new_call_sid(), to=tenant.phone))
    assert response.status_code == 403


# ---- incoming_call ---------------------------------------------------------------------------


def test_incoming_call_connects_the_media_stream(client, app, db, tenant):
    call_sid = new_call_sid()
    root = twiml(post(client, "/webhook/incoming_call", voice_params(call_sid, to=tenant.phone)))
    assert tags(root) == ["Connect"]  # no <Play> by default: the AI speaks first
    connect = root[0]
    assert connect.get("action") == TEST_BASE_URL + "/webhook/stream_ended" and connect.get("method") == "POST"
    [stream] = list(connect)
    assert stream.tag == "Stream"
    assert stream.get("url") == "wss://agent.example.test/ws/twilio-media"
    assert stream.get("statusCallback") == TEST_BASE_URL + "/webhook/stream_status"
    assert stream.get("statusCallbackMethod") == "POST"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert set(parameters) == {"business_id", "call_sid", "token"}
    assert parameters["business_id"] == str(tenant.business_id) and parameters["call_sid"] == call_sid
    assert call_token_is_valid(app.config["APP_SECRET"], call_sid, parameters["token"])

    call = call_row(db, call_sid)
    assert call.business_id == tenant.business_id and call.status == "ringing"
    assert call.from_number == "+972501234567" and call.to_number == tenant.phone
    assert call.thread_id is not None and call.customer_id is not None


def test_greeting_plays_first_when_the_business_opted_in(client, db, tenant):
    with db.scope() as session:
        session.get(Business, tenant.business_id).greeting_enabled = True
    root = twiml(post(client, "/webhook/incoming_call", voice_params(new_call_sid(), to=tenant.phone)))
    assert tags(root) == ["Play", "Connect"]
    assert root[0].text == TEST_BASE_URL + "/static/tts/greeting_he.mp3"
    assert_absolute(root[0].text)


def test_unknown_number_gets_a_polite_hebrew_goodbye(client, db, tenant):
    call_sid = new_call_sid()
    root = twiml(post(client, "/webhook/incoming_call", voice_params(call_sid, to="+97239999999")))
    assert tags(root) == ["Say", "Hangup"]
    assert root[0].get("language") == "he-IL" and root[0].text.strip()
    assert call_row(db, call_sid) is None


def test_whatsapp_only_number_is_unknown_for_voice(client, tenant):
    root = twiml(post(client, "/webhook/incoming_call", voice_params(new_call_sid(), to=tenant.whatsapp)))
    assert tags(root) == ["Say", "Hangup"]


def test_replayed_incoming_call_does_not_duplicate_the_call(client, db, tenant):
    call_sid = new_call_sid()
    params = voice_params(call_sid, to=tenant.phone)
    first = post(client, "/webhook/incoming_call", params)
    second = post(client, "/webhook/incoming_call", params)
    assert first.data == second.data
    with db.scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Call).where(Call.call_sid == call_sid)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(Thread)) == 1


def test_incoming_call_without_call_sid_is_400(client, tenant):
    params = voice_params("", to=tenant.phone)
    response = post(client, "/webhook/incoming_call", params)
    assert response.status_code == 400 and response.get_json()["error"] == "missing_call_sid"


def test_incoming_call_is_post_only(client):
    response = client.get("/webhook/incoming_call")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_degraded_mode_answers_voicemail_and_readyz_says_so(make_app, db, twilio_rest):
    app = make_app(TWILIO_API_BASE_URL=twilio_rest.url, WATCHDOG_SECONDS="600")  # no speech/LLM credentials
    client = app.test_client()
    tenant = create_tenant(db)
    call_sid = new_call_sid()
    assert_voicemail(twiml(post(client, "/webhook/incoming_call", voice_params(call_sid, to=tenant.phone))))
    assert call_row(db, call_sid) is not None  # the CRM still gets the call
    ready = client.get("/readyz").get_json()
    assert ready["voice"] == "degraded"
    preview = twiml(client.get("/webhook/incoming_call_preview", query_string={"to": tenant.phone}))
    assert_voicemail(preview)


def test_a_draining_worker_sends_new_calls_to_voicemail(voice_app, db):
    app = voice_app()
    tenant = create_tenant(db)
    services(app).lifecycle.start_draining()
    call_sid = new_call_sid()
    assert_voicemail(twiml(post(app.test_client(), "/webhook/incoming_call", voice_params(call_sid, to=tenant.phone))))
    assert call_row(db, call_sid) is not None


def test_readyz_says_ai_when_speech_and_language_are_configured(client):
    assert client.get("/readyz").get_json()["voice"] == "ai"


# ---- preview ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "https://agent.example.test",
        "https://agent.example.test/",
        "https://agent.example.test/prefix",
        "https://agent.example.test/prefix/",
    ],
)
def test_preview_urls_are_absolute_without_double_slashes(voice_app, db, base):
    app = voice_app(PUBLIC_BASE_URL=base)
    tenant = create_tenant(db)
    response = app.test_client().get("/webhook/incoming_call_preview", query_string=f"to=+{tenant.phone[1:]}")
    connect = twiml(response).find("Connect")
    stream = connect.find("Stream")
    prefix = "/prefix" if "prefix" in base else ""
    assert stream.get("url") == f"wss://agent.example.test{prefix}/ws/twilio-media"
    assert connect.get("action") == f"https://agent.example.test{prefix}/webhook/stream_ended"
    assert stream.get("statusCallback") == f"https://agent.example.test{prefix}/webhook/stream_status"
    assert_absolute(stream.get("url"), "wss")
    assert_absolute(connect.get("action"))
    assert_absolute(stream.get("statusCallback"))


def test_preview_matches_incoming_call_and_writes_nothing(client, db, tenant):
    root = twiml(client.get("/webhook/incoming_call_preview", query_string={"to": tenant.phone}))
    stream = root.find("Connect/Stream")
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters["business_id"] == str(tenant.business_id)
    assert parameters["call_sid"].startswith("CA") and parameters["token"]
    with db.scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Call)) == 0


def test_preview_without_a_number_and_with_an_unknown_or_bad_one(client):
    generic = twiml(client.get("/webhook/incoming_call_preview"))
    assert tags(generic) == ["Connect"]
    unknown = twiml(client.get("/webhook/incoming_call_preview", query_string={"to": "+97239999999"}))
    assert tags(unknown) == ["Say", "Hangup"]
    bad = client.get("/webhook/incoming_call_preview", query_string={"to": "call me"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_phone"


# ---- stream_status ---------------------------------------------------------------------------


def stream_status_params(call_sid: str, event: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
        "CallSid": call_sid,
        "StreamSid": "MZ" + "1" * 32,
        "StreamName": "MZ" + "1" * 32,
        "StreamEvent": event,
        "Timestamp": "2026-01-01T10:00:00.000Z",
        **extra,
    }


def test_stream_status_records_the_event(client, db, tenant):
    call_sid = start_call(client, tenant)
    params = stream_status_params(call_sid, "stream-error", StreamError="Handshake failed")
    response = post(client, "/webhook/stream_status", params)
    assert response.status_code == 204 and response.data == b""
    call = call_row(db, call_sid)
    assert (call.stream_status, call.stream_sid, call.stream_error) == (
        "stream-error",
        "MZ" + "1" * 32,
        "Handshake failed",
    )
    assert call.stream_started_at is None  # only the token-checked WebSocket disarms the watchdog


def test_an_unsigned_stream_status_changes_nothing(client, db, tenant):
    call_sid = start_call(client, tenant)
    forged = post(client, "/webhook/stream_status", stream_status_params(call_sid, "stream-stopped"), signed=False)
    assert (forged.status_code, forged.get_json()["error"]) == (403, "invalid_signature")
    assert call_row(db, call_sid).stream_status is None


def test_stream_status_never_overwrites_a_final_state(client, db, tenant):
    call_sid = start_call(client, tenant)
    assert post(client, "/webhook/stream_status", stream_status_params(call_sid, "stream-started")).status_code == 204
    assert post(client, "/webhook/stream_status", stream_status_params(call_sid, "stream-stopped")).status_code == 204
    # a late (or replayed) start doesn't revive a stopped stream
    assert post(client, "/webhook/stream_status", stream_status_params(call_sid, "stream-started")).status_code == 204
    assert call_row(db, call_sid).stream_status == "stream-stopped"
    # once the call is over, its stream can still be reported stopped, but not started
    other = start_call(client, tenant)
    assert (
        post(
            client, "/webhook/call_status", voice_params(other, to=tenant.phone, status="completed", CallDuration="3")
        ).status_code
        == 204
    )
    assert post(client, "/webhook/stream_status", stream_status_params(other, "stream-started")).status_code == 204
    assert call_row(db, other).stream_status is None
    assert (
        post(
            client, "/webhook/stream_status", stream_status_params(other, "stream-error", StreamError="gone")
        ).status_code
        == 204
    )
    call = call_row(db, other)
    assert (call.status, call.stream_status, call.stream_error) == ("completed", "stream-error", "gone")


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"CallSid": "CA1", "StreamEvent": "stream-started"},
        {"CallSid": "CA-unknown", "StreamEvent": "x" * 500, "StreamSid": "y" * 500},
        {"CallSid": "", "StreamEvent": "stream-started\x00", "StreamError": "\x00"},
    ],
)
def test_a_signed_stream_status_answers_204_to_anything(client, params):
    assert post(client, "/webhook/stream_status", params).status_code == 204


def test_an_unknown_stream_event_is_not_stored(client, db, tenant):
    call_sid = start_call(client, tenant)
    assert post(client, "/webhook/stream_status", stream_status_params(call_sid, "x" * 500)).status_code == 204
    assert call_row(db, call_sid).stream_status is None


# ---- stream_ended / recording_done -----------------------------------------------------------


def test_stream_ended_falls_back_to_recording_a_message(client, db, tenant):
    call_sid = start_call(client, tenant)
    root = twiml(post(client, "/webhook/stream_ended", voice_params(call_sid, to=tenant.phone, status="in-progress")))
    assert_voicemail(root)
    assert call_row(db, call_sid).stream_ended_at is not None


def test_stream_ended_hangs_up_after_the_agent_said_goodbye(client, db, tenant):
    call_sid = start_call(client, tenant)
    with db.scope() as session:
        session.scalar(sa.select(Call).where(Call.call_sid == call_sid)).outcome = "agent_goodbye"
    root = twiml(post(client, "/webhook/stream_ended", voice_params(call_sid, to=tenant.phone)))
    assert tags(root) == ["Hangup"]


def test_stream_ended_for_an_unknown_call_still_takes_a_message(client, tenant):
    assert_voicemail(twiml(post(client, "/webhook/stream_ended", voice_params(new_call_sid(), to=tenant.phone))))


def test_recording_done_hangs_up(client, tenant):
    params = voice_params(
        new_call_sid(), to=tenant.phone, RecordingUrl="https://api.twilio.com/x", RecordingDuration="7", Digits="hangup"
    )
    assert tags(twiml(post(client, "/webhook/recording_done", params))) == ["Hangup"]


# ---- call_status -----------------------------------------------------------------------------


def test_call_status_closes_the_call_once(client, db, tenant):
    call_sid = start_call(client, tenant)
    in_progress = voice_params(call_sid, to=tenant.phone, status="in-progress")
    assert post(client, "/webhook/call_status", in_progress).status_code == 204
    assert call_row(db, call_sid).status == "in-progress"

    completed = voice_params(
        call_sid, to=tenant.phone, status="completed", CallDuration="42", Timestamp="Tue, 06 Jan 2026 10:00:42 +0000"
    )
    assert post(client, "/webhook/call_status", completed).status_code == 204
    call = call_row(db, call_sid)
    assert (call.status, call.duration_seconds) == ("completed", 42)
    assert call.ended_at.replace(tzinfo=None).isoformat() == "2026-01-06T10:00:42"

    replay = {**completed, "CallDuration": "99", "Timestamp": "Tue, 06 Jan 2026 11:00:00 +0000"}
    assert post(client, "/webhook/call_status", replay).status_code == 204
    late = voice_params(call_sid, to=tenant.phone, status="in-progress")
    assert post(client, "/webhook/call_status", late).status_code == 204
    again = call_row(db, call_sid)
    assert (again.status, again.duration_seconds, again.ended_at) == ("completed", 42, call.ended_at)
    with db.scope() as session:
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == "call.ended")) == 1
        )


def test_call_status_for_an_unknown_call_is_ignored(client, tenant):
    params = voice_params(new_call_sid(), to=tenant.phone, status="completed", CallDuration="3")
    assert post(client, "/webhook/call_status", params).status_code == 204


# ---- recording_status ------------------------------------------------------------------------


def recording_params(call_sid, tenant, recording_sid="RE" + "a" * 32, **extra):
    return {
        "AccountSid": BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
        "CallSid": call_sid,
        "RecordingSid": recording_sid,
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{BASE_TEST_ENV['TWILIO_ACCOUNT_SID']}"
        f"/Recordings/{recording_sid}",
        "RecordingStatus": "completed",
        "RecordingDuration": "12",
        "RecordingChannels": "1",
        "RecordingSource": "RecordVerb",
        "RecordingStartTime": "Tue, 06 Jan 2026 10:00:00 +0000",
        **extra,
    }


def voicemail_messages(db):
    with db.scope() as session:
        return session.scalars(sa.select(Message).where(Message.kind == "voicemail")).all()


def test_recording_status_stores_a_voicemail_once(client, db, tenant, monkeypatch):
    import server.voice.call_events as call_events

    transcriptions = []
    monkeypatch.setattr(
        call_events, "transcribe_voicemail_later", lambda jobs, transcriber, sid, url: transcriptions.append((sid, url))
    )
    call_sid = start_call(client, tenant)
    params = recording_params(call_sid, tenant)
    assert post(client, "/webhook/recording_status", params).status_code == 204
    assert post(client, "/webhook/recording_status", params).status_code == 204
    [message] = voicemail_messages(db)
    call = call_row(db, call_sid)
    assert (message.direction, message.provider, message.provider_message_id) == (
        "in",
        "twilio",
        params["RecordingSid"],
    )
    assert message.thread_id == call.thread_id and message.call_id == call.id
    assert message.media[0]["url"] == params["RecordingUrl"] and message.media[0]["duration_seconds"] == 12
    assert (call.recording_sid, call.recording_url, call.outcome) == (
        params["RecordingSid"],
        params["RecordingUrl"],
        "voicemail",
    )
    with db.scope() as session:
        thread = session.get(Thread, call.thread_id)
        assert thread.channel == "voice" and thread.unread_count == 1
    # transcription is asked for once, for the new recording, not for the replay
    assert transcriptions == [(call_sid, params["RecordingUrl"])]


@pytest.mark.parametrize("state", ["in-progress", "absent", "failed"])
def test_recording_status_other_than_completed_stores_nothing(client, db, tenant, state):
    call_sid = start_call(client, tenant)
    assert (
        post(client, "/webhook/recording_status", recording_params(call_sid, tenant, RecordingStatus=state)).status_code
        == 204
    )
    assert voicemail_messages(db) == []
    assert call_row(db, call_sid).recording_sid is None


def test_recording_status_for_an_unknown_call_is_ignored(client, db, tenant):
    assert post(client, "/webhook/recording_status", recording_params(new_call_sid(), tenant)).status_code == 204
    assert voicemail_messages(db) == []


def test_anonymous_caller_voicemail_stays_on_the_call(client, db, tenant):
    call_sid = new_call_sid()
    post(client, "/webhook/incoming_call", voice_params(call_sid, to=tenant.phone, from_="anonymous"))
    assert post(client, "/webhook/recording_status", recording_params(call_sid, tenant)).status_code == 204
    call = call_row(db, call_sid)
    assert call.thread_id is None and call.recording_sid == "RE" + "a" * 32
    assert voicemail_messages(db) == []


def test_voicemail_lands_in_the_existing_voice_thread_of_a_returning_caller(client, db, tenant):
    first, second = start_call(client, tenant), start_call(client, tenant)
    post(client, "/webhook/recording_status", recording_params(first, tenant, "RE" + "1" * 32))
    post(client, "/webhook/recording_status", recording_params(second, tenant, "RE" + "2" * 32))
    messages = voicemail_messages(db)
    assert len(messages) == 2 and len({m.thread_id for m in messages}) == 1

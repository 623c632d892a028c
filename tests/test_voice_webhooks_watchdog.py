"""The call watchdog and the voicemail hooks against the fake Twilio REST server (and real gunicorn).

The watchdog and transcriptions are background jobs: here they run in threads of the test process
(`testkit.jobs.InProcessJobs`), under gunicorn in the jobs worker process, as in production.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET

import gevent
import pytest
import requests
import sqlalchemy as sa

from server.app_state import services
from server.db.engine import Database
from server.db.models import AuditLog, Call, Message
from server.providers.base import VoicemailTranscriber
from server.voice.voicemail import recording_wav_url
from server.voice.watchdog import redirect_to_voicemail
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from testkit.jobs import InProcessJobs
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN, create_tenant, make_settings, truncate_all
from tests.test_voice_webhooks import AI_ENV, assert_voicemail, call_row, recording_params, start_call

ACCOUNT_SID = BASE_TEST_ENV["TWILIO_ACCOUNT_SID"]


@pytest.fixture
def twilio_rest():
    with FakeTwilioRest(ACCOUNT_SID, TEST_TWILIO_TOKEN) as fake:
        yield fake


@pytest.fixture
def app(make_app, twilio_rest):
    """The app, with its background jobs (the watchdog, transcriptions) run as the jobs worker would."""
    app = make_app(
        **AI_ENV, TWILIO_API_BASE_URL=twilio_rest.url, WATCHDOG_SECONDS="0.3", TWILIO_API_TIMEOUT_SECONDS="0.5"
    )
    with InProcessJobs(app):
        yield app


def wait_until(predicate, timeout=3.0):
    """Let the hub run (and so the greenlets) until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.05)
    return predicate()


def events(caplog, name):
    return [r for r in caplog.records if getattr(r, "event", "") == name]


def set_call(db, call_sid, **fields):
    with db.scope() as session:
        call = session.scalar(sa.select(Call).where(Call.call_sid == call_sid))
        for key, value in fields.items():
            setattr(call, key, value)


# ---- the watchdog ----------------------------------------------------------------------------


def test_watchdog_redirects_a_call_whose_stream_never_started(client, db, tenant, twilio_rest):
    call_sid = start_call(client, tenant)
    started = time.monotonic()
    assert wait_until(lambda: twilio_rest.requests_for("Calls", sid=call_sid))
    assert time.monotonic() - started >= 0.25  # WATCHDOG_SECONDS after the TwiML, not before
    [update] = twilio_rest.requests_for("Calls", sid=call_sid)
    assert update.method == "POST" and update.auth_user == ACCOUNT_SID
    assert set(update.form) == {"Twiml"}
    assert_voicemail(ET.fromstring(update.form["Twiml"]))
    assert wait_until(lambda: _audits(db, "call.redirected_to_voicemail") == 1)
    gevent.sleep(0.4)
    assert len(twilio_rest.requests_for("Calls")) == 1  # one redirect per call, even after more time


def test_replayed_incoming_call_arms_one_watchdog(client, tenant, twilio_rest):
    call_sid = new_call_sid()
    start_call(client, tenant, call_sid)
    start_call(client, tenant, call_sid)
    assert wait_until(lambda: twilio_rest.requests_for("Calls", sid=call_sid))
    gevent.sleep(0.5)
    assert len(twilio_rest.requests_for("Calls", sid=call_sid)) == 1


def test_watchdog_leaves_a_call_whose_stream_started(client, db, tenant, twilio_rest, caplog):
    call_sid = start_call(client, tenant)
    set_call(db, call_sid, stream_started_at=sa.func.now())  # what the live engine records on `start`
    with caplog.at_level(logging.DEBUG, logger="agentlocator.voice.watchdog"):
        assert wait_until(lambda: events(caplog, "watchdog_stream_ok"), timeout=2)
    assert twilio_rest.requests == []


@pytest.mark.parametrize("how", ["completed", "stream_ended"])
def test_watchdog_leaves_a_call_that_is_over_or_already_in_voicemail(client, tenant, twilio_rest, how):
    call_sid = start_call(client, tenant)
    if how == "completed":
        params = voice_params(call_sid, to=tenant.phone, status="completed", CallDuration="2")
        path = "/webhook/call_status"
    else:
        params = voice_params(call_sid, to=tenant.phone, status="in-progress")
        path = "/webhook/stream_ended"
    assert client.post(path, data=params, headers=signature_header(TEST_BASE_URL + path, params)).status_code < 300
    gevent.sleep(0.6)
    assert twilio_rest.requests == []


def test_watchdog_survives_a_twilio_error_and_keeps_working(client, db, tenant, twilio_rest, caplog):
    twilio_rest.fail("Calls", code=20500, status=500, message="An internal server error has occurred", times=1)
    with caplog.at_level(logging.INFO):
        failed_sid = start_call(client, tenant)
        assert wait_until(lambda: events(caplog, "voicemail_redirect_failed"))
        [failure] = events(caplog, "voicemail_redirect_failed")
        assert failure.call_sid == failed_sid and failure.twilio_code == 20500 and failure.levelno == logging.ERROR
        assert not events(caplog, "watchdog_error")
        assert _audits(db, "call.redirected_to_voicemail") == 0
        ok_sid = start_call(client, tenant)  # the worker is fine: the next call's watchdog still works
        assert wait_until(lambda: twilio_rest.requests_for("Calls", sid=ok_sid))


def test_watchdog_gives_up_on_a_stalled_twilio_within_the_client_timeout(client, tenant, twilio_rest, caplog):
    twilio_rest.stall("Calls", seconds=3)
    with caplog.at_level(logging.INFO):
        call_sid = start_call(client, tenant)
        assert wait_until(lambda: events(caplog, "voicemail_redirect_failed"), timeout=3)
    [failure] = events(caplog, "voicemail_redirect_failed")
    assert failure.call_sid == call_sid and "Timeout" in failure.error


def test_watchdog_logs_a_call_twilio_says_is_over(client, tenant, twilio_rest, caplog):
    call_sid = new_call_sid()
    twilio_rest.set_call_status(call_sid, "completed")  # hung up before our status callback arrived
    with caplog.at_level(logging.INFO):
        start_call(client, tenant, call_sid)
        assert wait_until(lambda: events(caplog, "voicemail_redirect_skipped"))
    assert events(caplog, "voicemail_redirect_skipped")[0].twilio_code == 21220
    assert not events(caplog, "voicemail_redirect_failed")


def test_degraded_mode_arms_no_watchdog(make_app, db, twilio_rest):
    app = make_app(TWILIO_API_BASE_URL=twilio_rest.url, WATCHDOG_SECONDS="0.3")
    start_call(app.test_client(), create_tenant(db))
    gevent.sleep(0.6)
    assert twilio_rest.requests == []


def test_redirect_to_voicemail_for_the_live_engine(app, twilio_rest):
    call_sid = new_call_sid()
    settings = app.config["SETTINGS"]
    assert redirect_to_voicemail(settings, call_sid, "pipeline_failed") is True
    assert redirect_to_voicemail(settings, call_sid, "stream_died") is True
    updates = twilio_rest.requests_for("Calls", sid=call_sid)
    assert len(updates) == 2
    for update in updates:
        assert_voicemail(ET.fromstring(update.form["Twiml"]))
    twilio_rest.fail("Calls", code=20003, status=401)
    assert redirect_to_voicemail(settings, call_sid, "pipeline_failed") is False


def test_redirect_without_twilio_credentials_is_logged_not_raised(twilio_rest, caplog):
    settings = make_settings(TWILIO_AUTH_TOKEN="", TWILIO_API_BASE_URL=twilio_rest.url)
    with caplog.at_level(logging.INFO):
        assert redirect_to_voicemail(settings, new_call_sid(), "pipeline_failed") is False
    assert events(caplog, "voicemail_redirect_failed")[0].error == "TwilioNotConfigured"


def _audits(db, action):
    with db.scope() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == action))


# ---- voicemail transcription hook ------------------------------------------------------------


class ScriptedTranscriber(VoicemailTranscriber):
    def __init__(self, text="שלום, תחזרו אליי בבקשה"):
        self.text = text
        self.audio: list[bytes] = []

    def transcribe(self, wav_audio: bytes) -> str:
        self.audio.append(wav_audio)
        return self.text


def test_voicemail_is_transcribed_when_speech_recognition_is_configured(app, client, db, tenant, twilio_rest):
    transcriber = ScriptedTranscriber()
    services(app).voicemail_transcriber = transcriber
    call_sid = start_call(client, tenant)
    set_call(db, call_sid, stream_started_at=sa.func.now())
    recording_sid = "RE" + "b" * 32
    twilio_rest.recordings[recording_sid] = b"RIFF-fake-wav-bytes"
    params = recording_params(call_sid, tenant, recording_sid, RecordingUrl=twilio_rest.recording_url(recording_sid))
    path = "/webhook/recording_status"
    assert client.post(path, data=params, headers=signature_header(TEST_BASE_URL + path, params)).status_code == 204

    assert wait_until(lambda: call_row(db, call_sid).transcript == transcriber.text)
    assert transcriber.audio == [b"RIFF-fake-wav-bytes"]
    [download] = twilio_rest.requests_for("Recordings")
    assert download.path.endswith(f"/Recordings/{recording_sid}.wav") and download.auth_user == ACCOUNT_SID
    with db.scope() as session:
        message = session.scalar(sa.select(Message).where(Message.provider_message_id == recording_sid))
        assert message.body == transcriber.text and message.kind == "voicemail"
    # a replayed callback neither stores nor transcribes again
    assert client.post(path, data=params, headers=signature_header(TEST_BASE_URL + path, params)).status_code == 204
    gevent.sleep(0.3)
    assert len(transcriber.audio) == 1


def test_recording_is_downloaded_only_from_the_configured_twilio_host(twilio_rest):
    settings = make_settings(TWILIO_API_BASE_URL=twilio_rest.url)
    url = recording_wav_url(settings, "https://elsewhere.example/2010-04-01/Accounts/AC1/Recordings/RE1")
    assert url == f"{twilio_rest.url}/2010-04-01/Accounts/AC1/Recordings/RE1.wav"


def test_failed_transcription_download_is_logged(app, client, db, tenant, twilio_rest, caplog):
    services(app).voicemail_transcriber = ScriptedTranscriber()
    twilio_rest.fail("Recordings", code=20404, status=404)
    call_sid = start_call(client, tenant)
    set_call(db, call_sid, stream_started_at=sa.func.now())
    params = recording_params(call_sid, tenant)
    path = "/webhook/recording_status"
    with caplog.at_level(logging.INFO):
        client.post(path, data=params, headers=signature_header(TEST_BASE_URL + path, params))
        assert wait_until(lambda: events(caplog, "voicemail_download_failed"))
    assert call_row(db, call_sid).transcript == ""


# ---- the fake itself -------------------------------------------------------------------------


def test_fake_twilio_rest_speaks_twilios_wire_format(twilio_rest):
    base = f"{twilio_rest.url}/2010-04-01/Accounts/{ACCOUNT_SID}"
    auth = (ACCOUNT_SID, TEST_TWILIO_TOKEN)
    unauthorized = requests.post(f"{base}/Messages.json", data={"To": "+1"}, auth=(ACCOUNT_SID, "wrong"))
    assert unauthorized.status_code == 401 and unauthorized.json()["code"] == 20003
    sent = requests.post(
        f"{base}/Messages.json",
        auth=auth,
        data={
            "From": "whatsapp:+97231234567",
            "To": "whatsapp:+972501234567",
            "ContentSid": "HX" + "1" * 32,
            "ContentVariables": '{"1": "x"}',
        },
    )
    assert sent.status_code == 201
    body = sent.json()
    assert body["sid"].startswith("SM") and body["status"] == "queued" and body["to"] == "whatsapp:+972501234567"
    assert requests.get(f"{base}/Messages/{body['sid']}.json", auth=auth).json()["sid"] == body["sid"]
    twilio_rest.fail("Messages", code=21211, times=1)
    refused = requests.post(f"{base}/Messages.json", auth=auth, data={"From": "+1", "To": "x", "Body": "hi"})
    assert refused.status_code == 400
    assert set(refused.json()) == {"code", "message", "more_info", "status"} and refused.json()["code"] == 21211
    assert requests.post(f"{base}/Messages.json", auth=auth, data={"From": "+1", "To": "+2", "Body": "hi"}).ok
    other_account = requests.get(
        f"{twilio_rest.url}/2010-04-01/Accounts/AC{'9' * 32}/Calls/CA{'1' * 32}.json", auth=auth
    )
    assert other_account.status_code == 404 and other_account.json()["code"] == 20404
    audio = requests.get(f"{base}/Recordings/RE{'1' * 32}", auth=auth)
    assert audio.headers["Content-Type"] == "audio/x-wav" and audio.content.startswith(b"RIFF")
    assert [r.kind for r in twilio_rest.requests].count("Messages") == 5


# ---- real gunicorn -k gevent -----------------------------------------------------------------


@pytest.mark.slow  # the app under real gunicorn
def test_watchdog_fires_under_gunicorn_gevent(pg_database, twilio_rest, tmp_path):
    """Once, on PostgreSQL (the production database; psycopg2 made cooperative after fork)."""
    database_url = pg_database
    truncate_all(database_url)
    env = {
        **BASE_TEST_ENV,
        **AI_ENV,
        "DATABASE_URL": database_url,
        "TWILIO_API_BASE_URL": twilio_rest.url,
        "WATCHDOG_SECONDS": "0.5",
    }
    with GunicornServer(env, log_path=tmp_path / "gunicorn.log", jobs_worker=True) as server:
        database = Database(make_settings(DATABASE_URL=database_url).sqlalchemy_url)
        tenant = create_tenant(database)
        call_sid, started_sid = new_call_sid(), new_call_sid()
        for sid in (call_sid, started_sid):
            params = voice_params(sid, to=tenant.phone)
            headers = signature_header(TEST_BASE_URL + "/webhook/incoming_call", params)
            response = requests.post(server.url + "/webhook/incoming_call", data=params, headers=headers, timeout=5)
            assert response.status_code == 200 and ET.fromstring(response.content).find("Connect/Stream") is not None
        with database.scope() as session:
            session.scalar(sa.select(Call).where(Call.call_sid == started_sid)).stream_started_at = sa.func.now()
        assert twilio_rest.wait_for_requests("Calls", sid=call_sid, timeout=5), server.logs()[-3000:]
        time.sleep(0.5)
        assert [r.sid for r in twilio_rest.requests_for("Calls")] == [call_sid]
        # the redirect ran in the jobs worker process, not on the web worker
        assert '"voicemail_redirect"' in server.jobs_worker.logs() and '"voicemail_redirect"' not in server.logs()
        database.engine.dispose()

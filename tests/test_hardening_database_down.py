"""The database goes away (a proxy in front of the real PostgreSQL refuses or swallows connections):
a call still gets the voicemail TwiML within 2 s, and a signed WhatsApp webhook is answered 204 and
kept in the job queue until the database is back, then stored once."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa

from server.app_factory import create_app
from server.app_state import services
from server.db.engine import Database
from server.db.models import Call, Message
from server.jobs.runs import JobRun
from testkit.fakes.openai_server import FakeOpenAI, last_user_text
from testkit.fakes.tcp_proxy import FaultyProxy
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from testkit.jobs import InProcessJobs
from testkit.servers import GunicornServer
from tests.conftest import (
    BASE_TEST_ENV,
    PG_ADMIN_URL,
    TEST_BASE_URL,
    TEST_TWILIO_TOKEN,
    create_tenant,
    make_settings,
    truncate_all,
)
from tests.test_voice_webhooks import AI_ENV
from tests.test_whatsapp_support import (
    TWILIO_INBOUND,
    TWILIO_SENDER,
    TWILIO_STATUS,
    WA_SECRET,
    bridge_message,
    post_bridge,
    post_twilio,
    status_form,
    twilio_form,
)

ANSWER_WITHIN_SECONDS = 2.0


@pytest.fixture
def proxy(pg_database):
    url = sa.make_url(PG_ADMIN_URL)
    with FaultyProxy((url.host, url.port or 5432)) as faulty:
        yield faulty


@pytest.fixture
def app(pg_database, proxy, tmp_path):
    through_proxy = sa.make_url(pg_database).set(host="127.0.0.1", port=proxy.port)
    app = create_app(
        make_settings(
            DATABASE_URL=through_proxy.render_as_string(hide_password=False),
            JOBS_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
            WA_SHARED_SECRET=WA_SECRET,
            WATCHDOG_SECONDS="600",
            TWILIO_API_BASE_URL="http://127.0.0.1:9",
            **AI_ENV,
        )
    )
    app.config["TESTING"] = True
    yield app
    services(app).database.engine.dispose()


@pytest.fixture
def db(app):
    database = services(app).database
    truncate_all(database.engine.url.render_as_string(hide_password=False))
    return database


def call_answer(client, to: str, params: dict | None = None) -> tuple[float, ET.Element]:
    params = params or voice_params(new_call_sid(), to=to)
    started = time.monotonic()
    response = client.post(
        "/webhook/incoming_call",
        data=params,
        headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params),
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.mimetype == "text/xml", response.get_data(as_text=True)
    return elapsed, ET.fromstring(response.data)


def is_voicemail(root: ET.Element) -> bool:
    return [child.tag for child in root] == ["Play", "Record", "Hangup"]


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_a_call_gets_the_voicemail_twiml_in_time_when_the_database_is_down(app, db, proxy, fault):
    tenant = create_tenant(db)
    client = app.test_client()
    _, normal = call_answer(client, tenant.phone)
    assert normal.find("Connect/Stream") is not None
    getattr(proxy, fault)()
    elapsed, answer = call_answer(client, tenant.phone)
    assert is_voicemail(answer) and elapsed < ANSWER_WITHIN_SECONDS, elapsed
    proxy.forward()
    _, again = call_answer(client, tenant.phone)
    assert again.find("Connect/Stream") is not None
    with db.scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Call)) == 2


def test_the_fallback_call_url_answers_the_voicemail_twiml_without_the_database(app, proxy):
    proxy.refuse()
    client = app.test_client()
    for method in ("get", "post"):
        response = getattr(client, method)("/webhook/fallback_call", data={"CallSid": new_call_sid()})
        assert response.status_code == 200 and response.mimetype == "text/xml"
        root = ET.fromstring(response.data)
        assert is_voicemail(root)
        assert root.find("Record").get("recordingStatusCallback") == TEST_BASE_URL + "/webhook/recording_status"


def test_whatsapp_webhooks_are_queued_while_the_database_is_down_and_stored_once_it_is_back(app, db, proxy):
    tenant = create_tenant(db)
    client = app.test_client()
    form = twilio_form(tenant.whatsapp, body="שלום, אפשר לקבוע תור?")
    event = bridge_message(tenant.whatsapp, text="ועוד שאלה", from_="+972507654321")
    proxy.refuse()
    assert post_twilio(client, TWILIO_INBOUND, form).status_code == 204
    assert post_twilio(client, TWILIO_INBOUND, form).status_code == 204  # Twilio delivers it again
    assert post_bridge(client, event).status_code == 204
    assert post_twilio(client, TWILIO_STATUS, status_form("SM" + "9" * 32, "delivered")).status_code == 204
    jobs = InProcessJobs(app)
    assert jobs.run_due() == 4  # each finds the database away and waits…
    assert jobs.run_due() == 0  # …for later
    proxy.forward()
    later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=60)
    assert jobs.run_due(at=later) == 4
    with db.scope() as session:
        stored = session.scalars(sa.select(Message).order_by(Message.id)).all()
        runs = session.scalars(sa.select(JobRun).where(JobRun.kind == "wa_webhook")).all()
    assert sorted((m.provider, m.body) for m in stored) == [
        ("baileys", "ועוד שאלה"),
        ("twilio", "שלום, אפשר לקבוע תור?"),
    ]
    assert sorted(r.state for r in runs) == ["done", "done", "done"]  # the second delivery was the same job
    assert json.dumps([r.attempts for r in runs]) == "[1, 1, 1]"


def test_a_queued_webhook_the_database_went_away_under_is_taken_over_by_its_next_try(app, db, proxy, monkeypatch):
    from server.whatsapp import intake

    tenant = create_tenant(db)
    client = app.test_client()
    proxy.refuse()
    assert post_bridge(client, bridge_message(tenant.whatsapp)).status_code == 204
    proxy.forward()
    receive = intake.RECEIVERS["baileys"]

    def cut_off_midway(session, payload):  # claimed, then the database is gone before the message is stored
        proxy.refuse()
        return receive(session, payload)

    monkeypatch.setitem(intake.RECEIVERS, "baileys", cut_off_midway)
    jobs = InProcessJobs(app)
    assert jobs.run_due() == 1
    monkeypatch.setitem(intake.RECEIVERS, "baileys", receive)
    proxy.forward()
    later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=60)
    assert jobs.run_due(at=later) == 1
    with db.scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
        [run] = session.scalars(sa.select(JobRun).where(JobRun.kind == "wa_webhook")).all()
    assert run.state == "done"


def test_an_ai_reply_the_database_went_away_under_waits_for_it_and_is_sent_once(pg_database, proxy, tmp_path):
    """The model writes, the database goes away before the reply is recorded: the job waits for the
    database instead of counting as done, and the customer gets the reply once it is back."""
    through_proxy = sa.make_url(pg_database).set(host="127.0.0.1", port=proxy.port)
    with FakeOpenAI() as llm, FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as twilio:
        app = create_app(
            make_settings(
                DATABASE_URL=through_proxy.render_as_string(hide_password=False),
                JOBS_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
                ENABLE_WA_TWILIO="true",
                TWILIO_WA_FROM=f"whatsapp:{TWILIO_SENDER}",
                TWILIO_API_BASE_URL=twilio.url,
                OPENAI_API_KEY=llm.api_key,
                OPENAI_BASE_URL=llm.base_url,
            )
        )
        app.config["TESTING"] = True
        database = services(app).database
        truncate_all(pg_database)
        tenant = create_tenant(database, features={"wa_auto_reply": True})
        jobs = InProcessJobs(app)

        def database_goes_away_while_writing(messages):
            proxy.refuse()
            return "תשובה: " + last_user_text(messages)

        llm.reply_fn = database_goes_away_while_writing
        assert (
            post_twilio(app.test_client(), TWILIO_INBOUND, twilio_form(tenant.whatsapp, body="יש תור מחר?")).status_code
            == 204
        )
        assert jobs.run_due() == 1
        assert len(llm.requests) == 1 and twilio.requests_for("Messages") == []
        proxy.forward()
        llm.reply_fn = lambda messages: "תשובה: " + last_user_text(messages)
        with database.scope() as session:
            [run] = session.scalars(sa.select(JobRun).where(JobRun.kind == "wa_auto_reply")).all()
        assert run.state == "running"  # not done: its next try takes it over
        later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=60)
        assert jobs.run_due(at=later) == 1
        [sent] = twilio.requests_for("Messages")
        assert sent.form["Body"] == "תשובה: יש תור מחר?"
        with database.scope() as session:
            assert session.get(JobRun, run.key).state == "done"
            assert [m.body for m in session.scalars(sa.select(Message).where(Message.direction == "out"))] == [
                "תשובה: יש תור מחר?"
            ]
        database.engine.dispose()


def test_a_voicemail_left_while_the_database_is_down_reaches_the_crm_once_it_is_back(app, db, proxy):
    tenant = create_tenant(db)
    client = app.test_client()
    proxy.refuse()
    call = voice_params(new_call_sid(), to=tenant.phone)
    call_sid = call["CallSid"]
    _, answer = call_answer(client, tenant.phone, params=call)
    assert is_voicemail(answer)
    recording = {
        "AccountSid": call["AccountSid"],
        "CallSid": call_sid,
        "RecordingSid": "RE" + "7" * 32,
        "RecordingUrl": "https://api.twilio.com/recordings/RE" + "7" * 32,
        "RecordingStatus": "completed",
        "RecordingDuration": "12",
    }
    status = {**call, "CallStatus": "completed", "CallDuration": "31"}
    for path, form in (
        ("/webhook/recording_status", recording),
        ("/webhook/recording_status", recording),
        ("/webhook/call_status", status),
    ):
        response = client.post(path, data=form, headers=signature_header(TEST_BASE_URL + path, form))
        assert response.status_code == 204, response.get_data(as_text=True)
    jobs = InProcessJobs(app)
    assert jobs.run_due() == 4  # the call, its voicemail (delivered twice: one job key) and its status wait…
    proxy.forward()
    at = datetime.now(timezone.utc).replace(tzinfo=None)
    for _ in range(4):  # a callback that runs before its call is recorded tries again shortly
        at += timedelta(seconds=60)
        jobs.run_due(at=at)
    with db.scope() as session:
        [stored] = session.scalars(sa.select(Call)).all()
        voicemails = session.scalars(sa.select(Message).where(Message.kind == "voicemail")).all()
        runs = session.scalars(sa.select(JobRun).where(JobRun.kind == "voice_callback")).all()
    assert (stored.call_sid, stored.status, stored.duration_seconds) == (call_sid, "completed", 31)
    assert stored.recording_sid == recording["RecordingSid"] and stored.outcome == "voicemail"
    assert [m.provider_message_id for m in voicemails] == [recording["RecordingSid"]]
    assert sorted(r.state for r in runs) == ["done", "done", "done"]


def test_with_the_queue_down_too_the_webhook_is_a_503_the_provider_retries(app, db, proxy, monkeypatch):
    tenant = create_tenant(db)
    queue = services(app).jobs

    def unreachable(*args, **kwargs):
        raise ConnectionError("queue store unreachable")

    monkeypatch.setattr(queue, "_storage", unreachable)
    proxy.refuse()
    response = post_bridge(app.test_client(), bridge_message(tenant.whatsapp))
    assert (response.status_code, response.json["error"]) == (503, "jobs_unavailable")


@pytest.mark.slow
def test_under_gunicorn_a_call_gets_the_voicemail_twiml_in_time_from_an_unreachable_database(
    pg_database, proxy, tmp_path
):
    """Under gevent psycopg2 connects without blocking, where libpq's own connect_timeout doesn't apply."""
    through_proxy = sa.make_url(pg_database).set(host="127.0.0.1", port=proxy.port)
    env = {
        **BASE_TEST_ENV,
        **AI_ENV,
        "DATABASE_URL": through_proxy.render_as_string(hide_password=False),
        "JOBS_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "WATCHDOG_SECONDS": "600",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
    }
    truncate_all(pg_database)
    database = Database(pg_database)
    tenant = create_tenant(database)
    database.engine.dispose()
    with GunicornServer(env, log_path=tmp_path / "gunicorn.log") as server:
        proxy.blackhole()
        for _ in range(2):  # the pooled connection is cut, then a new one hangs
            params = voice_params(new_call_sid(), to=tenant.phone)
            started = time.monotonic()
            response = requests.post(
                server.url + "/webhook/incoming_call",
                data=params,
                timeout=10,
                headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params),
            )
            elapsed = time.monotonic() - started
            assert response.status_code == 200 and is_voicemail(ET.fromstring(response.content)), response.text
            assert elapsed < ANSWER_WITHIN_SECONDS, elapsed
        proxy.forward()
        assert '"incoming_call_database_unavailable"' in server.logs()

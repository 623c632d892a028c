"""Voice notes in the app: the transcription job (stored audio → Google's gRPC fake → the message's
transcript, the console told), its retries and its final failure, the AI reply that waits for the
transcript and reads it, and the CRM search that finds a note by its words."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.dao_crm import insert_message, upsert_customer, upsert_thread
from server.db.models import Business, Event, Media, Message, utcnow
from server.jobs.runs import JobRun
from server.media import IncomingMedia, attach_media
from server.whatsapp import auto_reply, voice_notes
from server.whatsapp.auto_reply import VOICE_NOTE_LABEL, VOICE_NOTE_NOT_UNDERSTOOD, reply_to_message
from testkit.fakes.bridge import FakeBridge
from testkit.fakes.google_speech import FakeSpeech
from testkit.fakes.openai_server import FakeOpenAI
from testkit.jobs import InProcessJobs
from testkit.voice_notes import voice_note
from tests.conftest import create_tenant

CUSTOMER = "+972501234567"
SECRET = "voice-notes-test-secret"
TRANSCRIPT = "שלום, רציתי לקבוע תור למחר בבוקר"


@pytest.fixture(scope="module")
def speech_server():
    with FakeSpeech() as fake:
        yield fake


@pytest.fixture(scope="module")
def llm_server():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def bridge_server():
    with FakeBridge(SECRET) as fake:
        yield fake


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture
def speech(speech_server):
    speech_server.recognize_calls.clear()
    speech_server._recognize_faults.clear()
    return speech_server


@pytest.fixture
def llm(llm_server):
    llm_server.reset()
    return llm_server


@pytest.fixture
def app(make_app, speech, llm, bridge_server, media_dir):
    bridge_server.reset()
    return make_app(
        GOOGLE_SPEECH_EMULATOR_HOST=speech.address,
        OPENAI_API_KEY=llm.api_key,
        OPENAI_BASE_URL=llm.base_url,
        ENABLE_WA_BAILEYS="true",
        WA_SHARED_SECRET=SECRET,
        WA_BAILEYS_URL=bridge_server.url,
        WA_PROVIDER_PRIORITY="baileys",
        MEDIA_DIR=str(media_dir),
    )


@pytest.fixture
def db(app):
    return services(app).database


@pytest.fixture
def tenant(db):
    return create_tenant(db)


def store_voice_note(app, business_id: int, audio: bytes | None = None, *, body: str = "", seconds=None) -> int:
    """A customer's voice note as the webhook leaves it: message, stored audio, transcript pending."""
    database, settings = services(app).database, app.config["SETTINGS"]
    with database.scope() as session:
        customer = upsert_customer(session, business_id, phone=CUSTOMER)
        thread = upsert_thread(session, business_id, customer.id, "whatsapp")
        message, _ = insert_message(
            session,
            thread,
            direction="in",
            body=body,
            kind="audio",
            provider="baileys",
            provider_message_id=f"{CUSTOMER}@s.whatsapp.net:{utcnow().timestamp()}",
        )
        attach_media(
            session,
            settings,
            business_id,
            message.id,
            [
                IncomingMedia(
                    data=voice_note(3) if audio is None else audio,
                    kind="audio",
                    mime_type="audio/ogg; codecs=opus",
                    voice_note=True,
                    duration_seconds=seconds,
                )
            ],
        )
        message.transcript_status = "pending"
        return message.id


def customer_text(app, business_id: int, text: str) -> int:
    with services(app).database.scope() as session:
        customer = upsert_customer(session, business_id, phone=CUSTOMER)
        thread = upsert_thread(session, business_id, customer.id, "whatsapp")
        message, _ = insert_message(
            session, thread, direction="in", body=text, provider="baileys", provider_message_id=f"text:{text}"
        )
        return message.id


def message(db, message_id: int) -> Message:
    with db.scope() as session:
        return session.get_one(Message, message_id)


def run_all_attempts(jobs: InProcessJobs, rounds: int) -> None:
    """Run the queue round after round, each as if the previous retry's backoff had passed."""
    from datetime import datetime, timezone

    for round_ in range(rounds):
        jobs.run_due(datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(minutes=10 * (round_ + 1)))


def set_auto_reply(db, business_id: int) -> None:
    with db.scope() as session:
        business = session.get_one(Business, business_id)
        business.features = {**(business.features or {}), auto_reply.FEATURE: True}


# ---- the job --------------------------------------------------------------------------------------
def test_transcript_is_stored_and_the_console_told(app, db, tenant, speech):
    speech.script(TRANSCRIPT)
    message_id = store_voice_note(app, tenant.business_id)
    with InProcessJobs(app) as jobs:
        voice_notes.queue_transcription(services(app).jobs, message_id)
        assert jobs.wait_idle(15)
    stored = message(db, message_id)
    assert (stored.transcript, stored.transcript_status, stored.transcript_error) == (TRANSCRIPT, "done", None)
    [call] = speech.recognize_calls
    assert call["method"] == "Recognize" and call["config"]["encoding"] == 6  # OGG_OPUS
    with db.scope() as session:
        events = session.scalars(sa.select(Event).where(Event.kind == "message")).all()
        assert any(e.payload.get("message_id") == message_id for e in events)
        assert session.scalar(sa.select(JobRun.state).where(JobRun.key == voice_notes.job_key(message_id))) == "done"


def test_the_senders_duration_picks_long_running_recognize(app, db, tenant, speech):
    speech.script("הודעה ארוכה")
    message_id = store_voice_note(app, tenant.business_id, seconds=90)
    voice_notes.transcribe_voice_note(
        db, app.config["SETTINGS"], services(app).voice_note_transcriber, None, message_id
    )
    assert message(db, message_id).transcript == "הודעה ארוכה"
    assert speech.recognize_calls[-1]["method"] == "LongRunningRecognize"


def test_a_replayed_job_transcribes_once(app, db, tenant, speech):
    speech.script(TRANSCRIPT)
    message_id = store_voice_note(app, tenant.business_id)
    with InProcessJobs(app) as jobs:
        voice_notes.queue_transcription(services(app).jobs, message_id)
        voice_notes.queue_transcription(services(app).jobs, message_id)
        assert jobs.wait_idle(15)
    assert len(speech.recognize_calls) == 1


def test_google_failures_are_retried_then_the_note_is_marked_failed(app, db, tenant, speech):
    speech.fail_next_recognize(grpc.StatusCode.UNAVAILABLE, times=voice_notes.ATTEMPTS)
    message_id = store_voice_note(app, tenant.business_id)
    jobs = InProcessJobs(app)
    voice_notes.queue_transcription(services(app).jobs, message_id)
    jobs.run_due()
    assert message(db, message_id).transcript_status == "pending"  # the first failure is only retried
    run_all_attempts(jobs, voice_notes.ATTEMPTS)
    assert len(speech.recognize_calls) == voice_notes.ATTEMPTS
    failed = message(db, message_id)
    assert failed.transcript_status == "failed" and "ServiceUnavailable" in failed.transcript_error
    with db.scope() as session:
        run = session.get_one(JobRun, voice_notes.job_key(message_id))
        assert (run.state, run.attempts) == ("failed", voice_notes.ATTEMPTS)


def test_a_failure_then_success(app, db, tenant, speech):
    speech.fail_next_recognize(grpc.StatusCode.UNAVAILABLE, times=1)
    speech.script(TRANSCRIPT)
    message_id = store_voice_note(app, tenant.business_id)
    jobs = InProcessJobs(app)
    voice_notes.queue_transcription(services(app).jobs, message_id)
    run_all_attempts(jobs, 2)
    assert (message(db, message_id).transcript_status, message(db, message_id).transcript) == ("done", TRANSCRIPT)


def test_audio_google_cannot_take_fails_at_once(app, db, tenant, speech):
    message_id = store_voice_note(app, tenant.business_id, audio=b"ID3\x04\x00" + b"\x00" * 400)
    jobs = InProcessJobs(app)
    voice_notes.queue_transcription(services(app).jobs, message_id)
    jobs.run_due()
    failed = message(db, message_id)
    assert failed.transcript_status == "failed" and "not an Ogg Opus file" in failed.transcript_error
    assert speech.recognize_calls == []  # nothing worth sending, nothing retried
    with db.scope() as session:
        assert session.get_one(JobRun, voice_notes.job_key(message_id)).attempts == 1


def test_unknown_or_settled_messages_are_left_alone(app, db, tenant, speech):
    settings, transcriber = app.config["SETTINGS"], services(app).voice_note_transcriber
    assert voice_notes.transcribe_voice_note(db, settings, transcriber, None, 999_999) is None
    speech.script(TRANSCRIPT)
    message_id = store_voice_note(app, tenant.business_id)
    voice_notes.transcribe_voice_note(db, settings, transcriber, None, message_id)
    assert voice_notes.transcribe_voice_note(db, settings, transcriber, None, message_id) is None
    assert len(speech.recognize_calls) == 1


# ---- the AI reply ---------------------------------------------------------------------------------
def test_the_reply_waits_for_the_transcript_and_reads_it(app, db, tenant, speech, llm, bridge_server):
    set_auto_reply(db, tenant.business_id)
    speech.script(TRANSCRIPT)
    message_id = store_voice_note(app, tenant.business_id)
    settings = app.config["SETTINGS"]
    reply_to_message(db, settings, message_id)  # pending: nothing is written yet
    assert llm.requests == []
    with InProcessJobs(app) as jobs:
        voice_notes.queue_transcription(services(app).jobs, message_id)
        assert jobs.wait_idle(15)
        assert jobs.wait_idle(15)
    [request] = llm.requests
    assert request["body"]["messages"][1:] == [{"role": "user", "content": f"{VOICE_NOTE_LABEL} {TRANSCRIPT}"}]
    [sent] = bridge_server.accepted
    assert sent.body["to"] == CUSTOMER and sent.body["business_id"] == tenant.business_id


def test_a_failed_note_is_still_answered(app, db, tenant, speech, llm, bridge_server):
    set_auto_reply(db, tenant.business_id)
    message_id = store_voice_note(app, tenant.business_id, audio=b"not audio at all" * 10)
    with InProcessJobs(app) as jobs:
        voice_notes.queue_transcription(services(app).jobs, message_id)
        assert jobs.wait_idle(15)
    [request] = llm.requests
    assert request["body"]["messages"][1:] == [{"role": "user", "content": VOICE_NOTE_NOT_UNDERSTOOD}]
    assert len(bridge_server.accepted) == 1


def test_a_text_after_a_pending_note_waits_and_both_get_one_reply(app, db, tenant, speech, llm):
    set_auto_reply(db, tenant.business_id)
    speech.script(TRANSCRIPT)
    note_id = store_voice_note(app, tenant.business_id, body="[audio]")
    text_id = customer_text(app, tenant.business_id, "ועוד משהו")
    reply_to_message(db, app.config["SETTINGS"], text_id)
    assert llm.requests == []  # the note comes first: the text isn't answered before it
    with InProcessJobs(app) as jobs:
        voice_notes.queue_transcription(services(app).jobs, note_id)
        assert jobs.wait_idle(15)
    [request] = llm.requests
    assert [m["content"] for m in request["body"]["messages"][1:]] == [f"{VOICE_NOTE_LABEL} {TRANSCRIPT}", "ועוד משהו"]
    reply_to_message(db, app.config["SETTINGS"], text_id)  # answered together already
    assert len(llm.requests) == 1


def test_a_note_pending_too_long_holds_nothing_up(app, db, tenant, llm):
    set_auto_reply(db, tenant.business_id)
    note_id = store_voice_note(app, tenant.business_id)
    with db.scope() as session:
        session.get_one(Message, note_id).created_at = utcnow() - auto_reply.TRANSCRIPT_WAIT - timedelta(minutes=1)
    text_id = customer_text(app, tenant.business_id, "שלום?")
    reply_to_message(db, app.config["SETTINGS"], text_id)
    [request] = llm.requests
    assert request["body"]["messages"][-1] == {"role": "user", "content": "שלום?"}


# ---- search -----------------------------------------------------------------------------------------
def test_search_finds_a_voice_note_by_its_transcript(app, db, tenant, speech):
    speech.script(TRANSCRIPT)
    message_id = store_voice_note(app, tenant.business_id)
    voice_notes.transcribe_voice_note(
        db, app.config["SETTINGS"], services(app).voice_note_transcriber, None, message_id
    )
    client = app.test_client()
    found = client.get("/api/crm/threads", query_string={"q": "תור"}, headers=tenant.headers).get_json()
    assert [t["id"] for t in found["items"]] == [message(db, message_id).thread_id]
    both = client.get("/api/crm/threads", query_string={"q": "תור בבוקר"}, headers=tenant.headers).get_json()
    assert len(both["items"]) == 1
    nothing = client.get("/api/crm/threads", query_string={"q": "ביטול"}, headers=tenant.headers).get_json()
    assert nothing["items"] == []
    other = create_tenant(db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102")
    theirs = client.get("/api/crm/threads", query_string={"q": "תור"}, headers=other.headers).get_json()
    assert theirs["items"] == []  # another business's note stays invisible


def test_a_note_whose_job_cannot_be_queued_is_marked_failed(make_app, speech, media_dir):
    app = make_app(
        GOOGLE_SPEECH_EMULATOR_HOST=speech.address,
        MEDIA_DIR=str(media_dir),
        JOBS_URL="redis://127.0.0.1:1/0",  # nothing listens on port 1
    )
    tenant = create_tenant(services(app).database)
    message_id = store_voice_note(app, tenant.business_id)
    voice_notes.queue_transcription(services(app).jobs, message_id)
    failed = message(services(app).database, message_id)
    assert (failed.transcript_status, failed.transcript_error) == ("failed", "the transcription could not be queued")


def test_a_refused_audio_file_fails_with_its_reason(app, db, tenant, speech):
    message_id = store_voice_note(app, tenant.business_id)
    with db.scope() as session:
        item = session.scalars(sa.select(Media).where(Media.message_id == message_id)).one()
        item.status, item.storage_key, item.error_message = "rejected", None, "the file is too large"
    voice_notes.transcribe_voice_note(
        db, app.config["SETTINGS"], services(app).voice_note_transcriber, None, message_id
    )
    failed = message(db, message_id)
    assert failed.transcript_status == "failed" and "the file is too large" in failed.transcript_error
    assert speech.recognize_calls == []


def test_audio_still_downloading_is_retried(app, db, tenant, speech):
    message_id = store_voice_note(app, tenant.business_id)
    with db.scope() as session:
        item = session.scalars(sa.select(Media).where(Media.message_id == message_id)).one()
        item.status = "pending"
    with pytest.raises(voice_notes.AudioNotReady):
        voice_notes.transcribe_voice_note(
            db, app.config["SETTINGS"], services(app).voice_note_transcriber, None, message_id, last_attempt=False
        )
    assert message(db, message_id).transcript_status == "pending"

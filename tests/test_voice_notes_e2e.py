"""Voice notes end to end on the app, through the real webhooks and every fake at its wire: a signed
Baileys event carrying the note (base64 Ogg Opus, as the bridge posts it) and a Twilio message whose
MediaUrl the Twilio REST fake serves each end as a stored audio file, the Hebrew transcript on the
message (Google's gRPC fake) and an AI reply (OpenAI fake) whose request holds that transcript, sent
back through the provider the note came in on, from the business's own sender."""

from __future__ import annotations

import base64
import hashlib

import pytest
import sqlalchemy as sa

from server.db.models import Media
from server.whatsapp.auto_reply import VOICE_NOTE_LABEL
from testkit.fakes.google_speech import FakeSpeech
from testkit.jobs import InProcessJobs
from testkit.voice_notes import voice_note
from tests.test_whatsapp_auto_reply import llm, llm_server, replies, set_auto_reply  # noqa: F401
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    TWILIO_INBOUND,
    bridge,
    bridge_message,
    bridge_server,
    messages,
    post_bridge,
    post_twilio,
    tenant,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_db,
    wa_env,
    wait_for,
)

TRANSCRIPT = "שלום, רציתי לקבוע תור למחר בבוקר"


@pytest.fixture(scope="module")
def speech_server():
    with FakeSpeech() as fake:
        yield fake


@pytest.fixture
def speech(speech_server):
    speech_server.recognize_calls.clear()
    return speech_server


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture
def wa_app(make_app, wa_env, llm, speech, media_dir):  # noqa: F811
    app = make_app(
        **wa_env(
            OPENAI_API_KEY=llm.api_key,
            OPENAI_BASE_URL=llm.base_url,
            GOOGLE_SPEECH_EMULATOR_HOST=speech.address,
            MEDIA_DIR=str(media_dir),
        )
    )
    with InProcessJobs(app):
        yield app


@pytest.fixture
def wa_client(wa_app):
    return wa_app.test_client()


def stored_audio(db, message_id: int) -> Media:
    with db.scope() as session:
        [item] = session.scalars(sa.select(Media).where(Media.message_id == message_id)).all()
        return item


def assert_answered_with_the_transcript(wa_db, llm, note, message_id: int) -> None:  # noqa: F811
    item = stored_audio(wa_db, message_id)
    assert (item.kind, item.status, item.sha256) == ("audio", "stored", hashlib.sha256(note).hexdigest())
    assert item.mime_type.startswith("audio/ogg")
    [reply] = wait_for(lambda: replies(wa_db), timeout=20)
    [stored] = messages(wa_db, direction="in")
    assert (stored.transcript, stored.transcript_status) == (TRANSCRIPT, "done")
    [request] = llm.requests
    assert request["body"]["messages"][-1] == {"role": "user", "content": f"{VOICE_NOTE_LABEL} {TRANSCRIPT}"}
    assert reply.body == f"קיבלתי: {VOICE_NOTE_LABEL} {TRANSCRIPT}"


def test_a_baileys_voice_note(wa_client, wa_db, tenant, llm, speech, bridge):  # noqa: F811
    set_auto_reply(wa_db, tenant.business_id)
    speech.script(TRANSCRIPT)
    note = voice_note(4)
    event = {
        **bridge_message(tenant.whatsapp, text=""),
        "business_id": tenant.business_id,
        "media": {
            "kind": "audio",
            "mimetype": "audio/ogg; codecs=opus",
            "voice_note": True,
            "seconds": 4,
            "file_name": None,
            "caption": None,
            "size": len(note),
            "sha256": hashlib.sha256(note).hexdigest(),
            "data": base64.b64encode(note).decode(),
        },
    }
    assert post_bridge(wa_client, event).status_code == 204
    [inbound] = messages(wa_db, direction="in")
    assert_answered_with_the_transcript(wa_db, llm, note, inbound.id)
    [call] = speech.recognize_calls
    assert call["method"] == "Recognize" and call["audio_bytes"] == len(note)
    [sent] = wait_for(lambda: bridge.accepted)
    assert sent.body["business_id"] == tenant.business_id and sent.body["to"] == CUSTOMER


def test_a_twilio_voice_note(wa_client, wa_db, tenant, llm, speech, twilio_api):  # noqa: F811
    set_auto_reply(wa_db, tenant.business_id)
    speech.script(TRANSCRIPT)
    note = voice_note(70)  # past a minute: long-running recognition
    form = twilio_form(
        tenant.whatsapp,
        body="",
        NumMedia="1",
        MessageType="audio",
        MediaUrl0=twilio_api.inbound_media(note, "audio/ogg"),
        MediaContentType0="audio/ogg",
    )
    assert post_twilio(wa_client, TWILIO_INBOUND, form).status_code == 204
    [inbound] = messages(wa_db, direction="in")
    wait_for(lambda: stored_audio(wa_db, inbound.id).status == "stored", timeout=20)
    assert_answered_with_the_transcript(wa_db, llm, note, inbound.id)
    assert speech.recognize_calls[-1]["method"] == "LongRunningRecognize"
    [sent] = wait_for(lambda: twilio_api.requests_for("Messages"))
    assert sent.form["From"] == f"whatsapp:{tenant.whatsapp}" and TRANSCRIPT in sent.form["Body"]


def test_the_console_api_shows_the_transcript(wa_client, wa_db, tenant, llm, speech, bridge):  # noqa: F811
    speech.script(TRANSCRIPT)
    note = voice_note(2)
    event = {
        **bridge_message(tenant.whatsapp, text=""),
        "business_id": tenant.business_id,
        "media": {
            "kind": "audio",
            "mimetype": "audio/ogg; codecs=opus",
            "voice_note": True,
            "seconds": None,
            "size": len(note),
            "sha256": hashlib.sha256(note).hexdigest(),
            "data": base64.b64encode(note).decode(),
        },
    }
    assert post_bridge(wa_client, event).status_code == 204
    [inbound] = messages(wa_db, direction="in")
    wait_for(lambda: messages(wa_db, direction="in")[0].transcript_status == "done", timeout=20)
    page = wa_client.get(f"/api/crm/threads/{inbound.thread_id}", headers=tenant.headers).get_json()
    [shown] = page["messages"]["items"]
    assert (shown["transcript"], shown["transcript_status"]) == (TRANSCRIPT, "done")

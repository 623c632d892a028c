"""Voice notes under production conditions: real gunicorn (gevent, two workers) takes signed Baileys
events with base64 Ogg Opus notes, and the jobs worker process transcribes them through the Speech
gRPC fake and answers with the OpenAI fake, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import requests

from server.db.models import Business
from server.security import bridge_hmac
from server.whatsapp.auto_reply import VOICE_NOTE_LABEL
from testkit.fakes.google_speech import FakeSpeech
from testkit.fakes.openai_server import FakeOpenAI
from testkit.servers import GunicornServer
from testkit.voice_notes import voice_note
from tests.conftest import BASE_TEST_ENV, create_tenant
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    BAILEYS,
    WA_SECRET,
    bridge,
    bridge_message,
    bridge_server,
    messages,
    twilio_api,
    twilio_server,
    wa_env,
    wait_for,
)

pytestmark = pytest.mark.slow

TRANSCRIPTS = ("אני רוצה לקבוע תור ליום שלישי", "יש לכם מקום מחר בערב")


def note_event(business_id: int, to: str, note: bytes, customer: str) -> bytes:
    event = {
        **bridge_message(to, from_=customer, text=""),
        "business_id": business_id,
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
    return json.dumps(event, ensure_ascii=False).encode()


def test_voice_notes_are_transcribed_and_answered_by_the_jobs_worker(database_url, db, tmp_path, wa_env, bridge):
    tenant = create_tenant(db)
    with db.scope() as session:
        session.get(Business, tenant.business_id).features = {"wa_auto_reply": True}
    with FakeSpeech() as speech, FakeOpenAI() as llm:
        speech.script(*TRANSCRIPTS)
        env = {
            **BASE_TEST_ENV,
            **wa_env(OPENAI_API_KEY=llm.api_key, OPENAI_BASE_URL=llm.base_url, WA_PROVIDER_PRIORITY="baileys"),
            "DATABASE_URL": database_url,
            "GOOGLE_SPEECH_EMULATOR_HOST": speech.address,
            "MEDIA_DIR": str(tmp_path / "media"),
        }
        with GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log", jobs_worker=True) as server:
            for customer, seconds in (("+972501111111", 5), ("+972502222222", 65)):
                body = note_event(tenant.business_id, tenant.whatsapp, voice_note(seconds), customer)
                headers = {"Content-Type": "application/json", bridge_hmac.HEADER: bridge_hmac.sign(WA_SECRET, body)}
                response = requests.post(server.url + BAILEYS, data=body, headers=headers, timeout=10)
                assert response.status_code == 204
            wait_for(lambda: len(bridge.accepted) == 2, timeout=30)
            worker_log = server.jobs_worker.logs()
    notes = messages(db, direction="in")
    assert sorted((m.transcript, m.transcript_status) for m in notes) == sorted((t, "done") for t in TRANSCRIPTS)
    assert sorted(c["method"] for c in speech.recognize_calls) == ["LongRunningRecognize", "Recognize"]
    prompts = sorted(request["body"]["messages"][-1]["content"] for request in llm.requests)
    assert prompts == sorted(f"{VOICE_NOTE_LABEL} {t}" for t in TRANSCRIPTS)
    assert worker_log.count('"event": "voice_note_transcribed"') == 2

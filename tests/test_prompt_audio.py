"""The fixed prompts in the agent's real voice (server/voice/prompt_audio.py), against the Google TTS
gRPC fake: made off the call path by the job and cached by voice and text, made again when the text
changes, made on first use within a short time, played by Twilio from /tts/prompts/…, and the espeak
files as the last resort when Google fails or isn't configured."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import grpc
import pytest

from server.app_state import services
from server.db.models import Business
from server.providers.wav import parse_wav
from server.voice import prompt_audio
from server.voice.prompt_audio import FALLBACK_TEXT, GREETING_TEXT, PromptAudioStore
from server.voice.speech_text import spoken_text
from server.voice.turns import APOLOGY_TEXT, PhraseCache
from testkit.fakes.google_tts import FakeTextToSpeech, payload_for
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from testkit.jobs import InProcessJobs
from tests.conftest import TEST_BASE_URL, make_settings

VOICE = "he-IL-Wavenet-B"
OPENING = "שלום, הגעתם לסלון דנה. התור הפנוי הבא ב-14:30."


@pytest.fixture(scope="module")
def google():
    with FakeTextToSpeech() as fake:
        yield fake


@pytest.fixture
def voice_env(google, tmp_path):
    google.requests.clear()
    google._failures.clear()
    return {
        "GOOGLE_TTS_EMULATOR_HOST": google.address,
        "GOOGLE_SPEECH_EMULATOR_HOST": "127.0.0.1:9",  # never reached: no call streams here
        "OPENAI_API_KEY": "sk-test",
        "TTS_VOICE": VOICE,
        "PROMPT_AUDIO_DIR": str(tmp_path / "prompts"),
        "WATCHDOG_SECONDS": "600",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
    }


@pytest.fixture
def app(make_app, voice_env):
    return make_app(**voice_env)


def store_of(app) -> PromptAudioStore:
    return PromptAudioStore.for_settings(app.config["SETTINGS"])


def synthesised(google) -> list[str]:
    return [request["text"] for request in google.requests]


def run_jobs(app) -> int:
    return InProcessJobs(app).run_due()


def incoming_call(client, to: str) -> ET.Element:
    params = voice_params(new_call_sid(), to=to)
    answer = client.post(
        "/webhook/incoming_call",
        data=params,
        headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params),
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return ET.fromstring(answer.data)


def played(root: ET.Element) -> str:
    return root.find("Play").text.removeprefix(TEST_BASE_URL)


def greeting_business(db, tenant) -> None:
    with db.scope() as session:
        business = session.get(Business, tenant.business_id)
        business.greeting_enabled, business.opening_line = True, OPENING


# ---- the store ---------------------------------------------------------------------------------
def test_a_prompt_is_kept_as_twilio_ready_wav_named_by_voice_and_spoken_text(tmp_path):
    store = PromptAudioStore(tmp_path, VOICE)
    assert store.get("שלום") is None and store.url_path("שלום") is None
    store.put("שלום", b"\xff" * 161)  # odd length: the data chunk is padded
    wav = parse_wav(store.path("שלום").read_bytes())
    assert (wav.is_mulaw, wav.sample_rate_hz, wav.channels, wav.payload) == (True, 8000, 1, b"\xff" * 161)
    assert store.get("שלום") == b"\xff" * 161
    assert store.url_path("שלום") == f"/tts/prompts/{store.key('שלום')}.wav"
    assert store.key("שלום") != PromptAudioStore(tmp_path, "he-IL-Wavenet-A").key("שלום")  # another voice
    assert store.key("₪49.90") == store.key(spoken_text("₪49.90"))  # what is said is what counts
    assert list(tmp_path.iterdir()) == [store.path("שלום")]  # no half-written file left behind


def test_the_engine_phrase_cache_reads_prompts_made_ahead(tmp_path):
    store = PromptAudioStore(tmp_path, VOICE)
    phrases = PhraseCache(made=store.get)
    assert phrases.get(APOLOGY_TEXT) is None
    store.put(APOLOGY_TEXT, b"\x80" * 320)
    assert phrases.get(APOLOGY_TEXT) == b"\x80" * 320
    store.path(APOLOGY_TEXT).unlink()
    assert phrases.get(APOLOGY_TEXT) == b"\x80" * 320  # kept in memory from then on


# ---- the job -------------------------------------------------------------------------------------
def test_the_job_makes_a_business_prompts_in_the_google_voice_once(app, google):
    prompt_audio.queue_business_prompts(
        services(app).jobs, app.config["SETTINGS"], Business(name="Dana", opening_line=OPENING)
    )
    assert run_jobs(app) == 1
    texts = [GREETING_TEXT, OPENING, FALLBACK_TEXT, APOLOGY_TEXT]
    assert sorted(synthesised(google)) == sorted(spoken_text(text) for text in texts)
    assert "בשתיים וחצי" in spoken_text(OPENING)  # Google heard the time in words
    assert {request["voice"] for request in google.requests} == {VOICE}
    store = store_of(app)
    for text in texts:
        assert store.get(text) == payload_for(spoken_text(text))
    # The same prompts again, queued or not: nothing new is synthesised.
    prompt_audio.queue_business_prompts(
        services(app).jobs, app.config["SETTINGS"], Business(name="Dana", opening_line=OPENING)
    )
    prompt_audio.queue_prompts(services(app).jobs, app.config["SETTINGS"], [GREETING_TEXT])
    run_jobs(app)
    assert len(google.requests) == 4


def test_changing_the_opening_line_makes_it_again_before_the_next_call(app, client, tenant, google):
    answer = client.patch("/api/crm/business", json={"opening_line": OPENING}, headers=tenant.headers)
    assert answer.status_code == 200
    run_jobs(app)
    store = store_of(app)
    assert store.get(OPENING) == payload_for(spoken_text(OPENING))
    changed = "שלום, סלון דנה מדבר. אנחנו פתוחים עד 20:00."
    assert client.patch("/api/crm/business", json={"opening_line": changed}, headers=tenant.headers).status_code == 200
    run_jobs(app)
    assert synthesised(google).count(spoken_text(changed)) == 1
    assert store.get(changed) == payload_for(spoken_text(changed)) and store.key(changed) != store.key(OPENING)
    # A setting that changes no prompt queues nothing.
    before = len(google.requests)
    assert (
        client.patch("/api/crm/business", json={"timezone": "Asia/Jerusalem"}, headers=tenant.headers).status_code
        == 200
    )
    assert run_jobs(app) == 0 and len(google.requests) == before


def test_a_job_whose_synthesis_fails_is_retried(app, google):
    google.fail_next(grpc.StatusCode.UNAVAILABLE, count=1)
    prompt_audio.queue_prompts(services(app).jobs, app.config["SETTINGS"], [GREETING_TEXT])
    run_jobs(app)
    assert store_of(app).get(GREETING_TEXT) is None
    [retry] = services(app).jobs.huey.scheduled()
    InProcessJobs(app).run_due(at=retry.eta)
    assert store_of(app).get(GREETING_TEXT) == payload_for(GREETING_TEXT)


# ---- what Twilio plays -------------------------------------------------------------------------
def test_the_greeting_is_made_on_first_use_and_then_served_from_the_cache(app, client, db, tenant, google):
    greeting_business(db, tenant)
    root = incoming_call(client, tenant.phone)
    key = store_of(app).key(GREETING_TEXT)
    assert played(root) == f"/tts/prompts/{key}.wav"
    assert [element.tag for element in root] == ["Play", "Connect"]
    audio = client.get(f"/tts/prompts/{key}.wav")
    assert audio.status_code == 200 and audio.mimetype == "audio/wav"
    assert parse_wav(audio.data).payload == payload_for(GREETING_TEXT)
    # The call also queued the business's other prompts; none is made on the call path.
    assert synthesised(google) == [GREETING_TEXT]
    run_jobs(app)
    assert sorted(synthesised(google)) == sorted([GREETING_TEXT, spoken_text(OPENING), FALLBACK_TEXT, APOLOGY_TEXT])
    # The next call asks Google for nothing.
    assert played(incoming_call(client, tenant.phone)) == f"/tts/prompts/{key}.wav"
    pending = [t.name for t in services(app).jobs.huey.pending()]
    assert "prompt_audio" not in pending and len(google.requests) == 4


def test_espeak_plays_when_google_fails_and_the_real_voice_follows(app, client, db, tenant, google):
    greeting_business(db, tenant)
    google.fail_next(grpc.StatusCode.UNAVAILABLE, count=1)
    assert played(incoming_call(client, tenant.phone)) == "/static/tts/greeting_he.mp3"
    run_jobs(app)  # the job made it meanwhile
    assert played(incoming_call(client, tenant.phone)) == f"/tts/prompts/{store_of(app).key(GREETING_TEXT)}.wav"


def test_espeak_plays_when_google_is_too_slow_for_a_webhook(app, client, db, tenant, google):
    greeting_business(db, tenant)
    google.delay_seconds = prompt_audio.FIRST_USE_TIMEOUT_SECONDS + 1
    try:
        assert played(incoming_call(client, tenant.phone)) == "/static/tts/greeting_he.mp3"
    finally:
        google.delay_seconds = 0


def test_the_voicemail_prompt_in_the_agent_voice(app, client, tenant, google):
    # Before it is made, Twilio's fallback URL (which must answer at once) plays espeak and makes nothing.
    assert played(ET.fromstring(client.get("/webhook/fallback_call").data)) == "/static/tts/fallback_he.mp3"
    assert synthesised(google) == []
    params = voice_params(new_call_sid(), to=tenant.phone)
    ended = client.post(
        "/webhook/stream_ended", data=params, headers=signature_header(TEST_BASE_URL + "/webhook/stream_ended", params)
    )
    key = store_of(app).key(FALLBACK_TEXT)
    assert played(ET.fromstring(ended.data)) == f"/tts/prompts/{key}.wav"
    assert played(ET.fromstring(client.get("/webhook/fallback_call").data)) == f"/tts/prompts/{key}.wav"


def test_without_google_the_espeak_files_play_and_nothing_is_queued(make_app, db, tenant, tmp_path):
    app = make_app(
        GOOGLE_SPEECH_EMULATOR_HOST="127.0.0.1:9", OPENAI_API_KEY="sk-test", PROMPT_AUDIO_DIR=str(tmp_path / "p")
    )
    assert not app.config["SETTINGS"].tts_configured
    client = app.test_client()
    greeting_business(db, tenant)
    params = voice_params(new_call_sid(), to=tenant.phone)
    root = ET.fromstring(
        client.post(
            "/webhook/incoming_call",
            data=params,
            headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params),
        ).data
    )
    assert played(root) == "/static/tts/fallback_he.mp3"  # not live without TTS: straight to voicemail
    assert client.patch("/api/crm/business", json={"opening_line": "היי"}, headers=tenant.headers).status_code == 200
    assert services(app).jobs.counts()["queued"] == 0


@pytest.mark.parametrize(
    "name",
    ["0" * 63, "g" * 64, "..%2F..%2Fmain.py", "A" * 64, "0" * 64],  # the last: well-formed, but not made
)
def test_only_made_prompts_are_served(client, name):
    answer = client.get(f"/tts/prompts/{name}.wav")
    assert answer.status_code == 404
    assert answer.get_json()["error"] == "not_found"


def test_queueing_needs_google_configured():
    assert prompt_audio.google_tts(make_settings()) is None

"""End to end over real `gunicorn -k gevent`: a three-turn Hebrew call through the real SpeechClient,
TextToSpeechClient and OpenAI client, each talking to its wire-level fake through the production
settings (`GOOGLE_SPEECH_EMULATOR_HOST`, `GOOGLE_TTS_EMULATOR_HOST`, `OPENAI_BASE_URL`)."""

from __future__ import annotations

import time

import grpc
import pytest
import sqlalchemy as sa

from server.agent.prompt import opening_line
from server.db.engine import Database
from server.db.models import Business, Call, CallTurn
from server.voice.turns import APOLOGY_TEXT
from testkit.fakes.google_speech import FakeSpeech, speech
from testkit.fakes.google_tts import FakeTextToSpeech, payload_for
from testkit.fakes.openai_server import FakeOpenAI
from testkit.fakes.twilio_phone import Line, new_call_sid, place_call, report_completed
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN, create_tenant

# the app under real gunicorn, with the gRPC and HTTP fakes as subprocesses
pytestmark = pytest.mark.slow

BUSINESS_NAME = "מספרת דנה"
CALLER = "+972501234567"
CONVERSATION = (  # what the caller says → what the model answers
    ("שלום, אני רוצה לקבוע תור", "בשמחה, לאיזה יום?"),
    ("מחר בעשר בבוקר", "מעולה, קבעתי לך תור למחר בעשר בבוקר."),
    ("תודה רבה", "תודה שהתקשרת, יום טוב."),
)
HEADER_MARKERS = (b"RIFF", b"WAVE", b"fmt ", b"LIST", b"fact")


@pytest.fixture
def fakes():
    with (
        FakeSpeech() as stt,
        FakeTextToSpeech() as tts,
        FakeOpenAI() as llm,
        FakeTwilioRest(account_sid=BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], auth_token=TEST_TWILIO_TOKEN) as twilio,
    ):
        yield stt, tts, llm, twilio


@pytest.fixture
def live_app(database_url, fakes, tmp_path):
    stt, tts, llm, twilio = fakes
    env = {
        **BASE_TEST_ENV,
        "DATABASE_URL": database_url,
        "TWILIO_API_BASE_URL": twilio.url,
        "GOOGLE_SPEECH_EMULATOR_HOST": stt.address,
        "GOOGLE_TTS_EMULATOR_HOST": tts.address,
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": llm.api_key,
        "OPENAI_MODEL": "gpt-test",
        "LLM_FIRST_TOKEN_TIMEOUT_SECONDS": "1.5",
    }
    server = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
    server.env["PUBLIC_BASE_URL"] = server.url  # the TwiML's Stream URL must reach this server
    with server:
        database = Database(database_url)
        tenant = create_tenant(
            database, name=BUSINESS_NAME, ai_instructions='מספרה בתל אביב. פתוח א-ה 9:00-19:00. תספורת 80 ש"ח.'
        )
        yield server, database, tenant
        database.engine.dispose()


def caller_line(server: GunicornServer, tenant) -> Line:
    return Line(
        app_url=server.url,
        public_url=server.url,
        account_sid=BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
        auth_token=TEST_TWILIO_TOKEN,
        from_number=CALLER,
        to_number=tenant.phone,
    )


def say_and_wait(caller, ms: int = 600) -> None:
    """Speak, then wait for the agent's whole answer to arrive and play out."""
    before = len(caller.media)
    caller.play(speech(ms))
    assert caller.wait_for(lambda c: len(c.media) > before, timeout=10), "the agent did not answer"
    assert caller.wait_until_quiet(quiet=0.4, timeout=15)


def wait_for_turns(database: Database, call_sid: str, count: int, timeout: float = 10.0) -> list[CallTurn]:
    deadline = time.monotonic() + timeout
    while True:
        with database.scope() as session:
            call = session.scalar(sa.select(Call).where(Call.call_sid == call_sid))
            turns = list(
                session.scalars(sa.select(CallTurn).where(CallTurn.call_id == call.id).order_by(CallTurn.turn_index))
            )
            session.expunge_all()
        if len(turns) >= count or time.monotonic() > deadline:
            return turns
        time.sleep(0.1)


def test_three_turn_hebrew_call_through_the_real_clients(live_app, fakes):
    server, database, tenant = live_app
    stt, tts, llm, _twilio = fakes
    stt.script(*(said for said, _ in CONVERSATION))
    # As Google does, the whole utterance is the last interim: each reply, written ahead of the
    # final (preemptive generation), is kept, so the model is asked once per turn.
    stt.last_interim_ms = 0
    llm.replies_for.update(dict(CONVERSATION))
    call_sid = new_call_sid()
    line = caller_line(server, tenant)

    caller = place_call(line, call_sid)
    assert caller.subprotocol == "audio.twilio.com"
    assert caller.wait_for(lambda c: len(c.media) > 0, timeout=10), server.logs()[-3000:]
    assert caller.wait_until_quiet(quiet=0.4, timeout=15)
    for _ in CONVERSATION:
        say_and_wait(caller)
    caller.hang_up()
    report_completed(line, call_sid, duration_seconds=12)

    with database.scope() as session:
        business = session.get(Business, tenant.business_id)
        greeting = opening_line(business)
    spoken = [greeting] + [reply for _, reply in CONVERSATION]
    audio = caller.audio()
    assert audio == b"".join(payload_for(text) for text in spoken)
    assert not any(marker in audio for marker in HEADER_MARKERS)
    assert all(len(m.payload) == 160 for m in caller.media)

    turns = wait_for_turns(database, call_sid, 4)
    assert [(t.user_text, t.agent_text) for t in turns] == [("", greeting)] + list(CONVERSATION)
    for turn in turns[1:]:
        assert not turn.interrupted
        assert turn.t_total_ms is not None and turn.t_nlp_ms is not None and turn.t_tts_ms is not None
        assert 0 <= turn.t_total_ms < 5000
    with database.scope() as session:
        call = session.scalar(sa.select(Call).where(Call.call_sid == call_sid))
        for said, reply in CONVERSATION:
            assert said in call.transcript and reply in call.transcript

    # What the real clients put on the wire.
    [stream] = stt.streams
    config = stream.config["config"]
    assert (config["language_code"], config["sample_rate_hertz"], stream.config["interim_results"]) == (
        "he-IL",
        8000,
        True,
    )
    assert stream.requests and stream.audio_bytes / stream.requests >= 700  # ~100 ms per request
    assert {r["text"] for r in tts.requests} >= set(spoken)
    assert all(
        (r["voice"], r["encoding"], r["sample_rate_hertz"]) == ("he-IL-Wavenet-A", "MULAW", 8000) for r in tts.requests
    )
    chats = [r["body"] for r in llm.requests]
    assert len(chats) == 3 and all(body["stream"] and body["model"] == "gpt-test" for body in chats)
    system = chats[0]["messages"][0]
    assert system["role"] == "system" and BUSINESS_NAME in system["content"] and "80" in system["content"]
    assert [m["content"] for m in chats[2]["messages"][1:]] == [
        greeting,
        CONVERSATION[0][0],
        CONVERSATION[0][1],
        CONVERSATION[1][0],
        CONVERSATION[1][1],
        CONVERSATION[2][0],
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tts_failure_and_llm_stall_are_answered_with_the_apology(live_app, fakes):
    server, database, tenant = live_app
    stt, tts, llm, _twilio = fakes
    # The TTS failure must meet the answer to the final transcript: a reply written ahead of it
    # (preemptive generation) would take the failure and, by design, be written again on the final.
    with database.scope() as session:
        session.get(Business, tenant.business_id).features = {"preemptive_generation": False}
    stt.script("שלום", "אפשר לקבוע תור?", "מחר?")
    llm.replies_for.update({"שלום": "שלום, במה אפשר לעזור?", "אפשר לקבוע תור?": "בטח, לאיזה יום?"})
    caller = place_call(caller_line(server, tenant))
    assert caller.wait_for(lambda c: len(c.media) > 0, timeout=10), server.logs()[-3000:]
    assert caller.wait_until_quiet(quiet=0.4, timeout=15)
    assert caller.wait_for(lambda c: APOLOGY_TEXT in {r["text"] for r in tts.requests}, timeout=5)

    tts.fail_next(grpc.StatusCode.UNAVAILABLE, count=1)  # the first reply's sentence fails in Google TTS
    heard_before = len(caller.audio())
    say_and_wait(caller)
    assert caller.audio()[heard_before:] == payload_for(APOLOGY_TEXT)

    heard_before = len(caller.audio())
    say_and_wait(caller)  # the call goes on: the next turn is answered normally
    assert caller.audio()[heard_before:] == payload_for("בטח, לאיזה יום?")

    llm.stall = True  # the model sends its role chunk and then nothing: the first-token timeout fires
    heard_before = len(caller.audio())
    say_and_wait(caller)
    assert caller.audio()[heard_before:] == payload_for(APOLOGY_TEXT)
    llm.release()
    caller.hang_up()
    failures = [line for line in server.logs().splitlines() if '"turn_failed"' in line]
    assert [('"error": "tts:' in f, '"error": "llm:' in f) for f in failures] == [(True, False), (False, True)]

"""The live call engine end to end: real `gunicorn -k gevent`, a Twilio-faithful caller on a real
WebSocket, scripted STT/LLM/TTS loaded through the production `VOICE_PROVIDERS` setting, and the
CRM rows the call leaves behind. One server per database for the whole module."""

from __future__ import annotations

import json
import random
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import requests
import sqlalchemy as sa

from server.agent.prompt import opening_line
from server.config import Settings
from server.db.dao_crm import create_call
from server.db.engine import Database
from server.db.models import Business, BusinessNumber, Call, CallTurn
from server.voice.conversation import SentenceSplitter
from server.voice.turns import APOLOGY_TEXT
from testkit.fakes.scripted_providers import LONG_REPLY, Script, scripted_reply, speech, tone
from testkit.fakes.twilio_caller import TwilioCaller, new_sid, twilio_signature
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.fakes.twilio_webhooks import signature_header, voice_params
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN

# the app under real gunicorn
pytestmark = pytest.mark.slow

APP_SECRET = BASE_TEST_ENV["APP_SECRET"]
SCRIPT_ENV = {
    "SCRIPTED_STT_FINAL_MS": "150",
    "SCRIPTED_STT_INTERIM_MS": "150",
    "SCRIPTED_LLM_FIRST_TOKEN_MS": "40",
    "SCRIPTED_LLM_TOKEN_MS": "2",
    "SCRIPTED_TTS_MS": "20",
    "SCRIPTED_TTS_MS_PER_CHAR": "8",
}
SCRIPT = Script.from_env(SCRIPT_ENV)
# AI mode for `incoming_call` (the emulator hosts are never dialled: the scripted providers answer).
AI_ENV = {
    "OPENAI_API_KEY": "sk-test",
    "GOOGLE_SPEECH_EMULATOR_HOST": "127.0.0.1:9",
    "GOOGLE_TTS_EMULATOR_HOST": "127.0.0.1:9",
}


@dataclass
class Live:
    server: GunicornServer
    database: Database
    twilio: FakeTwilioRest
    business_id: int
    phone: str
    opening: str

    def new_call(self) -> str:
        sid = new_sid("CA")
        with self.database.scope() as session:
            create_call(
                session,
                self.business_id,
                call_sid=sid,
                from_number=f"+97250{random.randint(0, 9999999):07d}",
                to_number=self.phone,
                status="in-progress",
            )
        return sid

    def dial(self, call_sid: str | None = None, **kwargs: Any) -> TwilioCaller:
        return TwilioCaller.dial(
            self.server.url,
            call_sid or self.new_call(),
            auth_token=TEST_TWILIO_TOKEN,
            app_secret=APP_SECRET,
            business_id=self.business_id,
            **kwargs,
        )

    def call(self, sid: str) -> Call:
        with self.database.scope() as session:
            return session.scalar(sa.select(Call).where(Call.call_sid == sid))

    def turns(self, sid: str) -> list[CallTurn]:
        with self.database.scope() as session:
            return list(
                session.scalars(
                    sa.select(CallTurn).join(Call).where(Call.call_sid == sid).order_by(CallTurn.turn_index)
                )
            )

    def wait_for_call(self, sid: str, predicate: Callable[[Call], bool], timeout: float = 5.0) -> Call:
        deadline = time.monotonic() + timeout
        while True:
            call = self.call(sid)
            if predicate(call) or time.monotonic() > deadline:
                return call
            time.sleep(0.05)

    def events(self, event: str, call_sid: str | None = None) -> list[dict]:
        records = [json.loads(line) for line in self.server.logs().splitlines() if line.startswith("{")]
        return [r for r in records if r.get("event") == event and (call_sid is None or r.get("call_sid") == call_sid)]

    def wait_for_events(self, event: str, call_sid: str, timeout: float = 5.0) -> list[dict]:
        """`events`, once there is one: `ws_end` is logged just after the call's end is stored."""
        deadline = time.monotonic() + timeout
        while not (found := self.events(event, call_sid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('live') / 'live.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    with FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as twilio:
        server = GunicornServer(
            {
                **BASE_TEST_ENV,
                **AI_ENV,
                **SCRIPT_ENV,
                "DATABASE_URL": url,
                "VOICE_PROVIDERS": "testkit.fakes.scripted_providers:build",
                "TWILIO_API_BASE_URL": twilio.url,
                "LLM_FIRST_TOKEN_TIMEOUT_SECONDS": "0.6",
            }
        )
        server.env["PUBLIC_BASE_URL"] = server.url  # so the signed URL is the one the caller dials
        with server:
            database = Database(Settings.from_env({"DATABASE_URL": url}, dotenv=False).sqlalchemy_url)
            phone = f"+9723{random.randint(1000000, 9999999)}"
            with database.scope() as session:
                business = Business(name="סלון דנה", opening_line="שלום, סלון דנה.")
                session.add(business)
                session.flush()
                session.add(BusinessNumber(business_id=business.id, number=phone, kind="voice"))
                business_id, opening = business.id, opening_line(business)
            yield Live(server, database, twilio, business_id, phone, opening)
            database.engine.dispose()


def spoken(text: str) -> bytes:
    """The audio the scripted TTS makes for `text`."""
    return tone(text, max(200, len(text) * SCRIPT.tts_ms_per_char))


def sentences(reply: str) -> list[str]:
    splitter = SentenceSplitter()
    return splitter.feed(reply) + splitter.flush()


def hear_reply(caller: TwilioCaller, turn: int, timeout: float = 8.0) -> None:
    """Wait until turn `turn`'s reply started and everything sent has played."""
    assert caller.wait_for(lambda c: any(m.name.startswith(f"{turn}.") for m in c.marks), timeout), (
        f"no reply for turn {turn}"
    )
    assert caller.wait_until_quiet(0.3, timeout)


# ---- the worker -------------------------------------------------------------------------------
def test_the_worker_loads_the_agent_providers_before_the_first_call(live):
    assert "agent providers testkit.fakes.scripted_providers:build loaded in" in live.server.logs()


# ---- the WebSocket handshake ------------------------------------------------------------------
def test_handshake_echoes_the_twilio_subprotocol_only_when_offered(live):
    plain = requests.get(live.server.url + "/ws/twilio-media", timeout=5)
    assert plain.status_code == 400 and plain.json()["error"] == "websocket_required"
    for path in ("/ws/twilio-media", "/ws/twilio-media/"):
        offered = live.dial(path=path, start=False)
        assert offered.handshake.status == 101 and offered.subprotocol == "audio.twilio.com"
        offered.close()
    silent = live.dial(offer_subprotocol=False, start=False)
    assert silent.handshake.status == 101 and "sec-websocket-protocol" not in silent.handshake.headers
    silent.close()


def test_bad_signature_or_token_closes_with_policy_violation(live):
    url = "ws" + live.server.url[len("http") :] + "/ws/twilio-media"
    sid = live.new_call()
    forged = TwilioCaller(url, call_sid=sid, signature=twilio_signature("not-the-token", url))
    unsigned = TwilioCaller(url, call_sid=sid, signature=None)
    for caller in (forged, unsigned):
        assert caller.closed.wait(5) and caller.close_code == 1008
    bad_token = live.dial(sid, token="0" * 64)
    assert bad_token.closed.wait(5) and bad_token.close_code == 1008 and not bad_token.media
    reasons = [e["reason"] for e in live.events("ws_rejected")]
    assert any("X-Twilio-Signature does not match" in r for r in reasons)
    assert "missing X-Twilio-Signature" in reasons and "the call token is missing or wrong" in reasons
    assert live.call(sid).stream_started_at is None
    # Twilio has also signed the https:// form of the URL: accepted
    https_signed = live.dial(sid, signed_url=live.server.url + "/ws/twilio-media")
    assert https_signed.wait_for(lambda c: c.media, 5)
    https_signed.hang_up()


# ---- a whole call -----------------------------------------------------------------------------
def test_a_conversation_from_incoming_call_to_goodbye_lands_in_the_crm(live):
    sid = new_sid("CA")
    params = voice_params(sid, to=live.phone)
    answer = requests.post(
        live.server.url + "/webhook/incoming_call",
        data=params,
        timeout=5,
        headers=signature_header(live.server.url + "/webhook/incoming_call", params),
    )
    stream = ET.fromstring(answer.text).find("Connect/Stream")
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    caller = TwilioCaller(
        stream.get("url"),
        call_sid=sid,
        custom_parameters=parameters,
        signature=twilio_signature(TEST_TWILIO_TOKEN, stream.get("url")),
    )
    caller.start()

    # The agent speaks first: the opening line, before the caller says anything.
    assert caller.wait_for(lambda c: c.marks, 5) and caller.marks[0].name == "0.0"
    assert caller.audio().startswith(spoken(live.opening))
    call = live.wait_for_call(sid, lambda c: c.stream_started_at is not None)
    assert call.stream_sid == caller.stream_sid
    hear_reply(caller, 0)

    caller.play(speech("מה שעות הפתיחה?", 400))
    hear_reply(caller, 1)
    caller.play(speech("תודה רבה", 400))
    hear_reply(caller, 2)
    assert spoken(sentences(scripted_reply("תודה רבה"))[0]) in caller.audio()

    # Goodbye: once it has been heard, the server ends the stream and `stream_ended` will hang up.
    caller.play(speech("זהו, bye", 400))
    assert caller.closed.wait(8) and caller.close_code == 1000
    call = live.wait_for_call(sid, lambda c: c.ended_at is not None)
    assert call.outcome == "agent_goodbye" and call.stream_ended_at is not None
    ended = requests.post(
        live.server.url + "/webhook/stream_ended",
        data=voice_params(sid, to=live.phone),
        headers=signature_header(live.server.url + "/webhook/stream_ended", voice_params(sid, to=live.phone)),
        timeout=5,
    )
    assert "<Hangup" in ended.text and "<Record" not in ended.text

    turns = live.turns(sid)
    assert [(t.user_text, t.agent_text) for t in turns] == [
        ("", live.opening),
        ("מה שעות הפתיחה?", scripted_reply("מה שעות הפתיחה?")),
        ("תודה רבה", scripted_reply("תודה רבה")),
        ("זהו, bye", "תודה שהתקשרתם, להתראות!"),
    ]
    assert all(t.t_first_audio_ms is not None and not t.interrupted for t in turns)
    assert turns[1].t_audio_ms >= SCRIPT.stt_final_ms - 30 and turns[1].t_tts_ms >= SCRIPT.tts_ms - 5
    assert call.transcript.splitlines() == [
        f"Agent: {live.opening}",
        "Caller: מה שעות הפתיחה?",
        f"Agent: {scripted_reply('מה שעות הפתיחה?')}",
        "Caller: תודה רבה",
        f"Agent: {scripted_reply('תודה רבה')}",
        "Caller: זהו, bye",
        "Agent: תודה שהתקשרתם, להתראות!",
    ]
    metrics = live.events("turn_metrics", sid)
    assert [m["turn_id"] for m in metrics] == [0, 1, 2, 3]
    for record in metrics:
        assert record["mode"] == "stream" and record["business_id"] == live.business_id
        assert {"t_audio_ms", "t_nlp_ms", "t_tts_ms", "t_total_ms", "t_first_audio_ms", "interrupted"} <= set(record)
    assert live.events("ws_start", sid) and live.wait_for_events("ws_end", sid)[0]["reason"] == "agent_goodbye"
    assert live.events("ws_connected")


def test_barge_in_clears_playback_and_keeps_only_what_was_heard(live):
    caller = live.dial()
    hear_reply(caller, 0)
    caller.play(speech("ספרו לי הכל, long", 400))
    assert caller.wait_for(lambda c: c.marks_echoed >= 2, 8)  # the opening and the first sentence heard
    # a click is not speech: the agent keeps talking
    caller.play(b"\x00" * 480)
    time.sleep(0.4)
    assert not caller.clears
    heard_before = caller.marks_echoed
    interruption = caller.play(speech("רגע, שאלה אחרת", 500), wait=False)
    assert caller.wait_for(lambda c: c.clears, 3), "no clear after the caller spoke over the agent"
    assert caller.clears[0].at - interruption.first_sent_at < 0.5
    hear_reply(caller, 2)
    caller.close()  # the socket just drops, without `stop`

    call = live.wait_for_call(caller.call_sid, lambda c: c.ended_at is not None)
    assert call.ended_at is not None
    assert live.wait_for_events("ws_end", caller.call_sid)[0]["reason"] == "socket closed"
    turns = live.turns(caller.call_sid)
    long_sentences = sentences(LONG_REPLY)
    interrupted = turns[1]
    assert interrupted.interrupted and interrupted.user_text == "ספרו לי הכל, long"
    heard = interrupted.agent_text.split(". ")
    assert heard_before - 1 <= len(heard) < len(long_sentences)
    assert interrupted.agent_text == " ".join(long_sentences[: len(heard)])
    assert turns[2].user_text == "רגע, שאלה אחרת" and not turns[2].interrupted
    assert f"Agent: {interrupted.agent_text}\nCaller: רגע, שאלה אחרת" in call.transcript
    [barge_in] = live.events("barge_in", caller.call_sid)
    assert barge_in["cleared"] and barge_in["source"] in {"vad", "interim"}


def test_a_provider_timeout_is_answered_with_an_apology_and_the_call_goes_on(live):
    caller = live.dial()
    hear_reply(caller, 0)
    caller.play(speech("llm:stall מה קורה", 400))
    hear_reply(caller, 1)
    assert spoken(APOLOGY_TEXT) in caller.audio()
    caller.play(speech("מה המחיר?", 400))
    hear_reply(caller, 2)
    assert spoken(sentences(scripted_reply("מה המחיר?"))[0]) in caller.audio()

    # A second failure in a row (now the TTS) sends the call to voicemail via Twilio's REST API.
    assert not live.twilio.requests_for("Calls", caller.call_sid)
    caller.play(speech("tts:error", 400))
    hear_reply(caller, 3)
    caller.play(speech("llm:error", 400))
    [redirect] = live.twilio.wait_for_requests("Calls", 1, timeout=5, sid=caller.call_sid)
    assert "<Record" in redirect.form["Twiml"]
    caller.hang_up()

    # The stream's end is stored after every turn of the call is: then all of them can be read.
    call = live.wait_for_call(caller.call_sid, lambda c: c.stream_ended_at is not None)
    assert call.ended_at is None  # redirected to voicemail: the call goes on without the stream
    turns = live.turns(caller.call_sid)
    assert [t.agent_text for t in turns[1:]] == [APOLOGY_TEXT, scripted_reply("מה המחיר?"), APOLOGY_TEXT, APOLOGY_TEXT]
    failures = live.events("turn_failed", caller.call_sid)
    assert [f["consecutive"] for f in failures] == [1, 1, 2]
    assert "llm" in failures[0]["error"] and "tts" in failures[1]["error"]
    assert live.events("voice_fallback", caller.call_sid)


def test_a_second_stream_for_the_call_replaces_the_first(live):
    first = live.dial()
    hear_reply(first, 0)
    second = live.dial(first.call_sid)
    assert first.closed.wait(5) and first.close_code == 1000
    second.play(speech("שוב אני", 400))
    hear_reply(second, 1)
    assert not any(m.name.startswith("0.") for m in second.marks)  # no second greeting
    second.hang_up()
    call = live.wait_for_call(first.call_sid, lambda c: c.ended_at is not None)
    assert [t.turn_index for t in live.turns(first.call_sid)] == [0, 1]
    assert call.stream_sid == second.stream_sid and "Caller: שוב אני" in call.transcript
    assert live.events("ws_duplicate_stream", first.call_sid)


def test_malformed_input_dtmf_and_a_dying_stt_stream_do_not_end_the_call(live):
    caller = live.dial()
    hear_reply(caller, 0)
    for bad in (
        "not json",
        "[]",
        '{"event": "surprise"}',
        '{"event": "media", "media": {"payload": "***"}}',
        '{"event": "dtmf", "dtmf": {"digit": "x"}}',
        json.dumps({"event": "mark", "mark": {"name": "x" * 70000}}),
    ):
        caller.send_text(bad)
    # The STT stream dies instead of answering; a new one is opened and hears the replayed words.
    caller.play(speech(f"stt:die {caller.call_sid} עדיין שם?", 400))
    hear_reply(caller, 1)
    for digit in "12#":
        caller.dtmf(digit)
    hear_reply(caller, 2)
    caller.hang_up()

    call = live.wait_for_call(caller.call_sid, lambda c: c.ended_at is not None)
    assert [t.user_text for t in live.turns(caller.call_sid)] == [
        "",
        f"stt:die {caller.call_sid} עדיין שם?",
        "[The caller pressed on the phone keypad: 12]",
    ]
    assert call.stream_started_at is not None and "keypad: 12" in call.transcript
    [end] = live.wait_for_events("ws_end", caller.call_sid)
    assert end["reason"] == "stop" and end["malformed"] == 6 and end["stt_restarts"] == 1
    assert len(live.events("ws_message_skipped", caller.call_sid)) == 6
    assert [d["digit"] for d in live.events("dtmf", caller.call_sid)] == ["1", "2", "#"]

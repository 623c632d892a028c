"""The media WebSocket under abuse, on real gunicorn: a signed socket that never sends `start` is
closed after WS_START_TIMEOUT_SECONDS, and a deeply nested message is skipped like any malformed one."""

from __future__ import annotations

import json
import random
import time

import pytest
import sqlalchemy as sa

from server.config import Settings
from server.db.dao_crm import create_call
from server.db.engine import Database
from server.db.models import Business, BusinessNumber, Call
from testkit.fakes.twilio_caller import TwilioCaller, new_sid, twilio_signature
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN

pytestmark = pytest.mark.slow

APP_SECRET = BASE_TEST_ENV["APP_SECRET"]
START_TIMEOUT = 1.0
SCRIPT_ENV = {
    "SCRIPTED_STT_FINAL_MS": "150",
    "SCRIPTED_STT_INTERIM_MS": "150",
    "SCRIPTED_LLM_FIRST_TOKEN_MS": "40",
    "SCRIPTED_LLM_TOKEN_MS": "2",
    "SCRIPTED_TTS_MS": "20",
    "SCRIPTED_TTS_MS_PER_CHAR": "8",
}
AI_ENV = {
    "OPENAI_API_KEY": "sk-test",
    "GOOGLE_SPEECH_EMULATOR_HOST": "127.0.0.1:9",
    "GOOGLE_TTS_EMULATOR_HOST": "127.0.0.1:9",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('media-ws') / 'app.db'}"
    server = GunicornServer(
        {
            **BASE_TEST_ENV,
            **AI_ENV,
            **SCRIPT_ENV,
            "DATABASE_URL": url,
            "VOICE_PROVIDERS": "testkit.fakes.scripted_providers:build",
            "WS_START_TIMEOUT_SECONDS": str(START_TIMEOUT),
            "WATCHDOG_SECONDS": "600",
        }
    )
    server.env["PUBLIC_BASE_URL"] = server.url  # so the signed URL is the one the client dials
    with server:
        database = Database(Settings.from_env({"DATABASE_URL": url}, dotenv=False).sqlalchemy_url)
        with database.scope() as session:
            business = Business(name="סלון דנה", opening_line="שלום, סלון דנה.")
            session.add(business)
            session.flush()
            phone = f"+9723{random.randint(1000000, 9999999)}"
            session.add(BusinessNumber(business_id=business.id, number=phone, kind="voice"))
            business_id = business.id
        yield server, database, business_id, phone
        database.engine.dispose()


def events(server: GunicornServer, event: str) -> list[dict]:
    records = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == event]


def silent_socket(server: GunicornServer) -> TwilioCaller:
    url = "ws" + server.url[len("http") :] + "/ws/twilio-media"
    return TwilioCaller(url, call_sid=new_sid("CA"), signature=twilio_signature(TEST_TWILIO_TOKEN, url))


def test_a_signed_socket_that_never_starts_is_closed(served):
    server = served[0]
    before = len([e for e in events(server, "ws_end") if e["reason"] == "no_start"])
    sockets = [silent_socket(server) for _ in range(30)]
    chatty = silent_socket(server)  # talks, but never says `start`: the deadline holds all the same
    opened = time.monotonic()
    chatty.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    while not chatty.closed.is_set() and time.monotonic() - opened < 5:
        try:
            chatty.send_text("not json")
        except OSError:  # the server's close came between the check and the send: checked below
            break
        time.sleep(0.2)
    for sock in [*sockets, chatty]:
        assert sock.closed.wait(5), "an idle socket was left open"
        assert sock.close_code == 1008 and sock.close_reason == "no start message"
    elapsed = time.monotonic() - opened
    assert START_TIMEOUT * 0.8 <= elapsed < START_TIMEOUT + 3
    ends = [e for e in events(server, "ws_end") if e["reason"] == "no_start"]
    assert len(ends) - before == 31
    assert "Traceback" not in server.logs()


def test_a_call_that_started_outlives_the_start_deadline_and_skips_nested_json(served):
    server, database, business_id, phone = served
    call_sid = new_sid("CA")
    with database.scope() as session:
        create_call(
            session, business_id, call_sid=call_sid, from_number="+972501234567", to_number=phone, status="in-progress"
        )
    caller = TwilioCaller.dial(
        server.url, call_sid, auth_token=TEST_TWILIO_TOKEN, app_secret=APP_SECRET, business_id=business_id
    )
    assert caller.wait_for(lambda c: c.media, 5), "the agent never spoke"
    caller.send_text('{"event": "media", "media": ' + "[" * 30_000 + "]" * 30_000 + "}")
    caller.send_text("[" * 60_000)
    time.sleep(START_TIMEOUT + 0.5)
    assert not caller.closed.is_set()
    caller.hang_up()
    deadline = time.monotonic() + 5
    while not [e for e in events(server, "ws_end") if e.get("call_sid") == call_sid] and time.monotonic() < deadline:
        time.sleep(0.05)
    [end] = [e for e in events(server, "ws_end") if e.get("call_sid") == call_sid]
    assert end["reason"] == "stop" and end["malformed"] == 2
    skipped = [e for e in events(server, "ws_message_skipped") if e.get("call_sid") == call_sid]
    assert len(skipped) == 2 and all("nests deeper" in e["reason"] for e in skipped)
    assert not events(server, "ws_engine_error")
    with database.scope() as session:
        assert session.scalar(sa.select(Call.stream_started_at).where(Call.call_sid == call_sid)) is not None

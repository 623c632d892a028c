"""SIGTERM: gunicorn stops taking connections, live calls get the grace period, /readyz says draining,
and a call still going as the grace period runs out ends like a call: its turns stored, its ws_end logged."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time

import pytest
import sqlalchemy as sa

from server.db.dao_crm import create_call
from server.db.engine import Database
from server.db.models import Business, BusinessNumber, Call, CallTurn
from testkit.fakes.scripted_providers import speech
from testkit.fakes.twilio_caller import TwilioCaller, new_sid
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN

# the app under real gunicorn, stopped with SIGTERM
pytestmark = pytest.mark.slow

GRACE_SECONDS = 6
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


@pytest.fixture
def server(tmp_path):
    env = {
        **BASE_TEST_ENV,
        **AI_ENV,
        **SCRIPT_ENV,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'drain.db'}",
        "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "WATCHDOG_SECONDS": "600",
        "VOICE_PROVIDERS": "testkit.fakes.scripted_providers:build",
    }
    running = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
    running.env["PUBLIC_BASE_URL"] = running.url  # so the signed URL is the one the caller dials
    with running:
        yield running


@pytest.fixture
def live_call(server, tmp_path):
    """A call whose agent has spoken its opening line and answered one question."""
    database = Database(f"sqlite:///{tmp_path / 'drain.db'}")
    call_sid = new_sid("CA")
    with database.scope() as session:
        business = Business(name="סלון דנה", opening_line="שלום, סלון דנה.")
        session.add(business)
        session.flush()
        session.add(BusinessNumber(business_id=business.id, number="+97235550001", kind="voice"))
        create_call(
            session,
            business.id,
            call_sid=call_sid,
            from_number="+972501234567",
            to_number="+97235550001",
            status="in-progress",
        )
        business_id = business.id
    caller = TwilioCaller.dial(
        server.url,
        call_sid,
        auth_token=TEST_TWILIO_TOKEN,
        app_secret=BASE_TEST_ENV["APP_SECRET"],
        business_id=business_id,
    )
    for turn in (0, 1):
        if turn:
            caller.play(speech("מתי אתם פתוחים מחר?", 600))
        assert caller.wait_for(lambda c, turn=turn: any(m.name.startswith(f"{turn}.") for m in c.marks), 10), turn
        assert caller.wait_until_quiet(0.3, 10)
    yield caller, database
    caller.close()
    database.engine.dispose()


def _turns(database: Database, call_sid: str) -> list[CallTurn]:
    with database.scope() as session:
        return list(
            session.scalars(
                sa.select(CallTurn).join(Call).where(Call.call_sid == call_sid).order_by(CallTurn.turn_index)
            )
        )


def _events(server: GunicornServer, event: str) -> list[dict]:
    records = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == event]


def _readyz(conn: http.client.HTTPConnection) -> tuple[int, dict]:
    conn.request("GET", "/readyz")
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_sigterm_drains_live_calls_within_the_grace_period(server, live_call):
    caller, database = live_call
    kept_alive = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert _readyz(kept_alive)[0] == 200

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)

    status, body = _readyz(kept_alive)
    assert (status, body["reason"]) == (503, "draining")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).recv(1)  # no new connections
    caller.play(speech("ועוד שאלה קטנה", 400))  # the live call goes on: the agent still answers
    assert caller.wait_for(lambda c: any(m.name.startswith("2.") for m in c.marks), 5), "no reply while draining"
    assert not caller.closed.is_set() and server.process.poll() is None

    # Still going as the grace period runs out: the server ends it, as a call ends, before it is killed.
    assert caller.closed.wait(GRACE_SECONDS)
    ended = time.monotonic() - started
    assert caller.close_code == 1001 and GRACE_SECONDS - 3 < ended < GRACE_SECONDS, ended
    server.process.wait(timeout=GRACE_SECONDS)
    assert "draining" in server.logs() and "Worker graceful timeout" not in server.logs()
    [end] = [e for e in _events(server, "ws_end") if e.get("call_sid") == caller.call_sid]
    assert end["reason"] == "shutdown" and end["turns"] == 3
    turns = _turns(database, caller.call_sid)
    assert [t.turn_index for t in turns] == [0, 1, 2]
    assert turns[1].user_text == "מתי אתם פתוחים מחר?" and turns[2].user_text == "ועוד שאלה קטנה"
    with database.scope() as session:
        call = session.scalar(sa.select(Call).where(Call.call_sid == caller.call_sid))
    assert call.stream_ended_at is not None and call.ended_at is None  # Twilio goes on to stream_ended
    assert "מתי אתם פתוחים מחר?" in call.transcript

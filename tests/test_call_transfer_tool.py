"""The model asks for the transfer: real gunicorn with the real OpenAI SDK against the OpenAI wire fake
(scripted STT and TTS), a Twilio-faithful caller, and the `transfer_to_person` tool call streamed in
OpenAI's SSE shape. The database side of the transfer is tested on both databases in
tests/test_call_transfer*.py; this is the path from the model's tool call to Twilio, once."""

from __future__ import annotations

import json
import random
import time
import xml.etree.ElementTree as ET

import pytest
import sqlalchemy as sa

from server.config import Settings
from server.db.engine import Database
from server.db.models import Business, BusinessNumber, Call, ToolCall
from testkit.fakes.openai_server import FakeOpenAI, ToolCalls
from testkit.fakes.twilio_phone import Line, dial_ended, place_call, whisper
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN
from tests.test_live_call import AI_ENV, SCRIPT_ENV

pytestmark = pytest.mark.slow

FORWARD_TO = "+972541112233"
REASON = "הלקוחה רוצה לדבר עם דנה על צבע שיער"


def test_the_models_tool_call_transfers_the_call(tmp_path):
    url = f"sqlite:///{tmp_path / 'tool.db'}"
    with (
        FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as twilio,
        FakeOpenAI() as openai,
    ):
        env = {
            **BASE_TEST_ENV,
            **AI_ENV,
            **SCRIPT_ENV,
            "DATABASE_URL": url,
            "VOICE_PROVIDERS": "testkit.fakes.scripted_providers:build_with_openai",
            "OPENAI_API_KEY": openai.api_key,
            "OPENAI_BASE_URL": openai.base_url,
            "TWILIO_API_BASE_URL": twilio.url,
            "WATCHDOG_SECONDS": "600",
        }
        server = GunicornServer(env)
        server.env["PUBLIC_BASE_URL"] = server.url
        server.start(timeout=120)  # a busy machine (other suites running) boots workers slowly
        try:
            database = Database(Settings.from_env({"DATABASE_URL": url}, dotenv=False).sqlalchemy_url)
            phone = f"+9723{random.randint(1000000, 9999999)}"
            with database.scope() as session:
                business = Business(
                    name="סלון דנה",
                    opening_line="שלום, סלון דנה.",
                    transfer_number=FORWARD_TO,
                    agent_tools={"transfer_to_person": True},  # off until the owner turns it on
                )
                session.add(business)
                session.flush()
                session.add(BusinessNumber(business_id=business.id, number=phone, kind="voice"))
            line = Line(
                app_url=server.url,
                public_url=server.url,
                account_sid=BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
                auth_token=TEST_TWILIO_TOKEN,
                from_number="+972501234567",
                to_number=phone,
            )

            # Asked for a person (keypad "0", which arrives as one message, unlike speech on a busy
            # machine), the model says one line, then calls the tool.
            def model(messages: list[dict]) -> object:
                asked = "keypad: 0" in str(messages[-1].get("content")) and messages[-1]["role"] == "user"
                if asked:
                    return ToolCalls([("transfer_to_person", {"reason": REASON})], text="רגע, אני מעבירה אותך לדנה.")
                return "בשמחה."

            openai.reply_fn = model

            caller = place_call(line, twilio=twilio)
            assert caller.wait_for(lambda c: c.marks, 20), "no opening line"
            caller.dtmf("0")
            caller.dtmf("#")

            # The tool reached Twilio: the call's TwiML is now the dial, and the stream was ended.
            [update] = twilio.wait_for_requests("Calls", 1, timeout=20, sid=caller.call_sid)
            assert "<Dial" in update.form["Twiml"]
            dial = twilio.dial_of(caller.call_sid)
            assert dial["number"] == FORWARD_TO
            assert caller.closed.wait(20)

            # The model was offered the tool. Its result is recorded (below), but the model is not asked
            # to go on: Twilio ended the stream, and with it the turn, so nothing more is said.
            offered = [r for r in openai.requests if r.get("body", {}).get("tools")]
            assert any(t["function"]["name"] == "transfer_to_person" for t in offered[0]["body"]["tools"])

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with database.scope() as session:
                    call = session.scalar(sa.select(Call).where(Call.call_sid == caller.call_sid))
                    rows = session.scalars(sa.select(ToolCall).where(ToolCall.call_id == call.id)).all()
                    if rows and call.stream_ended_at is not None:
                        break
                time.sleep(0.05)
            assert call.outcome == "transferred" and call.ended_at is None
            [row] = rows
            assert row.name == "transfer_to_person" and row.error is None
            assert row.arguments == {"reason": REASON} and row.result["transferred"] is True

            heard = whisper(line, dial)
            assert REASON in ET.fromstring(heard.text).find("Say").text
            assert [c.tag for c in ET.fromstring(dial_ended(line, caller.call_sid, dial, "completed").text)] == [
                "Hangup"
            ]
            records = [json.loads(x) for x in server.logs().splitlines() if x.startswith("{")]
            assert not [r for r in records if r.get("event") in ("voice_fallback", "ws_engine_error")]
            database.engine.dispose()
        finally:
            server.stop()

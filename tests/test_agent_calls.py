"""Live calls whose model acts through tools, end to end: real `gunicorn -k gevent` with its jobs
worker, a Twilio-faithful caller on a real WebSocket, the real `openai` SDK against the OpenAI wire
fake scripting tool calls in OpenAI's SSE shape (`VOICE_PROVIDERS=…:build_with_openai`: speech in
and out stays scripted), the Twilio REST fake for WhatsApp, and the CRM rows, diary API and
calendar feed the calls leave behind. One server per database for the whole module."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import pytest
import requests
import sqlalchemy as sa

from server.config import Settings
from server.db.dao_crm import create_call, insert_message, upsert_customer, upsert_thread
from server.db.engine import Database
from server.db.models import Appointment, Business, Call, CallTurn, Invoice, Payment, ToolCall, utcnow
from server.voice.speech_text import spoken_text
from server.voice.turns import FILLER_TEXT
from testkit.fakes.openai_server import FakeOpenAI, ToolCalls, last_user_text
from testkit.fakes.scripted_providers import Script, speech, tone
from testkit.fakes.twilio_caller import TwilioCaller, new_sid
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.servers import GunicornServer
from tests.appointments_support import ZONE, next_weekday, set_up_book
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN, create_tenant

pytestmark = pytest.mark.slow

APP_SECRET = BASE_TEST_ENV["APP_SECRET"]
SCRIPT_ENV = {
    "SCRIPTED_STT_FINAL_MS": "150",
    "SCRIPTED_STT_INTERIM_MS": "150",
    "SCRIPTED_TTS_MS": "20",
    "SCRIPTED_TTS_MS_PER_CHAR": "8",
}
SCRIPT = Script.from_env(SCRIPT_ENV)
WA_FROM = "+97233334444"
ALL_TOOLS = {"send_payment_link": True, "transfer_to_person": False}


# ---- the model: what the fake answers, by what the caller said and what the tools returned -----
class Brain:
    """`fake.reply_fn`: for a caller's words, the scripted tool calls; after tool results, a Hebrew
    sentence saying what they returned (as a model would)."""

    def __init__(self) -> None:
        self.plays: dict[str, Callable[[], Any]] = {}

    def __call__(self, messages: list[dict[str, Any]]) -> Any:
        if messages[-1].get("role") == "tool":
            results = []
            for message in reversed(messages):
                if message.get("role") != "tool":
                    break
                results.append(json.loads(message["content"]))
            return said_after(results[0])
        play = self.plays.get(last_user_text(messages))
        return play() if play is not None else "כן, אני כאן."


def said_after(result: dict[str, Any]) -> str:
    if result.get("alternatives"):
        return f"השעה הזאת כבר נתפסה, אפשר ב{result['alternatives'][0]['local']}?"
    if "error" in result:
        return "סליחה, זה לא הסתדר, אשאיר הודעה לצוות."
    if result.get("booked"):
        return f"קבעתי לך תור ל{result['service']} ב{result['local']}."
    if "slots" in result:
        return f"יש תור פנוי ב{result['slots'][0]['local']}." if result["slots"] else "אין תורים פנויים."
    if result.get("sent"):
        return "שלחתי לך קישור לתשלום בוואטסאפ."
    if result.get("ok"):
        return "תודה, להתראות."
    return "בסדר."


@dataclass
class Live:
    server: GunicornServer
    database: Database
    twilio: FakeTwilioRest
    openai: FakeOpenAI
    brain: Brain
    business_id: int
    phone: str
    book: Any

    def new_call(self, *, whatsapp_window: bool = True) -> tuple[str, str]:
        """A call from a new caller (who wrote on WhatsApp lately, unless `whatsapp_window` is False)."""
        sid, caller = new_sid("CA"), f"+97250{random.randint(0, 9999999):07d}"
        with self.database.scope() as session:
            create_call(
                session, self.business_id, call_sid=sid, from_number=caller, to_number=self.phone, status="in-progress"
            )
            if whatsapp_window:
                customer = upsert_customer(session, self.business_id, phone=caller)
                thread = upsert_thread(session, self.business_id, customer.id, "whatsapp")
                insert_message(
                    session,
                    thread,
                    direction="in",
                    body="היי",
                    provider="twilio",
                    provider_message_id=new_sid("SM"),
                    at=utcnow() - timedelta(hours=2),
                )
        return sid, caller

    def dial(self, sid: str) -> TwilioCaller:
        return TwilioCaller.dial(
            self.server.url, sid, auth_token=TEST_TWILIO_TOKEN, app_secret=APP_SECRET, business_id=self.business_id
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

    def tool_calls(self, sid: str) -> list[ToolCall]:
        with self.database.scope() as session:
            return list(
                session.scalars(sa.select(ToolCall).join(Call).where(Call.call_sid == sid).order_by(ToolCall.id))
            )

    def wait_for(self, what: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := what()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def whatsapp_to(self, phone: str) -> list[str]:
        return [
            r.form.get("Body", "")
            for r in self.twilio.requests_for("Messages")
            if r.form.get("To") == f"whatsapp:{phone}"
        ]

    def events(self, event: str, call_sid: str | None = None) -> list[dict]:
        records = [json.loads(line) for line in self.server.logs().splitlines() if line.startswith("{")]
        return [r for r in records if r.get("event") == event and (call_sid is None or r.get("call_sid") == call_sid)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('agent') / 'agent.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    with (
        FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as twilio,
        FakeOpenAI() as openai_fake,
    ):
        brain = Brain()
        openai_fake.reply_fn = brain
        server = GunicornServer(
            {
                **BASE_TEST_ENV,
                **SCRIPT_ENV,
                "DATABASE_URL": url,
                "VOICE_PROVIDERS": "testkit.fakes.scripted_providers:build_with_openai",
                "OPENAI_API_KEY": openai_fake.api_key,
                "OPENAI_BASE_URL": openai_fake.base_url,
                "OPENAI_MODEL": "gpt-test",
                "GOOGLE_SPEECH_EMULATOR_HOST": "127.0.0.1:9",
                "GOOGLE_TTS_EMULATOR_HOST": "127.0.0.1:9",
                "TWILIO_API_BASE_URL": twilio.url,
                "ENABLE_WA_TWILIO": "true",
                "TWILIO_WA_FROM": WA_FROM,
                "WA_PROVIDER_PRIORITY": "twilio",
                "PAYPAL_CLIENT_ID": "paypal-client",
                "PAYPAL_CLIENT_SECRET": "paypal-secret",
                "PAYPAL_WEBHOOK_ID": "WH-1",
                "LLM_FIRST_TOKEN_TIMEOUT_SECONDS": "2",
            },
            jobs_worker=True,
        )
        server.env["PUBLIC_BASE_URL"] = server.url
        with server:
            database = Database(Settings.from_env({"DATABASE_URL": url}, dotenv=False).sqlalchemy_url)
            phone = f"+9723{random.randint(1000000, 9999999)}"
            tenant = create_tenant(
                database,
                name="סלון דנה",
                phone=phone,
                whatsapp=WA_FROM,
                opening_line="שלום, סלון דנה.",
                payments_enabled=True,
            )
            with database.scope() as session:
                session.get(Business, tenant.business_id).agent_tools = dict(ALL_TOOLS)
            book = set_up_book(database, tenant.business_id)
            yield Live(server, database, twilio, openai_fake, brain, tenant.business_id, phone, book)
            database.engine.dispose()


@pytest.fixture
def fresh(live):
    live.twilio.succeed("Messages")
    live.brain.plays.clear()
    return live


def spoken(text: str) -> bytes:
    """The audio the scripted TTS makes for `text`, said the way the engine says it (numbers in words)."""
    said = spoken_text(text)
    return tone(said, max(200, len(said) * SCRIPT.tts_ms_per_char))


def say(live: Live, caller: TwilioCaller, text: str, *, turn: int, timeout: float = 30.0) -> None:
    """The caller says `text`; returns once the agent's answer (turn `turn`) has been heard to the end
    (its row is stored then: a filler alone, while a tool still runs, is not the end of it)."""
    caller.play(speech(text, 400))
    assert caller.wait_for(lambda c: any(m.name.startswith(f"{turn}.") for m in c.marks), timeout), f"no turn {turn}"
    assert live.wait_for(lambda: any(t.turn_index == turn for t in live.turns(caller.call_sid)), timeout)
    assert caller.wait_until_quiet(0.4, timeout)


def greeted(live: Live, sid: str) -> TwilioCaller:
    caller = live.dial(sid)
    assert caller.wait_for(lambda c: c.marks, 20)
    assert caller.wait_until_quiet(0.3, 20)
    return caller


# ---- booking ------------------------------------------------------------------------------------
def test_a_hebrew_call_books_an_appointment_seen_in_the_diary_the_feed_and_on_whatsapp(fresh):
    live = fresh
    day = next_weekday(1)  # a Monday, open 9-17
    sid, caller_phone = live.new_call()
    live.brain.plays["אני רוצה לקבוע תספורת ביום שני"] = lambda: ToolCalls(
        [("find_slots", {"service_id": live.book.haircut, "date": day.isoformat()})], text="רגע, אני בודקת. "
    )
    live.brain.plays["בתשע בבוקר בבקשה, על שם מיכל"] = lambda: ToolCalls(
        [("book_appointment", {"service_id": live.book.haircut, "start": f"{day.isoformat()}T09:00", "name": "מיכל"})]
    )
    caller = greeted(live, sid)
    say(live, caller, "אני רוצה לקבוע תספורת ביום שני", turn=1)
    say(live, caller, "בתשע בבוקר בבקשה, על שם מיכל", turn=2)
    caller.hang_up()

    # What the caller heard: the words before the tool call, then the answers built on the results.
    audio = caller.audio()
    assert spoken("רגע, אני בודקת.") in audio
    assert spoken(f"יש תור פנוי ב{day.isoformat()} 09:00.") in audio
    assert spoken(f"קבעתי לך תור לתספורת ב{day.isoformat()} 09:00.") in audio
    turns = live.wait_for(lambda: len(live.turns(sid)) >= 3 and live.turns(sid))
    assert turns[2].agent_text == f"קבעתי לך תור לתספורת ב{day.isoformat()} 09:00."

    # The booking: in the diary API, in the calendar feed, and the customer's WhatsApp notice.
    owner = create_tenant_headers(live)
    listed = requests.get(
        f"{live.server.url}/api/appointments", params={"from": day.isoformat()}, headers=owner, timeout=5
    ).json()
    [booked] = [a for a in listed["items"] if a["customer"]["phone"] == caller_phone]
    assert booked["source"] == "call" and booked["service"]["id"] == live.book.haircut
    assert booked["local_start"].startswith(f"{day.isoformat()}T09:00") and booked["customer"]["name"] == "מיכל"
    feed = requests.post(f"{live.server.url}/api/appointments/feed/rotate", headers=owner, timeout=5).json()["url"]
    ics = requests.get(feed, timeout=5).text
    assert "BEGIN:VEVENT" in ics and "תספורת" in ics and day.strftime("%Y%m%d") in ics
    notices = live.wait_for(lambda: [b for b in live.whatsapp_to(caller_phone) if "נקבע" in b], timeout=30)
    assert notices and "תספורת" in notices[0]

    # Every tool call is a row on its turn; the fake saw the results come back as `tool` messages.
    rows = live.tool_calls(sid)
    assert [(r.name, r.turn_index, r.error) for r in rows] == [("find_slots", 1, None), ("book_appointment", 2, None)]
    assert rows[1].result["booked"] is True and rows[1].arguments["name"] == "מיכל"
    assert any(r.get("booked") for r in live.openai.tool_results.values())
    detail = requests.get(f"{live.server.url}/api/crm/calls/{sid}", headers=owner, timeout=5).json()
    assert [t["name"] for t in detail["tool_calls"]] == ["find_slots", "book_appointment"]


def create_tenant_headers(live: Live) -> dict[str, str]:
    """An owner token of the live business (a user added for this test)."""
    from tests.conftest import add_user

    return add_user(live.database, live.business_id, "owner").headers


def test_two_calls_race_for_one_slot_one_books_and_the_other_is_offered_another(fresh):
    live = fresh
    day = next_weekday(2)  # a Tuesday
    calls = [live.new_call() for _ in range(2)]
    for index in range(2):
        live.brain.plays[f"תקבעי לי בעשר, אני לקוח {index}"] = lambda: ToolCalls(
            [("book_appointment", {"service_id": live.book.haircut, "start": f"{day.isoformat()}T10:00"})]
        )
    callers = [greeted(live, sid) for sid, _ in calls]
    threads = [
        threading.Thread(target=say, args=(live, caller, f"תקבעי לי בעשר, אני לקוח {index}"), kwargs={"turn": 1})
        for index, caller in enumerate(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for caller in callers:
        caller.hang_up()

    with live.database.scope() as session:
        at_ten = session.scalars(
            sa.select(Appointment).where(Appointment.business_id == live.business_id, Appointment.status == "booked")
        ).all()
        booked = [a for a in at_ten if a.starts_at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M") == f"{day} 10:00"]
    assert len(booked) == 1
    rows = [row for sid, _ in calls for row in live.wait_for(lambda sid=sid: live.tool_calls(sid))]
    outcomes = sorted((row.result.get("booked", False), row.error or "") for row in rows)
    assert [booked for booked, _ in outcomes] == [False, True]
    loser = next(row for row in rows if not row.result.get("booked"))
    assert loser.result["code"] == "slot_taken" and loser.result["alternatives"]
    alternative = loser.result["alternatives"][0]["local"]
    assert alternative != f"{day} 10:00"
    answers = [
        live.wait_for(lambda sid=sid: len(live.turns(sid)) >= 2 and live.turns(sid))[1].agent_text for sid, _ in calls
    ]
    assert sorted(answers) == sorted(
        [f"קבעתי לך תור לתספורת ב{day} 10:00.", f"השעה הזאת כבר נתפסה, אפשר ב{alternative}?"]
    )
    for caller, answer in zip(callers, answers, strict=True):
        assert spoken(answer) in caller.audio()


# ---- a payment link mid-call -------------------------------------------------------------------
def an_invoice(live: Live, phone: str, amount_minor: int = 25000) -> int:
    with live.database.scope() as session:
        customer = upsert_customer(session, live.business_id, phone=phone)
        invoice = Invoice(
            business_id=live.business_id,
            customer_id=customer.id,
            title="טיפול צבע",
            amount_minor=amount_minor,
            status="issued",
        )
        session.add(invoice)
        session.flush()
        return invoice.id


def test_a_call_sends_a_payment_link_on_whatsapp_and_goes_on_speaking(fresh):
    live = fresh
    sid, phone = live.new_call()
    invoice_id = an_invoice(live, phone)
    live.brain.plays["אפשר לשלם את החשבונית?"] = lambda: ToolCalls([("send_payment_link", {})])
    live.brain.plays["ומה שעות הפתיחה?"] = lambda: "אנחנו פתוחים מתשע עד חמש."
    caller = greeted(live, sid)
    say(live, caller, "אפשר לשלם את החשבונית?", turn=1)
    say(live, caller, "ומה שעות הפתיחה?", turn=2)  # the call goes on after the tool
    caller.hang_up()

    [link_message] = [b for b in live.whatsapp_to(phone) if "/pay/" in b]
    assert "250.00" in link_message and "טיפול צבע" in link_message
    with live.database.scope() as session:
        payment = session.scalar(sa.select(Payment).where(Payment.invoice_id == invoice_id))
        assert payment is not None and payment.amount_minor == 25000 and payment.link_token in link_message
    audio = caller.audio()
    assert spoken("שלחתי לך קישור לתשלום בוואטסאפ.") in audio and spoken("אנחנו פתוחים מתשע עד חמש.") in audio
    [row] = live.tool_calls(sid)
    assert row.name == "send_payment_link" and row.result["sent"] is True and row.error is None


def test_outside_the_24_hour_window_the_link_is_not_sent_and_the_model_is_told(fresh):
    live = fresh
    sid, phone = live.new_call(whatsapp_window=False)
    an_invoice(live, phone)
    live.brain.plays["תשלחי לי קישור לתשלום"] = lambda: ToolCalls([("send_payment_link", {})])
    caller = greeted(live, sid)
    say(live, caller, "תשלחי לי קישור לתשלום", turn=1)
    caller.hang_up()
    assert live.whatsapp_to(phone) == []  # Twilio takes no free-form text outside the window
    [row] = live.tool_calls(sid)
    assert row.result["sent"] is False and "could not be sent" in row.error
    assert spoken("סליחה, זה לא הסתדר, אשאיר הודעה לצוות.") in caller.audio()


# ---- slow, interrupted, invalid and failing tools ----------------------------------------------
def test_a_slow_tool_plays_the_filler_instead_of_silence(fresh):
    live = fresh
    sid, phone = live.new_call()
    an_invoice(live, phone)
    live.twilio.stall("Messages", seconds=1.5)
    live.brain.plays["תשלחי לי את הקישור לתשלום"] = lambda: ToolCalls([("send_payment_link", {})])
    caller = greeted(live, sid)
    say(live, caller, "תשלחי לי את הקישור לתשלום", turn=1)
    assert caller.wait_for(lambda c: spoken("שלחתי לך קישור לתשלום בוואטסאפ.") in c.audio(), 30)
    assert caller.wait_until_quiet(0.4, 30)
    caller.hang_up()
    audio = caller.audio()
    filler_at = audio.find(spoken(FILLER_TEXT))
    assert filler_at >= 0 and audio.find(spoken("שלחתי לך קישור לתשלום בוואטסאפ.")) > filler_at
    turn = live.wait_for(lambda: len(live.turns(sid)) >= 2 and live.turns(sid))[1]
    assert turn.agent_text == f"{FILLER_TEXT} שלחתי לך קישור לתשלום בוואטסאפ."
    [row] = live.tool_calls(sid)
    assert (row.finished_at - row.started_at).total_seconds() >= 1.4


def test_barge_in_during_a_tool_cancels_the_turn_and_the_tool_result_is_still_recorded(fresh):
    live = fresh
    sid, phone = live.new_call()
    an_invoice(live, phone)
    live.twilio.stall("Messages", seconds=2.5)
    live.brain.plays["קישור לתשלום בבקשה"] = lambda: ToolCalls([("send_payment_link", {})])
    live.brain.plays["רגע, שאלה אחרת"] = lambda: "כן, בבקשה."
    caller = greeted(live, sid)
    caller.play(speech("קישור לתשלום בבקשה", 400))
    assert caller.wait_for(lambda c: any(m.name.startswith("1.") for m in c.marks), 20)  # the filler began
    say(live, caller, "רגע, שאלה אחרת", turn=2)  # while the tool still runs: the turn is interrupted
    caller.hang_up()
    row = live.wait_for(lambda: live.tool_calls(sid), timeout=10)[0]
    assert row.result["sent"] is True and row.error is None  # the tool finished after the barge-in
    assert live.wait_for(lambda: [b for b in live.whatsapp_to(phone) if "/pay/" in b])
    turns = live.wait_for(lambda: len(live.turns(sid)) >= 3 and live.turns(sid))
    assert turns[1].interrupted and turns[1].agent_text == FILLER_TEXT and turns[2].agent_text == "כן, בבקשה."
    assert [e["turn_id"] for e in live.events("turn_metrics", sid) if e["interrupted"]] == [1]
    assert spoken("שלחתי לך קישור לתשלום בוואטסאפ.") not in caller.audio()  # the old turn's answer is dropped


def test_invalid_arguments_unknown_tools_and_failing_tools_are_told_to_the_model_and_the_call_goes_on(fresh):
    live = fresh
    sid, phone = live.new_call()
    an_invoice(live, phone)
    live.brain.plays["תקבעי לי משהו"] = lambda: ToolCalls(
        [
            ("book_appointment", '{"service_id": "abc"'),
            ("launch_rockets", {}),
            ("find_slots", {"service_id": live.book.haircut, "date": "2026-13-45"}),
        ]
    )
    live.twilio.fail("Messages", code=20500, status=500)
    live.brain.plays["אז תשלחי קישור לתשלום"] = lambda: ToolCalls([("send_payment_link", {})])
    live.brain.plays["תודה, ביי"] = lambda: ToolCalls([("end_call", {"reason": "the caller said goodbye"})])
    caller = greeted(live, sid)
    say(live, caller, "תקבעי לי משהו", turn=1)
    say(live, caller, "אז תשלחי קישור לתשלום", turn=2)
    caller.play(speech("תודה, ביי", 400))
    assert caller.closed.wait(30) and caller.close_code == 1000  # end_call: hung up after the goodbye

    rows = live.tool_calls(sid)
    assert [r.name for r in rows] == [
        "book_appointment",
        "launch_rockets",
        "find_slots",
        "send_payment_link",
        "end_call",
    ]
    assert "not valid JSON" in rows[0].error and "unknown tool" in rows[1].error
    assert "real dates" in rows[2].error and "could not be sent" in rows[3].error and rows[4].error is None
    audio = caller.audio()
    assert audio.count(spoken("סליחה, זה לא הסתדר, אשאיר הודעה לצוות.")) == 2 and spoken("תודה, להתראות.") in audio
    call = live.wait_for(lambda: live.call(sid).ended_at is not None and live.call(sid))
    assert call.outcome == "agent_goodbye"
    assert not live.events("turn_failed", sid) and not live.events("voice_fallback", sid)

"""Preemptive generation end to end over real `gunicorn -k gevent`: the real Google and OpenAI clients
against their wire fakes, a Twilio-faithful caller, and the call turns the calls leave behind.

The speech fake behaves like Google on a phone line: interims while the caller speaks, the whole
utterance as the last interim as soon as the caller stops, and the final 500 ms after the speech
ended; the model's first token takes 300 ms. So a reply written on the last interim (after
`PREEMPTIVE_SILENCE_MS` of quiet) is ready before the final, and plays as soon as it confirms it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from server.agent.prompt import opening_line
from server.db.engine import Database
from server.db.models import Business, Call, CallTurn, ToolCall
from server.voice.preemptive import meaning_words, same_meaning
from testkit.fakes.google_speech import FakeSpeech, Utterance, speech
from testkit.fakes.google_tts import FakeTextToSpeech, payload_for
from testkit.fakes.openai_server import FakeOpenAI, ToolCalls, last_user_text
from testkit.fakes.twilio_caller import TwilioCaller
from testkit.fakes.twilio_phone import Line, new_call_sid, place_call
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN, create_tenant

pytestmark = pytest.mark.slow

QUESTION = "אפשר לקבוע תור למחר בבוקר?"
ANSWER = "בטח, יש תור פנוי מחר בתשע. מתאים לך?"
MISHEARD = "אפשר לקבוע תור למחר בערב?"
WRONG_FIRST = "בערב סגור."
WRONG_ANSWER = WRONG_FIRST + " אבל אפשר לבוא בבוקר, יש מקום בתשע או בעשר. " + "ואפשר גם בצהריים. " * 8
LONG_ANSWER = "יש לנו הרבה שירותים. " + "תספורת, צבע, פן ותסרוקת לאירועים. " * 8


# ---- the normalisation the comparison rests on ---------------------------------------------
@pytest.mark.parametrize(
    "interim, final",
    [
        ("אפשר לקבוע תור למחר בבוקר", "אפשר לקבוע תור למחר בבוקר?"),
        ("Can I book, um, tomorrow", "can I book tomorrow?"),
        ("שָׁלוֹם, אֶפְשָׁר תּוֹר", "שלום אפשר תור"),  # niqqud
        ("אה אני רוצה תור", "אני רוצה תור."),  # a filler sound
        ("צה\"ל  ג'ינס", "צה״ל ג׳ינס"),  # gershayim / geresh as typed or as Hebrew punctuation
    ],
)
def test_the_same_words_once_punctuation_case_niqqud_and_fillers_are_taken_away(interim, final):
    assert same_meaning(interim, final)


@pytest.mark.parametrize(
    "interim, final",
    [
        ("אפשר לקבוע תור למחר בבוקר", "אפשר לקבוע תור למחר בערב"),
        ("אפשר לקבוע תור", "אפשר לקבוע תור למחר"),  # the final heard more
        ("לא אני רוצה", "אני לא רוצה"),  # order matters
        ("", "כן"),
    ],
)
def test_different_meaning_bearing_words_differ(interim, final):
    assert not same_meaning(interim, final)
    assert meaning_words("") == ()


# ---- live calls ---------------------------------------------------------------------------
@dataclass
class Live:
    server: GunicornServer
    database: Database
    stt: FakeSpeech
    tts: FakeTextToSpeech
    llm: FakeOpenAI
    on: object  # a business with preemptive generation (the default)
    off: object  # a business that switched it off

    def call(self, tenant) -> tuple[str, TwilioCaller, str]:
        """A call that has heard its opening line: (sid, caller, greeting)."""
        sid = new_call_sid()
        line = Line(
            app_url=self.server.url,
            public_url=self.server.url,
            account_sid=BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
            auth_token=TEST_TWILIO_TOKEN,
            from_number="+972501234567",
            to_number=tenant.phone,
        )
        caller = place_call(line, sid)
        assert caller.wait_for(lambda c: c.marks_echoed >= 1, timeout=10), self.server.logs()[-3000:]
        assert caller.wait_until_quiet(quiet=0.3, timeout=10)
        with self.database.scope() as session:
            greeting = opening_line(session.get(Business, tenant.business_id))
        return sid, caller, greeting

    def turns(self, sid: str, count: int, timeout: float = 10.0) -> list[CallTurn]:
        deadline = time.monotonic() + timeout
        while True:
            with self.database.scope() as session:
                turns = list(
                    session.scalars(
                        sa.select(CallTurn).join(Call).where(Call.call_sid == sid).order_by(CallTurn.turn_index)
                    )
                )
                session.expunge_all()
            if len(turns) >= count or time.monotonic() > deadline:
                return turns
            time.sleep(0.05)

    def tool_calls(self, sid: str) -> list[ToolCall]:
        with self.database.scope() as session:
            rows = list(session.scalars(sa.select(ToolCall).join(Call).where(Call.call_sid == sid)))
            session.expunge_all()
        return rows

    def asked(self) -> list[str]:
        """The caller's words of every chat request the model got, in order."""
        return [last_user_text(r["body"]["messages"]) for r in self.llm.requests]


@pytest.fixture
def live(database_url, tmp_path):
    with FakeSpeech() as stt, FakeTextToSpeech() as tts, FakeOpenAI() as llm:
        stt.final_silence_ms = 500  # Google's final comes 500 ms after the speech ended …
        stt.last_interim_ms = 0  # … its last interim, with every word, as soon as it did
        llm.first_token_delay = 0.3
        llm.token_delay = 0.02
        tts.delay_seconds = 0.05
        env = {
            **BASE_TEST_ENV,
            "DATABASE_URL": database_url,
            "GOOGLE_SPEECH_EMULATOR_HOST": stt.address,
            "GOOGLE_TTS_EMULATOR_HOST": tts.address,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": llm.api_key,
            "OPENAI_MODEL": "gpt-test",
        }
        server = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
        server.env["PUBLIC_BASE_URL"] = server.url
        with server:
            database = Database(database_url)
            on = create_tenant(database, name="מספרת דנה", phone="+97235550001", whatsapp="+97235550002")
            off = create_tenant(
                database,
                name="מספרת משה",
                phone="+97235550011",
                whatsapp="+97235550012",
                features={"preemptive_generation": False},
            )
            yield Live(server, database, stt, tts, llm, on, off)
            database.engine.dispose()


def ask(caller: TwilioCaller, ms: int = 800) -> float:
    """Say something; how long (ms) from the end of the speech to the first frame of the answer."""
    before = len(caller.media)
    spoken = caller.play(speech(ms))
    assert caller.wait_for(lambda c: len(c.media) > before, timeout=10), "the agent did not answer"
    first = caller.media[before].at
    assert spoken.last_sent_at is not None
    return (first - spoken.last_sent_at) * 1000


def test_a_final_equal_to_the_last_interim_plays_the_reply_written_ahead_and_sooner(live):
    live.llm.replies_for[QUESTION] = ANSWER
    waits = {}
    for name, tenant in (("off", live.off), ("on", live.on)):
        live.stt.script(QUESTION)
        sid, caller, greeting = live.call(tenant)
        waits[name] = ask(caller)
        assert caller.wait_until_quiet(quiet=0.4, timeout=10)
        caller.hang_up()
        assert caller.audio() == payload_for(greeting) + payload_for(ANSWER.split(". ")[0] + ".") + payload_for(
            "מתאים לך?"
        )
        [_, turn] = live.turns(sid, 2)
        assert (turn.user_text, turn.agent_text, turn.interrupted) == (QUESTION, ANSWER, False)
        assert (turn.preemptive, turn.preemptive_dropped, turn.preemptive_dropped_chars) == (
            ("used", 0, 0) if name == "on" else ("none", 0, 0)
        )
        waits[f"{name}_server"] = turn.t_first_audio_ms
    # One chat request each: the one written ahead was kept, the other call never wrote ahead.
    assert live.asked() == [QUESTION, QUESTION]
    assert live.llm.disconnects == 0
    # The final comes 500 ms after the speech; the reply written ahead needn't wait for it all
    # (about 350 ms sooner: the margins leave room for a loaded machine).
    assert waits["on_server"] < waits["off_server"] - 150, waits
    assert waits["on"] < waits["off"], waits


def test_a_final_that_differs_drops_the_reply_written_ahead_before_any_of_it_is_heard(live):
    live.llm.replies_for.update({"שלום": "היי.", MISHEARD: WRONG_ANSWER, QUESTION: ANSWER})
    # The final comes after the wrong reply's first sentence is synthesised and before the reply is
    # all written, each by more than half a second (margins that hold on a loaded machine): the
    # stream is cut, and none of what waits may be heard.
    live.llm.first_token_delay = 0.1
    live.llm.token_delay = 0.05
    live.stt.final_silence_ms = 1000
    live.stt.script("שלום", Utterance(final=QUESTION, heard=MISHEARD))
    sid, caller, greeting = live.call(live.on)
    ask(caller, 400)  # a first exchange: the worker's OpenAI client is connected
    assert caller.wait_until_quiet(quiet=0.4, timeout=10)
    ask(caller)
    assert caller.wait_until_quiet(quiet=0.4, timeout=10)
    caller.hang_up()

    # The model was asked about the interim, then (its stream cut) about the final.
    assert live.asked() == ["שלום", MISHEARD, QUESTION]
    assert live.llm.disconnects == 1
    # The first sentence of the dropped reply was synthesised ahead, yet not one of its frames,
    # nor a mark for it, reached the caller: only the greeting and the answer to the final.
    assert WRONG_FIRST in [r["text"] for r in live.tts.requests]
    assert caller.audio() == payload_for(greeting) + payload_for("היי.") + payload_for(
        ANSWER.split(". ")[0] + "."
    ) + payload_for("מתאים לך?")
    assert [m.name for m in caller.marks] == ["0.0", "1.0", "2.0", "2.1"]
    assert not caller.clears
    [_, _, turn] = live.turns(sid, 3)
    assert (turn.user_text, turn.agent_text) == (QUESTION, ANSWER)
    assert (turn.preemptive, turn.preemptive_dropped) == ("dropped", 1)
    assert turn.preemptive_dropped_chars > 0


def test_speaking_again_before_the_final_drops_the_reply_written_ahead(live):
    live.llm.replies_for[QUESTION] = ANSWER
    live.stt.script(QUESTION)
    sid, caller, greeting = live.call(live.on)
    before = len(caller.media)
    caller.play(speech(700) + b"\xff" * 8 * 350)  # a pause longer than PREEMPTIVE_SILENCE_MS …
    caller.play(speech(500))  # … then more words, within Google's 500 ms: still one utterance
    assert caller.wait_for(lambda c: len(c.media) > before, timeout=10)
    assert caller.wait_until_quiet(quiet=0.4, timeout=10)
    caller.hang_up()
    # Written ahead twice (at each pause); the first was dropped when the caller spoke on.
    assert live.asked() == [QUESTION, QUESTION]
    assert caller.audio() == payload_for(greeting) + payload_for(ANSWER.split(". ")[0] + ".") + payload_for("מתאים לך?")
    [_, turn] = live.turns(sid, 2)
    assert (turn.preemptive, turn.preemptive_dropped) == ("used", 1)


def test_barge_in_during_a_reply_written_ahead_clears_it_and_keeps_what_was_heard(live):
    live.llm.replies_for.update({QUESTION: LONG_ANSWER, "רגע, כמה זה עולה?": "מאה שקל."})
    live.stt.script(QUESTION, "רגע, כמה זה עולה?")
    sid, caller, greeting = live.call(live.on)
    ask(caller)
    time.sleep(1.0)  # the first sentence plays …
    clears = len(caller.clears)
    caller.play(speech(600))  # … and the caller talks over the rest
    assert caller.wait_for(lambda c: len(c.clears) > clears, timeout=5)
    assert caller.wait_for(lambda c: any(m.name.startswith("2.") for m in c.marks), timeout=10)
    assert caller.wait_until_quiet(quiet=0.4, timeout=10)
    caller.hang_up()
    turns = live.turns(sid, 3)
    interrupted = turns[1]
    assert interrupted.interrupted and interrupted.preemptive == "used"
    assert interrupted.agent_text and LONG_ANSWER.startswith(interrupted.agent_text)
    assert interrupted.agent_text != LONG_ANSWER.strip()
    assert (turns[2].user_text, turns[2].agent_text) == ("רגע, כמה זה עולה?", "מאה שקל.")


def test_switched_off_the_model_is_asked_only_on_the_final(live):
    live.llm.replies_for.update({MISHEARD: WRONG_ANSWER, QUESTION: ANSWER})
    live.stt.script(Utterance(final=QUESTION, heard=MISHEARD), "תודה")
    sid, caller, greeting = live.call(live.off)
    ask(caller)
    assert caller.wait_until_quiet(quiet=0.4, timeout=10)
    ask(caller, 400)
    assert caller.wait_until_quiet(quiet=0.4, timeout=10)
    caller.hang_up()
    assert live.asked() == [QUESTION, "תודה"]
    assert WRONG_FIRST not in [r["text"] for r in live.tts.requests]
    turns = live.turns(sid, 3)
    assert [(t.preemptive, t.preemptive_dropped) for t in turns] == [("none", 0)] * 3


def test_a_tool_the_model_calls_ahead_of_the_final_runs_only_once_the_final_confirms_it(live):
    message = {"reason": "לקוח ביקש שיחזרו אליו"}
    live.llm.first_token_delay = 0.05  # the tool call is made well before the final

    def model(messages):
        if messages[-1]["role"] == "tool":
            return "רשמתי, יחזרו אלייך."
        said = last_user_text(messages)
        return "היי." if said == "שלום" else ToolCalls([("take_message", message)])

    live.llm.reply_fn = model
    live.stt.script("שלום", Utterance(final=QUESTION, heard=MISHEARD), QUESTION)
    sid, caller, _greeting = live.call(live.on)
    ask(caller, 400)  # the worker's OpenAI client is connected
    assert caller.wait_until_quiet(quiet=0.4, timeout=10)

    # Misheard: the model asks for the tool on the interim, the final differs: the tool never ran.
    ask(caller)
    assert caller.wait_until_quiet(quiet=0.6, timeout=10)
    rows = live.tool_calls(sid)
    assert len(rows) == 1  # the one run for the final, not the one asked for ahead of it
    asked = live.asked()
    assert asked[:3] == ["שלום", MISHEARD, QUESTION]

    # Heard right: asked ahead, held until the final confirmed it, then run once.
    ask(caller)
    assert caller.wait_until_quiet(quiet=0.6, timeout=10)
    caller.hang_up()
    rows = live.tool_calls(sid)
    assert [(row.name, row.turn_index) for row in rows] == [("take_message", 2), ("take_message", 3)]
    turns = live.turns(sid, 4)
    assert (turns[2].preemptive, turns[2].preemptive_dropped) == ("dropped", 1)
    # Used; an attempt on an earlier, shorter interim may have been dropped first (timing), never run.
    assert turns[3].preemptive == "used"

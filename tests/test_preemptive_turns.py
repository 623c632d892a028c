"""A held turn (preemptive generation) on its own, with a real pacer and scripted providers: nothing
reaches the pacer and no tool runs until the turn is released; a cancelled held turn leaves no trace."""

from __future__ import annotations

import json

import gevent

from server.voice.audio import FRAME_BYTES
from server.voice.pacer import OutboundPacer
from server.voice.protocol import OutboundMessages
from server.voice.turns import PhraseCache, Turn, TurnServices
from tests.conftest import make_settings


class Wire:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def count(self, kind: str) -> int:
        return sum(1 for message in self.sent if message["event"] == kind)


class ToolCallingLLM:
    """Says a sentence, calls a tool, then says what it returned (as the OpenAI adapter streams it)."""

    def stream_reply(self, messages, tools=None):
        yield "רגע אחד. "
        if tools is not None:
            result = tools.run("take_message", '{"reason": "x"}')
            yield f"רשמתי {result['ok']}. "
        else:
            yield "סיימתי. "


class ToolBox:
    def __init__(self) -> None:
        self.runs: list[str] = []
        self.context = type("Context", (), {"hang_up_requested": False})()

    def specs(self):
        return []

    def run(self, name: str, arguments_json: str) -> dict:
        self.runs.append(name)
        return {"ok": "כן"}


class EchoTTS:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def synthesize(self, text: str) -> bytes:
        self.texts.append(text)
        return b"\x10" * FRAME_BYTES * 2


def held_turn(tools=None):
    wire = Wire()
    pacer = OutboundPacer(wire.send, OutboundMessages("MZ" + "0" * 32), lead_seconds=0.2)
    runner = gevent.spawn(pacer.run)
    tts = EchoTTS()
    finished: list[Turn] = []
    turn = Turn(
        1,
        "שאלה",
        speech_ended_at=0.0,
        final_at=0.0,
        on_finished=finished.append,
        services=TurnServices(
            llm=ToolCallingLLM(), tts=tts, pacer=pacer, phrases=PhraseCache(), settings=make_settings()
        ),
        held=True,
    )
    turn.start_reply([{"role": "user", "content": "שאלה"}], tools)
    return turn, wire, pacer, runner, tts, finished


def echo_marks(wire: Wire, pacer: OutboundPacer) -> None:
    for message in wire.sent:
        if message["event"] == "mark":
            pacer.on_mark(message["mark"]["name"])


def test_a_held_reply_is_written_and_synthesised_but_sent_only_once_released():
    turn, wire, pacer, runner, tts, finished = held_turn()
    gevent.sleep(0.1)
    assert turn.generation_done and tts.texts == ["רגע אחד.", "סיימתי."]
    assert wire.sent == [] and not pacer.busy and not turn.items and not finished
    assert turn.generated_chars == len("רגע אחד. סיימתי. ")

    turn.release()
    gevent.sleep(0.1)
    assert wire.count("media") == 4 and wire.count("mark") == 2
    echo_marks(wire, pacer)
    assert finished == [turn] and turn.heard_text == "רגע אחד. סיימתי."
    runner.kill()


def test_a_tool_asked_for_in_a_held_reply_waits_for_the_release():
    toolbox = ToolBox()
    turn, wire, pacer, runner, tts, finished = held_turn(toolbox)
    gevent.sleep(0.1)
    assert toolbox.runs == [] and tts.texts == ["רגע אחד."] and wire.sent == []

    turn.release()
    gevent.sleep(0.1)
    assert toolbox.runs == ["take_message"] and tts.texts == ["רגע אחד.", "רשמתי כן."]
    echo_marks(wire, pacer)
    assert finished == [turn]
    runner.kill()


def test_a_dropped_held_reply_never_runs_its_tool_nor_reaches_the_pacer():
    toolbox = ToolBox()
    turn, wire, pacer, runner, tts, finished = held_turn(toolbox)
    gevent.sleep(0.1)
    turn.cancel()
    turn.release()  # too late: a cancelled turn stays silent
    gevent.sleep(0.1)
    assert toolbox.runs == [] and wire.sent == [] and not pacer.busy and not finished
    assert turn._greenlets.greenlets == set()
    runner.kill()

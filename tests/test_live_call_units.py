"""The live-call engine's parts, in-process: Twilio message parsing/building, the μ-law VAD, the
sentence splitter, the pacer with its mark tracking, and the scripted fakes' speech encoding."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import gevent
import gevent.event
import gevent.queue
import pytest

from server.providers.base import ProviderError, Transcript
from server.voice.audio import FRAME_BYTES, SpeechDetector, mulaw_to_linear, split_frames
from server.voice.conversation import END_CALL_MARKER, Exchange, SentenceSplitter, llm_messages, render_transcript
from server.voice.pacer import OutboundPacer
from server.voice.protocol import (
    MAX_MESSAGE_BYTES,
    Connected,
    Dtmf,
    Mark,
    Media,
    OutboundMessages,
    ProtocolError,
    Start,
    Stop,
    parse_message,
)
from server.voice.stt import FRAMES_PER_QUIET_REQUEST, SpeechInput
from server.voice.transport import ConnectionClosed, MediaSocket, text_frame
from server.voice.turns import APOLOGY_TEXT, PhraseCache, Turn, TurnServices
from testkit.fakes.scripted_providers import DEFAULT_UTTERANCE, decode_speech, silence, speech

STREAM_SID = "MZ" + "a" * 32
CALL_SID = "CA" + "b" * 32
LOUD = speech("x", 200)[-FRAME_BYTES:]
QUIET = silence(20)


# ---- protocol ---------------------------------------------------------------------------------
def test_parses_every_twilio_message_with_string_numbers():
    payload = bytes(range(160))
    assert parse_message('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected("Call", "1.0.0")
    start = parse_message(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": STREAM_SID,
                "start": {
                    "accountSid": "AC1",
                    "streamSid": STREAM_SID,
                    "callSid": CALL_SID,
                    "tracks": ["inbound"],
                    "customParameters": {"token": "t", "business_id": 7},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
    )
    assert start == Start(
        STREAM_SID,
        CALL_SID,
        "AC1",
        ("inbound",),
        {"token": "t", "business_id": "7"},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    )
    media = parse_message(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "3",
                "streamSid": STREAM_SID,
                "media": {
                    "track": "inbound",
                    "chunk": "2",
                    "timestamp": "40",
                    "payload": base64.b64encode(payload).decode(),
                },
            }
        )
    )
    assert media == Media(payload, "inbound", 2, 40)
    assert parse_message('{"event":"mark","streamSid":"MZ1","mark":{"name":"3.1"}}') == Mark("3.1")
    assert parse_message('{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"#"}}') == Dtmf("#")
    assert parse_message('{"event":"stop","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA9"}}') == Stop(
        "CA9"
    )


def test_accepts_numeric_fields_as_numbers_too():
    media = parse_message(json.dumps({"event": "media", "media": {"chunk": 5, "timestamp": 100, "payload": ""}}))
    assert (media.chunk, media.timestamp_ms, media.payload) == (5, 100, b"")


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"event": "surprise"}', "unknown event"),
        ('{"no": "event"}', "unknown event"),
        ('{"event": "media", "media": {"payload": "***"}}', "not base64"),
        ('{"event": "media", "media": {"payload": "abc"}}', "not base64"),
        ('{"event": "media"}', "malformed"),
        ('{"event": "media", "media": {"payload": "", "chunk": "x"}}', "not a number"),
        ('{"event": "mark", "mark": {}}', "malformed"),
        ('{"event": "mark", "mark": {"name": 5}}', "malformed"),
        ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "unknown DTMF"),
        ('{"event": "start", "start": {"callSid": "CA1"}}', "malformed"),
        (
            '{"event": "start", "start": {"callSid": "CA1", "streamSid": "MZ1", "customParameters": [1]}}',
            "customParameters",
        ),
        ("\xff\xfe", "not JSON"),
    ],
)
def test_malformed_messages_raise_protocol_error(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        parse_message(raw)


def test_messages_over_64_kib_are_refused_before_parsing():
    raw = json.dumps({"event": "mark", "mark": {"name": "x" * MAX_MESSAGE_BYTES}})
    with pytest.raises(ProtocolError, match="limit"):
        parse_message(raw)


def test_builds_media_mark_and_clear_for_the_stream():
    messages = OutboundMessages(STREAM_SID)
    media = json.loads(messages.media(b"\x01\x02"))
    assert media == {"event": "media", "streamSid": STREAM_SID, "media": {"payload": "AQI="}}
    assert json.loads(messages.mark('turn "1"')) == {
        "event": "mark",
        "streamSid": STREAM_SID,
        "mark": {"name": 'turn "1"'},
    }
    assert json.loads(messages.clear) == {"event": "clear", "streamSid": STREAM_SID}
    with pytest.raises(ProtocolError):
        OutboundMessages('MZ"}')


@pytest.mark.parametrize(
    "size, header", [(5, b"\x81\x05"), (200, b"\x81\x7e\x00\xc8"), (70000, b"\x81\x7f" + (70000).to_bytes(8, "big"))]
)
def test_outbound_text_frames_are_final_and_unmasked(size, header):
    frame = text_frame(b"a" * size)
    assert frame.startswith(header) and frame.endswith(b"a" * size) and len(frame) == len(header) + size


def test_a_send_to_a_vanished_caller_is_a_closed_connection_not_a_crash():
    class DeadSocket:
        def sendall(self, data):
            raise BrokenPipeError(32, "Broken pipe")

    class FakeServer:
        sock, connected, subprotocol = DeadSocket(), True, None
        close_reason, close_message = None, None
        event = gevent.event.Event()

    ws = FakeServer()
    socket = MediaSocket(ws)
    with pytest.raises(ConnectionClosed):
        socket.send("{}")
    assert not socket.connected and ws.event.is_set()
    pacer = OutboundPacer(socket.send, OutboundMessages(STREAM_SID))
    pacer.enqueue(pacer.item("1.0", "x", [LOUD]))
    assert pacer.clear() is True  # no exception: the session ends when the receive loop notices
    with pytest.raises(ConnectionClosed):
        socket.send("{}")


# ---- audio ------------------------------------------------------------------------------------
def test_mulaw_decoding_matches_g711():
    assert mulaw_to_linear(0xFF) == 0 and mulaw_to_linear(0x7F) == 0
    assert mulaw_to_linear(0x00) == -32124 and mulaw_to_linear(0x80) == 32124


def test_split_frames_pads_the_last_frame_with_silence():
    frames = split_frames(b"\x00" * 170)
    assert [len(f) for f in frames] == [160, 160]
    assert frames[1] == b"\x00" * 10 + b"\xff" * 150


def test_vad_needs_the_minimum_speech_duration_and_ignores_short_noise():
    vad = SpeechDetector(min_speech_ms=100)
    clock = iter(i * 0.02 for i in range(1000))
    # a 60 ms click, then silence: not speech
    assert not any(vad.feed(f, next(clock)) for f in [LOUD] * 3 + [QUIET] * 10)
    assert not vad.speaking
    # 100 ms of voice with a 40 ms dip inside: speech, reported once
    fired = [vad.feed(f, next(clock)) for f in [LOUD] * 3 + [QUIET] * 2 + [LOUD] * 4]
    assert fired.count(True) == 1 and vad.speaking
    assert vad.last_voice_at == pytest.approx(0.02 * 21)
    # a long pause ends the run
    for f in [QUIET] * 10:
        vad.feed(f, next(clock))
    assert not vad.speaking


# ---- conversation -----------------------------------------------------------------------------
def test_sentences_come_out_as_soon_as_they_are_complete():
    splitter = SentenceSplitter()
    out = []
    for delta in ["שלום", "! הגעתם ", "לסלון. המחיר 3.5 ", "שקלים? כן", "\nתודה"]:
        out.append(splitter.feed(delta))
    assert out == [[], ["שלום!"], ["הגעתם לסלון."], ["המחיר 3.5 שקלים?"], ["כן"]]
    assert splitter.flush() == ["תודה"] and splitter.flush() == []
    assert not splitter.saw_end_call


def test_the_goodbye_marker_is_detected_and_never_spoken():
    splitter = SentenceSplitter()
    spoken = splitter.feed("תודה ולהתראות! [END") + splitter.feed("_CALL]") + splitter.flush()
    assert spoken == ["תודה ולהתראות!"] and splitter.saw_end_call
    splitter = SentenceSplitter()
    assert splitter.feed(f"ביי {END_CALL_MARKER}. ") == ["ביי ."] and splitter.saw_end_call


def test_a_long_run_on_reply_is_cut_at_a_clause():
    splitter = SentenceSplitter()
    text = "מילה " * 30 + ", ועוד " + "מילה " * 30
    first = splitter.feed(text)
    assert first and len(first[0]) <= 220 and first[0].endswith(",")


def test_history_becomes_llm_messages_and_transcript():
    history = [Exchange("", "שלום, איך אפשר לעזור?"), Exchange("מה השעות?", "משמונה עד חמש."), Exchange("רגע", "")]
    messages = llm_messages("SYSTEM", history, "תודה")
    assert [m["role"] for m in messages] == ["system", "assistant", "user", "assistant", "user", "user"]
    assert render_transcript(history) == (
        "Agent: שלום, איך אפשר לעזור?\nCaller: מה השעות?\nAgent: משמונה עד חמש.\nCaller: רגע"
    )


# ---- pacer ------------------------------------------------------------------------------------
class Wire:
    """What the pacer sends, with timestamps."""

    def __init__(self):
        self.sent: list[tuple[float, dict]] = []

    def send(self, text: str) -> None:
        import time

        self.sent.append((time.monotonic(), json.loads(text)))

    def events(self, kind: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.sent if m["event"] == kind]


def make_pacer(lead: float = 0.06):
    wire = Wire()
    pacer = OutboundPacer(wire.send, OutboundMessages(STREAM_SID), lead_seconds=lead)
    return wire, pacer, gevent.spawn(pacer.run)


def test_pacer_sends_frames_a_little_ahead_of_real_time_then_a_mark():
    wire, pacer, runner = make_pacer(lead=0.06)
    played = []
    item = pacer.item("1.0", "שלום", split_frames(b"\x10" * FRAME_BYTES * 15), played.append)
    pacer.enqueue(item)
    assert pacer.busy
    gevent.sleep(0.5)
    media, marks = wire.events("media"), wire.events("mark")
    assert len(media) == 15 and [m["mark"]["name"] for _, m in marks] == ["1.0"]
    assert marks[0][0] >= media[-1][0]
    start = media[0][0]
    # the first few frames go out at once (the lead), then one every 20 ms
    assert media[2][0] - start < 0.01
    steady = [b[0] - a[0] for a, b in zip(media[5:], media[6:], strict=False)]
    assert all(0.012 < gap < 0.035 for gap in steady), steady
    total = media[-1][0] - start
    assert 0.20 < total < 0.30  # 15 frames = 300 ms of audio, sent 60 ms ahead
    assert pacer.frames_sent == 15 and item.first_sent_at is not None and pacer.underruns == 0
    # Twilio echoes the mark once played: the item is heard
    assert pacer.busy and not item.played
    assert pacer.on_mark("1.0") is item and item.played and played == [item]
    assert not pacer.busy and pacer.on_mark("1.0") is None
    runner.kill()


def test_a_stalled_worker_shows_as_pacer_underruns():
    import time

    wire = Wire()

    def send(text: str) -> None:
        wire.send(text)
        if len(wire.sent) == 5:
            time.sleep(0.1)  # blocks the whole hub, as CPU starvation or a blocking call would

    pacer = OutboundPacer(send, OutboundMessages(STREAM_SID), lead_seconds=0.04)
    runner = gevent.spawn(pacer.run)
    pacer.enqueue(pacer.item("4.0", "x", split_frames(b"\x10" * FRAME_BYTES * 10)))
    gevent.sleep(0.35)
    assert pacer.frames_sent == 10 and pacer.underruns == 1
    runner.kill()


def test_clear_drops_queued_audio_and_ignores_late_echoes_of_cleared_marks():
    wire, pacer, runner = make_pacer(lead=0.04)
    first = pacer.item("2.0", "one", split_frames(b"\x10" * FRAME_BYTES * 3))
    second = pacer.item("2.1", "two", split_frames(b"\x10" * FRAME_BYTES * 50))
    pacer.enqueue(first)
    pacer.enqueue(second)
    gevent.sleep(0.15)
    assert pacer.on_mark("2.0") is first  # heard
    assert pacer.clear() is True
    sent_before = len(wire.events("media"))
    gevent.sleep(0.1)
    assert len(wire.events("media")) == sent_before < 53
    assert len(wire.events("clear")) == 1
    assert second.cleared and not second.played
    assert pacer.on_mark("2.1") is None  # Twilio echoes pending marks on clear: not heard
    assert not pacer.busy and pacer.clear() is False and pacer.clears_sent == 1
    # playback starts over right away
    pacer.enqueue(pacer.item("3.0", "three", split_frames(b"\x10" * FRAME_BYTES * 2)))
    gevent.sleep(0.05)
    assert [m["mark"]["name"] for _, m in wire.events("mark")][-1] == "3.0"
    runner.kill()


# ---- the scripted fakes -----------------------------------------------------------------------
def test_scripted_speech_carries_its_text_in_loud_audio():
    audio = speech("מה השעות?", 400)
    assert len(audio) == 400 * 8 and all(abs(mulaw_to_linear(sample)) > 10000 for sample in audio)
    assert decode_speech(audio) == "מה השעות?"
    assert decode_speech(audio[:6]) is None
    assert decode_speech(b"\x05" * 200) == DEFAULT_UTTERANCE


# ---- the STT stream keeper --------------------------------------------------------------------
class FakeStream:
    def __init__(self):
        self.audio: list[bytes] = []
        self.results = gevent.queue.Queue()
        self.closed = False

    def send_audio(self, mulaw: bytes) -> None:
        self.audio.append(mulaw)

    def transcripts(self):
        for result in self.results:
            if result is None:
                return
            yield result

    def close(self) -> None:
        self.closed = True
        self.results.put(None)


class FakeSpeechToText:
    def __init__(self, failures: int = 0):
        self.streams: list[FakeStream] = []
        self.failures = failures

    def open_stream(self) -> FakeStream:
        if self.failures:
            self.failures -= 1
            raise ProviderError("no speech service")
        self.streams.append(FakeStream())
        return self.streams[-1]


def speech_input(stt, clock=None, quiet_since=lambda: None):
    import time

    heard, unavailable = [], []
    keeper = SpeechInput(
        stt,
        on_transcript=heard.append,
        on_unavailable=unavailable.append,
        quiet_since=quiet_since,
        call_sid=CALL_SID,
        clock=clock or time.monotonic,
    )
    return keeper, heard, unavailable, gevent.spawn(keeper.run)


def test_stt_gets_100_ms_requests_and_a_dead_stream_is_reopened_without_losing_audio():
    stt = FakeSpeechToText()
    keeper, heard, unavailable, runner = speech_input(stt, quiet_since=time.monotonic)  # the caller makes sound
    gevent.sleep(0)
    for n in range(12):
        keeper.send(bytes([n]) * FRAME_BYTES)
    first = stt.streams[0]
    assert [len(a) for a in first.audio] == [5 * FRAME_BYTES, 5 * FRAME_BYTES]
    first.results.put(Transcript("שלום", is_final=True))  # frames 0-9 are recognised
    gevent.sleep(0)
    for n in range(12, 15):
        keeper.send(bytes([n]) * FRAME_BYTES)  # completes a request with frames 10-14, not recognised yet
    first.results.put(None)  # the stream dies on its own
    gevent.sleep(0.05)
    assert heard == [Transcript("שלום", is_final=True)] and keeper.restarts == 1 and first.closed
    second = stt.streams[1]
    assert second.audio == [b"".join(bytes([n]) * FRAME_BYTES for n in range(10, 15))]  # replayed
    keeper.close()
    gevent.sleep(0)
    assert second.closed and runner.dead and not unavailable


def test_stt_gets_500_ms_requests_while_the_caller_listens_and_speech_goes_out_at_once():
    clock = [100.0]
    last_sound = [None]
    stt = FakeSpeechToText()
    keeper, heard, unavailable, runner = speech_input(stt, clock=lambda: clock[0], quiet_since=lambda: last_sound[0])
    gevent.sleep(0)
    stream = stt.streams[0]
    for n in range(30):  # a caller who has not spoken: 500 ms requests
        keeper.send(bytes([n]) * FRAME_BYTES)
    assert [len(a) for a in stream.audio] == [25 * FRAME_BYTES]
    keeper.send(bytes([30]) * FRAME_BYTES)
    last_sound[0] = clock[0]  # the next frame is loud: everything waiting goes, with it
    keeper.send(bytes([31]) * FRAME_BYTES)
    assert [len(a) for a in stream.audio] == [25 * FRAME_BYTES, 7 * FRAME_BYTES]
    stream.results.put(Transcript("שלום", is_final=False))  # an utterance is open …
    gevent.sleep(0)
    clock[0] += 5.0  # … so even long after the last loud frame, requests stay at 100 ms until its final
    for n in range(32, 37):
        keeper.send(bytes([n]) * FRAME_BYTES)
    assert [len(a) for a in stream.audio][-1] == 5 * FRAME_BYTES
    stream.results.put(Transcript("שלום", is_final=True))
    gevent.sleep(0)
    for n in range(37, 47):
        keeper.send(bytes([n]) * FRAME_BYTES)
    assert len(stream.audio) == 3  # quiet and nothing open: back to 500 ms, nothing sent yet
    assert b"".join(stream.audio) == b"".join(bytes([n]) * FRAME_BYTES for n in range(37))  # in order, all of it
    keeper.close()
    gevent.sleep(0)
    assert runner.dead and not unavailable and heard[-1].is_final


def test_an_stt_stream_that_raises_is_reopened():
    class Exploding(FakeStream):
        def transcripts(self):
            yield Transcript("שלום", is_final=False)
            raise ConnectionResetError("gRPC stream reset")

    class FirstStreamExplodes(FakeSpeechToText):
        def open_stream(self):
            if self.streams:
                return super().open_stream()
            self.streams.append(Exploding())
            return self.streams[0]

    stt = FirstStreamExplodes()
    keeper, heard, unavailable, runner = speech_input(stt)
    gevent.sleep(0.05)
    assert heard == [Transcript("שלום", is_final=False)] and keeper.restarts == 1 and len(stt.streams) == 2
    keeper.close()


def test_stt_that_cannot_be_opened_gives_up_after_a_few_quick_attempts():
    keeper, heard, unavailable, runner = speech_input(FakeSpeechToText(failures=10))
    runner.join(timeout=3)
    assert runner.dead and len(unavailable) == 1 and "4 times" in unavailable[0]


def test_a_long_lived_stt_stream_is_replaced_during_a_pause():
    now = [0.0]
    stt = FakeSpeechToText()
    keeper, heard, unavailable, runner = speech_input(stt, clock=lambda: now[0], quiet_since=lambda: 0.0)
    gevent.sleep(0)
    now[0] = 241.0
    for _ in range(FRAMES_PER_QUIET_REQUEST):  # one request of a quiet caller
        keeper.send(QUIET)
    gevent.sleep(0.01)
    assert stt.streams[0].closed and len(stt.streams) == 2 and keeper.restarts == 0


# ---- one turn ---------------------------------------------------------------------------------
class ScriptedLLM:
    def __init__(self, deltas=(), stall_after=None, error=None):
        self.deltas, self.stall_after, self.error = list(deltas), stall_after, error

    def stream_reply(self, messages):
        for n, delta in enumerate(self.deltas):
            if n == self.stall_after:
                gevent.sleep(60)
            yield delta
        if self.error:
            raise self.error


class EchoTTS:
    def __init__(self, fail_on: str = "\0"):
        self.fail_on = fail_on

    def synthesize(self, text: str) -> bytes:
        if self.fail_on in text:
            raise ProviderError("voice down")
        return b"\x10" * FRAME_BYTES * 2


def run_turn(llm, tts, *, cached_apology=True):
    from tests.conftest import make_settings

    wire, pacer, runner = make_pacer(lead=0.2)
    phrases = PhraseCache()
    if cached_apology:
        phrases.put(APOLOGY_TEXT, b"\x20" * FRAME_BYTES)
    finished = []
    turn = Turn(
        1,
        "שאלה",
        speech_ended_at=0.0,
        final_at=0.0,
        on_finished=finished.append,
        services=TurnServices(
            llm=llm,
            tts=tts,
            pacer=pacer,
            phrases=phrases,
            settings=make_settings(LLM_FIRST_TOKEN_TIMEOUT_SECONDS="0.2"),
        ),
    )
    turn.start_reply([{"role": "user", "content": "שאלה"}])
    gevent.sleep(0.4)
    for _, mark in wire.events("mark"):
        pacer.on_mark(mark["mark"]["name"])
    runner.kill()
    return turn, finished


def test_a_turn_streams_sentences_and_finishes_when_all_were_heard():
    turn, finished = run_turn(ScriptedLLM(["שלום. ", "מה ", "נשמע? [END_CALL]"]), EchoTTS())
    assert finished == [turn] and turn.error is None and turn.goodbye
    assert [item.text for item in turn.items] == ["שלום.", "מה נשמע?"]
    assert turn.heard_text == "שלום. מה נשמע?"
    metrics = turn.metrics()
    assert metrics["t_first_audio_ms"] is not None and metrics["t_tts_ms"] is not None


def test_an_llm_stall_is_a_timeout_answered_with_the_cached_apology():
    turn, finished = run_turn(ScriptedLLM(["שלום"], stall_after=0), EchoTTS())
    assert finished == [turn] and "LLM sent nothing" in turn.error and turn.apologized
    assert turn.heard_text == APOLOGY_TEXT


def test_a_failure_after_some_audio_ends_the_turn_without_an_apology():
    turn, finished = run_turn(ScriptedLLM(["אחת. ", "שתיים. "]), EchoTTS(fail_on="שתיים"))
    assert finished == [turn] and turn.error.startswith("tts") and not turn.apologized
    assert turn.heard_text == "אחת."


def test_without_apology_audio_a_failed_turn_finishes_silently():
    turn, finished = run_turn(ScriptedLLM(error=ProviderError("boom")), EchoTTS(), cached_apology=False)
    assert finished == [turn] and turn.error == "llm: boom" and not turn.items and not turn.apologized


def test_an_unexpected_provider_exception_is_a_failure_like_any_other():
    class BrokenLLM:
        def stream_reply(self, messages):
            raise KeyError("choices")

    class BrokenTTS:
        def synthesize(self, text):
            raise RuntimeError("socket closed")

    turn, finished = run_turn(BrokenLLM(), EchoTTS())
    assert finished == [turn] and turn.error == "llm: KeyError: 'choices'" and turn.apologized
    turn, finished = run_turn(ScriptedLLM(["שלום. "]), BrokenTTS())
    assert finished == [turn] and turn.error == "tts: RuntimeError: socket closed" and turn.apologized


def test_a_cancelled_turn_stops_its_work_and_never_finishes():
    from tests.conftest import make_settings

    wire, pacer, runner = make_pacer()
    finished = []
    turn = Turn(
        2,
        "x",
        speech_ended_at=0.0,
        final_at=0.0,
        on_finished=finished.append,
        services=TurnServices(
            llm=ScriptedLLM(["א. "] * 50, stall_after=1),
            tts=EchoTTS(),
            pacer=pacer,
            phrases=PhraseCache(),
            settings=make_settings(),
        ),
    )
    turn.start_reply([])
    gevent.sleep(0.05)
    turn.cancel()
    gevent.sleep(0.05)
    assert turn.cancelled and not finished and turn._greenlets.greenlets == set()
    runner.kill()


def test_audio_finished_in_the_same_loop_pass_as_a_barge_in_is_not_played():
    """`cancel()` kills greenlets on the next hub pass, so a TTS result due in the same pass as the
    barge-in must not reach the pacer after the `clear` (the caller would hear the old reply go on)."""
    import time

    from tests.conftest import make_settings

    class SlowTTS:
        def synthesize(self, text: str) -> bytes:
            gevent.sleep(0.15)
            return b"\x20" * FRAME_BYTES * 5

    wire, pacer, runner = make_pacer()
    turn = Turn(
        3,
        "x",
        speech_ended_at=0.0,
        final_at=0.0,
        on_finished=lambda t: None,
        services=TurnServices(
            llm=ScriptedLLM(["שלום לכם. "]), tts=SlowTTS(), pacer=pacer, phrases=PhraseCache(), settings=make_settings()
        ),
    )
    turn.start_reply([])
    gevent.sleep(0.01)  # the sentence is in synthesis, due at ~0.16 s

    def barge_in():
        turn.cancel()
        pacer.clear()

    gevent.spawn_later(0.13, barge_in)
    time.sleep(0.2)  # block the hub so both timers are due in the same pass
    gevent.sleep(0.2)
    assert turn.cancelled and turn.items == []
    runner.kill()


# ---- the package boundary ---------------------------------------------------------------------
@pytest.mark.slow  # a fresh Python subprocess
def test_the_voice_package_runs_without_flask():
    """`server/voice/` is the engine, not the web layer: every module of it imports without Flask."""
    code = (
        "import importlib, pkgutil, sys, server.voice\n"
        "names = [m.name for m in pkgutil.iter_modules(server.voice.__path__)]\n"
        "for name in names: importlib.import_module('server.voice.' + name)\n"
        "print(len(names), sorted({n.split('.')[0] for n in sys.modules} & {'flask', 'werkzeug'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) >= 10 and loaded.strip() == "[]"

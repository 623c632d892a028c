"""The live-call engine's parts, in-process: Twilio message parsing/building, the μ-law VAD, the
sentence splitter, the pacer with its mark tracking, and the scripted fakes' speech encoding."""
from __future__ import annotations

import base64
import json

import gevent
import pytest

from server.voice.audio import FRAME_BYTES, SpeechDetector, frame_loudness, mulaw_to_linear, split_frames
from server.voice.conversation import END_CALL_MARKER, Exchange, SentenceSplitter, llm_messages, render_transcript
from server.voice.pacer import OutboundPacer
from server.voice.protocol import (MAX_MESSAGE_BYTES, Connected, Dtmf, Mark, Media, OutboundMessages, ProtocolError,
                                   Start, Stop, parse_message)
from server.voice.transport import text_frame
from tests.fakes.scripted_providers import DEFAULT_UTTERANCE, decode_speech, silence, speech

STREAM_SID = "MZ" + "a" * 32
CALL_SID = "CA" + "b" * 32
LOUD = speech("x", 200)[-FRAME_BYTES:]
QUIET = silence(20)


# ---- protocol ---------------------------------------------------------------------------------
def test_parses_every_twilio_message_with_string_numbers():
    payload = bytes(range(160))
    assert parse_message('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected("Call", "1.0.0")
    start = parse_message(json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
        "start": {"accountSid": "AC1", "streamSid": STREAM_SID, "callSid": CALL_SID, "tracks": ["inbound"],
                  "customParameters": {"token": "t", "business_id": 7},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    assert start == Start(STREAM_SID, CALL_SID, "AC1", ("inbound",), {"token": "t", "business_id": "7"},
                          {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    media = parse_message(json.dumps({"event": "media", "sequenceNumber": "3", "streamSid": STREAM_SID,
                                      "media": {"track": "inbound", "chunk": "2", "timestamp": "40",
                                                "payload": base64.b64encode(payload).decode()}}))
    assert media == Media(payload, "inbound", 2, 40)
    assert parse_message('{"event":"mark","streamSid":"MZ1","mark":{"name":"3.1"}}') == Mark("3.1")
    assert parse_message('{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"#"}}') \
        == Dtmf("#")
    assert parse_message('{"event":"stop","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA9"}}') \
        == Stop("CA9")


def test_accepts_numeric_fields_as_numbers_too():
    media = parse_message(json.dumps({"event": "media", "media": {"chunk": 5, "timestamp": 100, "payload": ""}}))
    assert (media.chunk, media.timestamp_ms, media.payload) == (5, 100, b"")


@pytest.mark.parametrize("raw, reason", [
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
    ('{"event": "start", "start": {"callSid": "CA1", "streamSid": "MZ1", "customParameters": [1]}}',
     "customParameters"),
    ("\xff\xfe", "not JSON"),
])
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
    assert json.loads(messages.mark('turn "1"')) == {"event": "mark", "streamSid": STREAM_SID,
                                                     "mark": {"name": 'turn "1"'}}
    assert json.loads(messages.clear) == {"event": "clear", "streamSid": STREAM_SID}
    with pytest.raises(ProtocolError):
        OutboundMessages('MZ"}')


@pytest.mark.parametrize("size, header", [(5, b"\x81\x05"), (200, b"\x81\x7e\x00\xc8"),
                                          (70000, b"\x81\x7f" + (70000).to_bytes(8, "big"))])
def test_outbound_text_frames_are_final_and_unmasked(size, header):
    frame = text_frame(b"a" * size)
    assert frame.startswith(header) and frame.endswith(b"a" * size) and len(frame) == len(header) + size


# ---- audio ------------------------------------------------------------------------------------
def test_mulaw_decoding_matches_g711():
    assert mulaw_to_linear(0xFF) == 0 and mulaw_to_linear(0x7F) == 0
    assert mulaw_to_linear(0x00) == -32124 and mulaw_to_linear(0x80) == 32124
    assert frame_loudness(QUIET) == 0
    assert frame_loudness(LOUD) > 10000


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
    history = [Exchange("", "שלום, איך אפשר לעזור?"), Exchange("מה השעות?", "משמונה עד חמש."),
               Exchange("רגע", "")]
    messages = llm_messages("SYSTEM", history, "תודה")
    assert [m["role"] for m in messages] == ["system", "assistant", "user", "assistant", "user", "user"]
    assert render_transcript(history) == ("Agent: שלום, איך אפשר לעזור?\nCaller: מה השעות?\n"
                                          "Agent: משמונה עד חמש.\nCaller: רגע")


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
    steady = [b[0] - a[0] for a, b in zip(media[5:], media[6:])]
    assert all(0.012 < gap < 0.035 for gap in steady), steady
    total = media[-1][0] - start
    assert 0.20 < total < 0.30  # 15 frames = 300 ms of audio, sent 60 ms ahead
    assert pacer.frames_sent == 15 and item.first_sent_at is not None and item.expected_end is not None
    # Twilio echoes the mark once played: the item is heard
    assert pacer.busy and not item.played
    assert pacer.on_mark("1.0") is item and item.played and played == [item]
    assert not pacer.busy and pacer.on_mark("1.0") is None
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
    assert len(audio) == 400 * 8 and all(frame_loudness(f) > 10000 for f in split_frames(audio))
    assert decode_speech(audio) == "מה השעות?"
    assert decode_speech(audio[:6]) is None
    assert decode_speech(b"\x05" * 200) == DEFAULT_UTTERANCE

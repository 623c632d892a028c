"""Google STT and TTS adapters: the real SDK clients against the local gRPC fakes, WAV parsing, credentials."""

from __future__ import annotations

import json
import logging
import struct
import threading
import time

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account

from server.providers.base import ProviderError, ProviderTimeout
from server.providers.google_credentials import google_credentials
from server.providers.google_openai import build_voice_providers
from server.providers.google_stt import GoogleSpeechToText, SpeechModel, model_candidates
from server.providers.google_tts import GoogleTextToSpeech, mulaw_payload
from server.providers.wav import WavError, parse_wav
from testkit.fakes.google_speech import FakeSpeech, pcm16, pcm_wav, silence, speech
from testkit.fakes.google_tts import FakeTextToSpeech, payload_for, wav_container
from tests.conftest import make_settings

CHUNK = 800  # what the live-call engine sends while the caller talks: five 20 ms frames


@pytest.fixture
def speech_fake():
    with FakeSpeech() as fake:
        yield fake


@pytest.fixture
def tts_fake():
    with FakeTextToSpeech() as fake:
        yield fake


def stt_for(fake: FakeSpeech, **kwargs) -> GoogleSpeechToText:
    env = {"GOOGLE_SPEECH_EMULATOR_HOST": fake.address, **kwargs.pop("env", {})}
    return GoogleSpeechToText(make_settings(**env), **kwargs)


class Collector:
    """Reads `transcripts()` in a thread, as the engine does, keeping what arrived and how it ended."""

    def __init__(self, stream):
        self.items, self.error, self.done = [], None, threading.Event()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        try:
            for transcript in stream.transcripts():
                self.items.append(transcript)
        except ProviderError as exc:
            self.error = exc
        self.done.set()

    @property
    def finals(self) -> list[str]:
        return [t.text for t in self.items if t.is_final]

    def wait_for_finals(self, count: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.finals) < count and not self.done.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.finals


def send_frames(stream, audio: bytes, *, real_time: bool = False) -> None:
    for start in range(0, len(audio), CHUNK):
        stream.send_audio(audio[start : start + CHUNK])
        if real_time:
            time.sleep(CHUNK / 8000)


# ---- STT streaming ----------------------------------------------------------------------------
def test_stream_config_batching_and_transcripts(speech_fake):
    speech_fake.script("שלום אני רוצה תור", "מחר בעשר")
    stream = stt_for(speech_fake).open_stream()
    collector = Collector(stream)
    audio = silence(200) + speech(800) + silence(400) + speech(400) + silence(400)
    send_frames(stream, audio)
    assert collector.wait_for_finals(2) == ["שלום אני רוצה תור", "מחר בעשר"]
    interims = [t.text for t in collector.items if not t.is_final]
    assert interims and interims[0] == "שלום"
    stream.close()
    assert collector.done.wait(2) and collector.error is None
    record = speech_fake.streams[0]
    config = record.config["config"]
    assert (config["encoding"], config["sample_rate_hertz"], config["language_code"]) == (3, 8000, "he-IL")  # MULAW
    assert (config["model"], config["use_enhanced"], record.config["interim_results"]) == ("phone_call", True, True)
    assert record.audio_bytes == len(audio) and record.requests == len(audio) // CHUNK  # a request per chunk


def test_streams_take_the_channels_in_turn_each_on_a_connection_of_its_own(speech_fake):
    stt = stt_for(speech_fake, env={"STT_CHANNELS": "3"})
    streams = [stt.open_stream() for _ in range(4)]
    for stream in streams:
        Collector(stream)
        stream.send_audio(silence(100))
    deadline = time.monotonic() + 5
    while len(speech_fake.streams) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    for stream in streams:
        stream.close()
    peers = [record.peer for record in speech_fake.streams]
    assert len(peers) == 4 and len(set(peers)) == 3  # three connections; the fourth stream shares the first's


def test_a_chunk_above_googles_request_limit_is_split(speech_fake):
    stream = stt_for(speech_fake).open_stream()
    Collector(stream)
    stream.send_audio(silence(4000))  # 32,000 bytes: Google takes at most 25,600 per request
    deadline = time.monotonic() + 5
    while (not speech_fake.streams or speech_fake.streams[0].audio_bytes < 32000) and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.close()
    assert (speech_fake.streams[0].audio_bytes, speech_fake.streams[0].requests) == (32000, 2)


def test_model_fallback_replays_audio_and_is_remembered(speech_fake, caplog):
    speech_fake.reject_models = {"phone_call"}
    speech_fake.script("נסיון ראשון", "נסיון שני")
    stt = stt_for(speech_fake)
    caplog.set_level(logging.WARNING, logger="agentlocator.providers.google_stt")
    stream = stt.open_stream()
    collector = Collector(stream)
    audio = speech(400) + silence(400)
    send_frames(stream, audio)
    assert collector.wait_for_finals(1) == ["נסיון ראשון"]
    # The final can come before the last frames reach the fake; closing then would discard them.
    deadline = time.monotonic() + 5
    while speech_fake.streams[-1].audio_bytes < len(audio) and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.close()
    assert [s.config["config"]["model"] for s in speech_fake.streams] == ["phone_call", "latest_long"]
    assert speech_fake.streams[1].audio_bytes == len(audio)  # what the rejected stream took was replayed

    second = stt.open_stream()  # the process remembers: straight to latest_long
    collector = Collector(second)
    send_frames(second, audio)
    assert collector.wait_for_finals(1) == ["נסיון שני"]
    second.close()
    assert [s.config["config"]["model"] for s in speech_fake.streams][2:] == ["latest_long"]
    rejections = [r for r in caplog.records if getattr(r, "event", "") == "stt_model_unsupported"]
    assert len(rejections) == 1 and rejections[0].model == "phone_call+enhanced"


def test_every_model_rejected_surfaces_an_error(speech_fake):
    speech_fake.reject_models = {"phone_call", "latest_long", ""}
    stream = stt_for(speech_fake).open_stream()
    collector = Collector(stream)
    send_frames(stream, speech(300))
    assert collector.done.wait(5)
    assert isinstance(collector.error, ProviderError) and "not supported" in str(collector.error)
    assert [s.config["config"]["model"] for s in speech_fake.streams] == ["phone_call", "latest_long", ""]


def test_stream_restarts_before_the_limit_without_losing_audio(speech_fake):
    speech_fake.max_stream_seconds = 2.0  # the fake cuts a stream off after 2 s of audio, as Google does at ~5 min
    stream = stt_for(speech_fake, stream_restart_seconds=1.0, stream_restart_grace_seconds=0.5).open_stream()
    collector = Collector(stream)
    audio = (speech(300) + silence(400)) * 5  # 3.5 s, sent in real time
    send_frames(stream, audio, real_time=True)
    time.sleep(0.3)
    stream.close()
    assert collector.error is None
    streams = speech_fake.streams
    assert len(streams) >= 3
    assert all(s.ended != "out_of_range" for s in streams)
    assert all(s.ended == "half_closed" for s in streams[:-1])
    assert speech_fake.audio_bytes_total == len(audio)  # every byte reached exactly one stream
    assert len(collector.finals) >= 4 and any(s.transcripts for s in streams[1:])


def test_restart_waits_for_the_end_of_an_utterance(speech_fake):
    speech_fake.script("משפט ארוך שנאמר בדיוק בזמן ההחלפה", "ועוד אחד")
    stream = stt_for(speech_fake, stream_restart_seconds=1.0, stream_restart_grace_seconds=5.0).open_stream()
    collector = Collector(stream)
    audio = silence(500) + speech(1500) + silence(500) + speech(300) + silence(500)
    send_frames(stream, audio, real_time=True)
    assert collector.wait_for_finals(2) == ["משפט ארוך שנאמר בדיוק בזמן ההחלפה", "ועוד אחד"]
    stream.close()
    streams = speech_fake.streams
    assert len(streams) >= 2 and streams[0].transcripts[-1] == ("משפט ארוך שנאמר בדיוק בזמן ההחלפה", True)
    assert streams[0].audio_bytes > 2000 * 8  # it kept the stream past the 1 s mark until the caller paused
    assert speech_fake.audio_bytes_total == len(audio)


def test_a_stream_that_dies_surfaces(speech_fake):
    speech_fake.fail_next_stream(grpc.StatusCode.UNAVAILABLE, after_ms=200)
    stream = stt_for(speech_fake).open_stream()
    collector = Collector(stream)
    send_frames(stream, silence(600))
    assert collector.done.wait(5) and isinstance(collector.error, ProviderError)
    stream.send_audio(silence(100))  # a dead stream still never blocks or raises on audio


def test_a_stream_google_closes_surfaces(speech_fake):
    speech_fake.close_next_stream(after_ms=200)
    stream = stt_for(speech_fake).open_stream()
    collector = Collector(stream)
    send_frames(stream, silence(600))
    assert collector.done.wait(5) and "ended unexpectedly" in str(collector.error)


def test_close_ends_transcripts_quietly(speech_fake):
    speech_fake.stall = True
    stream = stt_for(speech_fake).open_stream()
    collector = Collector(stream)
    send_frames(stream, speech(400))
    stream.close()
    assert collector.done.wait(2) and collector.error is None and collector.items == []


def test_model_candidates():
    assert [m.label for m in model_candidates("phone_call")] == ["phone_call+enhanced", "latest_long", "default"]
    assert [m.label for m in model_candidates("latest_long")] == ["latest_long", "default"]
    assert model_candidates("default") == (SpeechModel(""),)
    assert [m.label for m in model_candidates("telephony")] == ["telephony", "latest_long", "default"]


# ---- STT one-shot (voicemail) -----------------------------------------------------------------
def test_transcribe_linear16_and_mulaw(speech_fake):
    stt = stt_for(speech_fake)
    speech_fake.script("היי זה דני", "תחזרו אליי")
    audio = pcm16(200, False) + pcm16(500, True) + pcm16(500, False) + pcm16(400, True) + pcm16(200, False)
    assert stt.transcribe(audio, encoding="LINEAR16", sample_rate_hz=8000) == "היי זה דני תחזרו אליי"
    assert speech_fake.recognize_calls[-1]["config"]["encoding"] == 1  # LINEAR16
    speech_fake.script("הודעה במולאו")
    assert stt.transcribe(speech(500) + silence(300), encoding="MULAW", sample_rate_hz=8000) == "הודעה במולאו"


def test_transcribe_long_recording_in_pieces_and_model_fallback(speech_fake):
    speech_fake.reject_models = {"phone_call"}
    stt = stt_for(speech_fake)
    audio = silence(150_000)  # 2.5 minutes: three recognize calls under the one-minute limit
    assert stt.transcribe(audio, encoding="MULAW", sample_rate_hz=8000) == ""
    # The fake records every request, refused ones too: phone_call is tried once, with the first
    # piece, and the process then sends every piece (that one again) to latest_long.
    models = [c["config"]["model"] for c in speech_fake.recognize_calls]
    assert models == ["phone_call"] + ["latest_long"] * 3
    accepted = speech_fake.recognize_calls[1:]
    assert speech_fake.recognize_calls[0]["audio_bytes"] == accepted[0]["audio_bytes"]
    assert sum(c["audio_bytes"] for c in accepted) == len(audio)


def test_transcribe_rejects_unknown_encoding(speech_fake):
    with pytest.raises(ProviderError):
        stt_for(speech_fake).transcribe(b"x", encoding="OGG", sample_rate_hz=8000)


# ---- TTS --------------------------------------------------------------------------------------
def test_tts_returns_the_bare_mulaw_payload(tts_fake):
    tts = GoogleTextToSpeech(
        make_settings(GOOGLE_TTS_EMULATOR_HOST=tts_fake.address, TTS_VOICE="he-IL-Standard-B", TTS_SPEAKING_RATE="1.15")
    )
    audio = tts.synthesize("שלום, במה אפשר לעזור?")
    assert audio == payload_for("שלום, במה אפשר לעזור?")
    assert not any(marker in audio for marker in (b"RIFF", b"WAVE", b"fmt ", b"LIST", b"data"))
    request = tts_fake.requests[-1]
    assert request["voice"] == "he-IL-Standard-B" and request["language"] == "he-IL"
    assert (request["encoding"], request["sample_rate_hertz"]) == ("MULAW", 8000)
    assert request["speaking_rate"] == pytest.approx(1.15)


def test_tts_caches_short_phrases_only(tts_fake):
    tts = GoogleTextToSpeech(make_settings(GOOGLE_TTS_EMULATOR_HOST=tts_fake.address), cache_entries=2)
    for text in ("סליחה, לא שמעתי", "סליחה, לא שמעתי", "רגע אחד"):
        tts.synthesize(text)
    assert len(tts_fake.requests) == 2
    tts.synthesize("שלישי")
    tts.synthesize("סליחה, לא שמעתי")  # evicted (least recently used) → asked again
    assert len(tts_fake.requests) == 4
    long_text = "מילה " * 40
    tts.synthesize(long_text)
    tts.synthesize(long_text)
    assert len(tts_fake.requests) == 6
    assert tts.synthesize("  ") == b"" and len(tts_fake.requests) == 6


def test_tts_failure_and_timeout_are_provider_errors(tts_fake):
    tts = GoogleTextToSpeech(make_settings(GOOGLE_TTS_EMULATOR_HOST=tts_fake.address, TTS_TIMEOUT_SECONDS="0.3"))
    tts_fake.fail_next(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(ProviderError) as caught:
        tts.synthesize("נכשל")
    assert not isinstance(caught.value, ProviderTimeout)
    tts_fake.delay_seconds = 1.0
    with pytest.raises(ProviderTimeout):
        tts.synthesize("איטי")


# ---- WAV parsing ------------------------------------------------------------------------------
def test_wav_chunks_are_walked_not_skipped_by_44_bytes():
    payload = payload_for("בדיקה")
    container = wav_container(payload)
    assert container.index(b"data") + 8 != 44  # the fake's header is not the canonical 44 bytes
    assert container[container.index(b"LIST") + 4] % 2 == 1  # and carries an odd-sized chunk
    assert mulaw_payload(container) == payload
    assert mulaw_payload(b"\xff" * 10) == b"\xff" * 10


def test_wav_with_open_ended_data_and_extensible_format():
    fmt = (
        struct.pack("<HHIIHHH", 0xFFFE, 1, 8000, 8000, 1, 8, 22)
        + struct.pack("<HI", 8, 0)
        + struct.pack("<H", 7)
        + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    )
    data = (
        b"RIFF\xff\xff\xff\xffWAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data\xff\xff\xff\xff"
        + b"\x81" * 321
    )
    wav = parse_wav(data)
    assert wav.is_mulaw and wav.payload == b"\x81" * 321


def test_wav_errors_and_pcm():
    with pytest.raises(WavError):
        parse_wav(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(WavError):
        parse_wav(b"RIFF\x10\x00\x00\x00WAVEdata\x00\x00\x00\x00")
    with pytest.raises(ProviderError):
        mulaw_payload(b"RIFF\x04\x00\x00\x00WAVE")
    container = pcm_wav(b"\x01\x02" * 100, rate=16000)
    wav = parse_wav(container)
    assert wav.is_pcm16 and wav.sample_rate_hz == 16000 and wav.payload == b"\x01\x02" * 100
    with pytest.raises(ProviderError):  # PCM where μ-law was asked for: refuse rather than play noise
        mulaw_payload(container)


# ---- credentials ------------------------------------------------------------------------------
def service_account_info() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "agentlocator-test",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "speech@agentlocator-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def test_credentials_from_gcp_credentials_json_reach_the_clients():
    info = service_account_info()
    settings = make_settings(GCP_CREDENTIALS_JSON=json.dumps(info))
    credentials = google_credentials(settings)
    assert isinstance(credentials, service_account.Credentials)
    assert credentials.service_account_email == info["client_email"]
    providers = build_voice_providers(settings)
    for client in (providers.stt.client, providers.tts._client.get()):  # built, not connected: no network
        assert isinstance(client.transport._credentials, service_account.Credentials)
        assert client.transport._credentials.service_account_email == info["client_email"]


def test_credentials_from_a_file(tmp_path):
    path = tmp_path / "key.json"
    path.write_text(json.dumps(service_account_info()))
    credentials = google_credentials(make_settings(GOOGLE_APPLICATION_CREDENTIALS=str(path)))
    assert isinstance(credentials, service_account.Credentials)
    with pytest.raises(ProviderError):
        google_credentials(make_settings(GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing.json")))


def test_bad_credentials_json_does_not_leak_it():
    secret = '{"type": "service_account", "private_key": "-----SECRET-----"}'
    with pytest.raises(ProviderError) as caught:
        google_credentials(make_settings(GCP_CREDENTIALS_JSON=secret))
    assert "SECRET" not in str(caught.value)
    with pytest.raises(ProviderError):
        google_credentials(make_settings(GCP_CREDENTIALS_JSON="not json"))

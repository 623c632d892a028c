"""Voice-note transcription through the real `google-cloud-speech` client against the gRPC fake:
OGG_OPUS at the file's own rate, `Recognize` for a short note, `LongRunningRecognize` (polled) for a
long one, and Google's refusals as errors the transcription job can tell apart."""

from __future__ import annotations

import grpc
import pytest

from server.providers.base import AudioRejected, ProviderError
from server.providers.ogg_opus import OggError, read_ogg_opus
from server.providers.transcribers import voice_note_transcriber
from server.providers.voice_note_google import GoogleVoiceNoteTranscriber
from testkit.fakes.google_speech import FakeSpeech
from testkit.voice_notes import FIXTURE, voice_note
from tests.conftest import make_settings

OGG_OPUS = 6  # RecognitionConfig.AudioEncoding.OGG_OPUS


@pytest.fixture(scope="module")
def speech_server():
    with FakeSpeech() as fake:
        yield fake


@pytest.fixture
def speech_fake(speech_server):
    speech_server.recognize_calls.clear()
    speech_server.operation_polls = 0
    return speech_server


def transcriber(fake: FakeSpeech) -> GoogleVoiceNoteTranscriber:
    return GoogleVoiceNoteTranscriber(
        make_settings(GOOGLE_SPEECH_EMULATOR_HOST=fake.address), poll_initial_seconds=0.05
    )


def test_the_fixture_is_a_real_voice_note():
    info = read_ogg_opus(FIXTURE.read_bytes())
    assert (info.channels, info.input_sample_rate_hz, info.recognition_rate_hz) == (1, 16000, 16000)
    assert 3.0 < info.duration_seconds < 3.1
    assert read_ogg_opus(voice_note(75)).duration_seconds == pytest.approx(75.0)


def test_short_note_goes_through_recognize(speech_fake):
    speech_fake.script("שלום, רציתי לקבוע תור למחר בבוקר")
    text = transcriber(speech_fake).transcribe(FIXTURE.read_bytes())
    assert text == "שלום, רציתי לקבוע תור למחר בבוקר"
    [call] = speech_fake.recognize_calls
    assert call["method"] == "Recognize"
    config = call["config"]
    assert (config["encoding"], config["sample_rate_hertz"], config["language_code"]) == (OGG_OPUS, 16000, "he-IL")
    assert config["audio_channel_count"] == 1 and config["model"] == "latest_long"
    assert call["audio_bytes"] == FIXTURE.stat().st_size
    assert speech_fake.operation_polls == 0


def test_long_note_goes_through_long_running_recognize(speech_fake):
    speech_fake.script("הודעה ארוכה על התור של מחר")
    speech_fake.operation_polls_until_done = 3
    try:
        text = transcriber(speech_fake).transcribe(voice_note(75))
    finally:
        speech_fake.operation_polls_until_done = 1
    assert text == "הודעה ארוכה על התור של מחר"
    [call] = speech_fake.recognize_calls
    assert call["method"] == "LongRunningRecognize" and call["config"]["encoding"] == OGG_OPUS
    assert speech_fake.operation_polls == 3  # polled until the operation said done


def test_reported_duration_chooses_the_request(speech_fake):
    # The sender's reported length wins over the file's: a 3 s file said to last 70 s goes long-running.
    speech_fake.script("א")
    transcriber(speech_fake).transcribe(voice_note(3), duration_seconds=70)
    assert speech_fake.recognize_calls[-1]["method"] == "LongRunningRecognize"


def test_a_48k_note_is_sent_at_48k(speech_fake):
    speech_fake.script("ב")
    transcriber(speech_fake).transcribe(voice_note(2, input_rate_hz=48000))
    assert speech_fake.recognize_calls[-1]["config"]["sample_rate_hertz"] == 48000


def test_google_errors_are_provider_errors(speech_fake):
    speech_fake.fail_next_recognize(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(ProviderError) as failed:
        transcriber(speech_fake).transcribe(voice_note(3))
    assert not isinstance(failed.value, AudioRejected)  # worth another try
    assert "ServiceUnavailable" in str(failed.value)


def test_a_failed_operation_is_a_provider_error(speech_fake):
    speech_fake.fail_next_operation(grpc.StatusCode.INTERNAL)
    with pytest.raises(ProviderError) as failed:
        transcriber(speech_fake).transcribe(voice_note(61))
    assert "Recognition failed" in str(failed.value)


def test_audio_google_can_never_take_is_rejected(speech_fake):
    with pytest.raises(AudioRejected, match="not an Ogg Opus file"):
        transcriber(speech_fake).transcribe(b"ID3\x03 an mp3 file")
    with pytest.raises(AudioRejected, match="10 MB"):
        transcriber(speech_fake).transcribe(voice_note(3) + b"\0" * (10 * 1024 * 1024))
    assert speech_fake.recognize_calls == []  # refused before anything was sent


@pytest.mark.parametrize(
    "encoding, rate, message",
    [("ENCODING_UNSPECIFIED", 16000, "bad encoding"), ("OGG_OPUS", 44100, "must be one of")],
)
def test_the_fake_refuses_a_wrong_config_like_google(speech_fake, encoding, rate, message):
    from google.api_core import exceptions
    from google.cloud import speech_v1 as speech

    client = transcriber(speech_fake).client
    config = speech.RecognitionConfig(
        encoding=speech.RecognitionConfig.AudioEncoding[encoding], sample_rate_hertz=rate, language_code="he-IL"
    )
    with pytest.raises(exceptions.InvalidArgument, match=message):
        client.recognize(config=config, audio=speech.RecognitionAudio(content=voice_note(2)), retry=None)


def test_the_fake_refuses_long_audio_in_recognize(speech_fake):
    from google.api_core import exceptions
    from google.cloud import speech_v1 as speech

    config = speech.RecognitionConfig(
        encoding=speech.RecognitionConfig.AudioEncoding.OGG_OPUS, sample_rate_hertz=16000, language_code="he-IL"
    )
    with pytest.raises(exceptions.InvalidArgument, match="Sync input too long"):
        transcriber(speech_fake).client.recognize(
            config=config, audio=speech.RecognitionAudio(content=voice_note(65)), retry=None
        )


def test_unreadable_ogg_is_an_ogg_error():
    with pytest.raises(OggError):
        read_ogg_opus(b"OggS\0")
    with pytest.raises(OggError):
        read_ogg_opus(voice_note(2)[:100])


def test_no_transcriber_without_speech_configuration():
    assert voice_note_transcriber(make_settings()) is None

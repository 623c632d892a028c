"""Voicemail transcription through Google's `recognize` (the real SDK against the gRPC fake), fetched
from the Twilio REST fake, landing on the voicemail message in the CRM."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.dao_crm import create_call, insert_message
from server.db.models import Call, Message, Thread
from server.providers.base import ProviderError
from server.providers.google_stt import GoogleSpeechToText
from server.providers.transcribers import voicemail_transcriber
from server.providers.voicemail_google import SpeechVoicemailTranscriber, first_channel
from server.voice.voicemail import transcribe_voicemail, transcribe_voicemail_later
from testkit.fakes.google_speech import FakeSpeech, pcm16, pcm_wav, silence, speech
from testkit.fakes.google_tts import wav_container
from testkit.fakes.twilio_rest import FakeTwilioRest
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN, create_tenant, make_settings

ACCOUNT_SID = BASE_TEST_ENV["TWILIO_ACCOUNT_SID"]
CALL_SID = "CA" + "7" * 32
RECORDING_SID = "RE" + "7" * 32


@pytest.fixture
def speech_fake():
    with FakeSpeech() as fake:
        yield fake


def pcm16_wav(*segments: tuple[int, bool]) -> bytes:
    return pcm_wav(b"".join(pcm16(ms, loud) for ms, loud in segments))


def test_voicemail_text_lands_on_the_message(make_app, speech_fake):
    speech_fake.script("שלום זה יוסי", "תחזרו אליי מחר")
    recording = pcm16_wav((300, False), (900, True), (500, False), (600, True), (400, False))
    with FakeTwilioRest(account_sid=ACCOUNT_SID, auth_token=TEST_TWILIO_TOKEN) as twilio:
        twilio.recordings[RECORDING_SID] = recording
        app = make_app(GOOGLE_SPEECH_EMULATOR_HOST=speech_fake.address, TWILIO_API_BASE_URL=twilio.url)
        transcriber = services(app).voicemail_transcriber  # what `create_app` built from the settings
        assert isinstance(transcriber, SpeechVoicemailTranscriber)
        database = services(app).database
        tenant = create_tenant(database)
        with database.scope() as session:
            call, _ = create_call(
                session, tenant.business_id, call_sid=CALL_SID, from_number="+972501234567", to_number=tenant.phone
            )
            call.recording_sid = RECORDING_SID
            insert_message(
                session,
                session.get(Thread, call.thread_id),
                direction="in",
                kind="voicemail",
                provider="twilio",
                provider_message_id=RECORDING_SID,
                call_id=call.id,
            )
        # Twilio's callback names the recording on api.twilio.com; the download goes to TWILIO_API_BASE_URL.
        recording_url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING_SID}"
        text = transcribe_voicemail(database, app.config["SETTINGS"], transcriber, CALL_SID, recording_url)
        [download] = twilio.requests_for("Recordings")
    assert text == "שלום זה יוסי תחזרו אליי מחר"
    assert download.path.endswith(f"/Recordings/{RECORDING_SID}.wav") and download.auth_user == ACCOUNT_SID
    with database.scope() as session:
        message = session.scalar(sa.select(Message).where(Message.provider_message_id == RECORDING_SID))
        assert message.kind == "voicemail" and message.body == text
        assert session.scalar(sa.select(Call).where(Call.call_sid == CALL_SID)).transcript == text
    [recognize] = speech_fake.recognize_calls
    config = recognize["config"]
    assert (config["encoding"], config["sample_rate_hertz"], config["language_code"]) == (1, 8000, "he-IL")
    assert recognize["audio_bytes"] == len(recording) - 44  # the PCM samples, not the header


def test_mulaw_recordings_are_sent_as_mulaw(speech_fake):
    speech_fake.script("הודעה קצרה")
    transcriber = SpeechVoicemailTranscriber(
        GoogleSpeechToText(make_settings(GOOGLE_SPEECH_EMULATOR_HOST=speech_fake.address))
    )
    assert transcriber.transcribe(wav_container(speech(600) + silence(400))) == "הודעה קצרה"
    assert speech_fake.recognize_calls[-1]["config"]["encoding"] == 3  # MULAW


def test_stereo_recordings_use_the_first_channel():
    assert first_channel(bytes(range(8)), 2, 2) == bytes([0, 1, 4, 5])
    assert first_channel(b"abcdef", 1, 1) == b"abcdef"


def test_unreadable_recordings_are_provider_errors(speech_fake):
    transcriber = SpeechVoicemailTranscriber(
        GoogleSpeechToText(make_settings(GOOGLE_SPEECH_EMULATOR_HOST=speech_fake.address))
    )
    with pytest.raises(ProviderError):
        transcriber.transcribe(b"ID3 an mp3 file")
    with pytest.raises(ProviderError):
        transcriber.transcribe(pcm_wav(b"\x80" * 800, width=1))


def test_no_transcriber_without_speech_configuration(make_app, caplog):
    app = make_app()
    assert services(app).voicemail_transcriber is None
    assert make_settings().speech_configured is False and voicemail_transcriber(make_settings()) is None
    with caplog.at_level(logging.INFO):
        assert transcribe_voicemail_later(services(app).jobs, None, CALL_SID, "https://api.twilio.com/x") is None
    [skipped] = [r for r in caplog.records if getattr(r, "event", "") == "voicemail_transcription_skipped"]
    assert skipped.call_sid == CALL_SID

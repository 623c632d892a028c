"""The vendor fakes refuse what the real vendors refuse, with the vendor's own error shape, so a client
mistake fails a test instead of passing against a lenient fake. Each case talks to the fake through
the vendor's real client library (or its documented wire format) and checks one refusal, next to the
same request made correctly."""

from __future__ import annotations

import json

import grpc
import openai
import pytest
import requests
from google.api_core import exceptions as google_errors
from google.cloud import speech
from google.cloud import texttospeech_v1 as tts
from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport
from google.cloud.texttospeech_v1.services.text_to_speech.transports import TextToSpeechGrpcTransport
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from server.providers.tranzila import auth_headers
from testkit.fakes.google_speech import FakeSpeech
from testkit.fakes.google_speech import speech as spoken_audio
from testkit.fakes.google_tts import FakeTextToSpeech
from testkit.fakes.openai_server import FakeOpenAI
from testkit.fakes.tranzila_server import FakeTranzila
from testkit.fakes.twilio_rest import FakeTwilioRest

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "fake-refusals-token"


def test_tranzila_refuses_a_json_body_not_sent_as_application_json():
    with FakeTranzila() as tranzila:
        body = json.dumps({"terminal_name": tranzila.terminal, "sum": 10}).encode()

        def handshake(content_type: str) -> dict:
            headers = {"Content-Type": content_type, **auth_headers(tranzila.app_key, tranzila.secret)}
            response = requests.post(f"{tranzila.url}/v2/handshake/create", data=body, headers=headers, timeout=5)
            return response.json()

        assert handshake("text/plain") == {"error_code": 20004, "message": "Json does not match validation schema"}
        assert handshake("application/x-www-form-urlencoded")["error_code"] == 20004
        accepted = handshake("application/json; charset=utf-8")
        assert accepted["error_code"] == 0 and accepted["thtk"]


def test_twilio_refuses_a_whatsapp_sender_with_a_plain_number_recipient():
    with FakeTwilioRest(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as twilio:
        client = Client(ACCOUNT_SID, AUTH_TOKEN)
        client.api.base_url = twilio.url
        with pytest.raises(TwilioRestException) as refused:
            client.messages.create(from_="whatsapp:+14155238886", to="+972501234567", body="שלום")
        assert refused.value.status == 400 and refused.value.code == 21910
        assert "same channel" in refused.value.msg
        # The raw answer is Twilio's error JSON.
        [request] = twilio.requests_for("Messages")
        raw = requests.post(twilio.url + request.path, data=request.form, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)
        assert raw.status_code == 400
        assert raw.json() == {
            "code": 21910,
            "status": 400,
            "more_info": "https://www.twilio.com/docs/errors/21910",
            "message": "Invalid 'From' and 'To' pair. 'From' and 'To' should be of the same channel",
        }
        sent = client.messages.create(from_="whatsapp:+14155238886", to="whatsapp:+972501234567", body="שלום")
        assert sent.status == "queued" and sent.to == "whatsapp:+972501234567"


def test_openai_refuses_an_unknown_message_role():
    with FakeOpenAI() as llm:
        client = openai.OpenAI(api_key=llm.api_key, base_url=llm.base_url, max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "system", "content": "be brief"}, {"role": "robot", "content": "hello"}],
            )
        assert refused.value.status_code == 400
        error = refused.value.body
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
        assert error["param"] == "messages[1].role" and "'robot'" in error["message"].replace('"', "'")
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        assert answer.choices[0].message.content


@pytest.mark.parametrize(
    "config, message",
    [
        ({"encoding": "FLAC", "language_code": "he-IL"}, "bad encoding"),
        ({"encoding": "ENCODING_UNSPECIFIED", "language_code": "he-IL"}, "bad encoding"),
        ({"encoding": "MULAW", "language_code": ""}, "bad language code"),
    ],
)
def test_google_speech_refuses_an_unsupported_encoding_or_a_missing_language(config, message):
    with FakeSpeech() as fake:
        channel = grpc.insecure_channel(fake.address)
        client = speech.SpeechClient(transport=SpeechGrpcTransport(channel=channel))
        audio = speech.RecognitionAudio(content=spoken_audio(400))
        with pytest.raises(google_errors.InvalidArgument) as refused:
            client.recognize(config=speech.RecognitionConfig(sample_rate_hertz=8000, **config), audio=audio)
        assert message in refused.value.message
        heard = client.recognize(
            config=speech.RecognitionConfig(sample_rate_hertz=8000, encoding="MULAW", language_code="he-IL"),
            audio=audio,
        )
        assert heard.results[0].alternatives[0].transcript


@pytest.mark.parametrize("fake_class", [FakeSpeech, FakeTextToSpeech])
def test_google_refuses_a_call_without_valid_credentials(fake_class):
    """As Google refuses a wrong or revoked service-account key: UNAUTHENTICATED, with its own message."""
    with fake_class(required_token="ya29.the-right-token") as fake:
        channel = grpc.insecure_channel(fake.address)
        if fake_class is FakeSpeech:
            client = speech.SpeechClient(transport=SpeechGrpcTransport(channel=channel))
            config = speech.RecognitionConfig(sample_rate_hertz=8000, encoding="MULAW", language_code="he-IL")

            def call(metadata):
                return client.recognize(
                    config=config, audio=speech.RecognitionAudio(content=spoken_audio(400)), metadata=metadata
                )
        else:
            client = tts.TextToSpeechClient(transport=TextToSpeechGrpcTransport(channel=channel))

            def call(metadata):
                return client.synthesize_speech(
                    input=tts.SynthesisInput(text="שלום"),
                    voice=tts.VoiceSelectionParams(language_code="he-IL"),
                    audio_config=tts.AudioConfig(audio_encoding=tts.AudioEncoding.MULAW, sample_rate_hertz=8000),
                    metadata=metadata,
                )

        for metadata in ([], [("authorization", "Bearer ya29.a-wrong-token")]):
            with pytest.raises(google_errors.Unauthenticated) as refused:
                call(metadata)
            assert "invalid authentication credentials" in refused.value.message
        assert call([("authorization", "Bearer ya29.the-right-token")])

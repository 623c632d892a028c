"""The TwiML documents the service answers Twilio with, built with the SDK's TwiML builders.

Every URL in them is absolute and comes from `abs_url`/`ws_url` over the public base URL: Twilio
rejects relative or `//`-broken media URLs (error 11100) and a `<Stream>` URL must be `wss://`.
"""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, VoiceResponse

from server.urls import abs_url, ws_url

GREETING_AUDIO_PATH = "/static/tts/greeting_he.mp3"
FALLBACK_AUDIO_PATH = "/static/tts/fallback_he.mp3"
MEDIA_STREAM_PATH = "/ws/twilio-media"
VOICEMAIL_MAX_SECONDS = 120
UNKNOWN_NUMBER_MESSAGE_HE = "שלום, המספר שחייגתם אינו פעיל כרגע. תודה ולהתראות."


def stream_twiml(
    base_url: str,
    *,
    business_id: int | str,
    call_sid: str,
    token: str,
    greeting: bool,
    greeting_audio_path: str = GREETING_AUDIO_PATH,
) -> str:
    """Connect the call to our media WebSocket; when the stream ends Twilio asks `stream_ended`.

    The AI speaks first, so nothing is played before `<Connect>` unless the business opted in
    (`greeting_audio_path`: the greeting in the agent's voice, server/voice/prompt_audio.py, else espeak's).
    """
    response = VoiceResponse()
    if greeting:
        response.play(abs_url(base_url, greeting_audio_path))
    connect = Connect(action=abs_url(base_url, "/webhook/stream_ended"), method="POST")
    stream = connect.stream(
        url=ws_url(base_url, MEDIA_STREAM_PATH),
        status_callback=abs_url(base_url, "/webhook/stream_status"),
        status_callback_method="POST",
    )
    stream.parameter(name="business_id", value=str(business_id))
    stream.parameter(name="call_sid", value=call_sid)
    stream.parameter(name="token", value=token)
    response.append(connect)
    return response.to_xml()


def voicemail_twiml(base_url: str, prompt_path: str = FALLBACK_AUDIO_PATH) -> str:
    """Apologise and record a message, so the caller is never left in silence.

    When the caller records nothing Twilio skips the `action` and goes on to the `<Hangup/>`.
    `prompt_path` is the apology in the agent's voice when it is made (server/voice/prompt_audio.py).
    """
    response = VoiceResponse()
    response.play(abs_url(base_url, prompt_path))
    response.record(
        action=abs_url(base_url, "/webhook/recording_done"),
        method="POST",
        max_length=VOICEMAIL_MAX_SECONDS,
        play_beep=True,
        recording_status_callback=abs_url(base_url, "/webhook/recording_status"),
        recording_status_callback_method="POST",
        recording_status_callback_event="completed",
    )
    response.hangup()
    return response.to_xml()


def unknown_number_twiml() -> str:
    """A polite Hebrew goodbye for a number no business answers on."""
    response = VoiceResponse()
    response.say(UNKNOWN_NUMBER_MESSAGE_HE, language="he-IL")
    response.hangup()
    return response.to_xml()


def hangup_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return response.to_xml()

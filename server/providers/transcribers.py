"""The app's transcribers for voicemail and WhatsApp voice notes, or None where speech recognition
is not configured (no credentials and no `GOOGLE_SPEECH_EMULATOR_HOST`).

The Google modules are imported only where speech is configured: the Speech SDK and gRPC take a
process about a third of a second to import, which every web and jobs worker of a deployment
without speech would otherwise pay at start.
"""

from __future__ import annotations

from server.config import Settings
from server.providers.base import VoicemailTranscriber, VoiceNoteTranscriber


def voicemail_transcriber(settings: Settings) -> VoicemailTranscriber | None:
    if not settings.speech_configured:
        return None
    from server.providers.google_stt import GoogleSpeechToText
    from server.providers.voicemail_google import SpeechVoicemailTranscriber

    return SpeechVoicemailTranscriber(GoogleSpeechToText(settings))


def voice_note_transcriber(settings: Settings) -> VoiceNoteTranscriber | None:
    if not settings.speech_configured:
        return None
    from server.providers.voice_note_google import GoogleVoiceNoteTranscriber

    return GoogleVoiceNoteTranscriber(settings)

"""WhatsApp voice notes transcribed by Google Speech-to-Text v1 (he-IL, OGG_OPUS).

A voice note is Opus in an Ogg file. Google takes it as it is (no decoding here): encoding
OGG_OPUS, with the sample rate and channel count read from the file's `OpusHead`
(`server.providers.ogg_opus`). Synchronous `Recognize` accepts at most a minute of audio, so a note
of up to `RECOGNIZE_MAX_SECONDS` goes through it, and a longer one through `LongRunningRecognize`
with the audio inline (up to Google's 10 MB request limit), whose operation is polled until done.
The length is what the sender reported when known, else the last Ogg granule position.

The client is the one the calls use (`build_google_client`: credentials, or the plaintext channel
to `GOOGLE_SPEECH_EMULATOR_HOST`), built on first use. The model is `latest_long` (voice notes are
not 8 kHz telephone audio, so the calls' `phone_call` does not fit), falling back to Google's
default when the language lacks it, as the calls do.

No retries here: the transcription job retries a failed note with backoff. Audio Google can never
accept (not Ogg Opus, over 10 MB, refused as invalid) raises `AudioRejected`, which is not retried.
"""

from __future__ import annotations

import concurrent.futures

from google.api_core import exceptions as google_exceptions
from google.api_core.future import polling
from google.cloud import speech_v1 as speech

from server.config import Settings
from server.providers.base import AudioRejected, ProviderError, ProviderTimeout, VoiceNoteTranscriber
from server.providers.google_stt import GoogleSpeechClient, is_model_rejection
from server.providers.ogg_opus import OggError, read_ogg_opus

VOICE_NOTE_MODEL = "latest_long"
RECOGNIZE_MAX_SECONDS = 55.0  # Google's synchronous limit is 60 s; the margin covers a rounded duration
INLINE_MAX_BYTES = 10 * 1024 * 1024  # Google's limit for audio sent in the request
RECOGNIZE_TIMEOUT_SECONDS = 60.0
# Google transcribes a long recording in well under its length; the wait allows for a queue on its side.
LONG_RUNNING_BASE_SECONDS = 120.0
LONG_RUNNING_MAX_SECONDS = 1800.0
POLL_INITIAL_SECONDS = 0.5
POLL_MAX_SECONDS = 5.0


class GoogleVoiceNoteTranscriber(GoogleSpeechClient, VoiceNoteTranscriber):
    def __init__(self, settings: Settings, *, poll_initial_seconds: float = POLL_INITIAL_SECONDS):
        super().__init__(settings, VOICE_NOTE_MODEL)
        self.poll_initial_seconds = poll_initial_seconds

    def transcribe(self, ogg_opus: bytes, *, duration_seconds: float | None = None) -> str:
        if len(ogg_opus) > INLINE_MAX_BYTES:
            raise AudioRejected(f"the voice note is larger than Google's {INLINE_MAX_BYTES // 2**20} MB request limit")
        try:
            info = read_ogg_opus(ogg_opus)
        except OggError as exc:
            raise AudioRejected(f"the voice note is not an Ogg Opus file ({exc})") from None
        seconds = duration_seconds if duration_seconds and duration_seconds > 0 else info.duration_seconds
        audio = speech.RecognitionAudio(content=ogg_opus)
        model = self.models.current
        while True:
            config = speech.RecognitionConfig(
                encoding=speech.RecognitionConfig.AudioEncoding.OGG_OPUS,
                sample_rate_hertz=info.recognition_rate_hz,
                audio_channel_count=info.channels,
                language_code=self.language,
                model=model.name,
            )
            try:
                if seconds <= RECOGNIZE_MAX_SECONDS:
                    response = self.client.recognize(
                        config=config, audio=audio, retry=None, timeout=RECOGNIZE_TIMEOUT_SECONDS
                    )
                    results = response.results
                else:
                    results = self._long_running(config, audio, seconds)
            except google_exceptions.GoogleAPICallError as exc:
                next_model = self.models.reject(model, exc.message) if is_model_rejection(exc) else None
                if next_model is None:
                    raise _provider_error(exc) from exc
                model = next_model
                continue
            return " ".join(r.alternatives[0].transcript.strip() for r in results if r.alternatives).strip()

    def _long_running(
        self, config: speech.RecognitionConfig, audio: speech.RecognitionAudio, seconds: float
    ) -> list[speech.SpeechRecognitionResult]:
        operation = self.client.long_running_recognize(
            config=config, audio=audio, retry=None, timeout=RECOGNIZE_TIMEOUT_SECONDS
        )
        wait = min(LONG_RUNNING_BASE_SECONDS + 2 * seconds, LONG_RUNNING_MAX_SECONDS)
        poll = polling.DEFAULT_POLLING.with_delay(
            initial=self.poll_initial_seconds, maximum=POLL_MAX_SECONDS, multiplier=1.5
        ).with_timeout(wait)
        try:
            response = operation.result(timeout=wait, polling=poll)
        except concurrent.futures.TimeoutError:
            raise ProviderTimeout(f"long-running recognition did not finish within {wait:.0f} s") from None
        return list(response.results)


def _provider_error(exc: google_exceptions.GoogleAPICallError) -> ProviderError:
    if isinstance(exc, google_exceptions.DeadlineExceeded):
        return ProviderTimeout("speech recognition timed out")
    detail = f"speech recognition failed ({type(exc).__name__}: {exc.message})"
    if isinstance(exc, google_exceptions.InvalidArgument):
        return AudioRejected(detail)
    return ProviderError(detail)

"""Google Cloud Text-to-Speech behind the `TextToSpeech` interface: text in, raw 8 kHz μ-law out.

Google returns MULAW audio inside a WAV container ("Audio content returned as MULAW also contains
a WAV header"); Twilio wants bare μ-law frames, so the container is parsed chunk by chunk and
only the `data` payload is kept (any header bytes would be played as a click). Short phrases that
repeat on every call (greetings, apologies) are kept in a small LRU cache.
"""

from __future__ import annotations

import collections
import logging
import threading

from google.api_core import exceptions as google_exceptions
from google.cloud import texttospeech_v1 as tts
from google.cloud.texttospeech_v1.services.text_to_speech.transports import TextToSpeechGrpcTransport

from server.config import Settings
from server.logs import log_event
from server.providers.base import ProviderError, ProviderTimeout
from server.providers.google_credentials import LazyClient, build_google_client
from server.providers.wav import WavError, is_riff_wave, parse_wav

log = logging.getLogger("agentlocator.providers.google_tts")

SAMPLE_RATE_HZ = 8000
CACHE_ENTRIES = 64
CACHEABLE_TEXT_CHARS = 120  # greetings and apologies, not whole answers
TELEPHONY_PROFILE = "telephony-class-application"


class GoogleTextToSpeech:
    def __init__(self, settings: Settings, *, cache_entries: int = CACHE_ENTRIES):
        self.voice = settings.tts_voice
        self.language_code = "-".join(settings.tts_voice.split("-")[:2])
        self.speaking_rate = settings.tts_speaking_rate
        self.timeout_seconds = settings.tts_timeout_seconds
        self._client = LazyClient(
            lambda: build_google_client(
                tts.TextToSpeechClient, TextToSpeechGrpcTransport, settings.google_tts_emulator_host, settings
            )
        )
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cache_entries = cache_entries
        self._cache_lock = threading.Lock()

    def synthesize(self, text: str) -> bytes:
        text = text.strip()
        if not text:
            return b""
        cached = self._cached(text)
        if cached is not None:
            return cached
        audio = self._synthesize_uncached(text)
        if len(text) <= CACHEABLE_TEXT_CHARS:
            self._remember(text, audio)
        return audio

    def _synthesize_uncached(self, text: str) -> bytes:
        try:
            response = self._client.get().synthesize_speech(
                input=tts.SynthesisInput(text=text),
                voice=tts.VoiceSelectionParams(language_code=self.language_code, name=self.voice),
                audio_config=tts.AudioConfig(
                    audio_encoding=tts.AudioEncoding.MULAW,
                    sample_rate_hertz=SAMPLE_RATE_HZ,
                    speaking_rate=self.speaking_rate,
                    effects_profile_id=[TELEPHONY_PROFILE],
                ),
                retry=None,
                timeout=self.timeout_seconds,
            )
        except google_exceptions.DeadlineExceeded:
            log_event(log, "tts_error", logging.WARNING, error="DeadlineExceeded", voice=self.voice)
            raise ProviderTimeout("text-to-speech timed out") from None
        except google_exceptions.GoogleAPICallError as exc:
            log_event(log, "tts_error", logging.WARNING, error=type(exc).__name__, voice=self.voice, detail=exc.message)
            raise ProviderError(f"text-to-speech failed ({type(exc).__name__})") from exc
        return mulaw_payload(response.audio_content)

    def _cached(self, text: str) -> bytes | None:
        with self._cache_lock:
            audio = self._cache.get(text)
            if audio is not None:
                self._cache.move_to_end(text)
            return audio

    def _remember(self, text: str, audio: bytes) -> None:
        with self._cache_lock:
            self._cache[text] = audio
            self._cache.move_to_end(text)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)


def mulaw_payload(audio_content: bytes) -> bytes:
    """Google's MULAW body without its WAV container; a body that is not RIFF-wrapped passes through."""
    if not is_riff_wave(audio_content):
        return audio_content
    try:
        wav = parse_wav(audio_content)
    except WavError as exc:
        raise ProviderError(f"text-to-speech returned an unreadable WAV container: {exc}") from None
    if not wav.is_mulaw or wav.sample_rate_hz != SAMPLE_RATE_HZ or wav.channels != 1:
        raise ProviderError(
            f"text-to-speech returned format {wav.format_tag} at {wav.sample_rate_hz} Hz, "
            f"{wav.channels} channel(s); expected mono μ-law at {SAMPLE_RATE_HZ} Hz"
        )
    return wav.payload

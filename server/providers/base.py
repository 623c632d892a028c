"""The small interfaces every vendor sits behind (one module per vendor implements one of them).

The live-call engine and the WhatsApp auto-replies know only these: STT is μ-law audio in,
transcripts out; the LLM is chat messages in, text deltas (or the whole reply) out; TTS is text in,
μ-law 8 kHz audio out. Implementations block cooperatively (gevent) and raise `ProviderError` (or a
subclass) on failure. The WhatsApp transports' interface is in `server.providers.whatsapp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Protocol


class ProviderError(Exception):
    """A vendor failed or timed out; the caller decides whether to apologise, retry or fall back."""


class ProviderTimeout(ProviderError):
    pass


@dataclass(frozen=True)
class Transcript:
    text: str
    is_final: bool
    confidence: float = 0.0


class SpeechStream(Protocol):
    def send_audio(self, mulaw: bytes) -> None:
        """Queue 8 kHz μ-law audio (any length); never blocks on the network."""

    def transcripts(self) -> Iterator[Transcript]:
        """Interim and final transcripts as they arrive; ends when the stream is closed or fails."""

    def close(self) -> None:
        """Stop the stream; pending audio is discarded."""


class SpeechToText(Protocol):
    def open_stream(self) -> SpeechStream: ...

    def transcribe(self, audio: bytes, *, encoding: str, sample_rate_hz: int) -> str:
        """One-shot recognition (voicemail recordings)."""


class ToolRunner(Protocol):
    """The tools a model may call in one conversation (`server.agent.tools.ToolBox`)."""

    def specs(self) -> list[dict[str, Any]]:
        """The tools as Chat Completions' `tools` parameter lists them."""

    def run(self, name: str, arguments_json: str) -> dict[str, Any]:
        """Run one call the model made; the result (or `{"error": ...}`) it reads back. Never raises."""


class LanguageModel(Protocol):
    def stream_reply(self, messages: list[dict[str, Any]], tools: Optional[ToolRunner] = None) -> Iterator[str]:
        """Text deltas of the assistant's reply to OpenAI-style `messages` (system prompt first).

        With `tools`, the model may call them: each call is run (`tools.run`), its result goes back
        to the model and the reply continues; text written before a call is yielded as it comes.
        Raises `ProviderTimeout` when the first token doesn't arrive in time.
        """

    def complete(self, messages: list[dict[str, Any]], tools: Optional[ToolRunner] = None) -> str:
        """The whole reply to `messages` at once, stripped (text channels such as WhatsApp, where
        nobody listens to it being written, so it may take longer than a live turn and retry).
        Tools are run as in `stream_reply`.

        Raises `ProviderError` (or `ProviderTimeout`) when there is no reply.
        """


class TextToSpeech(Protocol):
    def synthesize(self, text: str) -> bytes:
        """Raw 8 kHz μ-law audio (no container header) speaking `text`."""


class VoicemailTranscriber(Protocol):
    """Speech recognition for a whole recorded message (not a live stream)."""

    def transcribe(self, wav_audio: bytes) -> str:
        """The text of a Twilio voicemail recording (a WAV file, mono, usually 8 kHz)."""


class AudioRejected(ProviderError):
    """The vendor can never accept this audio (unreadable, too large, refused as invalid): trying
    again is pointless."""


class VoiceNoteTranscriber(Protocol):
    """Speech recognition for a stored WhatsApp voice note (Ogg Opus)."""

    def transcribe(self, ogg_opus: bytes, *, duration_seconds: float | None = None) -> str:
        """The note's text. `duration_seconds` (when the sender said) chooses the request kind; without
        it the length is read from the file. Raises `AudioRejected` for audio no retry can help."""


@dataclass
class VoiceProviders:
    """The agent's providers, as the `VOICE_PROVIDERS` plug-in builds them (`server.providers.plugin`):
    calls use all three, WhatsApp auto-replies the language model."""

    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech

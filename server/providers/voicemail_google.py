"""Voicemail transcription with Google Speech-to-Text's one-shot `recognize` (he-IL).

Twilio's recording arrives as a WAV file; its `fmt ` chunk says whether the samples are 16-bit
PCM (LINEAR16, what Twilio serves) or μ-law, and at which rate, and Google is told exactly that.
`server.providers.transcribers` builds it when speech recognition is configured (credentials or
`GOOGLE_SPEECH_EMULATOR_HOST`); the gRPC channel itself is opened on first use.
"""

from __future__ import annotations

from server.providers.base import ProviderError, SpeechToText, VoicemailTranscriber
from server.providers.wav import WavError, parse_wav


class SpeechVoicemailTranscriber(VoicemailTranscriber):
    def __init__(self, stt: SpeechToText):
        self.stt = stt

    def transcribe(self, wav_audio: bytes) -> str:
        try:
            wav = parse_wav(wav_audio)
        except WavError as exc:
            raise ProviderError(f"the recording is not a readable WAV file: {exc}") from None
        if wav.is_mulaw:
            encoding, sample_bytes = "MULAW", 1
        elif wav.is_pcm16:
            encoding, sample_bytes = "LINEAR16", 2
        else:
            raise ProviderError(f"unsupported recording format {wav.format_tag} ({wav.bits_per_sample} bits)")
        return self.stt.transcribe(
            first_channel(wav.payload, wav.channels, sample_bytes), encoding=encoding, sample_rate_hz=wav.sample_rate_hz
        )


def first_channel(payload: bytes, channels: int, sample_bytes: int) -> bytes:
    """The first channel of interleaved audio (a dual-channel recording holds the caller on one side)."""
    if channels <= 1:
        return payload
    frame = channels * sample_bytes
    return b"".join(payload[start : start + sample_bytes] for start in range(0, len(payload) - frame + 1, frame))

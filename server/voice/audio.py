"""8 kHz μ-law audio: 20 ms frames, and an energy voice-activity detector cheap enough per frame.

Every inbound frame of every call passes through `SpeechDetector.feed`, so its loudness is one
C-level `bytes.translate` plus a `sum` over a 160-byte table lookup, no Python loop per sample.
Converting other audio to μ-law (`pcm16_to_mulaw`, `resample_pcm16`) is for tools and tests:
`audioop` is gone from Python 3.13.
"""

from __future__ import annotations

from typing import Iterable, Sequence

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160 μ-law bytes, one per sample
MULAW_SILENCE = b"\xff"  # μ-law for a zero sample


def mulaw_to_linear(byte: int) -> int:
    """One G.711 μ-law byte → a 16-bit linear sample."""
    u = ~byte & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84
    return -magnitude if u & 0x80 else magnitude


def linear_to_mulaw(sample: int) -> int:
    """One 16-bit linear sample → a G.711 μ-law byte (the inverse of `mulaw_to_linear`)."""
    sign = 0x80 if sample < 0 else 0
    biased = min(abs(sample), 32635) + 0x84
    exponent = biased.bit_length() - 8
    return ~(sign | exponent << 4 | (biased >> (exponent + 3)) & 0x0F) & 0xFF


def pcm16_to_mulaw(samples: Iterable[int]) -> bytes:
    return bytes(linear_to_mulaw(sample) for sample in samples)


def resample_pcm16(samples: Sequence[int], from_rate: int, to_rate: int) -> list[int]:
    """Linear-interpolation resampling: good enough for test recordings (no anti-aliasing filter)."""
    if from_rate == to_rate or not samples:
        return list(samples)
    count = len(samples) * to_rate // from_rate
    last = len(samples) - 1
    resampled = []
    for index in range(count):
        position = index * from_rate / to_rate
        left = int(position)
        right = min(left + 1, last)
        resampled.append(round(samples[left] + (samples[right] - samples[left]) * (position - left)))
    return resampled


# |sample| >> 7 (0..250) for every μ-law byte: summed over a frame it is 160/128 × mean amplitude.
_LOUDNESS = bytes(min(255, abs(mulaw_to_linear(b)) >> 7) for b in range(256))


def split_frames(mulaw: bytes) -> list[bytes]:
    """Audio → 20 ms frames; the last one is padded with silence (Twilio plays whole frames)."""
    frames = [mulaw[i : i + FRAME_BYTES] for i in range(0, len(mulaw), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1] + MULAW_SILENCE * (FRAME_BYTES - len(frames[-1]))
    return frames


class SpeechDetector:
    """Energy VAD: the caller is speaking once `min_speech_ms` of loud frames arrive without a long gap.

    A cough or a door slam is shorter than that, so it doesn't count as speech (and doesn't cut
    the agent off); pauses between syllables shorter than `max_gap_ms` don't end a run.
    """

    def __init__(self, *, min_speech_ms: int, threshold: int = 400, max_gap_ms: int = 120):
        self._min_voiced_frames = max(1, min_speech_ms // FRAME_MS)
        self._max_gap_s = max_gap_ms / 1000
        # Compare the raw translated sum against a precomputed bound: no division per frame.
        self._threshold_sum = threshold * FRAME_BYTES // 128
        self.voiced_frames = 0  # loud frames in the current run
        self.run_started_at: float | None = None
        self.last_voice_at: float | None = None  # arrival time of the latest loud frame
        self.speaking = False  # the current run reached `min_speech_ms`

    def feed(self, frame: bytes, now: float) -> bool:
        """Account one inbound frame; True exactly when this frame confirms the start of speech."""
        if sum(frame.translate(_LOUDNESS)) >= self._threshold_sum:
            if self.run_started_at is None:
                self.run_started_at = now
            self.last_voice_at = now
            self.voiced_frames += 1
            if not self.speaking and self.voiced_frames >= self._min_voiced_frames:
                self.speaking = True
                return True
        elif (
            self.run_started_at is not None
            and self.last_voice_at is not None  # both set by a loud frame
            and now - self.last_voice_at > self._max_gap_s
        ):
            self.run_started_at = None
            self.voiced_frames = 0
            self.speaking = False
        return False

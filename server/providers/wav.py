"""Reading RIFF/WAVE containers by their chunks (the stdlib `wave` module reads PCM only, not μ-law).

Google TTS wraps MULAW audio in a WAV header, and Twilio serves recordings as WAV. Non-PCM WAV
headers are not a fixed 44 bytes: `fmt ` is 18+ bytes, a `fact` chunk follows, writers add
`LIST` chunks, and every odd-sized chunk is followed by one pad byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    """The bytes claim to be a WAV file but are not a readable one."""


@dataclass(frozen=True)
class WavAudio:
    format_tag: int
    channels: int
    sample_rate_hz: int
    bits_per_sample: int
    payload: bytes

    @property
    def is_mulaw(self) -> bool:
        return self.format_tag == WAVE_FORMAT_MULAW

    @property
    def is_pcm16(self) -> bool:
        return self.format_tag == WAVE_FORMAT_PCM and self.bits_per_sample == 16


def is_riff_wave(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def parse_wav(data: bytes) -> WavAudio:
    """The `fmt ` fields and the `data` payload of a RIFF/WAVE file."""
    if not is_riff_wave(data):
        raise WavError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    position = 12
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        size = struct.unpack_from("<I", data, position + 4)[0]
        body = position + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise WavError("truncated fmt chunk")
            format_tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", data, body)
            if format_tag == WAVE_FORMAT_EXTENSIBLE and size >= 40:
                # The real format is the first two bytes of the sub-format GUID.
                format_tag = struct.unpack_from("<H", data, body + 24)[0]
            fmt = (format_tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavError("data chunk before fmt chunk")
            # Streaming writers leave the size at 0 or 0xFFFFFFFF: the payload then runs to the end.
            end = len(data) if size in (0, 0xFFFFFFFF) else min(body + size, len(data))
            return WavAudio(*fmt, payload=data[body:end])
        position = body + size + (size & 1)
    raise WavError("no data chunk")

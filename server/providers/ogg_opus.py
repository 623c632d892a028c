"""What Google needs to know about an Ogg Opus file (a WhatsApp voice note) before it is sent.

Speech-to-Text's OGG_OPUS encoding wants the sample rate and channel count in the request, and the
request kind depends on the length (synchronous `Recognize` takes at most a minute). The Opus
identification header (`OpusHead`, RFC 7845 §5.1) holds the channels, the encoder's input rate and
the pre-skip; the last page's granule position counts 48 kHz samples, so the length is
`(granule - pre_skip) / 48000`. Reading those few fields needs no audio library: the pages are
walked header by header and no packet is decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OPUS_GRANULE_RATE_HZ = 48000  # granule positions of an Opus stream always count 48 kHz samples
# The rates Google accepts for OGG_OPUS; Opus itself decodes at 48 kHz, the fallback.
GOOGLE_OPUS_RATES_HZ = (8000, 12000, 16000, 24000, 48000)
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, sequence, crc, segments
_OPUS_HEAD = struct.Struct("<8sBBHIhB")  # magic, version, channels, pre-skip, input rate, gain, mapping


class OggError(ValueError):
    """The bytes are not a readable Ogg Opus stream."""


@dataclass(frozen=True)
class OggOpusInfo:
    channels: int
    input_sample_rate_hz: int  # what the encoder was given (informational in Opus)
    pre_skip: int
    last_granule: int

    @property
    def duration_seconds(self) -> float:
        return max(self.last_granule - self.pre_skip, 0) / OPUS_GRANULE_RATE_HZ

    @property
    def recognition_rate_hz(self) -> int:
        """The sample rate to tell Google: the input rate when Google takes it, else Opus's own 48 kHz."""
        return self.input_sample_rate_hz if self.input_sample_rate_hz in GOOGLE_OPUS_RATES_HZ else OPUS_GRANULE_RATE_HZ


def read_ogg_opus(data: bytes) -> OggOpusInfo:
    """The identification header and the length of the first logical stream in `data`."""
    offset, serial, head, last_granule = 0, None, None, 0
    while offset < len(data):
        if len(data) - offset < _PAGE_HEADER.size:
            raise OggError("the file ends inside a page header")
        capture, version, _flags, granule, page_serial, _sequence, _crc, segments = _PAGE_HEADER.unpack_from(
            data, offset
        )
        if capture != b"OggS" or version != 0:
            raise OggError("not an Ogg page" if offset == 0 else f"no Ogg page at byte {offset}")
        table_start = offset + _PAGE_HEADER.size
        lacing = data[table_start : table_start + segments]
        body_start = table_start + segments
        body_end = body_start + sum(lacing)
        if len(lacing) != segments or body_end > len(data):
            raise OggError("the file ends inside a page")
        if serial is None:
            serial = page_serial
            head = data[body_start:body_end]
        if page_serial == serial and granule != -1:  # -1: no packet ends on this page
            last_granule = granule
        offset = body_end
    if head is None or len(head) < _OPUS_HEAD.size or not head.startswith(b"OpusHead"):
        raise OggError("the first Ogg stream is not Opus (no OpusHead)")
    _magic, version, channels, pre_skip, input_rate, _gain, _mapping = _OPUS_HEAD.unpack_from(head)
    if version >> 4 != 0 or channels == 0:  # RFC 7845: only the major version 0 is readable
        raise OggError(f"unsupported OpusHead (version {version}, {channels} channels)")
    return OggOpusInfo(channels=channels, input_sample_rate_hz=input_rate, pre_skip=pre_skip, last_granule=last_granule)

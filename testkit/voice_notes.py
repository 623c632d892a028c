"""WhatsApp-style voice notes (Ogg Opus) for tests and benchmarks, of any length, without an encoder.

`tests/fixtures/voice_note_he.ogg` is a real note (3 s of Hebrew speech, 16 kHz mono, 20 ms Opus
frames, made with opusenc). `voice_note(seconds)` re-muxes its Opus packets, repeated as often as
needed, into a new valid Ogg stream (RFC 3533 pages with their CRC, RFC 7845 headers and granule
positions), so a decoder plays it and its length reads as `seconds`.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "voice_note_he.ogg"
FRAME_SAMPLES_48K = 960  # the fixture's packets are 20 ms each
PACKETS_PER_PAGE = 50
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) & 0xFF) ^ byte]
    return crc


def ogg_packets(data: bytes) -> list[bytes]:
    """The packets of an Ogg stream, reassembled from the pages' lacing values."""
    packets, current, offset = [], b"", 0
    while offset < len(data):
        *_, segments = _PAGE_HEADER.unpack_from(data, offset)
        lacing = data[offset + _PAGE_HEADER.size : offset + _PAGE_HEADER.size + segments]
        position = offset + _PAGE_HEADER.size + segments
        for size in lacing:
            current += data[position : position + size]
            position += size
            if size < 255:
                packets.append(current)
                current = b""
        offset = position
    return packets


def ogg_page(packets: list[bytes], *, serial: int, sequence: int, granule: int, flags: int = 0) -> bytes:
    lacing = bytearray()
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    header = _PAGE_HEADER.pack(b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing)) + bytes(lacing)
    page = header + b"".join(packets)
    return page[:22] + struct.pack("<I", ogg_crc(page)) + page[26:]


@functools.cache
def _fixture_packets() -> tuple[bytes, bytes, tuple[bytes, ...]]:
    head, tags, *audio = ogg_packets(FIXTURE.read_bytes())
    return head, tags, tuple(audio)


def voice_note(seconds: float = 3.0, *, input_rate_hz: int | None = None, serial: int = 0x5EED) -> bytes:
    """An Ogg Opus voice note `seconds` long (the fixture's speech, repeated); `input_rate_hz` replaces
    the encoder input rate its header reports (16 kHz, as Android's WhatsApp records)."""
    head, tags, audio = _fixture_packets()
    if input_rate_hz is not None:
        head = head[:12] + struct.pack("<I", input_rate_hz) + head[16:]
    pre_skip = struct.unpack_from("<H", head, 10)[0]
    count = max(1, round(seconds * 48000 / FRAME_SAMPLES_48K))
    pages = [ogg_page([head], serial=serial, sequence=0, granule=0, flags=0x02)]
    pages.append(ogg_page([tags], serial=serial, sequence=1, granule=0))
    for start in range(0, count, PACKETS_PER_PAGE):
        chunk = [audio[i % len(audio)] for i in range(start, min(start + PACKETS_PER_PAGE, count))]
        last = start + PACKETS_PER_PAGE >= count
        pages.append(
            ogg_page(
                chunk,
                serial=serial,
                sequence=len(pages),
                granule=pre_skip + (start + len(chunk)) * FRAME_SAMPLES_48K,
                flags=0x04 if last else 0,
            )
        )
    return b"".join(pages)

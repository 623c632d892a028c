"""A fake Google Cloud Text-to-Speech v1 gRPC server (`GOOGLE_TTS_EMULATOR_HOST=<fake.address>`).

`google.cloud.texttospeech.v1.TextToSpeech/SynthesizeSpeech` answers a MULAW 8 kHz request the way
Google does: the audio inside a RIFF/WAVE container. The container is deliberately awkward, so
only a chunk-walking parser finds the audio: `fmt ` of 18 bytes, a `fact` chunk, and an
odd-sized `LIST` chunk followed by its pad byte. The μ-law payload is deterministic per text
(`payload_for(text)`), a whole number of 20 ms frames, and made only of bytes >= 0x80, so it can
never contain the ASCII of `RIFF`, `WAVE` or `fmt `.

Faults: `fail_next(code, count)`, `delay_seconds`. Records: `requests` (text, voice, audio config).

Run standalone: `python -m testkit.fakes.google_tts --port 0`.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import struct
import time
from typing import Any

import grpc
from google.cloud.texttospeech_v1.types import cloud_tts

from testkit.fakes.grpc_server import GrpcFake

SAMPLE_RATE_HZ = 8000
FRAME_BYTES = 160
MS_PER_CHARACTER = 20
WAVE_FORMAT_MULAW = 7


def payload_for(text: str, ms_per_character: int = MS_PER_CHARACTER) -> bytes:
    """The μ-law audio the fake speaks for `text`: 20 ms per character, whole 20 ms frames."""
    frames = max(1, len(text) * ms_per_character // 20)
    seed = hashlib.sha256(text.encode()).digest()
    stream = bytearray()
    counter = 0
    while len(stream) < frames * FRAME_BYTES:
        stream += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(0x80 | b for b in stream[: frames * FRAME_BYTES])


def wav_container(payload: bytes) -> bytes:
    """`payload` wrapped as Google wraps MULAW: RIFF/WAVE with fmt, fact, LIST (odd size, padded), data."""
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_MULAW, 1, SAMPLE_RATE_HZ, SAMPLE_RATE_HZ, 1, 8, 0)
    fact = struct.pack("<I", len(payload))
    info = b"INFO" + b"ISFT" + struct.pack("<I", 9) + b"fake-tts\x00"  # 21 bytes: odd, so a pad byte follows
    chunks = _chunk(b"fmt ", fmt) + _chunk(b"fact", fact) + _chunk(b"LIST", info) + _chunk(b"data", payload)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


class FakeTextToSpeech(GrpcFake):
    service = "google.cloud.texttospeech.v1.TextToSpeech"
    emulator_variable = "GOOGLE_TTS_EMULATOR_HOST"

    def __init__(self, **kwargs: Any):
        self.requests: list[dict[str, Any]] = []
        self.delay_seconds = 0.0
        self.ms_per_character = MS_PER_CHARACTER
        self._failures: collections.deque[grpc.StatusCode] = collections.deque()
        super().__init__(**kwargs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--delay-ms", type=int, default=0)
        parser.add_argument("--ms-per-character", type=int, default=MS_PER_CHARACTER)

    def configure(self, args: argparse.Namespace) -> None:
        self.delay_seconds, self.ms_per_character = args.delay_ms / 1000, args.ms_per_character

    def fail_next(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, count: int = 1) -> None:
        with self._lock:
            self._failures.extend([code] * count)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            "SynthesizeSpeech": grpc.unary_unary_rpc_method_handler(
                self._synthesize,
                request_deserializer=cloud_tts.SynthesizeSpeechRequest.deserialize,
                response_serializer=cloud_tts.SynthesizeSpeechResponse.serialize,
            )
        }

    def _synthesize(
        self, request: cloud_tts.SynthesizeSpeechRequest, context: grpc.ServicerContext
    ) -> cloud_tts.SynthesizeSpeechResponse:
        audio_config = request.audio_config
        with self._lock:
            self.requests.append(
                {
                    "text": request.input.text,
                    "voice": request.voice.name,
                    "language": request.voice.language_code,
                    "encoding": cloud_tts.AudioEncoding(audio_config.audio_encoding).name,
                    "sample_rate_hertz": audio_config.sample_rate_hertz,
                    "speaking_rate": audio_config.speaking_rate,
                    "effects_profile_id": list(audio_config.effects_profile_id),
                }
            )
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            context.abort(failure, "Text-to-speech is unavailable (fake).")
        if not request.input.text:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Either `input.text` or `input.ssml` is required.")
        asked_for = (audio_config.audio_encoding, audio_config.sample_rate_hertz)
        if asked_for != (cloud_tts.AudioEncoding.MULAW, SAMPLE_RATE_HZ):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "This fake synthesizes only MULAW at 8000 Hz.")
        time.sleep(self.delay_seconds)
        payload = payload_for(request.input.text, self.ms_per_character)
        return cloud_tts.SynthesizeSpeechResponse(audio_content=wav_container(payload))


if __name__ == "__main__":
    FakeTextToSpeech.serve_forever_from_command_line()

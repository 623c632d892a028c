"""A fake Google Cloud Speech-to-Text v1 gRPC server (`GOOGLE_SPEECH_EMULATOR_HOST=<fake.address>`).

It speaks the real wire protocol (`google.cloud.speech.v1.Speech/StreamingRecognize` and
`/Recognize`) and behaves like Google where the app depends on it:
- the first streaming request must carry `streaming_config` and the rest only audio, at most
  25 600 bytes each; a stream may carry at most `max_stream_seconds` of audio (Google: ~305 s),
  after which it fails with OUT_OF_RANGE;
- transcripts follow the audio: each burst of non-silent 8 kHz audio becomes the next scripted
  utterance (`fake.script("...")`; when the script is empty, `DEFAULT_UTTERANCES` cycle), with
  interim results every `interim_every_ms` of speech and the final result after
  `final_silence_ms` of silence, or when the client half-closes. Time is audio time (bytes
  received), so results don't depend on pacing.

Like Google, the last interim can already show the whole utterance before the final confirms it
(which is what preemptive generation answers ahead): with `last_interim_ms` set, every burst's
last interim, carrying all its words, comes after that much silence (the final still comes after
`final_silence_ms`). `fake.script(Utterance(final, heard=...))` scripts a last interim that the
final then corrects (`heard` differs from `final`), sent after `last_interim_ms` (or at once).

`decode` (a function of a burst's first bytes, returning its text or None while too short to
tell) replaces the script: a load test encodes what each caller says in the audio itself.

A config without a language code, or with an encoding other than LINEAR16, MULAW or OGG_OPUS, is
refused with INVALID_ARGUMENT and Google's message ("bad language code." / "bad encoding..").

Recorded audio (`Recognize`, `LongRunningRecognize` and its `google.longrunning.Operations/
GetOperation` polls) in OGG_OPUS: the fake reads the Ogg Opus headers (not the sound) and answers
the next scripted utterance. Like Google it refuses a sample rate Opus doesn't have, more than a
minute of audio in `Recognize` ("Sync input too long…") and over 10 MB inline; stricter than Google,
it refuses bytes that are not Ogg Opus (Google would answer no results). A long-running operation is
done after `operation_polls` polls (default 1). `fail_next_recognize(code, times)` answers the next
recognitions (either kind) with an error; `fail_next_operation(code)` ends the next operation with one.

Faults: `reject_models = {"phone_call"}` (INVALID_ARGUMENT "model not supported for language"),
`stall = True` (read audio, never answer), `fail_next_stream(code, after_ms)` and
`close_next_stream(after_ms)` (end a stream with an error, or with OK, after that much audio).

Records: `streams` (per stream: config, the client's address, audio bytes, how it ended), `audio_bytes_total`,
`recognize_calls` (config, audio bytes, `method`), `operation_polls`.

Run standalone: `python -m testkit.fakes.google_speech --port 0`.
"""

from __future__ import annotations

import argparse
import array
import collections
import io
import itertools
import pkgutil
import re
import struct
import sys
import wave
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import grpc
from google.cloud.speech_v1.types import cloud_speech
from google.longrunning import operations_pb2
from google.protobuf import any_pb2

from server.providers.ogg_opus import OggError, read_ogg_opus
from server.voice.audio import mulaw_to_linear
from testkit.fakes.grpc_server import GrpcFake

SAMPLE_RATE_HZ = 8000
FRAME_MS = 20
MAX_REQUEST_AUDIO_BYTES = 25600
LOUD_MEAN_MAGNITUDE = 400  # of 32767: anything quieter is silence
BURST_HEAD_BYTES = 4096  # what `decode` gets to read of a burst
DEFAULT_UTTERANCES = ("שלום, אני רוצה לקבוע תור", "מחר בבוקר אם אפשר", "תודה רבה, להתראות")
MODEL_REJECTION = "Invalid recognition 'config': The requested model is currently not supported for language : {}."
BAD_LANGUAGE = "Invalid recognition 'config': bad language code."
BAD_ENCODING = "Invalid recognition 'config': bad encoding.."
SYNC_TOO_LONG = "Sync input too long. For audio longer than 1 min use LongRunningRecognize with a 'uri' parameter."
INLINE_LIMIT_BYTES = 10485760
OPUS_RATES_HZ = (8000, 12000, 16000, 24000, 48000)
# The encodings this fake can hear; Google refuses raw audio without a (supported) encoding the same way.
HEARD_ENCODINGS = (
    cloud_speech.RecognitionConfig.AudioEncoding.LINEAR16,
    cloud_speech.RecognitionConfig.AudioEncoding.MULAW,
    cloud_speech.RecognitionConfig.AudioEncoding.OGG_OPUS,
)
OGG_OPUS = cloud_speech.RecognitionConfig.AudioEncoding.OGG_OPUS
LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


MULAW_MAGNITUDE = tuple(abs(mulaw_to_linear(b)) for b in range(256))


def speech(ms: int) -> bytes:
    """Loud 8 kHz μ-law test audio (a square wave), which the fake hears as speech."""
    return bytes((0x80, 0x80, 0x00, 0x00)) * (ms * SAMPLE_RATE_HZ // 4000)


def silence(ms: int) -> bytes:
    return b"\xff" * (ms * SAMPLE_RATE_HZ // 1000)


def pcm16(ms: int, loud: bool = True) -> bytes:
    """16-bit 8 kHz PCM test audio: a loud square wave, or silence."""
    sample = 9000 if loud else 0
    return struct.pack(f"<{ms * 8}h", *([sample, -sample] * (ms * 4)))


def pcm_wav(frames: bytes, *, rate: int = SAMPLE_RATE_HZ, width: int = 2, channels: int = 1) -> bytes:
    """`frames` in a WAV container, as Twilio serves recordings."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return buffer.getvalue()


@dataclass(frozen=True)
class Utterance:
    """A scripted utterance: its final transcript, and (when Google would first hear it otherwise)
    the last interim before that final."""

    final: str
    heard: str | None = None


@dataclass
class StreamRecord:
    config: dict[str, Any]
    peer: str = ""  # the client's address and port: one per connection
    audio_bytes: int = 0
    requests: int = 0
    ended: str = "open"
    transcripts: list[tuple[str, bool]] = field(default_factory=list)


class _Listener:
    """Turns frames of audio into interim and final results for one stream or recording."""

    def __init__(self, fake: "FakeSpeech"):
        self.fake = fake
        self.burst: bytearray | None = None  # the start of the current burst of sound
        self.words: list[str] | None = None
        self.heard: str | None = None  # the scripted last interim of this burst
        self.speech_ms = self.silence_ms = self.last_interim_ms = 0
        self.last_interim = ""

    def hear(self, frame: bytes, loud: bool) -> list[tuple[str, bool]]:
        results: list[tuple[str, bool]] = []
        if loud:
            if self.burst is None:
                self.burst, self.words = bytearray(), None
                self.speech_ms = self.last_interim_ms = 0
                self.last_interim = ""
            if len(self.burst) < BURST_HEAD_BYTES:
                self.burst += frame
            self.speech_ms += FRAME_MS
            self.silence_ms = 0
            if self.speech_ms - self.last_interim_ms >= self.fake.interim_every_ms:
                self.last_interim_ms = self.speech_ms
                words = self._words(final=False)
                if words:
                    shown = max(1, min(len(words) - 1, self.speech_ms // self.fake.interim_every_ms))
                    interim = " ".join(words[:shown])
                    if interim != self.last_interim:
                        self.last_interim = interim
                        results.append((interim, False))
        elif self.burst is not None:
            self.silence_ms += FRAME_MS
            after = self.fake.last_interim_ms
            if after is None and self.heard is not None:
                after = 0
            if after is not None and self.silence_ms >= after and self.silence_ms < self.fake.final_silence_ms:
                words = self._words(final=False)
                whole = self.heard if self.heard is not None else " ".join(words or [])
                if whole and whole != self.last_interim:
                    self.last_interim = whole
                    results.append((whole, False))
            if self.silence_ms >= self.fake.final_silence_ms:
                results.extend(self.finish())
        return results

    def finish(self) -> list[tuple[str, bool]]:
        if self.burst is None:
            return []
        words = self._words(final=True) or []
        self.burst = self.words = self.heard = None
        return [(" ".join(words), True)]

    def _words(self, final: bool) -> list[str] | None:
        """What this burst says: decoded from its audio (`fake.decode`), or the next scripted line."""
        if self.words is None:
            text = self.fake.decode(bytes(self.burst)) if self.fake.decode else None
            if text is None and (final or not self.fake.decode):
                scripted = self.fake.next_scripted()
                text, self.heard = scripted.final, scripted.heard
            if text is not None:
                self.words = text.split()
        return self.words


class FakeSpeech(GrpcFake):
    service = "google.cloud.speech.v1.Speech"
    emulator_variable = "GOOGLE_SPEECH_EMULATOR_HOST"

    def __init__(self, **kwargs: Any):
        self.interim_every_ms = 200
        self.final_silence_ms = 300
        self.last_interim_ms: int | None = None
        self.max_stream_seconds = 305.0
        self.reject_models: set[str] = set()
        self.stall = False
        self.decode: Callable[[bytes], str | None] | None = None
        self.streams: list[StreamRecord] = []
        self.recognize_calls: list[dict[str, Any]] = []
        self.operation_polls = 0
        self.operation_polls_until_done = 1
        self._operations: dict[str, dict[str, Any]] = {}
        self._recognize_faults: collections.deque[grpc.StatusCode] = collections.deque()
        self._operation_faults: collections.deque[grpc.StatusCode] = collections.deque()
        self._script: collections.deque[str | Utterance] = collections.deque()
        self._default = itertools.cycle(DEFAULT_UTTERANCES)
        self._stream_faults: collections.deque[tuple[str, int, grpc.StatusCode]] = collections.deque()
        super().__init__(**kwargs)
        # Long-running operations are polled through their own service, on the same channel.
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "google.longrunning.Operations",
                    {
                        "GetOperation": grpc.unary_unary_rpc_method_handler(
                            self._get_operation,
                            request_deserializer=operations_pb2.GetOperationRequest.FromString,
                            response_serializer=operations_pb2.Operation.SerializeToString,
                        )
                    },
                ),
            )
        )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--interim-every-ms", type=int, default=200)
        parser.add_argument("--final-silence-ms", type=int, default=300)
        parser.add_argument(
            "--last-interim-ms",
            type=int,
            default=None,
            help="the whole utterance as an interim after this much silence",
        )
        parser.add_argument("--decode", help="module:function reading the text of a burst from its audio")

    def configure(self, args: argparse.Namespace) -> None:
        self.interim_every_ms, self.final_silence_ms = args.interim_every_ms, args.final_silence_ms
        self.last_interim_ms = args.last_interim_ms
        self.decode = pkgutil.resolve_name(args.decode) if args.decode else None

    # ---- scripting ----------------------------------------------------------------------
    def script(self, *utterances: str | Utterance) -> None:
        with self._lock:
            self._script.extend(utterances)

    def next_scripted(self) -> Utterance:
        with self._lock:
            item = self._script.popleft() if self._script else next(self._default)
        return item if isinstance(item, Utterance) else Utterance(item)

    def next_utterance(self) -> str:
        return self.next_scripted().final

    def fail_next_stream(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, after_ms: int = 0) -> None:
        with self._lock:
            self._stream_faults.append(("fail", after_ms, code))

    def close_next_stream(self, after_ms: int = 0) -> None:
        with self._lock:
            self._stream_faults.append(("close", after_ms, grpc.StatusCode.OK))

    def fail_next_recognize(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, times: int = 1) -> None:
        with self._lock:
            self._recognize_faults.extend([code] * times)

    def fail_next_operation(self, code: grpc.StatusCode = grpc.StatusCode.INTERNAL) -> None:
        with self._lock:
            self._operation_faults.append(code)

    @property
    def audio_bytes_total(self) -> int:
        with self._lock:
            return sum(s.audio_bytes for s in self.streams)

    # ---- the service --------------------------------------------------------------------
    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                self._streaming_recognize,
                request_deserializer=cloud_speech.StreamingRecognizeRequest.deserialize,
                response_serializer=cloud_speech.StreamingRecognizeResponse.serialize,
            ),
            "Recognize": grpc.unary_unary_rpc_method_handler(
                self._recognize,
                request_deserializer=cloud_speech.RecognizeRequest.deserialize,
                response_serializer=cloud_speech.RecognizeResponse.serialize,
            ),
            "LongRunningRecognize": grpc.unary_unary_rpc_method_handler(
                self._long_running_recognize,
                request_deserializer=cloud_speech.LongRunningRecognizeRequest.deserialize,
                response_serializer=operations_pb2.Operation.SerializeToString,
            ),
        }

    def _check_config(self, config: cloud_speech.RecognitionConfig, context: grpc.ServicerContext) -> None:
        if not LANGUAGE_CODE.match(config.language_code):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, BAD_LANGUAGE)
        if config.encoding not in HEARD_ENCODINGS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, BAD_ENCODING)
        if config.model in self.reject_models:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, MODEL_REJECTION.format(config.language_code))
        if config.encoding == OGG_OPUS:
            if config.sample_rate_hertz not in OPUS_RATES_HZ:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Invalid recognition 'config': sample_rate_hertz ({config.sample_rate_hertz}) must be one of "
                    "8000, 12000, 16000, 24000 or 48000 for OGG_OPUS.",
                )
        elif config.sample_rate_hertz != SAMPLE_RATE_HZ:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"this fake hears only {SAMPLE_RATE_HZ} Hz audio")

    def _streaming_recognize(
        self, requests: Iterator[cloud_speech.StreamingRecognizeRequest], context: grpc.ServicerContext
    ) -> Iterator[cloud_speech.StreamingRecognizeResponse]:
        first = next(requests, None)
        if first is None or "streaming_config" not in first:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "The first request must carry streaming_config.")
        config = first.streaming_config
        record = StreamRecord(config=type(config).to_dict(config), peer=context.peer())
        with self._lock:
            self.streams.append(record)
            fault = self._stream_faults.popleft() if self._stream_faults else None
        self._check_config(config.config, context)
        listener = _Listener(self)
        max_stream_bytes = int(self.max_stream_seconds * SAMPLE_RATE_HZ)
        for request in requests:
            if "streaming_config" in request:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "streaming_config may only be in the first request.")
            audio = request.audio_content
            if len(audio) > MAX_REQUEST_AUDIO_BYTES:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Request audio can be a maximum of 25600 bytes.")
            with self._lock:
                record.audio_bytes += len(audio)
                record.requests += 1
            if record.audio_bytes > max_stream_bytes:
                record.ended = "out_of_range"
                context.abort(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"Exceeded maximum allowed stream duration of {self.max_stream_seconds:g} seconds.",
                )
            if fault and record.audio_bytes >= fault[1] * SAMPLE_RATE_HZ // 1000:
                record.ended = fault[0]
                if fault[0] == "close":
                    return
                context.abort(fault[2], "The service is currently unavailable (fake).")
            if self.stall:
                continue
            for frame, loud in _loud_frames(audio, config.config.encoding):
                for text, is_final in listener.hear(frame, loud):
                    record.transcripts.append((text, is_final))
                    yield _streaming_response(text, is_final)
        record.ended = "half_closed"
        if not self.stall:
            for text, is_final in listener.finish():
                record.transcripts.append((text, is_final))
                yield _streaming_response(text, is_final)

    def _recorded_audio(
        self, method: str, config: cloud_speech.RecognitionConfig, audio: bytes, context: grpc.ServicerContext
    ) -> float | None:
        """Check and record one recognition of recorded audio; its length in seconds when it is Ogg Opus."""
        with self._lock:
            self.recognize_calls.append(
                {"method": method, "config": type(config).to_dict(config), "audio_bytes": len(audio)}
            )
            fault = self._recognize_faults.popleft() if self._recognize_faults else None
        if fault is not None:
            context.abort(fault, "The service is currently unavailable (fake).")
        self._check_config(config, context)
        if len(audio) > INLINE_LIMIT_BYTES:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Request payload size exceeds the limit: {INLINE_LIMIT_BYTES} bytes."
            )
        if config.encoding != OGG_OPUS:
            return None
        try:
            return read_ogg_opus(audio).duration_seconds
        except OggError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid audio content for OGG_OPUS: {exc}.")
            raise  # abort raises; this line only tells the type checker

    def _transcribed(self, audio: bytes, encoding: cloud_speech.RecognitionConfig.AudioEncoding) -> list[str]:
        """The utterances the fake hears: one scripted line for a recording it can't listen to (Opus)."""
        if encoding == OGG_OPUS:
            return [self.next_utterance()]
        listener = _Listener(self)
        texts: list[str] = []
        for frame, loud in _loud_frames(audio, encoding):
            texts.extend(text for text, is_final in listener.hear(frame, loud) if is_final)
        texts.extend(text for text, _ in listener.finish())
        return texts

    def _long_running_recognize(
        self, request: cloud_speech.LongRunningRecognizeRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        self._recorded_audio("LongRunningRecognize", request.config, request.audio.content, context)
        texts = self._transcribed(request.audio.content, request.config.encoding)
        with self._lock:
            name = str(len(self._operations) + 1000)
            self._operations[name] = {
                "texts": texts,
                "polls": 0,
                "fault": self._operation_faults.popleft() if self._operation_faults else None,
            }
        return operations_pb2.Operation(name=name, done=False, metadata=_metadata(0))

    def _get_operation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.ServicerContext
    ) -> operations_pb2.Operation:
        with self._lock:
            self.operation_polls += 1
            operation = self._operations.get(request.name)
            if operation is not None:
                operation["polls"] += 1
        if operation is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Operation {request.name} not found.")
            raise LookupError(request.name)  # abort raises; this line only tells the type checker
        if operation["polls"] < self.operation_polls_until_done:
            return operations_pb2.Operation(name=request.name, done=False, metadata=_metadata(50))
        if operation["fault"] is not None:
            fault: grpc.StatusCode = operation["fault"]
            return operations_pb2.Operation(
                name=request.name,
                done=True,
                metadata=_metadata(100),
                error={"code": fault.value[0], "message": "Recognition failed (fake)."},
            )
        response = cloud_speech.LongRunningRecognizeResponse(results=_results(operation["texts"]))
        packed = any_pb2.Any()
        packed.Pack(cloud_speech.LongRunningRecognizeResponse.pb(response))
        return operations_pb2.Operation(name=request.name, done=True, metadata=_metadata(100), response=packed)

    def _recognize(
        self, request: cloud_speech.RecognizeRequest, context: grpc.ServicerContext
    ) -> cloud_speech.RecognizeResponse:
        config = request.config
        audio = request.audio.content
        seconds = self._recorded_audio("Recognize", config, audio, context)
        if seconds is not None and seconds > 60:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, SYNC_TOO_LONG)
        return cloud_speech.RecognizeResponse(results=_results(self._transcribed(audio, config.encoding)))


def _results(texts: list[str]) -> list[cloud_speech.SpeechRecognitionResult]:
    return [
        cloud_speech.SpeechRecognitionResult(
            alternatives=[cloud_speech.SpeechRecognitionAlternative(transcript=text, confidence=0.9)]
        )
        for text in texts
    ]


def _metadata(percent: int) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(
        cloud_speech.LongRunningRecognizeMetadata.pb(
            cloud_speech.LongRunningRecognizeMetadata(progress_percent=percent)
        )
    )
    return packed


def _loud_frames(audio: bytes, encoding: cloud_speech.RecognitionConfig.AudioEncoding) -> Iterator[tuple[bytes, bool]]:
    """20 ms frames of `audio`, each with whether it is loud enough to be speech."""
    if encoding == cloud_speech.RecognitionConfig.AudioEncoding.LINEAR16:
        frame_bytes = 2 * SAMPLE_RATE_HZ * FRAME_MS // 1000
        for start in range(0, len(audio) - frame_bytes + 1, frame_bytes):
            samples = array.array("h", audio[start : start + frame_bytes])
            if sys.byteorder == "big":
                samples.byteswap()
            yield audio[start : start + frame_bytes], sum(map(abs, samples)) / len(samples) > LOUD_MEAN_MAGNITUDE
        return
    frame_bytes = SAMPLE_RATE_HZ * FRAME_MS // 1000
    for start in range(0, len(audio) - frame_bytes + 1, frame_bytes):
        frame = audio[start : start + frame_bytes]
        yield frame, sum(MULAW_MAGNITUDE[b] for b in frame) / frame_bytes > LOUD_MEAN_MAGNITUDE


def _streaming_response(text: str, is_final: bool) -> cloud_speech.StreamingRecognizeResponse:
    return cloud_speech.StreamingRecognizeResponse(
        results=[
            cloud_speech.StreamingRecognitionResult(
                alternatives=[
                    cloud_speech.SpeechRecognitionAlternative(transcript=text, confidence=0.92 if is_final else 0.0)
                ],
                is_final=is_final,
                stability=0.0 if is_final else 0.8,
            )
        ]
    )


if __name__ == "__main__":
    FakeSpeech.serve_forever_from_command_line()

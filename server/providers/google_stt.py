"""Google Cloud Speech-to-Text v1 behind the `SpeechToText` interface (he-IL, 8 kHz μ-law).

Streaming (live calls):
- Each chunk the caller's audio arrives in (the live-call engine batches Twilio's 20 ms frames
  into 100 ms, or 500 ms while the caller listens) is one request; only a chunk above Google's
  25,600-byte limit is split.
- A Google stream may stay open for about 5 minutes, so each stream hands over to a new one after
  `stream_restart_seconds` (about 4 minutes), at the first moment no utterance is in progress, or
  regardless `stream_restart_grace_seconds` later. Audio sits in one buffer that exactly one
  stream consumes at a time: the old stream stops taking audio and half-closes (Google then
  finalises what it heard), the new one starts with whatever arrived meanwhile. No audio is dropped.
- Model: `STT_MODEL` is tried first, then the rest of `phone_call`(enhanced) → `latest_long` →
  Google's default. A model Google rejects for the language (`InvalidArgument`) is logged once,
  skipped for the rest of the process, and the audio already sent is replayed on the next model.
- Any other failure, or Google ending a stream on its own, ends `transcripts()` with a
  `ProviderError`, so the engine can open a new stream.

Concurrency: each stream has a reader (`server.cooperative.start_background`: a greenlet in the
gevent worker, where gRPC is cooperative) iterating the responses, and gRPC's own request consumer
pulling audio from the buffer. `send_audio` never blocks.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, cast

from google.api_core import exceptions as google_exceptions
from google.api_core import retry as google_retry
from google.cloud import speech_v1 as speech
from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

from server.config import Settings
from server.cooperative import start_background
from server.logs import log_event
from server.providers.base import ProviderError, ProviderTimeout, Transcript
from server.providers.google_credentials import LazyClient, build_google_client

log = logging.getLogger("agentlocator.providers.google_stt")

SAMPLE_RATE_HZ = 8000
MAX_REQUEST_BYTES = 25600  # Google's limit on the audio of one streaming request
STREAM_RESTART_SECONDS = 240.0  # Google closes streams at about 5 minutes …
STREAM_RESTART_GRACE_SECONDS = 30.0  # … so waiting for a pause ends well before that
STREAM_DEADLINE_MARGIN_SECONDS = 60.0
REPLAY_LIMIT_BYTES = 30 * SAMPLE_RATE_HZ  # audio kept for a model fallback: 30 s at most
RECOGNIZE_MAX_SECONDS = 55  # synchronous recognize accepts up to one minute of audio
RECOGNIZE_TIMEOUT_SECONDS = 60.0

ENCODINGS = {
    "MULAW": speech.RecognitionConfig.AudioEncoding.MULAW,
    "LINEAR16": speech.RecognitionConfig.AudioEncoding.LINEAR16,
}
BYTES_PER_SAMPLE = {"MULAW": 1, "LINEAR16": 2}


@dataclass(frozen=True)
class SpeechModel:
    name: str  # "" is Google's default model
    use_enhanced: bool = False

    @property
    def label(self) -> str:
        return (self.name or "default") + ("+enhanced" if self.use_enhanced else "")


FALLBACK_CHAIN = (SpeechModel("phone_call", True), SpeechModel("latest_long"), SpeechModel(""))


def model_candidates(configured: str) -> tuple[SpeechModel, ...]:
    """`STT_MODEL` first, then the rest of the fallback chain after it."""
    name = configured.strip().lower()
    if name in ("", "default"):
        return (SpeechModel(""),)
    for index, model in enumerate(FALLBACK_CHAIN):
        if model.name == name:
            return FALLBACK_CHAIN[index:]
    return (SpeechModel(name),) + FALLBACK_CHAIN[1:]


class ModelChooser:
    """The first model Google accepts for the language, remembered for the whole process."""

    _shared: dict[tuple[str, str, str], "ModelChooser"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, language: str, candidates: tuple[SpeechModel, ...]):
        self.language = language
        self.candidates = candidates
        self._index = 0
        self._lock = threading.Lock()

    @classmethod
    def for_process(cls, endpoint: str, language: str, configured: str) -> "ModelChooser":
        """One chooser per Speech endpoint (Google, or an emulator), language and `STT_MODEL`."""
        with cls._shared_lock:
            key = (endpoint, language, configured)
            if key not in cls._shared:
                cls._shared[key] = cls(language, model_candidates(configured))
            return cls._shared[key]

    @property
    def current(self) -> SpeechModel:
        with self._lock:
            return self.candidates[self._index]

    def reject(self, model: SpeechModel, reason: str) -> SpeechModel | None:
        """Skip `model` from now on; the next candidate, or None when none is left."""
        with self._lock:
            if self.candidates[self._index] == model:
                if self._index + 1 >= len(self.candidates):
                    return None
                self._index += 1
                log_event(
                    log,
                    "stt_model_unsupported",
                    logging.WARNING,
                    model=model.label,
                    language=self.language,
                    reason=reason,
                    next_model=self.candidates[self._index].label,
                )
            return self.candidates[self._index]


def is_model_rejection(exc: google_exceptions.GoogleAPICallError) -> bool:
    """Google's 400 for a model the language lacks ("…model is currently not supported for language…")."""
    text = (exc.message or "").lower()
    return isinstance(exc, google_exceptions.InvalidArgument) and ("model" in text or "enhanced" in text)


class GoogleSpeechClient:
    """The Speech clients of this process (built on first use, after gunicorn forks) and the model
    chooser that remembers which of `preferred_model`'s fallbacks Google takes for the language.

    `STT_CHANNELS` clients, each on a gRPC channel (and connection) of its own, take the streams in
    turn. Under gevent a channel hands its completions to the worker one per pass of the hub's
    loop, and a busy worker's loop is slow: with one channel, fifty calls' 100 ms requests already
    queue up behind it and their final transcripts arrive seconds late. (Google also serves at
    most about a hundred streams on one connection.)"""

    def __init__(self, settings: Settings, preferred_model: str):
        self.language = settings.stt_language
        self.models = ModelChooser.for_process(
            settings.google_speech_emulator_host, settings.stt_language, preferred_model
        )
        clients = [
            LazyClient(
                lambda: build_google_client(
                    speech.SpeechClient, SpeechGrpcTransport, settings.google_speech_emulator_host, settings
                )
            )
            for _ in range(settings.stt_channels)
        ]
        self._clients = itertools.cycle(clients)

    @property
    def client(self) -> speech.SpeechClient:
        """The next client in turn."""
        return next(self._clients).get()


class GoogleSpeechToText(GoogleSpeechClient):
    def __init__(
        self,
        settings: Settings,
        *,
        stream_restart_seconds: float = STREAM_RESTART_SECONDS,
        stream_restart_grace_seconds: float = STREAM_RESTART_GRACE_SECONDS,
    ):
        super().__init__(settings, settings.stt_model)
        self.stream_restart_seconds = stream_restart_seconds
        self.stream_restart_grace_seconds = stream_restart_grace_seconds

    def recognition_config(
        self, model: SpeechModel, encoding: str = "MULAW", sample_rate_hz: int = SAMPLE_RATE_HZ
    ) -> speech.RecognitionConfig:
        return speech.RecognitionConfig(
            encoding=ENCODINGS[encoding],
            sample_rate_hertz=sample_rate_hz,
            language_code=self.language,
            model=model.name,
            use_enhanced=model.use_enhanced,
        )

    def open_stream(self) -> "GoogleSpeechStream":
        return GoogleSpeechStream(self, self.client)  # a client that can't be built fails here, in the caller

    def transcribe(self, audio: bytes, *, encoding: str, sample_rate_hz: int) -> str:
        """One-shot recognition of a recording, in pieces under Google's one-minute limit."""
        if encoding not in ENCODINGS:
            raise ProviderError(f"unsupported encoding {encoding!r}")
        piece_bytes = RECOGNIZE_MAX_SECONDS * sample_rate_hz * BYTES_PER_SAMPLE[encoding]
        texts = [
            self._recognize(audio[start : start + piece_bytes], encoding, sample_rate_hz)
            for start in range(0, len(audio), piece_bytes)
        ]
        return " ".join(text for text in texts if text)

    def _recognize(self, audio: bytes, encoding: str, sample_rate_hz: int) -> str:
        model = self.models.current
        while True:
            try:
                response = self.client.recognize(
                    config=self.recognition_config(model, encoding, sample_rate_hz),
                    audio=speech.RecognitionAudio(content=audio),
                    retry=google_retry.Retry(
                        predicate=google_retry.if_transient_error, timeout=RECOGNIZE_TIMEOUT_SECONDS
                    ),
                    timeout=RECOGNIZE_TIMEOUT_SECONDS,
                )
            except google_exceptions.GoogleAPICallError as exc:
                next_model = self.models.reject(model, exc.message) if is_model_rejection(exc) else None
                if next_model is None:
                    raise _provider_error(exc) from exc
                model = next_model
                continue
            except google_exceptions.RetryError as exc:
                raise ProviderTimeout("speech recognition kept failing") from exc
            return " ".join(
                result.alternatives[0].transcript.strip() for result in response.results if result.alternatives
            ).strip()


class _AudioBuffer:
    """Audio chunks waiting for whichever stream session currently owns the buffer."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._ready = threading.Condition()

    def put(self, chunk: bytes) -> None:
        with self._ready:
            self._chunks.append(chunk)
            self._ready.notify_all()

    def take(self, session: "_StreamSession", timeout: float) -> bytes | None:
        """The next chunk for `session`, or None when it stopped or nothing came in `timeout`.

        Taken under the lock that also ends sessions, so a chunk never goes to a dead session.
        """
        with self._ready:
            if not self._chunks and not session.stopped:
                self._ready.wait(timeout)
            if session.stopped or not self._chunks:
                return None
            chunk = self._chunks.popleft()
            session.note_sent(chunk)
            return chunk

    def stop(self, session: "_StreamSession") -> list[bytes]:
        """Stop `session` taking audio; returns the audio it took while on probation (for replay)."""
        with self._ready:
            session.stopped = True
            self._ready.notify_all()
            return list(session.unconfirmed)

    def clear(self) -> None:
        with self._ready:
            self._chunks.clear()
            self._ready.notify_all()


class _StreamingCall(Protocol):
    """A gRPC response stream: Google's answers, and a way to end the call from our side."""

    def __iter__(self) -> Iterator[speech.StreamingRecognizeResponse]: ...

    def cancel(self) -> bool: ...


class _StreamSession:
    """One Google StreamingRecognize call, fed from the shared buffer."""

    def __init__(self, owner: "GoogleSpeechStream", model: SpeechModel, replay: list[bytes]):
        self.owner = owner
        self.model = model
        self.replay = replay
        self.stopped = False
        self.handed_over = False
        self.confirmed = False  # Google answered, so the model is accepted and replay is no longer needed
        self.mid_utterance = False  # the last result was an interim one: the caller is still talking
        self.unconfirmed: list[bytes] = []
        self._unconfirmed_bytes = 0
        self.call: Optional[_StreamingCall] = None

    def note_sent(self, chunk: bytes) -> None:
        if not self.confirmed and self._unconfirmed_bytes < REPLAY_LIMIT_BYTES:
            self.unconfirmed.append(chunk)
            self._unconfirmed_bytes += len(chunk)

    def requests(self) -> Iterator[speech.StreamingRecognizeRequest]:
        for chunk in self.replay:
            self.note_sent(chunk)
            yield speech.StreamingRecognizeRequest(audio_content=chunk)
        started = time.monotonic()
        restart_after = self.owner.stt.stream_restart_seconds
        restart_by = restart_after + self.owner.stt.stream_restart_grace_seconds
        while True:
            age = time.monotonic() - started
            if age >= restart_by or (age >= restart_after and not self.mid_utterance):
                self.owner.hand_over(self)
                return
            taken = self.owner.audio.take(self, min(max(restart_after - age, 0.05), 0.5))
            if taken is None:
                if self.stopped:
                    return
                continue
            yield speech.StreamingRecognizeRequest(audio_content=taken)

    def run(self) -> None:
        stt = self.owner.stt
        config = speech.StreamingRecognitionConfig(config=stt.recognition_config(self.model), interim_results=True)
        try:
            # The SDK's SpeechClient adds `streaming_recognize(config, requests)` over the generated
            # method, but its type information only shows the generated one (and a plain Iterable
            # for what is the gRPC call, cancel() included).
            self.call = cast(
                _StreamingCall,
                self.owner.client.streaming_recognize(  # type: ignore[call-arg]
                    config=config,
                    requests=self.requests(),
                    retry=None,
                    timeout=stt.stream_restart_seconds
                    + stt.stream_restart_grace_seconds
                    + STREAM_DEADLINE_MARGIN_SECONDS,
                ),
            )
            for response in self.call:
                self._confirm()
                for result in response.results:
                    self.mid_utterance = not result.is_final
                    if result.alternatives and result.alternatives[0].transcript:
                        alternative = result.alternatives[0]
                        self.owner.deliver(
                            Transcript(
                                alternative.transcript.strip(), bool(result.is_final), float(alternative.confidence)
                            )
                        )
        except google_exceptions.GoogleAPICallError as exc:
            replay = self.owner.audio.stop(self)
            if self.owner.closed or self.handed_over:
                return
            if is_model_rejection(exc) and not self.confirmed:
                next_model = stt.models.reject(self.model, exc.message)
                if next_model is not None:
                    self.owner.start_session(next_model, replay)
                    return
            self.owner.fail(_provider_error(exc))
            return
        except Exception as exc:  # the reader must always report, or the engine waits forever
            self.owner.audio.stop(self)
            if not self.owner.closed:
                self.owner.fail(ProviderError(f"speech stream failed ({type(exc).__name__})"))
            return
        self.owner.audio.stop(self)
        if not (self.owner.closed or self.handed_over):
            self.owner.fail(ProviderError("the speech stream ended unexpectedly"))

    def _confirm(self) -> None:
        if not self.confirmed:
            self.confirmed = True
            self.unconfirmed = []

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()


_END = object()


class GoogleSpeechStream:
    def __init__(self, stt: GoogleSpeechToText, client: speech.SpeechClient):
        self.stt = stt
        self.client = client  # one channel for the whole call, its hand-overs included
        self.audio = _AudioBuffer()
        self.closed = False
        self._results: queue.Queue = queue.Queue()
        self._sessions: list[_StreamSession] = []
        self._sessions_lock = threading.Lock()
        self.start_session(stt.models.current, [])

    # ---- SpeechStream ---------------------------------------------------------------------
    def send_audio(self, mulaw: bytes) -> None:
        if self.closed:
            return
        for start in range(0, len(mulaw), MAX_REQUEST_BYTES):
            self.audio.put(mulaw[start : start + MAX_REQUEST_BYTES])

    def transcripts(self) -> Iterator[Transcript]:
        while True:
            item = self._results.get()
            if item is _END:
                return
            if isinstance(item, ProviderError):
                raise item
            yield item

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.audio.clear()
        self._results.put(_END)
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            self.audio.stop(session)
            session.cancel()

    # ---- used by the sessions -----------------------------------------------------------
    def start_session(self, model: SpeechModel, replay: list[bytes]) -> None:
        session = _StreamSession(self, model, replay)
        with self._sessions_lock:
            if self.closed:
                return
            self._sessions = [s for s in self._sessions if not s.stopped] + [session]
        start_background(session.run, "stt-stream")

    def hand_over(self, session: _StreamSession) -> None:
        """`session` reached the restart age: stop it taking audio and let a new stream continue."""
        session.handed_over = True
        self.audio.stop(session)
        log_event(log, "stt_stream_restart", model=session.model.label)
        self.start_session(session.model, [])

    def deliver(self, transcript: Transcript) -> None:
        if not self.closed:
            self._results.put(transcript)

    def fail(self, error: ProviderError) -> None:
        if self.closed:
            return
        self.closed = True
        self.audio.clear()
        log_event(log, "stt_stream_failed", logging.WARNING, error=str(error))
        self._results.put(error)
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.cancel()


def _provider_error(exc: google_exceptions.GoogleAPICallError) -> ProviderError:
    if isinstance(exc, google_exceptions.DeadlineExceeded):
        return ProviderTimeout("speech recognition timed out")
    return ProviderError(f"speech recognition failed ({type(exc).__name__}: {exc.message})")

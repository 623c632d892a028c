"""The caller's speech → the STT provider → transcripts, for the whole call, whatever the stream does.

Audio is sent in ~100 ms requests (5 Twilio frames) while the caller may be talking: one gRPC
message per 20 ms frame roughly doubles the worker's CPU cost per call (measured on a gevent worker
against a local gRPC server). While the caller listens (no loud frame for a moment and no utterance
awaiting its final), requests carry 500 ms: each request costs the worker about a third of a
millisecond of CPU under gevent whatever its size, and a caller is quiet most of a call. The first loud frame
sends what is waiting at once, so the recogniser hears the start of speech no later than before,
and an utterance's end (what its final transcript waits for) always goes out in 100 ms requests.
A stream that ends on its own (a provider error, a dropped connection) is reopened at once, and the
audio since the last final transcript (up to two seconds, including what arrived while no stream
was open) is replayed into the new one: the words of an utterance in progress are not lost, and
words already finalised are not heard twice. Google closes a stream after five minutes, so the
stream is also replaced every few minutes, during a pause in the caller's speech.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable, Optional

import gevent

from server.logs import log_event
from server.providers.base import SpeechStream, SpeechToText, Transcript

log = logging.getLogger("agentlocator.voice.stt")

FRAMES_PER_REQUEST = 5  # 100 ms of audio per provider request …
FRAMES_PER_QUIET_REQUEST = 25  # … and 500 ms while the caller listens
QUIET_BATCHING_AFTER_SECONDS = 0.3  # since the last loud frame, with no utterance awaiting its final
REPLAY_FRAMES = 100  # at most two seconds of unrecognised audio replayed into a new stream
ROTATE_AFTER_SECONDS = 240.0  # replace the stream during a pause after this long …
ROTATE_BY_SECONDS = 285.0  # … or regardless, before the provider's 5-minute limit
QUIET_FOR_ROTATION_SECONDS = 1.5
MAX_QUICK_FAILURES = 4  # streams in a row that die young and silent before giving up
HEALTHY_STREAM_SECONDS = 5.0
RETRY_DELAYS = (0.0, 0.2, 0.4, 0.8)


class SpeechInput:
    """Owns the call's STT stream. `send` is called for every inbound frame (the hot path)."""

    def __init__(
        self,
        stt: SpeechToText,
        *,
        on_transcript: Callable[[Transcript], None],
        on_unavailable: Callable[[str], None],
        quiet_since: Callable[[], Optional[float]],
        call_sid: str,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._stt = stt
        self._on_transcript = on_transcript
        self._on_unavailable = on_unavailable
        self._quiet_since = quiet_since  # when the caller last made a sound (None: never)
        self._call_sid = call_sid
        self._clock = clock
        self._frames: list[bytes] = []
        self._unrecognised: deque[bytes] = deque(maxlen=REPLAY_FRAMES)  # frames sent since the last final
        self._utterance_open = False  # an interim transcript came and its final has not yet
        self._stream: Optional[SpeechStream] = None
        self._opened_at = 0.0
        self._retiring: Optional[SpeechStream] = None
        self._closed = False
        self.restarts = 0

    def _warn(self, event: str, exc: Exception) -> None:
        """One warning line for a failed open or a dead stream, the error cut to 200 characters."""
        log_event(log, event, logging.WARNING, call_sid=self._call_sid, error=f"{type(exc).__name__}: {exc}"[:200])

    def run(self) -> None:
        """The reader greenlet: open the stream, deliver its transcripts, reopen it when it ends."""
        failures = 0
        while not self._is_closed():
            if failures:
                if failures >= MAX_QUICK_FAILURES:
                    self._on_unavailable(f"speech-to-text failed {failures} times in a row")
                    return
                gevent.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
            try:
                stream = self._open()
            except Exception as exc:  # ProviderError, or an SDK error the provider didn't wrap
                failures += 1
                self._warn("stt_open_failed", exc)
                continue
            heard = False
            transcripts = stream.transcripts()
            while True:
                try:
                    transcript = next(transcripts)
                except StopIteration:
                    break
                except Exception as exc:  # the stream died; it is reopened below like any other death
                    self._warn("stt_stream_error", exc)
                    break
                heard = True
                self._utterance_open = not transcript.is_final
                if transcript.is_final:
                    self._unrecognised.clear()
                self._on_transcript(transcript)
            if self._is_closed():
                return
            if stream is self._retiring:
                self._retiring = None
                continue
            if self._stream is stream:
                self._stream = None
            stream.close()
            healthy = heard or self._clock() - self._opened_at > HEALTHY_STREAM_SECONDS
            failures = 0 if healthy else failures + 1
            self.restarts += 1
            log_event(log, "stt_stream_restarted", logging.WARNING, call_sid=self._call_sid, attempt=failures)

    def send(self, frame: bytes) -> None:
        frames = self._frames
        frames.append(frame)
        if len(frames) < FRAMES_PER_REQUEST or (len(frames) < FRAMES_PER_QUIET_REQUEST and self._caller_listening()):
            return
        chunk = b"".join(frames)
        self._unrecognised.extend(frames)
        frames.clear()
        stream = self._stream
        if stream is None:
            return
        stream.send_audio(chunk)
        age = self._clock() - self._opened_at
        if age > ROTATE_AFTER_SECONDS and (age > ROTATE_BY_SECONDS or self._quiet_for(QUIET_FOR_ROTATION_SECONDS)):
            self._retire(stream)

    def _is_closed(self) -> bool:
        # A call, not an attribute read: `close()` runs in another greenlet while `run` waits, which a
        # type checker narrowing `self._closed` inside the loop can't know.
        return self._closed

    def close(self) -> None:
        self._closed = True
        for stream in (self._stream, self._retiring):
            if stream is not None:
                stream.close()
        self._stream = self._retiring = None

    def _open(self) -> SpeechStream:
        stream = self._stt.open_stream()
        self._opened_at = self._clock()
        if self._unrecognised:  # at most two seconds: one request (the provider splits above its limit)
            stream.send_audio(b"".join(self._unrecognised))
        self._stream = stream
        return stream

    def _caller_listening(self) -> bool:
        """Quiet for a moment, and no utterance waits for its final: nothing is lost by sending less often."""
        return not self._utterance_open and self._quiet_for(QUIET_BATCHING_AFTER_SECONDS)

    def _quiet_for(self, seconds: float) -> bool:
        last_sound = self._quiet_since()
        return last_sound is None or self._clock() - last_sound >= seconds

    def _retire(self, stream: SpeechStream) -> None:
        """Replace a long-lived stream: the reader sees it end and opens the next one."""
        self._retiring = stream
        self._stream = None
        log_event(log, "stt_stream_rotated", call_sid=self._call_sid)
        stream.close()

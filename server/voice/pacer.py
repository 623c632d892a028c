"""The outbound pacer: agent audio to Twilio in 20 ms frames, a little ahead of real time.

Twilio plays `media` in the order received and buffers whatever arrives early. Sending everything
at once would make a barge-in `clear` throw away seconds of queued speech and make marks useless
for knowing what was heard; sending exactly on time would turn every scheduling hiccup into a gap.
So the pacer keeps about `lead` seconds of audio in Twilio's buffer: it models when the buffer
runs dry (`_buffered_until`) and sends the next frame once less than `lead` remains.

Each `PlaybackItem` (one sentence) is followed by a `mark`. Twilio echoes the mark when the
audio before it has played, so an echoed mark means the caller heard that sentence. On `clear`
Twilio echoes every pending mark at once; those items are flagged `cleared` first, so their late
echoes are ignored rather than counted as heard.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import gevent
from gevent.event import Event

from server.voice.audio import FRAME_MS
from server.voice.protocol import OutboundMessages
from server.voice.transport import ConnectionClosed

log = logging.getLogger("agentlocator.voice.pacer")

FRAME_SECONDS = FRAME_MS / 1000
DEFAULT_LEAD_SECONDS = 0.08


@dataclass(eq=False)
class PlaybackItem:
    """One stretch of agent speech (a sentence), its media messages, and whether it was heard."""

    mark: str
    text: str
    messages: list[str]
    on_played: Optional[Callable[["PlaybackItem"], None]] = None
    next_index: int = 0
    first_sent_at: Optional[float] = None
    played_at: Optional[float] = None
    cleared: bool = False

    @property
    def played(self) -> bool:
        return self.played_at is not None


class OutboundPacer:
    def __init__(
        self,
        send: Callable[[str], None],
        messages: OutboundMessages,
        *,
        lead_seconds: float = DEFAULT_LEAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._send = send
        self._messages = messages
        self._lead = lead_seconds
        self._clock = clock
        self._queue: deque[PlaybackItem] = deque()
        self._awaiting_echo: dict[str, PlaybackItem] = {}
        self._wake = Event()
        self._buffered_until = 0.0
        self.frames_sent = 0
        self.clears_sent = 0
        # Frames sent after Twilio's buffer had already run dry in the middle of a sentence: an
        # audible gap of our making (a hub stalled by CPU starvation or blocking code).
        self.underruns = 0

    # ---- producer side (turns) -------------------------------------------------------------
    def item(
        self,
        mark: str,
        text: str,
        mulaw_frames: list[bytes],
        on_played: Optional[Callable[[PlaybackItem], None]] = None,
    ) -> PlaybackItem:
        """A playback item with its media messages rendered now, off the pacer's timing path."""
        media = self._messages.media
        return PlaybackItem(mark=mark, text=text, messages=[media(f) for f in mulaw_frames], on_played=on_played)

    def enqueue(self, item: PlaybackItem) -> None:
        self._queue.append(item)
        self._wake.set()

    @property
    def busy(self) -> bool:
        """Agent audio is queued here or still playing at Twilio (its mark hasn't come back)."""
        return bool(self._queue or self._awaiting_echo)

    def clear(self) -> bool:
        """Barge-in: drop queued audio, tell Twilio to empty its buffer. True if anything was audible."""
        pending = list(self._queue) + list(self._awaiting_echo.values())
        for item in pending:
            item.cleared = True
        self._queue.clear()
        self._awaiting_echo.clear()
        self._buffered_until = self._clock()
        if not pending:
            return False
        self.clears_sent += 1
        try:
            self._send(self._messages.clear)
        except ConnectionClosed:
            pass  # the caller is gone; the session ends as soon as the receive loop notices
        return True

    # ---- Twilio side -----------------------------------------------------------------------
    def on_mark(self, name: str) -> Optional[PlaybackItem]:
        """Twilio echoed `name`: that item has played. None for unknown or cleared marks."""
        item = self._awaiting_echo.pop(name, None)
        if item is None:
            return None
        item.played_at = self._clock()
        if item.on_played is not None:
            item.on_played(item)
        return item

    # ---- the pacing loop (one greenlet per call) ------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except ConnectionClosed as exc:
            log.debug("pacer stopped: %s", exc)

    def _loop(self) -> None:
        clock, send, queue = self._clock, self._send, self._queue
        while True:
            if not queue:
                self._wake.clear()
                self._wake.wait()
                continue
            item = queue[0]
            if item.next_index < len(item.messages):
                now = clock()
                ahead = self._buffered_until - now
                if ahead > self._lead:
                    gevent.sleep(ahead - self._lead)
                    continue  # the queue may have been cleared while we slept
                send(item.messages[item.next_index])
                if item.next_index == 0:
                    item.first_sent_at = now
                elif ahead < 0:
                    self.underruns += 1
                item.next_index += 1
                self.frames_sent += 1
                self._buffered_until = (self._buffered_until if ahead > 0 else now) + FRAME_SECONDS
            else:
                queue.popleft()
                self._awaiting_echo[item.mark] = item
                send(self._messages.mark(item.mark))

"""One turn of the conversation: the caller's words → streamed LLM reply → sentence-by-sentence TTS
→ the pacer, with the timings that `turn_metrics` reports.

Two greenlets per turn: one reads the LLM stream and cuts it into sentences, the other
synthesises each sentence as soon as it is complete and queues its audio, so the first sentence
plays while the rest is still being written. Cancelling the turn (barge-in, hang-up) kills both.

A turn may be started *held* (preemptive generation, `server/voice/preemptive.py`): it writes and
synthesises its reply but queues nothing to the pacer, and a tool call waits, until the session
`release()`s it because the final transcript confirmed the words it answers, or cancels it.

Model tools run inside the LLM stream (`stream_reply(messages, tools)`), each in a greenlet of its
own that a cancelled turn does not kill, so a barge-in never loses a booking half made or its
`tool_calls` row. While a tool runs the LLM time limit is paused, and if it takes longer than
`FILLER_AFTER_SECONDS` with nothing playing, the caller hears the cached filler phrase
(`FILLER_TEXT`) instead of silence.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import gevent
from gevent.event import Event
from gevent.pool import Group
from gevent.queue import Queue

from server.config import Settings
from server.providers.base import LanguageModel, ProviderError, ProviderTimeout, TextToSpeech
from server.voice.audio import split_frames
from server.voice.conversation import SentenceSplitter
from server.voice.pacer import OutboundPacer, PlaybackItem
from server.voice.speech_text import spoken_text

log = logging.getLogger("agentlocator.voice.turns")

APOLOGY_TEXT = "סליחה, הייתה לי תקלה קטנה. אפשר לחזור על זה?"
FILLER_TEXT = "רגע, אני בודקת."
FILLER_AFTER_SECONDS = 0.7  # a tool slower than this would leave the caller in silence
_END = object()  # end of the sentence queue


class PhraseCache:
    """TTS audio of fixed phrases (opening lines, the apology), kept per worker.

    A miss only costs a synthesis, so an in-process cache is fine (state that must hold across
    workers lives in the database, see docs/architecture.md; this doesn't have to).
    """

    def __init__(self, max_entries: int = 256, made: Optional[Callable[[str], Optional[bytes]]] = None):
        self._audio: OrderedDict[str, bytes] = OrderedDict()
        self._max_entries = max_entries
        # Prompts made ahead in the agent's voice (server/voice/prompt_audio.py), read on a miss.
        self._made = made

    def get(self, text: str) -> Optional[bytes]:
        audio = self._audio.get(text)
        if audio is not None:
            self._audio.move_to_end(text)
        elif self._made is not None:
            audio = self._made(text)
            if audio:
                self.put(text, audio)
        return audio or None

    def put(self, text: str, audio: bytes) -> None:
        self._audio[text] = audio
        self._audio.move_to_end(text)
        while len(self._audio) > self._max_entries:
            self._audio.popitem(last=False)


def unexpected(what: str, exc: Exception) -> ProviderError:
    """A provider raised something else than `ProviderError` (a bug or an unwrapped SDK error): log
    it in full, and treat it like any provider failure, so the caller still hears the apology."""
    log.exception("%s failed unexpectedly", what, extra={"event": "provider_unexpected_error", "provider": what})
    return ProviderError(f"{type(exc).__name__}: {exc}")


def synthesize(tts: TextToSpeech, text: str, timeout_seconds: float) -> bytes:
    """TTS within `timeout_seconds`; `ProviderError` on failure, time-out or an empty result."""
    with gevent.Timeout(timeout_seconds, ProviderTimeout(f"TTS gave no audio within {timeout_seconds:g} s")):
        try:
            audio = tts.synthesize(spoken_text(text))  # "₪49.90", "14:30" said in Hebrew words
        except ProviderError:
            raise
        except Exception as exc:
            raise unexpected("tts", exc) from exc
    if not audio:
        raise ProviderError("TTS returned no audio")
    return audio


@dataclass
class TurnServices:
    """What a turn needs from its call: providers, the pacer, the phrase cache and the time limits."""

    llm: LanguageModel
    tts: TextToSpeech
    pacer: OutboundPacer
    phrases: PhraseCache
    settings: Settings
    clock: Callable[[], float] = time.monotonic

    def synthesize(self, text: str) -> bytes:
        return synthesize(self.tts, text, self.settings.tts_timeout_seconds)

    def phrase(self, text: str) -> bytes:
        """Cached audio of a fixed phrase, synthesised on a miss."""
        audio = self.phrases.get(text)
        if audio is None:
            audio = self.synthesize(text)
            self.phrases.put(text, audio)
        return audio


class Turn:
    """`user_text` → the agent's reply. `on_finished(turn)` runs once, when the reply has been heard
    to the end (or failed); a cancelled turn never calls it."""

    def __init__(
        self,
        index: int,
        user_text: str,
        *,
        speech_ended_at: float,
        final_at: float,
        services: TurnServices,
        on_finished: Callable[["Turn"], None],
        held: bool = False,
    ):
        self.index = index
        self.user_text = user_text
        self.speech_ended_at = speech_ended_at
        self.final_at = final_at
        self.first_sentence_at: Optional[float] = None
        self.first_audio_ready_at: Optional[float] = None
        self.reply_done_at: Optional[float] = None
        self.items: list[PlaybackItem] = []
        self.error: Optional[str] = None
        self.apologized = False
        self.goodbye = False
        self.cancelled = False
        self.finished = False
        self.generation_done = False
        self._services = services
        self._on_finished = on_finished
        self._greenlets = Group()
        self._sentence_count = 0
        self.tools: Any = None  # the turn's ToolBox (server/agent/tools.py), if the call has tools
        self.tool_jobs: list[gevent.Greenlet] = []
        self.filler_played = False
        self._deadline: Optional[gevent.Timeout] = None
        # Preemptive generation: while held, audio waits here (never in the pacer) and tools wait
        # for `_released`; `preemptive*` are the figures the session reports for this turn.
        self.held = held
        self._held_audio: list[tuple[str, bytes]] = []
        self._released = Event()
        if not held:
            self._released.set()
        self.generated_chars = 0  # reply text the model has written so far
        self.synthesized_chars = 0
        self.preemptive = "none"  # "used": the reply was written ahead; "dropped": one was thrown away
        self.preemptive_dropped = 0
        self.preemptive_dropped_chars = 0

    # ---- starting --------------------------------------------------------------------------
    def start_reply(self, messages: list[dict[str, Any]], tools: Any = None) -> None:
        """Answer `messages`; `tools` is the turn's ToolBox (None or empty: the model gets no tools)."""
        self.tools = tools if tools else None
        sentences: Queue = Queue()
        writer = self._greenlets.spawn(self._write_reply, messages, sentences)
        self._greenlets.spawn(self._speak, sentences, writer)

    def start_phrase(self, text: str) -> None:
        """Speak a fixed phrase (the opening line) from the phrase cache."""

        def speak() -> None:
            self.first_sentence_at = self._services.clock()
            try:
                self._queue_audio(text, self._services.phrase(text))
            except ProviderError as exc:
                self._generation_ended(f"tts: {exc}")
            else:
                self._generation_ended(None)

        self._greenlets.spawn(speak)

    def cancel(self) -> None:
        self.cancelled = True
        self._held_audio.clear()
        self._greenlets.kill(block=False)

    def release(self) -> None:
        """The final transcript confirmed a held turn: play what is ready, let waiting tools run."""
        if not self.held or self.cancelled:
            return
        self.held = False
        held, self._held_audio = self._held_audio, []
        for text, audio in held:
            self._queue_audio(text, audio)
        self._released.set()
        self._maybe_finish()

    # ---- state -----------------------------------------------------------------------------
    @property
    def heard_text(self) -> str:
        """The agent's words the caller actually heard: sentences whose mark came back."""
        return " ".join(item.text for item in self.items if item.played)

    @property
    def first_frame_at(self) -> Optional[float]:
        return self.items[0].first_sent_at if self.items else None

    def metrics(self) -> dict[str, Any]:
        """The turn's timings in ms (defined in README.md, "Turn metrics"); None where a step didn't happen."""

        def span(start: Optional[float], end: Optional[float]) -> Optional[int]:
            return None if start is None or end is None else max(0, round((end - start) * 1000))

        return {
            "t_audio_ms": span(self.speech_ended_at, self.final_at),
            "t_nlp_ms": span(self.final_at, self.first_sentence_at),
            "t_tts_ms": span(self.first_sentence_at, self.first_audio_ready_at),
            "t_total_ms": span(self.speech_ended_at, self.reply_done_at),
            "t_first_audio_ms": span(self.speech_ended_at, self.first_frame_at),
            "preemptive": self.preemptive,
            "preemptive_dropped": self.preemptive_dropped,
            "preemptive_dropped_chars": self.preemptive_dropped_chars,
        }

    # ---- the two greenlets -----------------------------------------------------------------
    def _write_reply(self, messages: list[dict[str, Any]], sentences: Queue) -> None:
        """LLM deltas → complete sentences on `sentences`; a failure goes on the queue too."""
        splitter = SentenceSplitter()
        stream = None
        try:
            if self.tools is not None:
                stream = self._services.llm.stream_reply(messages, tools=_TurnTools(self, self.tools))
            else:
                stream = self._services.llm.stream_reply(messages)
            for delta in self._timed(stream):
                self.generated_chars += len(delta)
                for sentence in splitter.feed(delta):
                    sentences.put(sentence)
            for sentence in splitter.flush():
                sentences.put(sentence)
            self.goodbye = splitter.saw_end_call or (self.tools is not None and self.tools.context.hang_up_requested)
        except ProviderError as exc:
            sentences.put(exc)
        except Exception as exc:
            sentences.put(unexpected("llm", exc))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            sentences.put(_END)

    def _timed(self, stream) -> Iterator[str]:
        """The LLM's deltas, each within the first-token time limit (a stall mid-reply counts too)."""
        limit = self._services.settings.llm_first_token_timeout_seconds
        deltas = iter(stream)
        while True:
            self._deadline = gevent.Timeout(limit, ProviderTimeout(f"LLM sent nothing for {limit:g} s"))
            self._deadline.start()
            try:
                delta = next(deltas)
            except StopIteration:
                return
            finally:
                self._deadline.close()
                self._deadline = None
            yield delta

    def run_tool(self, toolbox: Any, name: str, arguments_json: str) -> dict[str, Any]:
        """One tool call of the model, run in its own greenlet (a barge-in doesn't kill it: its result
        and row are kept); the LLM time limit waits meanwhile, and a slow tool gets the filler."""
        deadline = self._deadline
        if deadline is not None:
            deadline.cancel()
        if not self._released.is_set():
            # Written ahead of the final transcript: no tool runs on words the caller may not have
            # said. A dropped turn is cancelled while it waits here, so its tool never runs.
            self._released.wait()
        job = gevent.spawn(toolbox.run, name, arguments_json)
        self.tool_jobs.append(job)
        filler = gevent.spawn_later(FILLER_AFTER_SECONDS, self._play_filler)
        self._greenlets.add(filler)  # type: ignore[arg-type]  # a plain greenlet; gevent's stub wants *args
        try:
            return job.get()
        finally:
            filler.kill(block=False)
            if deadline is not None and not self.cancelled:
                deadline.start()  # the next delta gets the whole time limit again

    def _play_filler(self) -> None:
        """The tool is slow and the caller hears nothing: say the filler (once per turn)."""
        if self.cancelled or self.filler_played or self._services.pacer.busy:
            return
        self.filler_played = True
        try:
            audio = self._services.phrase(FILLER_TEXT)
        except ProviderError:
            return  # silence is no worse than before; the answer still comes
        self._queue_audio(FILLER_TEXT, audio)

    def _speak(self, sentences: Queue, writer: gevent.Greenlet) -> None:
        error = None
        for sentence in sentences:
            if sentence is _END:
                break
            if isinstance(sentence, ProviderError):
                error = f"llm: {sentence}"
                break
            if self.first_sentence_at is None:
                self.first_sentence_at = self._services.clock()
            try:
                audio = self._services.synthesize(sentence)
            except ProviderError as exc:
                error = f"tts: {exc}"
                break
            self.synthesized_chars += len(sentence)
            self._queue_audio(sentence, audio)
        if error is None and not self._has_audio and not self.goodbye:
            error = "llm: empty reply"
        if error is not None:
            writer.kill(block=False)  # a TTS failure ends the turn; stop the LLM too
        self._generation_ended(error)

    # ---- shared steps ----------------------------------------------------------------------
    def _queue_audio(self, text: str, audio: bytes) -> None:
        if self.cancelled:
            # `cancel()` kills our greenlets from a hub callback, so a TTS result due in the same
            # loop iteration can still get here after the barge-in's `clear`: queueing it would play
            # the interrupted reply on, and hold back the first frame of the next turn behind it.
            return
        if self.first_audio_ready_at is None:
            self.first_audio_ready_at = self._services.clock()
        if self.held:
            self._held_audio.append((text, audio))
            return
        pacer = self._services.pacer
        item = pacer.item(f"{self.index}.{self._sentence_count}", text, split_frames(audio), self._item_played)
        self._sentence_count += 1
        self.items.append(item)
        pacer.enqueue(item)

    def _generation_ended(self, error: Optional[str]) -> None:
        self.reply_done_at = self._services.clock()
        if error is not None:
            self.error = error
            self.goodbye = False
            apology = self._services.phrases.get(APOLOGY_TEXT)
            if not self._has_audio and apology is not None:
                self.apologized = True
                self._queue_audio(APOLOGY_TEXT, apology)
        self.generation_done = True
        self._maybe_finish()

    @property
    def _has_audio(self) -> bool:
        return bool(self.items or self._held_audio)

    def _item_played(self, _item: PlaybackItem) -> None:
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.finished or self.cancelled or self.held or not self.generation_done:
            return
        if all(item.played for item in self.items):
            self.finished = True
            self._on_finished(self)


class _TurnTools:
    """What the LLM provider is handed: the turn's ToolBox, each call run through `Turn.run_tool`."""

    def __init__(self, turn: Turn, toolbox: Any):
        self._turn = turn
        self._toolbox = toolbox

    def specs(self) -> list[dict[str, Any]]:
        return self._toolbox.specs()

    def run(self, name: str, arguments_json: str) -> dict[str, Any]:
        return self._turn.run_tool(self._toolbox, name, arguments_json)

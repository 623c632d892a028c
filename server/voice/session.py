"""`CallSession`: one live call on one media stream, from Twilio's `start` to its end.

It owns the call's greenlets (pacer, STT reader, database writer, the current turn's two) and its
state: the conversation so far, the turn being spoken, consecutive failures. Everything runs on
one gevent hub, so state changes between two blocking calls are atomic; the rules are:

* A final transcript (or a burst of keypad digits) starts a turn. A turn still running is
  interrupted first.
* Caller speech while agent audio is queued or playing is a barge-in: `clear`, cancel the turn,
  keep only the sentences the caller heard. Speech means `min_speech_ms` of voice on the energy
  VAD, or a non-empty interim transcript; shorter noise doesn't cut the agent off.
* A turn that fails (LLM/TTS error or time-out) is answered with the cached apology; two failed
  turns in a row, or a failure with no apology audio to play, hand the call to voicemail.
* A reply that ends with the goodbye marker, or whose model called `end_call`, hangs up once it
  has been heard.
* Preemptive generation (`server/voice/preemptive.py`, per business): once the VAD has heard
  `PREEMPTIVE_SILENCE_MS` of quiet after an interim transcript, a held turn answers that interim;
  the final transcript releases it (same meaning-bearing words, nothing else happened) or drops it.
  The caller speaking again, a changed interim, keypad digits or the call ending drop it too.
* Each turn gets its own `ToolBox` of the tools the business switched on for calls (the registry
  in `server/agent/tools.py`); a tool's database work runs where the store runs its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import gevent
from gevent.pool import Group
from gevent.queue import JoinableQueue

from server.agent.prompt import opening_line
from server.agent.tools import ToolBox, ToolContext, enabled_tools
from server.config import Settings
from server.logs import log_event
from server.providers.base import Transcript, VoiceProviders
from server.voice.audio import SpeechDetector
from server.voice.conversation import Exchange, llm_messages, render_transcript, system_prompt
from server.voice.pacer import OutboundPacer
from server.voice.preemptive import MAX_ATTEMPTS as PREEMPTIVE_MAX_ATTEMPTS
from server.voice.preemptive import MAX_SPEECH_SECONDS as PREEMPTIVE_MAX_SPEECH_SECONDS
from server.voice.preemptive import meaning_words
from server.voice.protocol import Dtmf, Media, OutboundMessages
from server.voice.store import CallContext, CallStore
from server.voice.stt import SpeechInput
from server.voice.transport import NORMAL_CLOSURE, MediaSocket
from server.voice.turns import PhraseCache, Turn, TurnServices

log = logging.getLogger("agentlocator.voice.session")

MAX_FAILED_TURNS = 2  # consecutive failed turns before the call goes to voicemail
DTMF_PAUSE_SECONDS = 1.5  # keypad digits typed within this gap are one entry; "#" ends it early
INTERNAL_ERROR = 1011


@dataclass
class SessionServices:
    """What every session of a worker shares."""

    settings: Settings
    providers: VoiceProviders
    store: CallStore
    phrases: PhraseCache
    redirect_to_voicemail: Callable[[str, str], bool]  # (call_sid, reason) → accepted by Twilio
    clock: Callable[[], float] = time.monotonic
    jobs: Any = None  # the job queue (server.jobs.JobQueue) the agent's tools hand work to
    app_secret: str = ""  # signs the tokens a tool puts in URLs (a call transfer's)


@dataclass
class Speculation:
    """A held turn answering an interim transcript, and what it assumed."""

    turn: Turn
    words: tuple[str, ...]  # the interim's meaning-bearing words
    history_length: int  # the conversation it was written for


class CallSession:
    def __init__(
        self,
        socket: MediaSocket,
        stream_sid: str,
        context: CallContext,
        services: SessionServices,
        *,
        started_at: float,
    ):
        self.socket = socket
        self.stream_sid = stream_sid
        self.call_sid = context.call_sid
        self.call_id = context.call_id
        self.business_id = context.business.id
        self.started_at = started_at
        self._context = context
        self._services = services
        self._clock = services.clock
        self.pacer = OutboundPacer(socket.send, OutboundMessages(stream_sid), clock=services.clock)
        self.detector = SpeechDetector(min_speech_ms=services.settings.barge_in_min_speech_ms)
        self.stt = SpeechInput(
            services.providers.stt,
            on_transcript=self._on_transcript,
            on_unavailable=lambda why: self._fall_back(f"stt: {why}"),
            quiet_since=lambda: self.detector.last_voice_at,
            call_sid=self.call_sid,
            clock=services.clock,
        )
        self._turn_services = TurnServices(
            llm=services.providers.llm,
            tts=services.providers.tts,
            pacer=self.pacer,
            phrases=services.phrases,
            settings=services.settings,
            clock=services.clock,
        )
        self._tools = enabled_tools(context.business.agent_tools, "call")
        self._system_prompt = system_prompt(context.business, tuple(t.name for t in self._tools))
        self.history: list[Exchange] = list(context.history)
        self._next_index = context.next_turn_index
        self.turn: Optional[Turn] = None
        self._last_final_at = started_at
        self.failures = 0
        self._dtmf_digits: list[str] = []
        self._dtmf_last_at = 0.0
        self._dtmf_timer: Optional[gevent.Greenlet] = None
        self._greenlets = Group()
        self._writes: JoinableQueue = JoinableQueue()
        self.frames_in = 0
        self.barge_ins = 0
        self.redirected = False
        self.hung_up = False
        self.ended = False
        self.end_reason = ""
        # Preemptive generation: the caller turn being transcribed (its latest interim, when its
        # words last changed, when it began) and the held turn answering it, if any.
        self._preemptive = context.business.preemptive_generation
        self._preemptive_silence = services.settings.preemptive_silence_ms / 1000
        self._interim = ""
        self._interim_words: tuple[str, ...] = ()
        self._interim_changed_at = 0.0
        self._utterance_started_at: Optional[float] = None
        self._speculation: Optional[Speculation] = None
        self._speculative_attempts = 0
        self._dropped_generations = 0
        self._dropped_chars = 0

    # ---- life cycle ------------------------------------------------------------------------
    def begin(self) -> None:
        self._greenlets.spawn(self.pacer.run)
        self._greenlets.spawn(self.stt.run)
        self._greenlets.spawn(self._write_loop)
        if self.history:
            log_event(log, "call_resumed", call_sid=self.call_sid, turns=len(self.history))
            return
        # The agent speaks first: the business's opening line, from the phrase cache.
        turn = self._new_turn("", speech_ended_at=self.started_at, final_at=self.started_at)
        turn.start_phrase(opening_line(self._context.business))

    def supersede(self) -> None:
        """Twilio opened another stream for this call: this one stops here."""
        log_event(log, "ws_duplicate_stream", logging.WARNING, call_sid=self.call_sid, old_stream_sid=self.stream_sid)
        self.socket.close(NORMAL_CLOSURE, "replaced by a newer stream for this call")
        self.finish("superseded")

    def finish(self, reason: str) -> None:
        """End the session (idempotent): cancel everything, store the transcript and the end."""
        if self.ended:
            return
        self.ended = True
        self.end_reason = reason
        self._drop_speculation("call ended")
        turn, self.turn = self.turn, None
        if turn is not None:
            turn.cancel()
            self._record(turn, interrupted=True)
        if self._dtmf_timer is not None:
            self._dtmf_timer.kill(block=False)
        self.stt.close()
        self._writes.join()
        self._greenlets.kill(block=False)
        call_ended = reason in {"stop", "socket closed", "agent_goodbye"} and not self.redirected
        try:
            self._services.store.close_stream(
                self.call_id,
                transcript=render_transcript(self.history),
                stream_ended=reason != "superseded",
                call_ended=call_ended,
            )
        except Exception:
            log.exception("call not stored", extra={"event": "call_store_failed", "call_sid": self.call_sid})

    # ---- inbound messages ------------------------------------------------------------------
    def on_media(self, media: Media) -> None:
        """Every 20 ms per call: keep it small."""
        self.frames_in += 1
        now = self._clock()
        if self.detector.feed(media.payload, now):
            self._caller_speaking("vad")
        elif self._interim_words and self._speculation is None:
            self._maybe_speculate(now)
        self.stt.send(media.payload)

    def on_mark(self, name: str) -> None:
        self.pacer.on_mark(name)

    def on_dtmf(self, dtmf: Dtmf) -> None:
        log_event(log, "dtmf", call_sid=self.call_sid, digit=dtmf.digit)
        self._caller_speaking("dtmf")
        self._dtmf_last_at = self._clock()
        if self._dtmf_timer is not None:
            self._dtmf_timer.kill(block=False)
        if dtmf.digit == "#":
            self._keypad_entry_done()
        else:
            self._dtmf_digits.append(dtmf.digit)
            self._dtmf_timer = gevent.spawn_later(DTMF_PAUSE_SECONDS, self._keypad_entry_done)

    def _on_transcript(self, transcript: Transcript) -> None:
        text = transcript.text.strip()
        if not text:
            return
        if not transcript.is_final:
            self._caller_speaking("interim")
            self._on_interim(text)
            return
        now = self._clock()
        last_voice = self.detector.last_voice_at
        # The caller stopped speaking at the last loud frame of this utterance (if the VAD heard one).
        speech_ended_at = last_voice if last_voice is not None and last_voice > self._last_final_at else now
        self._last_final_at = now
        speculation = self._speculation
        if speculation is not None and self._confirms(speculation, text):
            self._speculation = None
            self._adopt(speculation, text, speech_ended_at, now)
        else:
            self._drop_speculation("final differs")  # nothing to drop without a held turn
            self._answer(text, speech_ended_at, now)
        self._end_utterance()

    def _keypad_entry_done(self) -> None:
        self._dtmf_timer = None
        digits, self._dtmf_digits = "".join(self._dtmf_digits), []
        if digits:
            self._answer(f"[The caller pressed on the phone keypad: {digits}]", self._dtmf_last_at, self._clock())

    # ---- turns -----------------------------------------------------------------------------
    def _caller_speaking(self, source: str) -> None:
        if self._speculation is not None and source != "interim":  # an interim is judged by its words
            self._drop_speculation(f"caller spoke ({source})")
        if self.turn is not None and self.pacer.busy:
            self._interrupt(source)

    def _interrupt(self, source: str) -> None:
        """Barge-in: stop the agent, keep what the caller heard."""
        turn, self.turn = self.turn, None
        if turn is None:  # nothing is being said
            return
        turn.cancel()
        cleared = self.pacer.clear()
        self.barge_ins += 1
        log_event(
            log,
            "barge_in",
            call_sid=self.call_sid,
            turn_id=turn.index,
            source=source,
            cleared=cleared,
            heard_sentences=sum(1 for item in turn.items if item.played),
            sentences=len(turn.items),
        )
        self._record(turn, interrupted=True)

    def _answer(self, user_text: str, speech_ended_at: float, final_at: float) -> None:
        if self.ended:
            return
        self._drop_speculation("another turn started")
        if self.turn is not None:
            self._interrupt("final")
        turn = self._new_turn(user_text, speech_ended_at=speech_ended_at, final_at=final_at)
        turn.start_reply(llm_messages(self._system_prompt, self.history, user_text), self._toolbox(turn.index))

    def _toolbox(self, turn_index: int) -> Optional[ToolBox]:
        """The tools of one turn (their rows name the turn), or None when the business has none on."""
        if not self._tools:
            return None
        context = self._context
        services = self._services
        return ToolBox(
            ToolContext(
                business_id=self.business_id,
                channel="call",
                database=services.store.database,
                settings=services.settings,
                offload=services.store.run,
                customer_id=context.customer_id,
                phone=context.caller_number or None,
                call_sid=self.call_sid,
                call_id=self.call_id,
                turn_index=turn_index,
                thread_id=context.thread_id,
                jobs=services.jobs,
                app_secret=services.app_secret,
            ),
            self._tools,
        )

    def _new_turn(self, user_text: str, *, speech_ended_at: float, final_at: float) -> Turn:
        turn = Turn(
            self._next_index,
            user_text,
            speech_ended_at=speech_ended_at,
            final_at=final_at,
            services=self._turn_services,
            on_finished=self._turn_finished,
        )
        self._next_index += 1
        self.turn = turn
        self._report_preemption(turn)
        return turn

    # ---- preemptive generation ---------------------------------------------------------------
    def _on_interim(self, text: str) -> None:
        if not self._preemptive:
            return
        now = self._clock()
        if self._utterance_started_at is None:
            self._utterance_started_at = now
        words = meaning_words(text)
        if words != self._interim_words:
            self._interim_changed_at = now
            if self._speculation is not None:
                self._drop_speculation("interim changed")
        self._interim, self._interim_words = text, words
        if self._speculation is None:
            self._maybe_speculate(now)

    def _maybe_speculate(self, now: float) -> None:
        """Answer the latest interim ahead of the final, if the caller has been quiet long enough."""
        if self.turn is not None or self.ended or self.redirected or self._dtmf_digits:
            return  # the agent's turn is still on (its exchange isn't in the history yet), or digits pend
        if self._speculative_attempts >= PREEMPTIVE_MAX_ATTEMPTS or self._utterance_started_at is None:
            return
        if now - self._utterance_started_at > PREEMPTIVE_MAX_SPEECH_SECONDS:
            return
        last_voice = self.detector.last_voice_at
        # Quiet since the VAD's last loud frame of this utterance; if it heard none (a soft voice),
        # since the interim's words last changed.
        heard = last_voice is not None and last_voice > self._last_final_at
        quiet_since = last_voice if heard and last_voice is not None else self._interim_changed_at
        if now - quiet_since < self._preemptive_silence:
            return
        self._speculative_attempts += 1
        turn = Turn(
            self._next_index,  # taken only if the final confirms it
            self._interim,
            speech_ended_at=quiet_since,
            final_at=now,
            services=self._turn_services,
            on_finished=self._turn_finished,
            held=True,
        )
        self._speculation = Speculation(turn, self._interim_words, len(self.history))
        log_event(
            log, "preemptive_start", call_sid=self.call_sid, turn_id=turn.index, attempt=self._speculative_attempts
        )
        turn.start_reply(llm_messages(self._system_prompt, self.history, self._interim), self._toolbox(turn.index))

    def _confirms(self, speculation: Speculation, final_text: str) -> bool:
        turn = speculation.turn
        return (
            not turn.cancelled
            and turn.error is None  # a failed try is retried on the final rather than apologised for
            and self.turn is None
            and len(self.history) == speculation.history_length
            and meaning_words(final_text) == speculation.words
        )

    def _adopt(self, speculation: Speculation, final_text: str, speech_ended_at: float, final_at: float) -> None:
        """The final said what the held turn answers: it becomes the call's turn and plays now."""
        turn = speculation.turn
        turn.user_text = final_text  # the record keeps Google's final wording
        turn.speech_ended_at, turn.final_at = speech_ended_at, final_at
        self._next_index += 1
        self.turn = turn
        self._report_preemption(turn, used=True)
        log_event(log, "preemptive_used", call_sid=self.call_sid, turn_id=turn.index, chars_ready=turn.generated_chars)
        turn.release()

    def _drop_speculation(self, reason: str) -> None:
        """Throw the held turn away: its greenlets are killed, which closes its LLM stream; its
        audio was never queued, so the caller hears none of it."""
        speculation, self._speculation = self._speculation, None
        if speculation is None:
            return
        turn = speculation.turn
        turn.cancel()
        self._dropped_generations += 1
        self._dropped_chars += turn.generated_chars
        log_event(
            log,
            "preemptive_dropped",
            call_sid=self.call_sid,
            turn_id=turn.index,
            reason=reason,
            llm_chars=turn.generated_chars,
            tts_chars=turn.synthesized_chars,
        )

    def _report_preemption(self, turn: Turn, *, used: bool = False) -> None:
        """The figures of the caller turn just answered go with the agent's turn that answers it."""
        turn.preemptive = "used" if used else "dropped" if self._dropped_generations else "none"
        turn.preemptive_dropped = self._dropped_generations
        turn.preemptive_dropped_chars = self._dropped_chars
        self._dropped_generations = self._dropped_chars = 0

    def _end_utterance(self) -> None:
        self._interim, self._interim_words = "", ()
        self._utterance_started_at = None
        self._speculative_attempts = 0

    def _turn_finished(self, turn: Turn) -> None:
        if self.turn is turn:
            self.turn = None
        self._record(turn, interrupted=False)
        if turn.error is not None:
            self.failures += 1
            log_event(
                log,
                "turn_failed",
                logging.WARNING,
                call_sid=self.call_sid,
                turn_id=turn.index,
                error=turn.error,
                apologized=turn.apologized,
                consecutive=self.failures,
            )
            if not turn.apologized or self.failures >= MAX_FAILED_TURNS:
                self._fall_back(f"{self.failures} failed turn(s), last: {turn.error}")
            return
        self.failures = 0
        if turn.goodbye:
            self._hang_up()

    def _record(self, turn: Turn, *, interrupted: bool) -> None:
        exchange = Exchange(turn.user_text, turn.heard_text)
        self.history.append(exchange)
        metrics = turn.metrics()
        log_event(
            log,
            "turn_metrics",
            call_sid=self.call_sid,
            business_id=self.business_id,
            turn_id=turn.index,
            mode="stream",
            interrupted=interrupted,
            error=turn.error,
            sentences=len(turn.items),
            **metrics,
        )
        self._write(
            self._services.store.record_turn,
            self.call_id,
            turn_index=turn.index,
            exchange=exchange,
            interrupted=interrupted,
            metrics=metrics,
            transcript=render_transcript(self.history),
        )

    # ---- ending the call from our side -----------------------------------------------------
    def _hang_up(self) -> None:
        """The goodbye has been heard: record the outcome (so `stream_ended` hangs up), then close."""
        self.hung_up = True
        self._write(self._services.store.set_outcome, self.call_id, "agent_goodbye")
        self._writes.join()
        log_event(log, "agent_goodbye", call_sid=self.call_sid)
        self.socket.close(NORMAL_CLOSURE, "goodbye")

    def _fall_back(self, reason: str) -> None:
        """The pipeline can't answer: voicemail (Twilio REST redirect; closing the stream if that fails,
        which makes Twilio ask `stream_ended`, whose TwiML records a message)."""
        if self.redirected or self.ended:
            return
        self.redirected = True
        log_event(log, "voice_fallback", logging.ERROR, call_sid=self.call_sid, reason=reason)

        def redirect() -> None:
            if not self._services.redirect_to_voicemail(self.call_sid, reason):
                self.socket.close(INTERNAL_ERROR, "voice pipeline unavailable")

        gevent.spawn(redirect)

    # ---- database writes, in order, off the receive loop -----------------------------------
    def _write(self, fn: Callable, *args, **kwargs) -> None:
        self._writes.put((fn, args, kwargs))

    def _write_loop(self) -> None:
        while True:
            fn, args, kwargs = self._writes.get()
            try:
                fn(*args, **kwargs)
            except Exception:
                log.exception("call write failed", extra={"event": "call_store_failed", "call_sid": self.call_sid})
            finally:
                self._writes.task_done()

"""The live-call engine of one worker: serves each Twilio media stream until it ends.

`VoiceEngine.serve(socket)` is the whole life of one WebSocket: read Twilio's messages, check the
call token on `start`, run a `CallSession`, and finish it on `stop` or when the socket closes.
Malformed input (not JSON, an unknown event, a payload that isn't base64, a message over 64 KiB)
is logged and skipped; the call goes on.

Providers come from the `VOICE_PROVIDERS` plug-in (`server.providers.plugin`). They are built on
first use, in the worker, after fork, because gRPC channels must not cross a fork.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Optional

import gevent

from server.config import Settings
from server.db.engine import Database
from server.lifecycle import Lifecycle
from server.logs import log_event
from server.providers.base import ProviderError
from server.providers.plugin import load_providers
from server.security.call_token import call_token_is_valid
from server.voice.prompt_audio import PromptAudioStore
from server.voice.protocol import Connected, Dtmf, Mark, Media, ProtocolError, Start, Stop, parse_message
from server.voice.session import CallSession, SessionServices
from server.voice.store import TRANSFERRED, CallStore
from server.voice.transport import POLICY_VIOLATION, ConnectionClosed, MediaSocket
from server.voice.turns import APOLOGY_TEXT, FILLER_TEXT, PhraseCache, synthesize
from server.voice.watchdog import redirect_to_voicemail

log = logging.getLogger("agentlocator.voice.engine")

LOGGED_BAD_MESSAGES = 20  # per stream; after that they are only counted (ws_end `malformed`)
# On shutdown, calls still going this long before the grace period runs out are ended by us, so
# each still stores its turns and logs its ws_end before gunicorn kills the worker.
END_CALLS_BEFORE_GRACE_ENDS = 2.0
GOING_AWAY = 1001  # RFC 6455 close code: the server is going down


class VoiceEngine:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        app_secret: str,
        lifecycle: Optional[Lifecycle] = None,
        jobs: Any = None,  # the job queue the agent's tools hand work to (a booking's WhatsApp notice)
    ):
        self.settings = settings
        self._jobs = jobs
        self._app_secret = app_secret
        self._store = CallStore(database)
        # With Google TTS, the opening lines and the apology are made ahead, off the call path.
        prompts = PromptAudioStore.for_settings(settings) if settings.tts_configured else None
        self._phrases = PhraseCache(made=prompts.get if prompts is not None else None)
        self._services: Optional[SessionServices] = None
        self._warming_apology: Optional[gevent.Greenlet] = None
        # Process-local: a duplicate stream landing on another worker can't be closed from here, but
        # it reads the conversation so far from the database, and Twilio drops the old one itself.
        self.sessions: dict[str, CallSession] = {}
        if lifecycle is not None:
            lifecycle.on_drain(self.drain)

    def drain(self) -> None:
        """Shutdown has begun: live calls go on for the grace period (SHUTDOWN_GRACE_SECONDS), and those
        still going just before it runs out are ended here (`end_live_calls`)."""
        delay = max(0.0, self.settings.shutdown_grace_seconds - END_CALLS_BEFORE_GRACE_ENDS)
        log_event(log, "voice_draining", live_calls=len(self.sessions), end_calls_in_s=delay)
        gevent.spawn_later(delay, self.end_live_calls)

    def end_live_calls(self) -> None:
        """End every live call of this worker as the stream's end would: its turns (the one under way
        as interrupted) and transcript stored, its socket closed with 1001, which makes Twilio ask
        `stream_ended` (another worker's voicemail TwiML), and `ws_end` logged by its `serve`."""
        for session in list(self.sessions.values()):
            log_event(log, "call_ended_for_shutdown", call_sid=session.call_sid)
            session.finish("shutdown")
            session.socket.close(GOING_AWAY, "the server is shutting down")

    def services(self) -> SessionServices:
        if self._services is None:
            self._services = SessionServices(
                settings=self.settings,
                providers=load_providers(self.settings),
                store=self._store,
                phrases=self._phrases,
                redirect_to_voicemail=self._redirect,
                jobs=self._jobs,
                app_secret=self._app_secret,
            )
            # What is alive now (the app, SQLAlchemy, the vendor SDKs: ~180k objects) lives as long
            # as the worker. Taking it out of the collector's sight makes a full collection during
            # calls take ~2 ms instead of stalling every call's audio for 100-300 ms.
            gc.freeze()
        return self._services

    def _redirect(self, call_sid: str, reason: str) -> bool:
        if self._being_transferred(call_sid):
            # The call's TwiML is now the transfer's <Dial>: a voicemail redirect would cut it off.
            log_event(log, "voicemail_redirect_skipped", call_sid=call_sid, reason=reason, why="transferred")
            return True
        return redirect_to_voicemail(self.settings, call_sid, reason)

    def _being_transferred(self, call_sid: str) -> bool:
        try:
            return self._store.outcome(call_sid) == TRANSFERRED
        except Exception:  # the database: the voicemail redirect is the safer guess
            return False

    # ---- one WebSocket ---------------------------------------------------------------------
    def handle(self, socket: MediaSocket, *, refusal: str = "") -> None:
        """The whole WebSocket once the handshake is done; returns when it is closed, never raises.

        `refusal` is why the upgrade was not acceptable (a bad signature), or "" to serve the call.
        """
        try:
            if refusal:
                log_event(log, "ws_rejected", logging.WARNING, reason=refusal)
                socket.close(POLICY_VIOLATION, refusal)
            else:
                self.serve(socket)
        except Exception:  # a bug, not the caller's doing: an HTTP 500 can't be sent on a WebSocket anyway
            log.exception("media stream failed", extra={"event": "ws_engine_error"})
        finally:
            socket.close()

    def serve(self, socket: MediaSocket) -> None:
        opened_at = time.monotonic()
        session: Optional[CallSession] = None
        call_sid = ""
        reason = "socket closed"
        malformed = 0
        start_deadline = opened_at + self.settings.ws_start_timeout_seconds
        try:
            while True:
                if session is None:
                    # Twilio sends `start` right after `connected`. A socket that doesn't is no call,
                    # and without a deadline it would hold a connection and a greenlet for good.
                    left = start_deadline - time.monotonic()
                    if left <= 0:
                        reason = "no_start"
                        log_event(
                            log,
                            "ws_rejected",
                            logging.WARNING,
                            reason=f"no start message within {self.settings.ws_start_timeout_seconds:g} s",
                        )
                        socket.close(POLICY_VIOLATION, "no start message")
                        break
                    raw = socket.receive(left)
                else:
                    raw = socket.receive()
                if raw is None:
                    continue
                try:
                    message = parse_message(raw)
                except ProtocolError as exc:
                    malformed += 1
                    if malformed <= LOGGED_BAD_MESSAGES:
                        log_event(log, "ws_message_skipped", logging.WARNING, call_sid=call_sid, reason=str(exc)[:200])
                    continue
                if isinstance(message, Media):
                    if session is not None:
                        session.on_media(message)
                elif isinstance(message, Mark):
                    if session is not None:
                        session.on_mark(message.name)
                elif isinstance(message, Stop):
                    reason = "stop"
                    break
                elif isinstance(message, Start):
                    if session is not None:
                        log_event(
                            log,
                            "ws_message_skipped",
                            logging.WARNING,
                            call_sid=call_sid,
                            reason="a second start on the same stream",
                        )
                        continue
                    call_sid = message.call_sid
                    session = self._start(socket, message)
                    if session is None:
                        reason = "rejected"
                        break
                elif isinstance(message, Dtmf):
                    if session is not None:
                        session.on_dtmf(message)
                elif isinstance(message, Connected):
                    log_event(log, "ws_twilio_connected", protocol=message.protocol, version=message.version)
        except ConnectionClosed:
            pass
        finally:
            if session is not None:
                if session.hung_up:
                    reason = "agent_goodbye"
                session.finish(reason)
                if self.sessions.get(session.call_sid) is session:
                    del self.sessions[session.call_sid]
            log_event(
                log,
                "ws_end",
                call_sid=call_sid,
                reason=session.end_reason if session else reason,
                duration_s=round(time.monotonic() - opened_at, 2),
                frames_in=session.frames_in if session else 0,
                frames_out=session.pacer.frames_sent if session else 0,
                clears=session.pacer.clears_sent if session else 0,
                pacer_underruns=session.pacer.underruns if session else 0,
                barge_ins=session.barge_ins if session else 0,
                turns=len(session.history) if session else 0,
                stt_restarts=session.stt.restarts if session else 0,
                malformed=malformed,
            )

    def _start(self, socket: MediaSocket, start: Start) -> Optional[CallSession]:
        started_at = time.monotonic()
        if not call_token_is_valid(self._app_secret, start.call_sid, start.custom_parameters.get("token")):
            self._reject(socket, start, "the call token is missing or wrong")
            return None
        older = self.sessions.get(start.call_sid)
        if older is not None:
            older.supersede()
        context = self._store.open_stream(
            start.call_sid, start.stream_sid, start.custom_parameters.get("business_id", "")
        )
        if context is None:
            self._reject(socket, start, "no such call")
            return None
        log_event(
            log,
            "ws_start",
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            business_id=context.business.id,
            resumed=bool(context.history),
            tracks=list(start.tracks),
        )
        try:
            services = self.services()
        except ProviderError as exc:
            log_event(log, "voice_fallback", logging.ERROR, call_sid=start.call_sid, reason=str(exc)[:300])
            if not self._redirect(start.call_sid, "voice providers unavailable"):
                socket.close(1011, "voice pipeline unavailable")
            return None
        self._warm_apology(services)
        session = CallSession(socket, start.stream_sid, context, services, started_at=started_at)
        self.sessions[start.call_sid] = session
        session.begin()
        return session

    def _reject(self, socket: MediaSocket, start: Start, why: str) -> None:
        log_event(log, "ws_rejected", logging.WARNING, call_sid=start.call_sid, stream_sid=start.stream_sid, reason=why)
        socket.close(POLICY_VIOLATION, why)

    def _warm_apology(self, services: SessionServices) -> None:
        """Synthesize the apology (and the filler a slow tool plays) once per worker, ahead of need:
        when TTS is down it can't be made then, and a filler synthesised on demand comes late."""
        if self._phrases.get(APOLOGY_TEXT) is not None and self._phrases.get(FILLER_TEXT) is not None:
            return
        if self._warming_apology is not None and not self._warming_apology.dead:
            return

        def warm() -> None:
            for text in (APOLOGY_TEXT, FILLER_TEXT):
                if self._phrases.get(text) is not None:
                    continue
                try:
                    self._phrases.put(text, synthesize(services.providers.tts, text, self.settings.tts_timeout_seconds))
                except ProviderError as exc:
                    log_event(log, "apology_not_cached", logging.WARNING, phrase=text, error=str(exc)[:200])

        self._warming_apology = gevent.spawn(warm)

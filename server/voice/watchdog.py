"""The call watchdog: a caller whose media stream never starts ends up recording a message.

`start_watchdog` is armed when `incoming_call` serves the `<Connect><Stream>` TwiML: a background
job (`call_watchdog`) scheduled `WATCHDOG_SECONDS` later, so it survives a restart of the web worker
and runs in the jobs worker, never on a call's gevent loop. It reads the call from the database (the
WebSocket may have landed on another worker or instance, which records `calls.stream_started_at` on
`start`) and, when no stream has started and the call is still live, redirects the call to the
voicemail TwiML through Twilio's REST API. It never raises.

`redirect_to_voicemail` is also what the live engine calls when the stream dies early or the
pipeline keeps failing.
"""

from __future__ import annotations

import logging

import requests

from server.config import Settings
from server.db.dao_crm import audit, call_by_sid
from server.db.engine import Database
from server.errors import DomainError
from server.jobs import JobContext, JobQueue, job
from server.logs import log_event
from server.providers.twilio_rest import TwilioException, TwilioNotConfigured, TwilioRestException, twilio_client
from server.voice import prompt_audio
from server.voice.twiml import voicemail_twiml

log = logging.getLogger("agentlocator.voice.watchdog")

FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# 20404: the call no longer exists; 21220: "Call is not in-progress. Cannot redirect."
CALL_ALREADY_OVER_CODES = frozenset({20404, 21220})


def start_watchdog(jobs: JobQueue, settings: Settings, call_sid: str) -> None:
    try:
        jobs.enqueue("call_watchdog", f"call_watchdog:{call_sid}", call_sid, delay=settings.watchdog_seconds)
    except DomainError:  # the queue is down (logged): the call goes on, without its safety net
        pass


@job("call_watchdog")
def _watchdog_job(ctx: JobContext, call_sid: str) -> None:
    check_stream_started(ctx.database, ctx.settings, call_sid)


def check_stream_started(database: Database, settings: Settings, call_sid: str) -> bool:
    """Redirect the call to voicemail unless its stream started or it is over. True when redirected."""
    try:
        with database.scope() as session:
            call = call_by_sid(session, call_sid)
            if call is None:
                log_event(log, "watchdog_call_missing", logging.WARNING, call_sid=call_sid)
                return False
            if call.stream_started_at is not None:
                log_event(log, "watchdog_stream_ok", logging.DEBUG, call_sid=call_sid)
                return False
            if call.status in FINAL_CALL_STATUSES or call.ended_at is not None:
                log_event(log, "watchdog_call_over", call_sid=call_sid, status=call.status)
                return False
            if call.stream_ended_at is not None:  # `stream_ended` already answered the voicemail TwiML
                log_event(log, "watchdog_stream_ended", call_sid=call_sid)
                return False
            business_id = call.business_id
        if not redirect_to_voicemail(settings, call_sid, "stream_not_started"):
            return False
        with database.scope() as session:
            audit(
                session,
                business_id,
                "system",
                "call.redirected_to_voicemail",
                "call",
                call_sid,
                reason="stream_not_started",
                after_seconds=settings.watchdog_seconds,
            )
        return True
    except Exception:  # a timer must never take the worker down
        log.exception("watchdog failed", extra={"event": "watchdog_error", "call_sid": call_sid})
        return False


def redirect_to_voicemail(settings: Settings, call_sid: str, reason: str) -> bool:
    """Replace the live call's TwiML with the voicemail fallback. True when Twilio accepted it.

    Failures are logged, never raised.
    """
    try:
        twiml = voicemail_twiml(settings.base_url, prompt_audio.fallback_path(settings))
        twilio_client(settings).calls(call_sid).update(twiml=twiml)
    except TwilioRestException as exc:
        over = exc.code in CALL_ALREADY_OVER_CODES
        log_event(
            log,
            "voicemail_redirect_skipped" if over else "voicemail_redirect_failed",
            logging.INFO if over else logging.ERROR,
            call_sid=call_sid,
            reason=reason,
            twilio_code=exc.code,
            http_status=exc.status,
        )
        return False
    except (TwilioNotConfigured, TwilioException, requests.RequestException) as exc:
        log_event(
            log,
            "voicemail_redirect_failed",
            logging.ERROR,
            call_sid=call_sid,
            reason=reason,
            error=type(exc).__name__,
            detail=str(exc)[:200],
        )
        return False
    log_event(log, "voicemail_redirect", logging.WARNING, call_sid=call_sid, reason=reason)
    return True

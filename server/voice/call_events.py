"""What the Twilio Voice webhooks do to a call: create it, answer it with TwiML, record its stream
and status changes, close it, and keep its voicemail.

Each function takes the worker's `CallDesk` (settings, database, secrets, lifecycle, transcriber),
the request's database session and Twilio's form fields, and returns the TwiML to answer (or
nothing, for a status callback). The session is the request's: what these functions change is
committed when the webhook answers, except where a function commits itself and says why.

Every one is idempotent: Twilio retries, and a replay must not duplicate a call, close it twice or
store a voicemail twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping, Optional

from sqlalchemy.orm import Session
from twilio.twiml.voice_response import VoiceResponse

from server.agent.prompt import opening_line
from server.config import Settings
from server.db.dao_crm import audit, business_by_number, call_by_sid, create_call, insert_message
from server.db.engine import Database, database_unavailable
from server.db.models import Call, Thread, string_length, utcnow
from server.errors import DomainError, Problem
from server.jobs import JobContext, JobQueue, job
from server.lifecycle import Lifecycle
from server.logs import log_event
from server.phones import try_e164
from server.providers.base import VoicemailTranscriber
from server.security.call_token import call_token
from server.text import storable_text
from server.voice import prompt_audio
from server.voice.store import TRANSFERRED
from server.voice.twiml import hangup_twiml, stream_twiml, unknown_number_twiml, voicemail_twiml
from server.voice.voicemail import transcribe_voicemail_later
from server.voice.watchdog import FINAL_CALL_STATUSES, start_watchdog

log = logging.getLogger("agentlocator.voice.webhooks")

PREVIEW_CALL_SID = "CA" + "0" * 32
MAX_RECORDING_SID = string_length(Call, "recording_sid")
MAX_RECORDING_URL = string_length(Call, "recording_url")
PREVIEW_BUSINESS_ID = "preview"


@dataclass(frozen=True)
class CallDesk:
    """What the call webhooks use of the worker."""

    settings: Settings
    database: Database
    app_secret: str
    lifecycle: Lifecycle
    jobs: JobQueue  # the watchdog and voicemail transcription run as background jobs
    transcriber: Optional[VoicemailTranscriber] = None

    @property
    def live_ai_available(self) -> bool:
        """Live AI calls need speech and language credentials, and a worker that isn't shutting down."""
        return self.settings.voice_ai_ready and not self.lifecycle.draining


def incoming_call(desk: CallDesk, session: Session, form: Mapping[str, str]) -> str:
    """A call to one of our numbers: record it and connect it to the media stream (or to voicemail).

    When the database can't be reached the caller still hears the apology and can leave a message
    (the voicemail TwiML, which needs no database), instead of Twilio's "application error".
    """
    call_sid = form.get("CallSid", "")
    if not call_sid:
        raise DomainError(Problem.INVALID, "missing_call_sid", "CallSid is required", field="CallSid")
    try:
        return _answer_call(desk, session, form, call_sid)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        session.rollback()
        log_event(log, "incoming_call_database_unavailable", logging.ERROR, call_sid=call_sid, error=type(exc).__name__)
        # The call is recorded once the database is back, so its voicemail has a call to land on.
        try:
            queue_callback(desk.jobs, "incoming_call", form, exc)
        except DomainError:  # the queue is down too (logged): the caller still gets the voicemail TwiML
            pass
        return voicemail_twiml(desk.settings.base_url, prompt_audio.fallback_path(desk.settings))


def _answer_call(desk: CallDesk, session: Session, form: Mapping[str, str], call_sid: str) -> str:
    to_number = try_e164(form.get("To"))
    business = business_by_number(session, to_number, "voice") if to_number else None
    if to_number is None or business is None:
        log_event(log, "incoming_call_unknown_number", logging.WARNING, call_sid=call_sid, to=form.get("To"))
        return unknown_number_twiml()
    live = desk.live_ai_available
    # Before any write: a prompt made on first use may wait for TTS, and must not hold a transaction open.
    played = _prompt_path(desk, live, business.greeting_enabled)
    _, created = create_call(
        session,
        business.id,
        call_sid=call_sid,
        to_number=to_number,
        from_number=try_e164(form.get("From")) or "",
        status=(form.get("CallStatus") or "ringing")[:24],
    )
    answer = _call_answer(desk, live, business.id, business.greeting_enabled, call_sid, played)
    # The watchdog reads the call from the database, possibly before the request would commit.
    session.commit()
    if live:  # the engine's opening line and apology, made ahead for this business's next calls
        prompt_audio.queue_missing_prompts(desk.jobs, desk.settings, opening_line(business))
    if created and live:
        start_watchdog(desk.jobs, desk.settings, call_sid)
    log_event(
        log,
        "incoming_call",
        call_sid=call_sid,
        business_id=business.id,
        replay=not created,
        mode="ai" if live else "voicemail",
        greeting=business.greeting_enabled,
    )
    return answer


def preview_incoming_call(desk: CallDesk, session: Session, to: Optional[str]) -> str:
    """What `incoming_call` would answer for a call to `to` (or to a generic business), writing nothing."""
    live = desk.live_ai_available
    if to is None:
        return _call_answer(desk, live, PREVIEW_BUSINESS_ID, False, PREVIEW_CALL_SID)
    to_number = try_e164(to)
    if to_number is None:
        raise DomainError(
            Problem.INVALID, "invalid_phone", "`to` must be a phone number such as +97231234567", field="to"
        )
    business = business_by_number(session, to_number, "voice")
    if business is None:
        return unknown_number_twiml()
    return _call_answer(desk, live, business.id, business.greeting_enabled, PREVIEW_CALL_SID)


def _prompt_path(desk: CallDesk, live: bool, greeting: bool) -> str:
    """What the answer plays first: the voicemail prompt, the greeting, or nothing ("")."""
    if not live:
        return prompt_audio.fallback_path(desk.settings, desk.jobs)
    return prompt_audio.greeting_path(desk.settings, desk.jobs) if greeting else ""


def _call_answer(
    desk: CallDesk, live: bool, business_id: int | str, greeting: bool, call_sid: str, played: Optional[str] = None
) -> str:
    """The stream TwiML, or straight to voicemail when live AI calls aren't available."""
    base_url = desk.settings.base_url
    if played is None:
        played = _prompt_path(desk, live, greeting)
    if not live:
        return voicemail_twiml(base_url, played)
    return stream_twiml(
        base_url,
        business_id=business_id,
        call_sid=call_sid,
        token=call_token(desk.app_secret, call_sid),
        greeting=greeting,
        greeting_audio_path=played,
    )


# Twilio's `StreamEvent`s. A stream that stopped or failed stays so: a late or replayed
# `stream-started` (callbacks may arrive out of order) never brings it back.
STREAM_EVENTS = ("stream-started", "stream-stopped", "stream-error")
FINAL_STREAM_EVENTS = frozenset({"stream-stopped", "stream-error"})


def record_stream_status(session: Session, read_form: Callable[[], Mapping[str, str]]) -> None:
    """Twilio's `<Stream statusCallback>` (signed): record the stream's state. Never raises.

    Twilio would log a webhook failure for the call on any error answer, so an odd body or a
    database hiccup is logged and swallowed. It doesn't count as a stream start for the watchdog:
    only the token-checked WebSocket does. It never overwrites a final state: not a stream that
    stopped or failed, nor anything of a call that is over (except to say how its stream ended).
    """
    try:
        form = read_form()
        call_sid, event, error = form.get("CallSid", ""), form.get("StreamEvent", ""), form.get("StreamError", "")
        log_event(
            log,
            "stream_status",
            call_sid=call_sid[:64],
            stream_sid=form.get("StreamSid", "")[:64],
            stream_event=event[:24],
            stream_error=error[:500],
        )
        call = call_by_sid(session, call_sid) if call_sid else None
        if call is None or event not in STREAM_EVENTS:
            return
        call_over = call.status in FINAL_CALL_STATUSES or call.ended_at is not None
        if call.stream_status in FINAL_STREAM_EVENTS or (call_over and event not in FINAL_STREAM_EVENTS):
            log_event(
                log,
                "stream_status_ignored",
                call_sid=call.call_sid,
                stream_event=event,
                stream_status=call.stream_status,
                call_status=call.status,
            )
            return
        call.stream_status = event
        call.stream_sid = storable_text(form.get("StreamSid", ""))[:64] or call.stream_sid
        if error:
            call.stream_error = storable_text(error)[:2000]
        session.commit()
    except Exception:
        session.rollback()
        log.exception("stream_status not recorded", extra={"event": "stream_status_error"})


def stream_ended(desk: CallDesk, session: Session, form: Mapping[str, str]) -> str:
    """`<Connect action>`: the media stream is over. Hang up after a goodbye, else take a message."""
    call_sid = form.get("CallSid", "")
    call = call_by_sid(session, call_sid) if call_sid else None
    if call is not None and call.stream_ended_at is None:
        call.stream_ended_at = utcnow()
    said_goodbye = call is not None and call.outcome == "agent_goodbye"
    if call is not None and call.outcome == TRANSFERRED:
        # Twilio runs the transfer's TwiML, which the REST update put in place of `<Connect>`; should
        # it still ask here, nothing is added (no voicemail over the ringing).
        log_event(log, "stream_ended", call_sid=call_sid, known_call=True, next="transfer")
        return VoiceResponse().to_xml()
    log_event(
        log,
        "stream_ended",
        call_sid=call_sid,
        known_call=call is not None,
        next="hangup" if said_goodbye else "voicemail",
    )
    if said_goodbye:
        return hangup_twiml()
    return voicemail_twiml(desk.settings.base_url, prompt_audio.fallback_path(desk.settings, desk.jobs))


# ---- status callbacks, now or (while the database is away) from the job queue -------------------
CALLBACK_JOB = "voice_callback"
# A queued callback that keeps failing once the database is back (not while it is away: that spends
# no attempts; a voicemail whose call is itself still queued does) is retried for about half an hour.
CALLBACK_ATTEMPTS = 10


def accept_callback(desk: CallDesk, session: Session, callback: str, form: Mapping[str, str]) -> None:
    """Apply Twilio's `callback` ("call_status" or "recording_status") now and commit, or, when the
    database can't be reached, keep the signed form in the job queue (whose store doesn't depend on
    the database) to apply once it is back: Twilio gets its answer either way and the voicemail still
    reaches the CRM. Raises DomainError(UNAVAILABLE) only when the queue can't be reached either."""
    try:
        CALLBACKS[callback](desk.jobs, desk.transcriber, session, form, False)
        session.commit()
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        session.rollback()
        queue_callback(desk.jobs, callback, form, exc)


def queue_callback(jobs: JobQueue, callback: str, form: Mapping[str, str], exc: Exception) -> None:
    fields = {name: form.get(name, "") for name in form.keys()}  # a plain dict: it is pickled
    raw = json.dumps([callback, fields], sort_keys=True).encode("utf-8", "replace")
    key = f"{CALLBACK_JOB}:{callback}:{hashlib.sha256(raw).hexdigest()}"  # a redelivery is the same job
    jobs.enqueue(CALLBACK_JOB, key, callback, fields)
    log_event(
        log,
        "voice_callback_queued",
        logging.WARNING,
        callback=callback,
        key=key,
        call_sid=fields.get("CallSid", "")[:64],
        error=type(exc).__name__,
    )


@job(CALLBACK_JOB, attempts=CALLBACK_ATTEMPTS)
def _queued_callback_job(ctx: JobContext, callback: str, fields: dict) -> None:
    with ctx.database.scope() as session:
        CALLBACKS[callback](ctx.services.jobs, ctx.services.voicemail_transcriber, session, fields, True)


def _record_call_later(
    jobs: JobQueue, transcriber: Optional[VoicemailTranscriber], session: Session, form: Mapping[str, str], queued: bool
) -> None:
    """A call answered with the voicemail TwiML while the database was away, recorded afterwards."""
    call_sid, to_number = form.get("CallSid", ""), try_e164(form.get("To"))
    business = business_by_number(session, to_number, "voice") if to_number else None
    if not call_sid or business is None:
        return
    _, created = create_call(
        session,
        business.id,
        call_sid=call_sid,
        to_number=to_number or "",
        from_number=try_e164(form.get("From")) or "",
        status=(form.get("CallStatus") or "ringing")[:24],
    )
    log_event(log, "incoming_call_recorded_late", call_sid=call_sid, business_id=business.id, replay=not created)


def _call_status(
    jobs: JobQueue, transcriber: Optional[VoicemailTranscriber], session: Session, form: Mapping[str, str], queued: bool
) -> None:
    if queued:
        _call_recorded(session, form.get("CallSid", ""))
    record_call_status(session, form)


def _recording_status(
    jobs: JobQueue, transcriber: Optional[VoicemailTranscriber], session: Session, form: Mapping[str, str], queued: bool
) -> None:
    if queued:
        _call_recorded(session, form.get("CallSid", ""))
    store_voicemail_with(jobs, transcriber, session, form)


def _call_recorded(session: Session, call_sid: str) -> None:
    """A queued callback may run before its call (queued too, in the same outage) is recorded: then
    it is tried again later, as a failed attempt."""
    if call_sid and call_by_sid(session, call_sid) is None:
        raise DomainError(Problem.CONFLICT, "call_not_recorded_yet", "the callback's call is not recorded yet")


CALLBACKS: dict[str, Callable[[JobQueue, Optional[VoicemailTranscriber], Session, Mapping[str, str], bool], None]] = {
    "incoming_call": _record_call_later,
    "call_status": _call_status,
    "recording_status": _recording_status,
}


def record_call_status(session: Session, form: Mapping[str, str]) -> None:
    """Twilio's call status callback: follow the call's status and close it once, on the first final one."""
    call_sid, status = form.get("CallSid", ""), (form.get("CallStatus") or "")[:24]
    call = call_by_sid(session, call_sid) if call_sid else None
    if call is None or not status:
        log_event(log, "call_status_ignored", logging.WARNING, call_sid=call_sid, status=status)
        return
    if call.status in FINAL_CALL_STATUSES:  # closed already: a replay or a late, out-of-order event
        return
    call.status = status
    if status in FINAL_CALL_STATUSES:
        call.ended_at = twilio_timestamp(form.get("Timestamp")) or utcnow()
        call.duration_seconds = _seconds(form.get("CallDuration"))
        audit(
            session,
            call.business_id,
            "twilio",
            "call.ended",
            "call",
            call.id,
            call_sid=call_sid,
            status=status,
            duration_seconds=call.duration_seconds,
        )
    log_event(log, "call_status", call_sid=call_sid, status=status, duration_seconds=call.duration_seconds)


def store_voicemail(desk: CallDesk, session: Session, form: Mapping[str, str]) -> None:
    """The voicemail is ready: keep it on the call and as a message in the caller's voice thread,
    then have it transcribed (once per recording)."""
    store_voicemail_with(desk.jobs, desk.transcriber, session, form)


def store_voicemail_with(
    jobs: JobQueue, transcriber: Optional[VoicemailTranscriber], session: Session, form: Mapping[str, str]
) -> None:
    """`store_voicemail`, given only what it uses of the worker (a queued callback has no CallDesk)."""
    call_sid, recording_sid, recording_url = (
        form.get("CallSid", ""),
        form.get("RecordingSid", ""),
        form.get("RecordingUrl", ""),
    )
    recording_state = form.get("RecordingStatus", "completed")
    call = call_by_sid(session, call_sid) if call_sid else None
    if (
        call is None
        or recording_state != "completed"
        or not (recording_sid and recording_url)
        or len(recording_sid) > MAX_RECORDING_SID
        or len(recording_url) > MAX_RECORDING_URL
    ):
        log_event(
            log,
            "recording_status_ignored",
            logging.WARNING,
            call_sid=call_sid,
            recording_sid=recording_sid,
            recording_status=recording_state,
            known_call=call is not None,
        )
        return
    new_recording = call.recording_sid != recording_sid
    call.recording_sid = recording_sid
    call.recording_url = recording_url
    call.outcome = call.outcome or "voicemail"
    created = False
    thread = session.get(Thread, call.thread_id) if call.thread_id is not None else None
    if thread is not None:
        _, created = insert_message(
            session,
            thread,
            direction="in",
            kind="voicemail",
            provider="twilio",
            provider_message_id=recording_sid,
            call_id=call.id,
            media=[
                {
                    "url": recording_url,
                    "content_type": "audio/x-wav",
                    "duration_seconds": _seconds(form.get("RecordingDuration")),
                }
            ],
        )
    # The transcription reads the voicemail message back in its own session.
    session.commit()
    log_event(
        log,
        "voicemail_stored",
        call_sid=call_sid,
        recording_sid=recording_sid,
        replay=not new_recording,
        new_message=created,
    )
    if new_recording:
        transcribe_voicemail_later(jobs, transcriber, call_sid, recording_url)


def _seconds(raw: Optional[str]) -> Optional[int]:
    """Twilio's `CallDuration`/`RecordingDuration`, or None for anything but a plausible count of
    seconds (`str.isdigit` alone takes "²", which `int` refuses, and digits no column holds)."""
    if raw and raw.isascii() and raw.isdigit() and len(raw) <= 9:
        return int(raw)
    return None


def twilio_timestamp(raw: Optional[str]) -> Optional[datetime]:
    """Twilio's `Timestamp` parameter (RFC 2822), as an aware UTC datetime."""
    if not raw:
        return None
    try:
        parsed = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

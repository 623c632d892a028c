"""Twilio Voice webhooks (docs/architecture.md, "A call"): TwiML for incoming calls, stream and call status,
and the voicemail fallback.

Every webhook except `stream_status` is Twilio-signed. Every one is idempotent: Twilio retries, and
a replay must not duplicate a call, close it twice or store a voicemail twice.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from flask import Blueprint, Response, current_app, request

from server.db.dao_crm import audit, business_by_number, call_by_sid, create_call, insert_message
from server.db.models import Thread, utcnow
from server.logs import log_event
from server.phones import try_e164
from server.routes import db_session, settings
from server.security.call_token import call_token
from server.security.twilio_signature import require_twilio_signature
from server.voice.twiml import hangup_twiml, stream_twiml, unknown_number_twiml, voicemail_twiml
from server.voice.voicemail import transcribe_voicemail_later
from server.voice.watchdog import FINAL_CALL_STATUSES, start_watchdog
from server.web import ApiError

bp = Blueprint("twilio_voice", __name__)
log = logging.getLogger("agentlocator.voice.webhooks")

PREVIEW_CALL_SID = "CA" + "0" * 32
PREVIEW_BUSINESS_ID = "preview"


def _twiml(xml: str) -> Response:
    return Response(xml, mimetype="text/xml")


def _no_content() -> Response:
    return Response(status=204)


def _live_ai_available() -> bool:
    """Live AI calls need speech and language credentials, and a worker that isn't shutting down."""
    return settings().voice_ai_ready and not current_app.extensions["lifecycle"].draining


def _call_answer(business_id: int | str, greeting: bool, call_sid: str) -> str:
    """The stream TwiML, or straight to voicemail when live AI calls aren't available."""
    cfg = settings()
    if not _live_ai_available():
        return voicemail_twiml(cfg.base_url)
    return stream_twiml(cfg.base_url, business_id=business_id, call_sid=call_sid,
                        token=call_token(current_app.config["APP_SECRET"], call_sid), greeting=greeting)


@bp.post("/webhook/incoming_call")
@require_twilio_signature
def incoming_call() -> Response:
    form = request.form
    call_sid = form.get("CallSid", "")
    if not call_sid:
        raise ApiError(400, "missing_call_sid", "CallSid is required")
    to_number = try_e164(form.get("To"))
    session = db_session()
    business = business_by_number(session, to_number, "voice") if to_number else None
    if business is None:
        log_event(log, "incoming_call_unknown_number", logging.WARNING, call_sid=call_sid, to=form.get("To"))
        return _twiml(unknown_number_twiml())
    call, created = create_call(session, business.id, call_sid=call_sid, to_number=to_number,
                                from_number=try_e164(form.get("From")) or "",
                                status=(form.get("CallStatus") or "ringing")[:24])
    answer = _call_answer(business.id, business.greeting_enabled, call_sid)
    cfg = settings()
    # The watchdog reads the call from the database, possibly before this request would commit.
    session.commit()
    live = _live_ai_available()
    if created and live:
        start_watchdog(current_app.extensions["db"], cfg, call_sid)
    log_event(log, "incoming_call", call_sid=call_sid, business_id=business.id, replay=not created,
              mode="ai" if live else "voicemail", greeting=business.greeting_enabled)
    return _twiml(answer)


@bp.get("/webhook/incoming_call_preview")
def incoming_call_preview() -> Response:
    """What `incoming_call` would answer for a call to `?to=` (or a generic business), writing nothing."""
    raw_to = request.args.get("to")
    if raw_to is None:
        return _twiml(_call_answer(PREVIEW_BUSINESS_ID, False, PREVIEW_CALL_SID))
    to_number = try_e164(raw_to)
    if to_number is None:
        raise ApiError(400, "invalid_phone", "`to` must be a phone number such as +97231234567")
    business = business_by_number(db_session(), to_number, "voice")
    if business is None:
        return _twiml(unknown_number_twiml())
    return _twiml(_call_answer(business.id, business.greeting_enabled, PREVIEW_CALL_SID))


@bp.post("/webhook/stream_status")
def stream_status() -> Response:
    """Twilio's `<Stream statusCallback>`: unsigned, so it only records what it reports.

    It never answers an error (Twilio would log a webhook failure for the call), and it doesn't
    count as a stream start for the watchdog: only the token-checked WebSocket does.
    """
    session = db_session()
    try:
        form = request.form
        call_sid, event, error = form.get("CallSid", ""), form.get("StreamEvent", ""), form.get("StreamError", "")
        log_event(log, "stream_status", call_sid=call_sid[:64], stream_sid=form.get("StreamSid", "")[:64],
                  stream_event=event[:24], stream_error=error[:500])
        call = call_by_sid(session, call_sid) if call_sid else None
        if call is not None and event:
            call.stream_status = event[:24]
            call.stream_sid = form.get("StreamSid", "")[:64] or call.stream_sid
            if error:
                call.stream_error = error[:2000]
            session.commit()
    except Exception:  # an odd body or a database hiccup: still 204, the reason goes to the log
        session.rollback()
        log.exception("stream_status not recorded", extra={"event": "stream_status_error"})
    return _no_content()


@bp.post("/webhook/stream_ended")
@require_twilio_signature
def stream_ended() -> Response:
    """`<Connect action>`: the media stream is over. Hang up after a goodbye, else take a message."""
    call_sid = request.form.get("CallSid", "")
    call = call_by_sid(db_session(), call_sid) if call_sid else None
    if call is not None and call.stream_ended_at is None:
        call.stream_ended_at = utcnow()
    said_goodbye = call is not None and call.outcome == "agent_goodbye"
    log_event(log, "stream_ended", call_sid=call_sid, known_call=call is not None,
              next="hangup" if said_goodbye else "voicemail")
    return _twiml(hangup_twiml() if said_goodbye else voicemail_twiml(settings().base_url))


@bp.post("/webhook/recording_done")
@require_twilio_signature
def recording_done() -> Response:
    """`<Record action>`: the caller finished the message; the recording arrives via `recording_status`."""
    return _twiml(hangup_twiml())


@bp.post("/webhook/call_status")
@require_twilio_signature
def call_status() -> Response:
    form = request.form
    call_sid, status = form.get("CallSid", ""), (form.get("CallStatus") or "")[:24]
    session = db_session()
    call = call_by_sid(session, call_sid) if call_sid else None
    if call is None or not status:
        log_event(log, "call_status_ignored", logging.WARNING, call_sid=call_sid, status=status)
        return _no_content()
    if call.status in FINAL_CALL_STATUSES:  # closed already: a replay or a late, out-of-order event
        return _no_content()
    call.status = status
    if status in FINAL_CALL_STATUSES:
        call.ended_at = _twilio_timestamp(form.get("Timestamp")) or utcnow()
        duration = form.get("CallDuration", "")
        call.duration_seconds = int(duration) if duration.isdigit() else None
        audit(session, call.business_id, "twilio", "call.ended", "call", call.id, call_sid=call_sid,
              status=status, duration_seconds=call.duration_seconds)
    log_event(log, "call_status", call_sid=call_sid, status=status, duration_seconds=call.duration_seconds)
    return _no_content()


@bp.post("/webhook/recording_status")
@require_twilio_signature
def recording_status() -> Response:
    """The voicemail is ready: keep it on the call and as a message in the caller's voice thread."""
    form = request.form
    call_sid, recording_sid, recording_url = (form.get("CallSid", ""), form.get("RecordingSid", ""),
                                              form.get("RecordingUrl", ""))
    recording_state = form.get("RecordingStatus", "completed")
    session = db_session()
    call = call_by_sid(session, call_sid) if call_sid else None
    if call is None or recording_state != "completed" or not (recording_sid and recording_url):
        log_event(log, "recording_status_ignored", logging.WARNING, call_sid=call_sid,
                  recording_sid=recording_sid, recording_status=recording_state, known_call=call is not None)
        return _no_content()
    new_recording = call.recording_sid != recording_sid
    call.recording_sid = recording_sid
    call.recording_url = recording_url
    call.outcome = call.outcome or "voicemail"
    created = False
    if call.thread_id is not None:
        duration = form.get("RecordingDuration", "")
        _, created = insert_message(
            session, session.get(Thread, call.thread_id), direction="in", kind="voicemail", provider="twilio",
            provider_message_id=recording_sid, call_id=call.id,
            media=[{"url": recording_url, "content_type": "audio/x-wav",
                    "duration_seconds": int(duration) if duration.isdigit() else None}])
    session.commit()
    log_event(log, "voicemail_stored", call_sid=call_sid, recording_sid=recording_sid, replay=not new_recording,
              new_message=created)
    if new_recording:
        transcribe_voicemail_later(current_app._get_current_object(), call_sid, recording_url)
    return _no_content()


def _twilio_timestamp(raw: str | None) -> datetime | None:
    """Twilio's `Timestamp` parameter (RFC 2822), as an aware UTC datetime."""
    if not raw:
        return None
    try:
        parsed = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

"""Twilio Voice webhooks (docs/architecture.md, "A call"): TwiML for incoming calls, stream and call
status, and the voicemail fallback.

Every webhook is Twilio-signed (Twilio signs every request it makes to an application, status
callbacks included, with `X-Twilio-Signature`). What each one does to the call lives in
`server.voice.call_events`; a view here checks the signature, hands over the form and answers.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request, send_file

from server.errors import DomainError, Problem
from server.routes import app_services, db_session, settings
from server.security.twilio_signature import require_twilio_signature
from server.voice import call_events, prompt_audio, transfer
from server.voice.call_events import CallDesk
from server.voice.twiml import hangup_twiml, voicemail_twiml

bp = Blueprint("twilio_voice", __name__)
PROMPT_MAX_AGE_SECONDS = 24 * 3600


def _desk() -> CallDesk:
    state = app_services()
    return CallDesk(
        settings=settings(),
        database=state.database,
        app_secret=current_app.config["APP_SECRET"],
        lifecycle=state.lifecycle,
        jobs=state.jobs,
        transcriber=state.voicemail_transcriber,
    )


def _twiml(xml: str) -> Response:
    return Response(xml, mimetype="text/xml")


def _no_content() -> Response:
    return Response(status=204)


@bp.post("/webhook/incoming_call")
@require_twilio_signature
def incoming_call() -> Response:
    return _twiml(call_events.incoming_call(_desk(), db_session(), request.form))


@bp.get("/webhook/incoming_call_preview")
def incoming_call_preview() -> Response:
    """What `incoming_call` would answer for a call to `?to=` (or a generic business), writing nothing."""
    return _twiml(call_events.preview_incoming_call(_desk(), db_session(), request.args.get("to")))


@bp.post("/webhook/stream_status")
@require_twilio_signature
def stream_status() -> Response:
    """`<Stream statusCallback>`: signed like every Twilio callback (Twilio's webhook security
    documentation: all its requests carry `X-Twilio-Signature`). Once signed, always 204: Twilio
    would log a webhook failure for the call on any error."""
    call_events.record_stream_status(db_session(), lambda: request.form)
    return _no_content()


@bp.post("/webhook/stream_ended")
@require_twilio_signature
def stream_ended() -> Response:
    return _twiml(call_events.stream_ended(_desk(), db_session(), request.form))


@bp.route("/webhook/fallback_call", methods=["GET", "POST"])
def fallback_call() -> Response:
    """The number's "Primary handler fails" URL at Twilio: the voicemail TwiML, made from the settings
    alone, so it answers whatever broke `incoming_call` (docs/operations.md). Unsigned on purpose: it
    reads and changes nothing, and an operator can open it to check it."""
    cfg = settings()
    return _twiml(voicemail_twiml(cfg.base_url, prompt_audio.fallback_path(cfg)))


@bp.get("/tts/prompts/<name>.wav")
def prompt_audio_file(name: str) -> Response:
    """A prompt in the agent's voice, for Twilio's `<Play>` (server/voice/prompt_audio.py). Unsigned:
    Twilio signs no media fetch. The name is the sha256 of the voice and text, so a file never changes."""
    path = prompt_audio.prompt_audio_dir(settings()) / f"{name}.wav"
    if not prompt_audio.KEY_PATTERN.match(name) or not path.is_file():
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such prompt")
    return send_file(path, mimetype="audio/wav", max_age=PROMPT_MAX_AGE_SECONDS, conditional=True)


@bp.post("/webhook/recording_done")
@require_twilio_signature
def recording_done() -> Response:
    """`<Record action>`: the caller finished the message; the recording arrives via `recording_status`."""
    return _twiml(hangup_twiml())


@bp.post("/webhook/call_status")
@require_twilio_signature
def call_status() -> Response:
    call_events.accept_callback(_desk(), db_session(), "call_status", request.form)
    return _no_content()


@bp.post("/webhook/recording_status")
@require_twilio_signature
def recording_status() -> Response:
    call_events.accept_callback(_desk(), db_session(), "recording_status", request.form)
    return _no_content()


@bp.post(transfer.DIAL_RESULT_PATH)
@require_twilio_signature
def dial_result() -> Response:
    """The transfer's `<Dial action>`: hang up after the person talked to the caller, else take a message."""
    return _twiml(transfer.dial_result(db_session(), settings(), request.form, app_services().jobs))


@bp.post(transfer.WHISPER_PATH)
@require_twilio_signature
def transfer_whisper() -> Response:
    """The `<Number url>` of a transfer: what the person who answers hears before the caller."""
    return _twiml(transfer.whisper_twiml(db_session(), current_app.config["APP_SECRET"], request.args))

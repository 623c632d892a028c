"""Voicemail transcription: the hook between a stored recording and speech recognition.

`transcribe_voicemail_later` gets the worker's `VoicemailTranscriber` (built from the settings when
speech recognition is configured, else None) and queues a background job (`voicemail_transcription`,
run by the jobs worker with that process's transcriber). The job downloads the recording from
Twilio (WAV, with the account's credentials, only from `TWILIO_API_BASE_URL`), transcribes it and
writes the text into the voicemail message and the call's transcript; Twilio being unreachable or
failing (5xx), or the transcriber failing, is retried with backoff. Without a transcriber it only
logs that the voicemail stays untranscribed.
"""

from __future__ import annotations

import logging
from typing import Optional
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa

from server.config import Settings
from server.db.dao_crm import call_by_sid
from server.db.engine import Database
from server.db.models import Message
from server.errors import DomainError
from server.jobs import JobContext, JobQueue, job
from server.logs import log_event
from server.providers.base import VoicemailTranscriber
from server.urls import abs_url

log = logging.getLogger("agentlocator.voice.voicemail")


class RecordingUnavailable(Exception):
    """Twilio answered the recording's download with a server error: worth another try."""


def transcribe_voicemail_later(
    jobs: JobQueue, transcriber: Optional[VoicemailTranscriber], call_sid: str, recording_url: str
) -> None:
    if transcriber is None:
        log_event(
            log, "voicemail_transcription_skipped", call_sid=call_sid, reason="speech recognition is not configured"
        )
        return
    recording = urlsplit(recording_url).path.rsplit("/", 1)[-1]
    try:
        jobs.enqueue(
            "voicemail_transcription", f"voicemail_transcription:{call_sid}:{recording}", call_sid, recording_url
        )
    except DomainError:  # the queue is down (logged): the recording stays, untranscribed
        pass


@job("voicemail_transcription")
def _transcription_job(ctx: JobContext, call_sid: str, recording_url: str) -> None:
    transcriber = ctx.services.voicemail_transcriber
    if transcriber is None:
        log_event(
            log,
            "voicemail_transcription_skipped",
            logging.WARNING,
            call_sid=call_sid,
            reason="the jobs worker has no speech recognition configured",
        )
        return
    fetch_and_store_transcript(ctx.database, ctx.settings, transcriber, call_sid, recording_url)


def recording_wav_url(settings: Settings, recording_url: str) -> str:
    """The recording's WAV media on the configured Twilio API host (credentials go nowhere else)."""
    path = urlsplit(recording_url).path
    return abs_url(settings.twilio_api_base_url, path if path.endswith(".wav") else path + ".wav")


def transcribe_voicemail(
    database: Database, settings: Settings, transcriber: VoicemailTranscriber, call_sid: str, recording_url: str
) -> str | None:
    """`fetch_and_store_transcript`, with any failure logged instead of raised."""
    try:
        return fetch_and_store_transcript(database, settings, transcriber, call_sid, recording_url)
    except Exception:  # a failed transcription leaves the recording
        log.exception(
            "voicemail transcription failed", extra={"event": "voicemail_transcription_error", "call_sid": call_sid}
        )
        return None


def fetch_and_store_transcript(
    database: Database, settings: Settings, transcriber: VoicemailTranscriber, call_sid: str, recording_url: str
) -> str | None:
    """The recording's text, stored on the call and its voicemail message; None when there is none
    to have (Twilio refuses the download, the call is unknown). Raises when another try may work."""
    # Plain requests, not the SDK: the SDK's response keeps only decoded text, not audio bytes.
    response = requests.get(
        recording_wav_url(settings, recording_url),
        auth=(settings.twilio_account_sid, settings.twilio_auth_token),
        timeout=settings.twilio_api_timeout_seconds,
    )
    if response.status_code != 200:
        log_event(log, "voicemail_download_failed", logging.ERROR, call_sid=call_sid, http_status=response.status_code)
        if response.status_code >= 500:
            raise RecordingUnavailable(f"Twilio answered {response.status_code}")
        return None
    text = transcriber.transcribe(response.content).strip()
    with database.scope() as session:
        call = call_by_sid(session, call_sid)
        if call is None:
            return None
        if not call.transcript:
            call.transcript = text
        message = session.scalar(
            sa.select(Message).where(Message.provider == "twilio", Message.provider_message_id == call.recording_sid)
        )
        if message is not None and not message.body:
            message.body = text
    log_event(log, "voicemail_transcribed", call_sid=call_sid, chars=len(text))
    return text

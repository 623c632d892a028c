"""WhatsApp voice notes transcribed in the background, so staff can read them, search them, and the AI
can answer them.

When an inbound audio item is stored, the media intake sets `messages.transcript_status = "pending"`
and calls `queue_transcription(jobs, message_id)`: a durable job (`voice_note_transcription`, keyed by
the message, so a replayed webhook transcribes once) that the jobs worker runs. It reads the stored
audio from the media store, hands it to the `VoiceNoteTranscriber` (Google Speech-to-Text,
`server.providers.voice_note_google`; the length is the sender's `duration_seconds` when known, else
read from the Ogg file) and stores `transcript` with `transcript_status = "done"`, publishing the
console's `message` event so an open conversation shows the text at once. Then it schedules the
AI reply, which waits for the transcript (`server.whatsapp.auto_reply`).

A failure is retried with the job queue's backoff; after the last attempt, or at once when no retry
can help (audio Google refuses, no audio stored, no speech recognition configured), the message is
marked `failed` with `transcript_error`, and the AI still answers, told that the note could not be
understood. A note is never left waiting without a job that will settle it: when even the queue
can't be reached, the note is marked failed at once (and only a database down at that very moment
leaves it `pending`, which the AI reply stops waiting for after `auto_reply.TRANSCRIPT_WAIT`).
"""

from __future__ import annotations

import logging
from typing import Optional

import sqlalchemy as sa

from server.config import Settings
from server.db.engine import Database, database_unavailable
from server.db.events import publish_event
from server.db.models import Business, Media, Message, Thread, utcnow
from server.errors import DomainError, Problem
from server.jobs import JobContext, JobQueue, job
from server.jobs.runs import JobRun
from server.logs import log_event
from server.media import load_bytes
from server.providers.base import AudioRejected, VoiceNoteTranscriber
from server.whatsapp import auto_reply

log = logging.getLogger("agentlocator.whatsapp.voice_notes")

KIND = "voice_note_transcription"
ATTEMPTS = 5  # with the queue's backoff (2, 4, 8, 16 s between them): about half a minute of tries
PENDING, DONE, FAILED = "pending", "done", "failed"
ERROR_MAX = 500


class AudioNotReady(Exception):
    """The message's audio is still being downloaded (Twilio media): worth another try."""


class NoAudio(Exception):
    """The message has no stored audio to transcribe (refused, or never there)."""


def queue_transcription(jobs: JobQueue, message_id: int) -> None:
    """Transcribe message `message_id`'s voice note in the jobs worker (call once its audio is stored)."""
    try:
        jobs.enqueue(KIND, job_key(message_id), message_id)
    except DomainError:  # the queue is down (logged by it)
        log_event(log, "voice_note_not_queued", logging.ERROR, message_id=message_id)
        # Said plainly rather than left `pending` with no job that would ever settle it.
        try:
            _mark_failed(jobs.context.database, None, message_id, "the transcription could not be queued")
        except Exception:
            log.exception(
                "voice note left pending", extra={"event": "voice_note_left_pending", "message_id": message_id}
            )


def job_key(message_id: int) -> str:
    return f"{KIND}:{message_id}"


@job(KIND, attempts=ATTEMPTS)
def _transcription_job(ctx: JobContext, message_id: int) -> None:
    transcribe_voice_note(
        ctx.database,
        ctx.settings,
        ctx.services.voice_note_transcriber,
        ctx.services.jobs,
        message_id,
        last_attempt=_attempt(ctx.database, job_key(message_id)) >= ATTEMPTS,
    )


def _attempt(database: Database, key: str) -> int:
    """This run's attempt number (the queue counts them in `job_runs` before each run)."""
    with database.scope() as session:
        return session.scalar(sa.select(JobRun.attempts).where(JobRun.key == key)) or 1


def transcribe_voice_note(
    database: Database,
    settings: Settings,
    transcriber: Optional[VoiceNoteTranscriber],
    jobs: Optional[JobQueue],
    message_id: int,
    *,
    last_attempt: bool = True,
) -> Optional[str]:
    """Transcribe the message's stored audio and store the text; the text, or None when the note was
    marked failed or needs nothing. Raises (for the queue to retry) when another try may work; on
    `last_attempt` the note is marked failed first."""
    with database.scope() as session:
        message = session.get(Message, message_id)
        if message is None or message.transcript_status == DONE:
            return None
        media = _audio_of(session, message_id)
    try:
        if transcriber is None:
            raise AudioRejected("speech recognition is not configured")
        if media is None:
            raise NoAudio("the message has no stored audio")
        if media.status == PENDING:
            raise AudioNotReady("the audio is still being downloaded")
        if media.status != "stored" or not media.storage_key:
            raise NoAudio(f"the audio is {media.status}: {media.error_message or 'no file is kept'}")
        audio = read_stored_audio(settings, media)
        text = transcriber.transcribe(audio, duration_seconds=media.duration_seconds or None)
    except Exception as exc:
        if database_unavailable(exc):
            raise  # not the note's failure: the queue waits for the database
        permanent = isinstance(exc, (AudioRejected, NoAudio))
        if permanent or last_attempt:
            _mark_failed(database, jobs, message_id, _reason(exc))
        if permanent:
            return None
        if not last_attempt:
            log_event(log, "voice_note_transcription_retry", logging.WARNING, message_id=message_id, error=_reason(exc))
        raise
    _store(database, jobs, message_id, text)
    return text


def _audio_of(session: sa.orm.Session, message_id: int) -> Optional[Media]:
    """The message's audio item: the stored one if any, else one still on its way, else the newest
    (refused or expired: its reason is the note's)."""
    items = session.scalars(
        sa.select(Media).where(Media.message_id == message_id, Media.kind == "audio").order_by(Media.id.desc())
    ).all()
    for status in ("stored", PENDING):
        for item in items:
            if item.status == status:
                return item
    return items[0] if items else None


def read_stored_audio(settings: Settings, media: Media) -> bytes:
    """The audio bytes from the media store; `NoAudio` when the file is no longer kept."""
    try:
        return load_bytes(settings, media)
    except DomainError as exc:
        if exc.problem is Problem.NOT_FOUND:
            raise NoAudio(exc.message) from None
        raise  # the store can't be read now: another try may work


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:ERROR_MAX]


def _store(database: Database, jobs: Optional[JobQueue], message_id: int, text: str) -> None:
    with database.scope() as session:
        message = session.get_one(Message, message_id)
        message.transcript = text
        message.transcript_status = DONE
        message.transcript_error = None
        _tell_consoles(session, message)
        waited_ms = int((utcnow() - message.created_at).total_seconds() * 1000)
        reply = _wants_reply(session, message)
    log_event(log, "voice_note_transcribed", message_id=message_id, chars=len(text), t_transcript_ms=waited_ms)
    if reply and jobs is not None:
        auto_reply.schedule_auto_reply(jobs, message_id, after="transcript")


def _mark_failed(database: Database, jobs: Optional[JobQueue], message_id: int, reason: str) -> None:
    with database.scope() as session:
        message = session.get(Message, message_id)
        if message is None or message.transcript_status == DONE:
            return
        message.transcript_status = FAILED
        message.transcript_error = reason
        _tell_consoles(session, message)
        reply = _wants_reply(session, message)
    log_event(log, "voice_note_transcription_failed", logging.WARNING, message_id=message_id, error=reason)
    if reply and jobs is not None:
        auto_reply.schedule_auto_reply(jobs, message_id, after="transcript")


def _tell_consoles(session: sa.orm.Session, message: Message) -> None:
    publish_event(session, message.business_id, "message", thread_id=message.thread_id, message_id=message.id)


def _wants_reply(session: sa.orm.Session, message: Message) -> bool:
    business = session.get_one(Business, message.business_id)
    thread = session.get_one(Thread, message.thread_id)
    return auto_reply.wants_auto_reply(business, thread, message)

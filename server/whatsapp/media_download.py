"""Twilio media of an inbound WhatsApp message, downloaded by a durable job.

Twilio's webhook only names the files (`MediaUrlN`); the webhook stores them as `pending` media and,
once the message is committed, queues `wa_media_download` (keyed by the message, so a replayed
webhook downloads once). The job fetches each pending file with the account's credentials
(`server.providers.twilio_media`) and stores it through `server.media`: stored, or rejected with the
reason (too large, a type not kept, refused by Twilio). A failure worth another try (timeout, 5xx)
is retried with the queue's backoff; after the last attempt the file is marked `download_failed`.
Nothing waits forever: when every file is settled the job asks for what the message needs next:
a voice note's transcription (which then asks for the AI reply), or the AI reply itself. The
webhook never asks for that reply while a download is pending, so the AI never answers a message
whose media is not kept yet.
"""

from __future__ import annotations

import logging
from typing import Iterable, Optional

import sqlalchemy as sa

from server.config import Settings
from server.db.engine import Database
from server.db.events import publish_event
from server.db.models import Business, Media, Message, Thread
from server.errors import DomainError
from server.jobs import JobContext, JobQueue, job
from server.jobs.runs import JobRun
from server.logs import log_event
from server.media import PENDING, STORED, complete_download, reject_pending, rejection_reason
from server.providers.twilio_media import MediaFetchFailed, MediaGone, MediaTooLarge, download_twilio_media
from server.whatsapp import auto_reply
from server.whatsapp.voice_notes import queue_transcription

log = logging.getLogger("agentlocator.whatsapp.media")

KIND = "wa_media_download"
ATTEMPTS = 6  # with the queue's backoff (2, 4, 8, 16, 32 s): about a minute of tries


def queue_media_download(jobs: JobQueue, message_id: int) -> None:
    """Download message `message_id`'s pending Twilio media in the jobs worker."""
    try:
        jobs.enqueue(KIND, f"{KIND}:{message_id}", message_id)
    except DomainError:  # the queue is down (logged by it): the items stay pending, shown as such
        log_event(log, "wa_media_download_not_queued", logging.ERROR, message_id=message_id)


def audio_stored(message: Message, media: Iterable[Media]) -> bool:
    """Whether `media` includes a stored audio item: then the message's transcript is marked pending
    (in the caller's transaction) and the caller queues its transcription after the commit."""
    if any(item.kind == "audio" and item.status == STORED for item in media):
        message.transcript_status = "pending"
        return True
    return False


@job(KIND, attempts=ATTEMPTS)
def _download_job(ctx: JobContext, message_id: int) -> None:
    with ctx.database.scope() as session:
        attempt = session.scalar(sa.select(JobRun.attempts).where(JobRun.key == f"{KIND}:{message_id}")) or 1
    download_message_media(ctx.database, ctx.settings, ctx.services.jobs, message_id, last_attempt=attempt >= ATTEMPTS)


def download_message_media(
    database: Database, settings: Settings, jobs: Optional[JobQueue], message_id: int, *, last_attempt: bool = True
) -> None:
    """Download and store every pending item of the message; raises MediaFetchFailed (for the queue
    to retry) while one may still come, unless this is the last attempt."""
    with database.scope() as session:
        pending = [
            (row.id, row.source_url or "")
            for row in session.scalars(
                sa.select(Media).where(Media.message_id == message_id, Media.status == PENDING).order_by(Media.id)
            )
        ]
    retry: Optional[MediaFetchFailed] = None
    for media_id, url in pending:
        try:
            data, _declared = download_twilio_media(settings, url, settings.media_max_bytes)
        except MediaTooLarge:
            _settle(database, settings, media_id, "too_large", None)
            continue
        except MediaGone as exc:
            _settle(database, settings, media_id, "download_failed", f"the file could not be downloaded ({exc})")
            continue
        except MediaFetchFailed as exc:
            if last_attempt:
                _settle(database, settings, media_id, "download_failed", f"the file could not be downloaded ({exc})")
            else:
                retry = exc
            continue
        with database.scope() as session:
            media = session.get_one(Media, media_id)
            if media.status == PENDING:
                complete_download(session, settings, media, data)
        log_event(log, "wa_media_downloaded", message_id=message_id, media_id=media_id, size=len(data))
    if retry is not None:
        log_event(log, "wa_media_download_retry", logging.WARNING, message_id=message_id, error=str(retry))
        raise retry
    _media_settled(database, settings, jobs, message_id)


def _settle(database: Database, settings: Settings, media_id: int, code: str, detail: Optional[str]) -> None:
    with database.scope() as session:
        media = session.get_one(Media, media_id)
        if media.status == PENDING:
            reject_pending(media, code, detail or rejection_reason(code, settings))
    log_event(log, "wa_media_download_failed", logging.WARNING, media_id=media_id, code=code)


def _media_settled(database: Database, settings: Settings, jobs: Optional[JobQueue], message_id: int) -> None:
    """Every item is stored or rejected: tell open consoles, then transcribe or answer."""
    with database.scope() as session:
        message = session.get(Message, message_id)
        if message is None:
            return
        media = session.scalars(sa.select(Media).where(Media.message_id == message_id)).all()
        transcribe = message.transcript_status is None and audio_stored(message, media)
        business = session.get_one(Business, message.business_id)
        thread = session.get_one(Thread, message.thread_id)
        reply = not transcribe and auto_reply.wants_auto_reply(business, thread, message)
        publish_event(session, message.business_id, "message", thread_id=message.thread_id, message_id=message.id)
    if jobs is None:
        return
    if transcribe:
        queue_transcription(jobs, message_id)
    elif reply:
        auto_reply.schedule_auto_reply(jobs, message_id)

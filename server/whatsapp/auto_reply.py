"""AI auto-replies on WhatsApp, for businesses with the feature `wa_auto_reply` turned on.

The webhook only schedules the work (`schedule_auto_reply`, after its response is sent): a durable
background job (`wa_auto_reply`, keyed by the message, so a replay runs it once) that the jobs worker
runs with its own database sessions: the agent brain the phone uses
(`build_system_prompt(business, "whatsapp")`, the thread's recent messages, and `complete()` of the
language model the `VOICE_PROVIDERS` plug-in builds for calls too), then `send_whatsapp` through the
provider the customer's message came in on.

One reply at a time per conversation, across workers: a lease on the thread row
(`threads.ai_reply_lease_token/_until`) claimed with one conditional UPDATE. A row lock
(`SELECT … FOR UPDATE`) held through the model call would also block the webhook, which updates
the same row for every new message; the lease is held by no transaction at all.
Two quick messages: whatever has arrived when a reply's context is read is answered by that one
reply (`threads.ai_replied_through_id` records the newest message it saw), so messages that came
together are coalesced; a message arriving while the model is writing is answered afterwards, by
its own job, which waits for the lease and sees the first reply in its context.

Voice notes are answered by their words: a note whose transcript is still `pending`
(`server.whatsapp.voice_notes`) is not answered yet, nor is anything after it in the thread, since
one reply answers everything up to it; the transcription job schedules the reply once the text is
stored (or transcription failed), and the model reads the note as "[הודעה קולית] <transcript>", or
as a note that could not be understood. A note pending longer than `TRANSCRIPT_WAIT` (its job could
not be queued) no longer holds the thread up.

The AI stays silent about a customer message once a staff member (an outgoing message with
`sender_user_id`) has written after it, and in a thread staff have taken over (`threads.ai_paused`,
the console's switch). The pause is checked when the webhook stores the message; both are checked
when the job runs and again before the written reply is sent, since staff may act while the job
waits in the queue or while the model is writing.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta
from typing import Any, Optional, TypeGuard

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.agent.prompt import build_system_prompt, tools_rule
from server.agent.tools import ToolBox, ToolContext, enabled_tools
from server.config import Settings
from server.db.engine import Database, database_unavailable, rows_affected
from server.db.models import Business, Customer, Message, Thread, utcnow
from server.errors import DomainError
from server.jobs import JobContext, JobQueue, job
from server.jobs.runs import JobRun
from server.logs import log_event
from server.providers.base import LanguageModel, ProviderError
from server.providers.plugin import load_providers
from server.whatsapp.inbound import StoredInbound
from server.whatsapp.send import send_whatsapp

log = logging.getLogger("agentlocator.whatsapp.ai")

FEATURE = "wa_auto_reply"
JOB_KIND = "wa_auto_reply"  # its runs are keyed `wa_auto_reply:<message id>`
LEASE_TOKEN_PREFIX = "message-"  # a thread's lease is held by `message-<id>`: the reply to that message
HISTORY_MESSAGES = 20
# Longer than the model call (30 s, two retries) plus a send: a lease left by a crashed worker
# only delays that thread's next reply by this much.
LEASE = timedelta(seconds=180)
LEASE_POLL_SECONDS = 0.2
# Longer than a voice note's transcription with all its retries.
TRANSCRIPT_WAIT = timedelta(minutes=15)
VOICE_NOTE_LABEL = "[הודעה קולית]"
VOICE_NOTE_NOT_UNDERSTOOD = "[הודעה קולית שלא ניתן היה להבין; אפשר לבקש מהלקוח לכתוב או להקליט שוב]"
_PLACEHOLDER = re.compile(r"^\[[a-z_]+\]$")  # what a provider stores as the text of a media message


def needs_reply(stored: Optional[StoredInbound]) -> TypeGuard[StoredInbound]:
    """Whether a message a webhook has just stored gets an AI reply: one not answered yet, for a
    business and thread that want replies (`wants_auto_reply`). A replayed webhook's message counts
    too while it is unanswered: an instance that died after storing it, before queueing its reply,
    made the provider deliver it again. The job's key keeps a reply already queued from running twice."""
    return (
        stored is not None
        and (stored.created or (stored.thread.ai_replied_through_id or 0) < stored.message.id)
        and wants_auto_reply(stored.business, stored.thread, stored.message)
    )


def wants_auto_reply(business: Business, thread: Thread, message: Message) -> bool:
    """The business has auto-replies on, staff haven't taken `thread` over, and `message` is the
    customer's, with text. Checked when the webhook stores the message and again when the reply is
    written (the owner may have turned the feature off, or staff taken the thread over, meanwhile)."""
    return (
        business.feature(FEATURE)
        and not thread.ai_paused
        and message.direction == "in"
        and (bool(message.body.strip()) or message.transcript_status in ("done", "failed"))
    )


def schedule_auto_reply(jobs: JobQueue, message_id: int, *, after: str = "") -> None:
    """Answer message `message_id` in the jobs worker, never on the web worker. `after` names what the
    reply waited for (e.g. `transcript`): its own job key, since a run for the message that found the
    transcript still pending is done and would make the same key a no-op."""
    try:
        jobs.enqueue("wa_auto_reply", f"wa_auto_reply:{message_id}" + (f":{after}" if after else ""), message_id)
    except DomainError:  # the queue is down (logged): this message goes unanswered by the AI
        pass


@job(JOB_KIND)
def _auto_reply_job(ctx: JobContext, message_id: int) -> None:
    reply_to_message(ctx.database, ctx.settings, message_id, jobs=ctx.services.jobs)


def reply_to_message(database: Database, settings: Settings, message_id: int, *, jobs: Any = None) -> None:
    """Write and send the AI's answer to customer message `message_id`, unless it needs none.

    The agent's tools the business has on for WhatsApp (`server.agent.tools`) may act while the reply
    is written (a booking, a cancellation, a message for staff); `jobs` is the queue they hand
    follow-up work to (a booking's confirmation)."""
    try:
        with database.scope() as session:
            message = session.get(Message, message_id)
            thread_id = message.thread_id if message is not None else None
        if thread_id is None:
            return
        # The lease is the message's own: a retry of this reply (its worker stopped mid-way, the lease
        # still held) takes it straight back instead of waiting out LEASE. The job's key lets only one
        # run for a message at a time.
        token = f"{LEASE_TOKEN_PREFIX}{message_id}"
        if not _acquire_lease(database, thread_id, token, timedelta(seconds=settings.jobs_lease_seconds)):
            log_event(log, "wa_auto_reply_lease_timeout", logging.WARNING, message_id=message_id, thread_id=thread_id)
            return
        try:
            _reply(database, settings, message_id, jobs)
        finally:
            _release_lease(database, thread_id, token)
    except Exception as exc:
        if database_unavailable(exc):
            # Not this reply's failure: the job queue waits for the database and runs it again (the
            # lease is the message's own, the send is idempotent), so the customer still gets it.
            raise
        # A background task has no caller to report to: the log is where it ends.
        log.exception("auto-reply failed", extra={"event": "wa_auto_reply_error", "message_id": message_id})


def _reply(database: Database, settings: Settings, message_id: int, jobs: Any = None) -> None:
    with database.scope() as session:
        message = session.get_one(Message, message_id)
        business = session.get_one(Business, message.business_id)
        thread = session.get_one(Thread, message.thread_id)
        skip = _reason_to_stay_silent(session, business, thread, message)
        if skip:
            log_event(log, "wa_auto_reply_skipped", message_id=message_id, thread_id=thread.id, reason=skip)
            return
        customer = session.get_one(Customer, thread.customer_id)
        recipient, provider = customer.phone or customer.wa_lid, message.provider
        if recipient is None or provider is None:  # every inbound message has both
            log_event(
                log,
                "wa_auto_reply_skipped",
                message_id=message_id,
                thread_id=thread.id,
                reason="no WhatsApp address or provider to answer through",
            )
            return
        history = _history(session, thread, before_id=_first_pending_voice_note(session, thread.id))
        toolbox = _toolbox(database, settings, business, customer, thread.id, message_id, jobs)
        system = build_system_prompt(business, "whatsapp")
        if toolbox is not None:
            system += "\n\n" + tools_rule([t.name for t in toolbox.tools])
        prompt = [
            {"role": "system", "content": system},
            *[{"role": "user" if m.direction == "in" else "assistant", "content": prompt_text(m)} for m in history],
        ]
        answers_through = max([m.id for m in history if m.direction == "in"] + [message.id])
        business_id, thread_id = business.id, thread.id
    started = time.monotonic()
    try:
        model = _language_model(settings)
        # No transaction is open while the model writes (its tools open their own units of work).
        reply = model.complete(prompt, tools=toolbox) if toolbox is not None else model.complete(prompt)
    except ProviderError as exc:
        log_event(log, "wa_auto_reply_llm_failed", logging.WARNING, message_id=message_id, error=str(exc))
        return
    if not reply:
        return
    with database.scope() as session:
        late = _staff_took_over(session, thread_id, message_id)
        if late:
            log_event(
                log,
                "wa_auto_reply_skipped",
                message_id=message_id,
                thread_id=thread_id,
                reason=f"{late} while the model was writing",
            )
            return
        try:
            sent = send_whatsapp(
                session,
                settings,
                business_id,
                to=recipient,
                text=reply,
                provider=provider,
                idempotency_key=f"wa-auto-reply-{answers_through}",
            )
            outcome = {"success": True, "provider": sent.provider, "reply_message_id": sent.message_id, "error": None}
        except DomainError as exc:  # refused, or failed and stored as failed: answered all the same
            if database_unavailable(exc):
                raise
            outcome = {
                "success": False,
                "provider": exc.details.get("provider"),
                "reply_message_id": exc.details.get("message_id"),
                "error": exc.code,
            }
        session.execute(
            sa.update(Thread)
            .where(Thread.id == thread_id)
            .values(ai_replied_through_id=answers_through)
            .execution_options(synchronize_session=False)
        )
    log_event(
        log,
        "wa_auto_reply",
        message_id=message_id,
        thread_id=thread_id,
        **outcome,
        answers_through=answers_through,
        t_reply_ms=int((time.monotonic() - started) * 1000),
    )


def _toolbox(
    database: Database,
    settings: Settings,
    business: Business,
    customer: Customer,
    thread_id: int,
    message_id: int,
    jobs: Any,
) -> Optional[ToolBox]:
    """The agent's tools for this reply (their rows name the message answered); None if none are on."""
    tools = enabled_tools(business.agent_tools, "whatsapp")
    if not tools:
        return None
    context = ToolContext(
        business_id=business.id,
        channel="whatsapp",
        database=database,
        settings=settings,
        customer_id=customer.id,
        phone=customer.phone,
        thread_id=thread_id,
        message_id=message_id,
        jobs=jobs,
    )
    return ToolBox(context, tools)


def _language_model(settings: Settings) -> LanguageModel:
    """The calls' language model (the `VOICE_PROVIDERS` plug-in); the factory keeps one per process."""
    return load_providers(settings).llm


def prompt_text(message: Message) -> str:
    """What the model reads for a message: its text, or a voice note's transcript (with its caption)."""
    if message.transcript_status not in ("done", "failed"):
        return message.body
    caption = "" if _PLACEHOLDER.match(message.body.strip()) else message.body.strip()
    transcript = (message.transcript or "").strip() if message.transcript_status == "done" else ""
    said = f"{VOICE_NOTE_LABEL} {transcript}" if transcript else VOICE_NOTE_NOT_UNDERSTOOD
    return f"{said}\n{caption}" if caption else said


def _first_pending_voice_note(session: Session, thread_id: int) -> int | None:
    """The first customer voice note of the thread still waiting for its transcript (recently enough
    that its job will settle it): no reply may answer it, or anything after it, yet."""
    return session.scalar(
        sa.select(sa.func.min(Message.id)).where(
            Message.thread_id == thread_id,
            Message.direction == "in",
            Message.transcript_status == "pending",
            Message.created_at > utcnow() - TRANSCRIPT_WAIT,
        )
    )


def _reason_to_stay_silent(session: Session, business: Business, thread: Thread, message: Message) -> str | None:
    if thread.ai_paused:
        return "staff took the thread over"
    pending = _first_pending_voice_note(session, thread.id)
    if pending is not None and pending <= message.id:
        return "waiting for a voice note's transcript"
    if not wants_auto_reply(business, thread, message):
        return "auto-replies are off or the message has no text"
    if (thread.ai_replied_through_id or 0) >= message.id:
        return "already answered together with an earlier message"
    if _staff_replied_after(session, thread.id, message.id):
        return "a staff member replied"
    return None


def _staff_took_over(session: Session, thread_id: int, message_id: int) -> str | None:
    """Why the reply written for `message_id` must not be sent after all, read afresh."""
    if session.scalar(sa.select(Thread.ai_paused).where(Thread.id == thread_id)):
        return "staff took the thread over"
    if _staff_replied_after(session, thread_id, message_id):
        return "a staff member replied"
    return None


def _staff_replied_after(session: Session, thread_id: int, message_id: int) -> bool:
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Message)
            .where(
                Message.thread_id == thread_id,
                Message.direction == "out",
                Message.sender_user_id.is_not(None),
                Message.id > message_id,
            )
        )
        or 0
    ) > 0


def _history(session: Session, thread: Thread, before_id: int | None = None) -> list[Message]:
    """The thread's most recent messages with text or a settled transcript, oldest first (replies that
    failed never arrived), older than `before_id` when given (a voice note still being transcribed)."""
    rows = session.scalars(
        sa.select(Message)
        .where(
            Message.thread_id == thread.id,
            sa.or_(Message.body != "", Message.transcript_status.in_(("done", "failed"))),
            sa.or_(Message.direction == "in", Message.status != "failed"),
            Message.id < before_id if before_id is not None else sa.true(),
        )
        .order_by(Message.id.desc())
        .limit(HISTORY_MESSAGES)
    ).all()
    return list(reversed(rows))


def _acquire_lease(database: Database, thread_id: int, token: str, job_lease: timedelta) -> bool:
    deadline = time.monotonic() + LEASE.total_seconds()
    while True:
        with database.scope() as session:
            now = utcnow()
            claimed = rows_affected(
                session.execute(
                    sa.update(Thread)
                    .where(
                        Thread.id == thread_id,
                        sa.or_(
                            Thread.ai_reply_lease_until.is_(None),
                            Thread.ai_reply_lease_until < now,
                            Thread.ai_reply_lease_token == token,
                            _holder_gone(now, job_lease),
                        ),
                    )
                    .values(ai_reply_lease_token=token, ai_reply_lease_until=now + LEASE)
                    .execution_options(synchronize_session=False)
                )
            )
        if claimed == 1:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(LEASE_POLL_SECONDS)  # cooperative under gevent


def _holder_gone(now: datetime, job_lease: timedelta) -> sa.ColumnElement[bool]:
    """The thread's lease is held by a reply whose job runs nowhere any more: its worker was killed
    (the job run's own lease has been over for a lease more, as the job queue counts a lost worker)
    or its runs ended without giving the thread back. Waiting out LEASE for such a holder would hold
    this job's thread too, and with a few of them a whole jobs worker, for minutes after a machine
    is lost. Replies run outside the job queue have no run and are waited for as before."""
    holder_key = sa.literal(f"{JOB_KIND}:") + sa.func.substr(Thread.ai_reply_lease_token, len(LEASE_TOKEN_PREFIX) + 1)
    holder_runs = sa.or_(JobRun.key == holder_key, JobRun.key.like(holder_key + ":%"))  # `…:transcript` too
    live = sa.and_(JobRun.state == "running", JobRun.lease_until >= now - job_lease)
    return sa.and_(
        sa.select(JobRun.key).where(holder_runs).exists(),
        ~sa.select(JobRun.key).where(holder_runs, live).exists(),
    )


def _release_lease(database: Database, thread_id: int, token: str) -> None:
    with database.scope() as session:
        session.execute(
            sa.update(Thread)
            .where(Thread.id == thread_id, Thread.ai_reply_lease_token == token)
            .values(ai_reply_lease_token=None, ai_reply_lease_until=None)
            .execution_options(synchronize_session=False)
        )

"""A signed WhatsApp webhook is never lost, not even while the database is down.

`accept_webhook` hands the verified payload to its function in `server.whatsapp.webhooks` and
commits. When the database can't be reached (or is too busy to take the write), the raw payload
goes to the job queue instead, whose store (an SQLite file of its own, or Redis) doesn't depend on
the database, and the provider gets its 204 as usual. The `wa_webhook` job then runs the same
function in the jobs worker, waiting with growing pauses until the database is back
(`server.jobs`); storing is idempotent on the provider's message id, so a payload that arrives
twice, or is processed twice, is stored once. Only when the queue can't be reached either does the
webhook answer 503, and the provider delivers it again later.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable, Optional, Union

from sqlalchemy.orm import Session

from server.db.engine import database_unavailable
from server.errors import DomainError, Problem
from server.jobs import JobContext, JobQueue, job
from server.logs import log_event
from server.whatsapp.auto_reply import schedule_auto_reply
from server.whatsapp.webhooks import receive_bridge_event, receive_twilio, receive_twilio_status

log = logging.getLogger("agentlocator.whatsapp")

Payload = Union[dict, bytes]  # Twilio's form fields, or the bridge's raw JSON body

# Each webhook's function: the payload (and the queue, for the jobs its media need) → the id of a
# customer message the AI should answer, or None.
RECEIVERS: dict[str, Callable[[Session, Any, JobQueue], Optional[int]]] = {
    "twilio": receive_twilio,
    "twilio_status": receive_twilio_status,
    "baileys": receive_bridge_event,
}
JOB_KIND = "wa_webhook"
# A queued payload that keeps failing once the database is back (not while it is away: that spends
# no attempts) is retried for about half an hour before it counts as failed.
JOB_ATTEMPTS = 10


def accept_webhook(session: Session, jobs: JobQueue, webhook: str, payload: Payload) -> Optional[int]:
    """Store a verified `payload` of `webhook` (a key of RECEIVERS) now, or queue it while the
    database is unreachable. The id of a message the AI should answer once the response is out
    (None when there is none, or when the payload was queued: its job schedules the reply)."""
    try:
        reply_to = RECEIVERS[webhook](session, payload, jobs)
        session.commit()  # here, not after the response: a failure now is still caught
        return reply_to
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        session.rollback()
        key = payload_key(webhook, payload)
        jobs.enqueue(JOB_KIND, key, webhook, payload)  # DomainError(UNAVAILABLE) when the queue is down too
        log_event(log, "whatsapp_webhook_queued", logging.WARNING, webhook=webhook, key=key, error=type(exc).__name__)
        return None


def payload_key(webhook: str, payload: Payload) -> str:
    """The job's idempotency key: the same payload delivered twice is one job."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload, sort_keys=True).encode("utf-8", "replace")
    return f"{JOB_KIND}:{webhook}:{hashlib.sha256(raw).hexdigest()}"


@job(JOB_KIND, attempts=JOB_ATTEMPTS)
def process_queued_webhook(ctx: JobContext, webhook: str, payload: Payload) -> None:
    try:
        with ctx.database.scope() as session:
            reply_to = RECEIVERS[webhook](session, payload, ctx.services.jobs)
    except DomainError as exc:
        if exc.problem not in (Problem.INVALID, Problem.NOT_FOUND):
            raise
        # Checked before anything was queued, so this is only a payload the rules have since refused.
        log_event(log, "whatsapp_webhook_dropped", logging.WARNING, webhook=webhook, reason=exc.code)
        return
    log_event(log, "whatsapp_webhook_processed", webhook=webhook, reply_to=reply_to)
    if reply_to is not None:
        schedule_auto_reply(ctx.services.jobs, reply_to)

"""Live updates for the console: each worker's one poller, fanning `events` rows out to its browsers.

Whichever worker (or instance) handles a webhook writes an `events` row in the same transaction as
the change (`server.db.events`). Every worker that has browsers connected runs one `EventHub`
poller (`server.cooperative.start_background`: a greenlet in gunicorn's gevent worker) that
reads the rows newer than the last one it saw about every 300 ms, one query for the whole worker
however many browsers it serves, and puts each row on the queues of that business's streams.

Ids come from a sequence, and on PostgreSQL a transaction that took id 10 may commit after one
that took id 11. So an id skipped over is remembered as a gap and asked for again on each poll
for a minute; when its row appears it is delivered late rather than never (a rolled-back insert
leaves a gap that simply expires). On SQLite writes are serialised and no such gaps arise.

The poller also, every 15 s, checks in one query that the tokens behind its streams are still
valid (not revoked, not expired by age or, for a console session, by idleness, user not disabled)
and ends the streams of those that aren't (an open stream is no use of the session: it doesn't
keep an idle one alive); every 10
minutes it prunes events older than a day; and when the worker starts draining it ends every
stream, so browsers reconnect to a worker that stays.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import sqlalchemy as sa

from server.cooperative import start_background
from server.db.engine import Database
from server.db.events import events_after, latest_event_id, prune_events
from server.db.models import ApiToken, Event, User, utcnow
from server.security.auth import TokenPolicy

log = logging.getLogger("agentlocator.console.live")

POLL_INTERVAL_SECONDS = 0.3
HEARTBEAT_SECONDS = 15.0
TOKEN_CHECK_SECONDS = 15.0
PRUNE_EVERY_SECONDS = 600.0
GAP_TTL_SECONDS = 60.0
MAX_GAPS = 1000
START_GAP_WINDOW = 200  # ids below the newest that a starting poller checks for late commits
BATCH = 500
QUEUE_SIZE = 1000
RECONNECT_MS = 3000


@dataclass(frozen=True)
class LiveEvent:
    id: int
    business_id: int
    kind: str
    data: str  # the payload as JSON, encoded once for every stream


@dataclass(eq=False)
class Subscription:
    business_id: int
    token_digest: str
    start_id: int  # the last event id the hub had read when this stream subscribed
    queue: "queue.Queue[Optional[LiveEvent]]" = field(default_factory=lambda: queue.Queue(QUEUE_SIZE))
    ended: Optional[str] = None  # why the stream must end: "revoked", "overflow", "draining"

    def end(self, reason: str) -> None:
        self.ended = reason
        try:
            self.queue.put_nowait(None)  # wake the stream
        except queue.Full:
            pass  # it is awake anyway: it has a full queue to read first

    def offer(self, event: LiveEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            # A browser that reads this slowly reconnects and catches up from the table.
            self.end("overflow")


def _live_event(row: Any) -> LiveEvent:
    return LiveEvent(
        row.id, row.business_id, row.kind, json.dumps(row.payload, ensure_ascii=False, separators=(",", ":"))
    )


class EventHub:
    def __init__(
        self,
        database: Database,
        *,
        draining: Callable[[], bool] = lambda: False,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        policy: Optional[TokenPolicy] = None,
    ):
        self._db = database
        self._policy = policy or TokenPolicy()  # None: the defaults (TOKEN_TTL_DAYS, SESSION_IDLE_MINUTES)
        self._draining = draining
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._wake = threading.Event()
        self._poller_running: Optional[Callable[[], bool]] = None
        self._cursor = 0
        self._gaps: dict[int, float] = {}
        self.polls = 0  # how many times the table was read (one query each)

    # ---- streams ------------------------------------------------------------------------------
    def subscribe(self, business_id: int, token_digest: str) -> Subscription:
        with self._lock:
            if not self._subscribers:
                # Idle until now: start from the table's newest row, not from where we stopped. A
                # recent id not there yet may belong to a transaction still open: watch it as a gap.
                with self._db.scope() as session:
                    self._cursor = latest_event_id(session)
                    recent = set(session.scalars(sa.select(Event.id).where(Event.id > self._cursor - START_GAP_WINDOW)))
                now = time.monotonic()
                self._gaps = {
                    gap: now
                    for gap in range(max(1, self._cursor - START_GAP_WINDOW + 1), self._cursor)
                    if gap not in recent
                }
            subscription = Subscription(business_id, token_digest, self._cursor)
            self._subscribers.add(subscription)
            if self._poller_running is None or not self._poller_running():
                self._poller_running = start_background(self._run, "console-events")
        self._wake.set()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def replay(self, business_id: int, after_id: int) -> list[LiveEvent]:
        """The business's events after `after_id` still in the table (a reconnecting browser's backlog)."""
        found: list[LiveEvent] = []
        with self._db.scope() as session:
            while True:
                rows = events_after(session, after_id, business_id=business_id, limit=BATCH)
                found.extend(_live_event(row) for row in rows)
                if len(rows) < BATCH:
                    return found
                after_id = rows[-1].id

    # ---- the poller ---------------------------------------------------------------------------
    def _run(self) -> None:
        connection: Optional[sa.Connection] = None
        next_token_check = next_prune = 0.0
        failures = 0
        while True:
            if not self.subscriber_count:
                if connection is not None:
                    connection.close()
                    connection = None
                self._wake.wait()
                self._wake.clear()
                continue
            if self._draining():
                for subscription in self._snapshot():
                    subscription.end("draining")
                time.sleep(self._poll_interval)
                continue
            try:
                if connection is None:
                    connection = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                full = self._poll(connection)
                now = time.monotonic()
                if now >= next_token_check:
                    self._end_invalid_sessions(connection)
                    next_token_check = now + TOKEN_CHECK_SECONDS
                if now >= next_prune:
                    with self._db.scope() as session:
                        pruned = prune_events(session)
                    if pruned:
                        log.info("pruned console events", extra={"event": "console_events_pruned", "rows": pruned})
                    next_prune = now + PRUNE_EVERY_SECONDS
                failures = 0
            except Exception:  # the database is away for a moment: keep the streams, try again
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.exception(
                        "console events poll failed",
                        extra={"event": "console_events_poll_failed", "failures": failures},
                    )
                if connection is not None:
                    connection.invalidate()
                    connection.close()
                    connection = None
                full = False
                time.sleep(min(5.0, self._poll_interval * failures))
            if not full:
                time.sleep(self._poll_interval)

    def _snapshot(self) -> list[Subscription]:
        with self._lock:
            return list(self._subscribers)

    def _poll(self, connection: sa.Connection) -> bool:
        """Read and deliver the new rows (and any gap that filled); True when a full batch came back."""
        now = time.monotonic()
        for gap, seen in list(self._gaps.items()):
            if now - seen > GAP_TTL_SECONDS:
                del self._gaps[gap]
        table = Event.__table__
        condition = table.c.id > self._cursor
        if self._gaps:
            condition = sa.or_(condition, table.c.id.in_(sorted(self._gaps)))
        rows = connection.execute(
            sa.select(table.c.id, table.c.business_id, table.c.kind, table.c.payload)
            .where(condition)
            .order_by(table.c.id)
            .limit(BATCH)
        ).all()
        self.polls += 1
        if not rows:
            return False
        subscribers = self._snapshot()
        new_ids = []
        for row in rows:
            if row.id in self._gaps:
                del self._gaps[row.id]
            elif row.id > self._cursor:
                new_ids.append(row.id)
            else:
                continue
            event = _live_event(row)
            for subscription in subscribers:
                if subscription.business_id == event.business_id and subscription.ended is None:
                    subscription.offer(event)
        if new_ids:
            expected = set(range(self._cursor + 1, new_ids[-1]))
            for gap in sorted(expected - set(new_ids))[: MAX_GAPS - len(self._gaps)]:
                self._gaps[gap] = now
            self._cursor = new_ids[-1]
        return len(rows) == BATCH

    def _end_invalid_sessions(self, connection: sa.Connection) -> None:
        subscribers = self._snapshot()
        digests = sorted({s.token_digest for s in subscribers})
        if not digests:
            return
        rows = connection.execute(
            sa.select(ApiToken.token_hash, ApiToken.name, ApiToken.created_at, ApiToken.last_used_at)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash.in_(digests), ApiToken.revoked_at.is_(None), User.disabled_at.is_(None))
        ).all()
        now = utcnow()
        valid = {
            row.token_hash
            for row in rows
            if not self._policy.expired(
                ApiToken(name=row.name, created_at=row.created_at, last_used_at=row.last_used_at), now
            )
        }
        for subscription in subscribers:
            if subscription.token_digest not in valid:
                subscription.end("revoked")


def sse_stream(
    hub: EventHub,
    business_id: int,
    token_digest: str,
    last_event_id: Optional[int],
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> Iterator[str]:
    """The `text/event-stream` body: a backlog after `last_event_id`, a `ready` event, then live events.

    `ready` carries the position (`id:`) from which a reconnect resumes, so a browser that saw no
    event before reconnecting still misses none; its data says where it stands. A comment every
    `heartbeat` seconds without events keeps proxies from closing the idle connection (and lets the
    server notice a browser that left). Subscribing comes first, so nothing falls between the backlog
    and the live events; an event both replayed and delivered live is sent once.
    """
    subscription = hub.subscribe(business_id, token_digest)
    try:
        replayed: set[int] = set()
        position = subscription.start_id
        chunk = f"retry: {RECONNECT_MS}\n\n"
        if last_event_id is not None:
            backlog = hub.replay(business_id, last_event_id)
            replayed = {event.id for event in backlog}
            position = max([last_event_id, *replayed]) if replayed else max(last_event_id, position)
            chunk += "".join(_frame(event) for event in backlog)
        ready = json.dumps({"last_event_id": position, "replayed": len(replayed)})
        yield chunk + f"id: {position}\nevent: ready\ndata: {ready}\n\n"
        quiet_since = time.monotonic()
        while subscription.ended is None:
            try:
                event = subscription.queue.get(timeout=max(0.0, quiet_since + heartbeat - time.monotonic()))
            except queue.Empty:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
                continue
            if event is None or event.id in replayed:
                continue
            yield _frame(event)
            quiet_since = time.monotonic()
    finally:
        hub.unsubscribe(subscription)


def _frame(event: LiveEvent) -> str:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {event.data}\n\n"

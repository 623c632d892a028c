"""Durable background jobs on huey: what the web process must not do itself, and must not lose.

The web process only enqueues (`JobQueue.enqueue`); a separate consumer process
(`flask --app main jobs-worker`, started by `start_all.sh` beside gunicorn) runs the jobs in OS
threads, so no job ever runs on a web worker's gevent hub and a restart of either loses nothing
that was queued or scheduled. The queue lives in SQLite by default (a file beside the SQLite
database, or `instance/jobs.db`) and in Redis when `JOBS_URL` or `REDIS_URL` says so.

A job is registered with `@job("kind")` on a function `fn(ctx, *args)` (`ctx` is a `JobContext`).
Each enqueued job carries an idempotency key; `job_runs` (server/jobs/runs.py) records it, so a job
that already ran, or is running on another worker, is a no-op. A failure is retried with
exponential backoff (BACKOFF_BASE × 2ⁿ seconds, capped at BACKOFF_CAP) until the kind's attempts
run out; then the run is `failed` and counted by `/readyz` and `flask --app main jobs`.

huey has no acknowledgements of its own: a task taken off its queue by a consumer that is then
killed (SIGKILL, a lost machine) would be gone. Two things keep it. The queue's store
(server/jobs/store.py) keeps each taken task in its consumer's list until huey is done with it, and
puts back on the queue what a consumer that stopped saying it is alive had taken. And a running job
holds a lease on its `job_runs` row (JOBS_LEASE_SECONDS), renewed by its worker's lease keeper while
it runs, and the row keeps the job's arguments; every worker's lease keeper, on start and then
periodically, queues again the jobs whose lease ran out (once more than a lease ago, which leaves
live workers time to renew after a database outage). The idempotency key keeps a job that did
finish from running again.
"""

from __future__ import annotations

import logging
import pickle
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import sqlalchemy as sa
from huey import signals
from huey.exceptions import RetryTask

from server.config import PROJECT_ROOT, Settings
from server.db.engine import Database, database_unavailable
from server.db.offhub import OffHub
from server.errors import DomainError, Problem
from server.jobs import runs
from server.jobs.store import RedisJobHuey, SqliteJobHuey
from server.logs import log_event
from server.providers.base import VoicemailTranscriber, VoiceNoteTranscriber

log = logging.getLogger("agentlocator.jobs")

QUEUE_NAME = "agentlocator"
DEFAULT_ATTEMPTS = 5
BACKOFF_BASE = 2.0  # seconds before the second attempt
BACKOFF_CAP = 300.0  # the longest wait between two attempts
# While the database is unreachable a job waits and tries again (spending no attempt), at most this long apart.
DATABASE_WAIT_CAP = 15.0
CUT_OFF_PREFIX = "cut-off:"  # queue-store mark of a run the database went away under


class JobServices(Protocol):
    """The app's services a job may use (the app's `AppServices`, shared with its routes)."""

    @property
    def jobs(self) -> JobQueue: ...

    @property
    def voicemail_transcriber(self) -> Optional[VoicemailTranscriber]: ...

    @property
    def voice_note_transcriber(self) -> Optional[VoiceNoteTranscriber]: ...


@dataclass(frozen=True)
class JobContext:
    """What a job gets from the process that runs it: its database, settings and the app's services."""

    database: Database
    settings: Settings
    services: JobServices


@dataclass(frozen=True)
class JobKind:
    name: str
    fn: Callable[..., Any]
    attempts: int


_KINDS: dict[str, JobKind] = {}


def job(name: str, *, attempts: int = DEFAULT_ATTEMPTS) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(ctx, *args)` as the job kind `name` (import its module before building a queue)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _KINDS[name] = JobKind(name, fn, attempts)
        return fn

    return register


def backoff_seconds(attempt: int) -> float:
    """The wait after failed attempt number `attempt` (1-based): 2, 4, 8, … seconds, at most BACKOFF_CAP."""
    return min(BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_CAP)


def queue_location(settings: Settings) -> str:
    """The queue's URL: JOBS_URL, else REDIS_URL, else an SQLite file that follows the database."""
    if settings.jobs_url or settings.redis_url:
        return settings.jobs_url or settings.redis_url
    database = sa.engine.make_url(settings.sqlalchemy_url)
    if database.get_backend_name() == "sqlite" and database.database not in (None, "", ":memory:"):
        app_db = Path(database.database)
        return f"sqlite:///{app_db.with_name(app_db.stem + '-jobs.db')}"
    return f"sqlite:///{PROJECT_ROOT / 'instance' / 'jobs.db'}"


def build_huey(settings: Settings) -> SqliteJobHuey | RedisJobHuey:
    url = queue_location(settings)
    # No result store: nobody waits on a job's return value, and results would pile up.
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteJobHuey(
            QUEUE_NAME, filename=str(path), results=False, timeout=settings.sqlite_busy_timeout_seconds
        )
    return RedisJobHuey(QUEUE_NAME, url=url, results=False)


class JobQueue:
    """The app's queue: enqueue from any process, run in the consumer process."""

    def __init__(self, settings: Settings, context: JobContext):
        self.huey = build_huey(settings)
        self.context = context
        # SQLite's C calls would block a gevent hub (and the consumer's dequeue takes an exclusive
        # lock): in a web worker, the queue file is touched from one OS thread, never the hub.
        self._offhub = OffHub(threads=1) if isinstance(self.huey, SqliteJobHuey) else None
        self._tasks = {kind.name: self._register(kind) for kind in _KINDS.values()}
        self._database_waits = 0  # tries in a row that found the database unreachable
        self.lease = timedelta(seconds=settings.jobs_lease_seconds)
        self._running: set[str] = set()  # keys of the jobs this process is running: their leases are renewed
        self._running_lock = threading.Lock()
        self.huey.signal(signals.SIGNAL_INTERRUPTED)(self._requeue_interrupted)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._tasks)

    # ---- the web side --------------------------------------------------------------------------
    def enqueue(self, kind: str, key: str, *args: Any, delay: Optional[float] = None) -> None:
        """Queue job `kind` with idempotency `key` and `args` (plain values: they are pickled), to run
        now or after `delay` seconds. Raises DomainError(UNAVAILABLE) when the queue can't be reached."""
        task = self._tasks[kind]
        try:
            if delay is None:
                self._storage(task, key, *args)
            else:
                self._storage(task.schedule, (key, *args), delay=delay)
        except Exception as exc:
            log_event(log, "job_enqueue_failed", logging.ERROR, kind=kind, key=key, error=type(exc).__name__)
            raise DomainError(
                Problem.UNAVAILABLE, "jobs_unavailable", "the background job queue cannot be reached"
            ) from exc
        log_event(log, "job_enqueued", logging.DEBUG, kind=kind, key=key, delay=delay)

    def counts(self) -> dict[str, int]:
        """Jobs waiting to run now (`queued`), waiting for a time (`scheduled`: delayed jobs and
        retries), in a worker's hands (`taken`: running, or left by a killed worker until they are
        recovered), and runs by state (`running`, `retrying`, `failed`)."""
        with self.context.database.scope() as session:
            states = runs.state_counts(session)
        return {
            "queued": self._storage(self.huey.pending_count),
            "scheduled": self._storage(self.huey.scheduled_count),
            "taken": self._storage(self.huey.storage.taken_count),
            "running": states.get("running", 0),
            "retrying": states.get("retrying", 0),
            "failed": states.get("failed", 0),
        }

    def recent_failures(self, limit: int = 20) -> list[dict]:
        with self.context.database.scope() as session:
            return runs.recent_failures(session, limit)

    def _storage(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._offhub is None:
            return fn(*args, **kwargs)
        return self._offhub.run(lambda: fn(*args, **kwargs))

    # ---- the consumer side ---------------------------------------------------------------------
    def consumer(self, workers: int, shutdown_timeout: float):
        """huey's consumer, in OS threads. SIGTERM lets running jobs finish (up to `shutdown_timeout`),
        as the platform's stop does; a job cut off by a hard stop is queued again."""
        self.huey.storage.heartbeat()  # alive before its first take: nothing it takes looks abandoned
        return self.huey.create_consumer(
            workers=workers,
            worker_type="thread",
            periodic=False,
            graceful_signal="TERM",
            shutdown_timeout=shutdown_timeout,
        )

    def _register(self, kind: JobKind):
        def run(key: str, *args: Any) -> None:
            self._run(kind, key, args)

        run.__name__ = run.__qualname__ = kind.name.replace("-", "_")
        # huey's own retries cover a failure around the job (the database busy while claiming it);
        # the job's failures are retried by `_run`, counted in `job_runs`.
        return self.huey.task(name=kind.name, retries=3, retry_delay=BACKOFF_BASE, retry_backoff=2)(run)

    def _run(self, kind: JobKind, key: str, args: tuple) -> None:
        database = self.context.database
        cut_off = self.huey.get(CUT_OFF_PREFIX + key, peek=True) is not None
        try:
            with database.scope() as session:
                attempt = runs.claim(
                    session, key, kind.name, resume=cut_off, lease=self.lease, task_args=pickle.dumps(args)
                )
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            raise self._wait_for_database(kind, key, exc) from exc
        self._database_waits = 0
        if cut_off:
            self.huey.get(CUT_OFF_PREFIX + key)  # taken over: forget the mark
        if attempt is None:
            log_event(log, "job_skipped", kind=kind.name, key=key, reason="already done, failed or running")
            return
        with self._running_lock:
            self._running.add(key)
        try:
            self._attempt(kind, key, args, attempt)
        finally:
            with self._running_lock:
                self._running.discard(key)

    def _attempt(self, kind: JobKind, key: str, args: tuple, attempt: int) -> None:
        database = self.context.database
        try:
            kind.fn(self.context, *args)
        except Exception as exc:
            if database_unavailable(exc):
                # The database went away under the job: not the job's failure, and its run (left
                # `running`, since nothing can be recorded now) is taken over by the next try,
                # marked in the queue's own store, which doesn't depend on the database.
                self.huey.put(CUT_OFF_PREFIX + key, True)
                raise self._wait_for_database(kind, key, exc) from exc
            error = type(exc).__name__ + (f":{exc.code}" if isinstance(exc, DomainError) else "")
            if attempt < kind.attempts:
                delay = backoff_seconds(attempt)
                with database.scope() as session:
                    runs.finish(session, key, "retrying", error)
                log_event(
                    log,
                    "job_retry",
                    logging.WARNING,
                    kind=kind.name,
                    key=key,
                    attempt=attempt,
                    retry_in_seconds=delay,
                    error=error,
                )
                raise RetryTask(delay=delay) from exc
            with database.scope() as session:
                runs.finish(session, key, "failed", error)
            # Not raised on: huey's own retries are for failures around the job (its bookkeeping).
            log.error(
                "job failed for good",
                exc_info=True,
                extra={"event": "job_failed", "kind": kind.name, "key": key, "attempts": attempt, "error": error},
            )
            return
        with database.scope() as session:
            runs.finish(session, key, "done")
        log_event(log, "job_done", kind=kind.name, key=key, attempt=attempt)

    # ---- leases: what a killed worker was running is queued again -----------------------------
    def renew_leases(self) -> None:
        with self._running_lock:
            keys = sorted(self._running)
        if keys:
            with self.context.database.scope() as session:
                runs.renew(session, keys, self.lease)

    def requeue_expired(self) -> int:
        """Queue again each job left `running` whose lease ran out more than a lease ago (its worker
        died: no renewal came since); how many. A job waiting for the database has a retry scheduled
        already (marked in the queue's own store), and is left to it."""
        with self.context.database.scope() as session:
            expired = runs.expired(session, self.lease)
        requeued = 0
        for key, kind, task_args in expired:
            with self._running_lock:
                ours = key in self._running
            if ours or kind not in self._tasks or self._storage(self.huey.get, CUT_OFF_PREFIX + key, True) is not None:
                continue
            # Queued before it is marked: a worker killed between the two leaves it expired, and the
            # next pass queues it again (the key makes the extra copy a no-op). A consumer may take
            # the copy before the mark: its claim takes the expired run over, and the mark then finds
            # it leased again and leaves it alone.
            self.enqueue(kind, key, *pickle.loads(task_args))
            with self.context.database.scope() as session:
                if not runs.release_expired(session, key, self.lease):
                    continue  # it finished, or another worker queued it, meanwhile
            requeued += 1
            log_event(log, "job_requeued", logging.WARNING, kind=kind, key=key, reason="lease expired")
        return requeued

    def recover_abandoned(self) -> int:
        """Say this consumer is alive, and queue again the tasks that consumers silent for three leases
        had taken off the queue; how many. A job that had claimed its run is back a lease sooner, by
        `requeue_expired` (its run records why); this is for the jobs killed before their claim."""
        self.huey.storage.heartbeat()
        recovered = self.huey.storage.recover_abandoned(3 * self.lease.total_seconds())
        if recovered:
            log_event(log, "jobs_recovered", logging.WARNING, count=recovered, reason="consumer lost")
        return recovered

    def keep_leases(self, stop: threading.Event) -> None:
        """The worker's lease keeper: say this consumer is alive, renew what it runs, and requeue what
        dead workers left, at once and then every third of a lease, until `stop` is set."""
        interval = max(self.lease.total_seconds() / 3, 0.1)
        while True:
            try:
                self.recover_abandoned()
            except Exception as exc:  # the queue's store is away: the jobs wait with it
                log_event(log, "jobs_recovery_failed", logging.WARNING, error=type(exc).__name__)
            try:
                self.renew_leases()
                self.requeue_expired()
            except Exception as exc:
                if not database_unavailable(exc):
                    log.exception("lease keeping failed", extra={"event": "job_lease_error"})
                else:
                    log_event(log, "job_lease_waiting_for_database", logging.WARNING, error=type(exc).__name__)
            if stop.wait(interval):
                return

    def start_lease_keeper(self) -> threading.Event:
        """Run `keep_leases` in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        threading.Thread(target=self.keep_leases, args=(stop,), name="jobs-lease-keeper", daemon=True).start()
        return stop

    def _wait_for_database(self, kind: JobKind, key: str, exc: Exception) -> RetryTask:
        """Try the job again once the database may be back: a wait that doubles while it stays
        unreachable (up to DATABASE_WAIT_CAP), as often as it takes, spending none of its attempts."""
        self._database_waits += 1
        delay = min(BACKOFF_BASE * 2 ** (self._database_waits - 1), DATABASE_WAIT_CAP)
        log_event(
            log,
            "job_waiting_for_database",
            logging.WARNING,
            kind=kind.name,
            key=key,
            retry_in_seconds=delay,
            error=type(exc).__name__,
        )
        return RetryTask(delay=delay)

    def _requeue_interrupted(self, signal: str, task) -> None:
        """A job cut off by the consumer's shutdown runs again on the next start."""
        key = task.args[0] if task.args else None
        if key is not None:
            with self.context.database.scope() as session:
                runs.finish(session, key, "retrying", "Interrupted")
        self.huey.enqueue(task)
        log_event(log, "job_requeued", logging.WARNING, kind=task.name, key=key)

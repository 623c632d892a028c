"""SQLite writes run in real OS threads, never on the gevent hub.

pysqlite is a blocking C library. Under gunicorn's gevent worker every request, webhook and live
call of the worker shares one OS thread, so a write that waits for SQLite's write lock (held by
another connection or process) or for the disk stalls all of them until it returns: behind a held
lock `/healthz` once took 29.6 s while `/readyz` still said ready. Here every statement that may
write, and the commit of a transaction that wrote, runs in a small pool of OS threads while the
calling greenlet waits cooperatively; the hub keeps serving everything else. Reads stay on the hub:
under WAL a reader never waits for the writer, and a thread hop per SELECT would cost more than it
saves.

SQLAlchemy's Python code still runs in the calling greenlet; only the driver's C call moves, and
pysqlite releases the GIL inside it, so the threads don't compete with the hub for the interpreter.

Waiting for the write lock never holds a pool thread for long. A transaction that writes and then
commits needs two trips (or more) to the pool, the later ones while it holds the lock; were the
other writers to sit in SQLite's busy wait inside every pool thread, the holder's commit could get
no thread and all would wait out the busy timeout. So inside a thread SQLite waits only
`IN_THREAD_BUSY_MS`; on "database is locked" the statement comes back to its greenlet, which sleeps
cooperatively (backing off) and tries again until the connection's own busy timeout has passed,
then gives up with the same error SQLite would have raised.

Outside gevent (tests, the CLI, the jobs worker) and on threads other than the hub's (a pool
thread, the live engine's call writer, a job's thread), a statement runs where it is called: only
that thread waits, so there is nothing to free.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, cast

from gevent import monkey

if TYPE_CHECKING:
    from gevent.threadpool import ThreadPool

T = TypeVar("T")

# Statements that only read. Anything else (INSERT, UPDATE, DELETE, DDL, BEGIN, WITH …) may take
# the write lock, so it leaves the hub.
_READ_ONLY_PREFIXES = ("SELECT", "PRAGMA")

# SQLite's primary result codes for "another connection holds the lock" (an extended code keeps
# them in its low byte).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
# A read snapshot that another writer has moved past: waiting can't help, only a new transaction.
SQLITE_BUSY_SNAPSHOT = 517

# How long SQLite's busy wait may hold a pool thread before the statement returns to its greenlet.
IN_THREAD_BUSY_MS = 20
# The greenlet's cooperative pauses between tries: short at first, so a lock held for one commit
# costs little, then longer, so a lock held for seconds costs few trips.
FIRST_PAUSE_SECONDS = 0.005
LONGEST_PAUSE_SECONDS = 0.1

_os_thread_ident = monkey.get_original("_thread", "get_ident")


class OffHub:
    """Runs a blocking call in a pool of OS threads when called from the gevent hub's thread."""

    def __init__(self, threads: int = 4):
        self._threads = threads
        self._hub_thread = _os_thread_ident()  # the app is built on the thread its hub serves
        self._pool: Optional[ThreadPool] = None

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self.offloads_here():
            return fn(*args)
        if self._pool is None:
            # Made on first use, after gunicorn's fork: a pool never crosses into a child process.
            from gevent.threadpool import ThreadPool

            self._pool = ThreadPool(self._threads)
        ok, value = self._pool.apply(_capture, (fn, args))
        if not ok:
            raise value  # in the caller's greenlet, where it belongs (gevent would print it as a crash)
        return value

    def offloads_here(self) -> bool:
        """True in a greenlet on the hub's thread of a gevent-patched process."""
        return monkey.is_module_patched("threading") and _os_thread_ident() == self._hub_thread


def _capture(fn: Callable[..., Any], args: tuple) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except BaseException as exc:
        return False, exc


def sqlite_connection_class(offhub: OffHub) -> type[sqlite3.Connection]:
    """A `sqlite3.Connection` subclass (for `sqlite3.connect(factory=…)`) whose writes go through `offhub`."""

    class OffHubCursor(sqlite3.Cursor):
        def execute(self, sql, parameters=(), /):
            if sql.lstrip()[:6].upper() in _READ_ONLY_PREFIXES:
                return super().execute(sql, parameters)
            return _writer(self).write(super().execute, sql, parameters)

        def executemany(self, sql, seq_of_parameters, /):
            # In a transaction (pysqlite's default) only the first row can meet a held lock, before
            # anything is written, so a try is safe to repeat; in autocommit mode earlier rows may
            # already be committed, so it waits in the thread as a whole instead.
            if self.connection.isolation_level is None:
                return offhub.run(super().executemany, sql, seq_of_parameters)
            return _writer(self).write(super().executemany, sql, seq_of_parameters)

        def executescript(self, script, /):
            # A script commits statement by statement: one that failed half-way can't be repeated.
            return offhub.run(super().executescript, script)

    def _writer(cursor: sqlite3.Cursor) -> "OffHubConnection":
        return cast(OffHubConnection, cursor.connection)  # a cursor of this class belongs to one

    class OffHubConnection(sqlite3.Connection):
        def cursor(self, factory=OffHubCursor):
            return super().cursor(factory)

        def commit(self):
            # Only a transaction that wrote has anything to flush (and may run a WAL checkpoint).
            if self.in_transaction:
                return self.write(super().commit)
            return super().commit()

        def write(self, fn: Callable[..., T], *args: Any) -> T:
            """`fn(*args)` in a pool thread, waiting for a held lock in this greenlet, not in the thread."""
            if not offhub.offloads_here():
                return fn(*args)
            # The patience the connection was given (SQLITE_BUSY_TIMEOUT_SECONDS, or a probe's own):
            # reading it takes no lock, so it stays on the hub.
            patience_ms = int(super().execute("PRAGMA busy_timeout").fetchone()[0])
            give_up = time.monotonic() + patience_ms / 1000
            pause = FIRST_PAUSE_SECONDS
            while True:
                try:
                    return offhub.run(self._try_briefly, patience_ms, fn, args)
                except sqlite3.OperationalError as exc:
                    left = give_up - time.monotonic()
                    if left <= 0 or not _worth_waiting(exc):
                        raise
                time.sleep(min(pause, left))  # gevent's sleep: the hub serves everyone else meanwhile
                pause = min(pause * 2, LONGEST_PAUSE_SECONDS)

        def _try_briefly(self, patience_ms: int, fn: Callable[..., T], args: tuple) -> T:
            # Runs in the pool thread, while its greenlet waits: nothing else uses the connection.
            super().execute(f"PRAGMA busy_timeout={min(IN_THREAD_BUSY_MS, patience_ms)}")
            try:
                return fn(*args)
            finally:
                super().execute(f"PRAGMA busy_timeout={patience_ms}")

    return OffHubConnection


def _worth_waiting(exc: sqlite3.OperationalError) -> bool:
    """A lock another connection holds (it will let go), not a snapshot that can never be brought up to date."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return is_sqlite_busy(exc)
    return code & 0xFF == SQLITE_BUSY and code != SQLITE_BUSY_SNAPSHOT


def is_sqlite_busy(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" (another connection held the lock past the busy timeout)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)

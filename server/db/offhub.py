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

The pool has several threads, not one: a greenlet whose transaction already holds the write lock
must be able to commit while other writers sit in SQLite's busy wait for that very lock.

Outside gevent (tests, the CLI, the jobs worker) and on threads other than the hub's (a pool
thread, the live engine's call writer, a job's thread), a statement runs where it is called: only
that thread waits, so there is nothing to free.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

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
            return offhub.run(super().execute, sql, parameters)

        def executemany(self, sql, seq_of_parameters, /):
            return offhub.run(super().executemany, sql, seq_of_parameters)

        def executescript(self, script, /):
            return offhub.run(super().executescript, script)

    class OffHubConnection(sqlite3.Connection):
        def cursor(self, factory=OffHubCursor):
            return super().cursor(factory)

        def commit(self):
            # Only a transaction that wrote has anything to flush (and may run a WAL checkpoint).
            if self.in_transaction:
                return offhub.run(super().commit)
            return super().commit()

    return OffHubConnection


def is_sqlite_busy(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" (another connection held the lock past the busy timeout)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)

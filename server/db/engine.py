"""Engine and sessions. SQLite (the embedded default) and PostgreSQL are both first-class."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from server.db.events import capture_events
from server.db.models import ServiceState, utcnow
from server.db.offhub import OffHub, is_sqlite_busy, sqlite_connection_class
from server.errors import DomainError, Problem

# How long a write waits for SQLite's write lock before the request gets a 503 (SQLITE_BUSY_TIMEOUT_SECONDS).
DEFAULT_SQLITE_BUSY_TIMEOUT = 5.0
# How long opening a PostgreSQL connection may take (DATABASE_CONNECT_TIMEOUT_SECONDS): a request that
# needs the database learns it is unreachable in time to do something else (a call still gets TwiML).
DEFAULT_CONNECT_TIMEOUT = 1.5
# Connections each worker keeps open (DATABASE_POOL_SIZE; twice as many more lent at a peak), and how
# long a request waits for one when all are lent (DATABASE_POOL_TIMEOUT_SECONDS) before it answers 503:
# a client told to retry beats one left hanging half a minute.
DEFAULT_POOL_SIZE = 10
DEFAULT_POOL_TIMEOUT = 5.0
# What a client that got a 503 from the database is told to wait before trying again (Retry-After).
RETRY_AFTER_SECONDS = 1

# The errors that mean the database can't be reached (or can't take the work) now: worth trying again later.
DATABASE_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def rows_affected(result: sa.Result[Any]) -> int:
    """How many rows an INSERT, UPDATE or DELETE touched. `Session.execute` is typed as returning a
    plain `Result`; for those statements it is a `CursorResult`, which counts them."""
    return cast(sa.CursorResult[Any], result).rowcount


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is down, unreachable or busy (rather than a bug or bad data)."""
    return (
        isinstance(exc, DATABASE_UNAVAILABLE)
        or (isinstance(exc, DomainError) and exc.problem is Problem.UNAVAILABLE and exc.code == "database_busy")
        or (
            # a connection that broke mid-statement, whatever error class the driver chose for it
            isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
        )
    )


def unavailable_error(exc: BaseException) -> DomainError | None:
    """The 503 to answer for a database that can't take the request now, or None for any other error
    (a failed statement is a bug to see, not a reason to retry).

    A pool with every connection lent is busy; a connection that could not be opened, or broke under
    the statement, means the database is unreachable."""
    if isinstance(exc, sa.exc.TimeoutError):
        return DomainError(
            Problem.UNAVAILABLE,
            "database_busy",
            "the database is busy; try again in a moment",
            retry_after=RETRY_AFTER_SECONDS,
        )
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) and (
        exc.connection_invalidated or exc.statement is None
    ):  # no statement: it failed connecting
        return DomainError(
            Problem.UNAVAILABLE,
            "database_unavailable",
            "the database can't be reached; try again in a moment",
            retry_after=RETRY_AFTER_SECONDS,
        )
    return None


def make_engine(
    url: str,
    *,
    sqlite_busy_timeout: float = DEFAULT_SQLITE_BUSY_TIMEOUT,
    offhub: OffHub | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    pool_size: int = DEFAULT_POOL_SIZE,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> sa.Engine:
    """An engine for `url`. Statement parameters (a customer's words, a gateway secret) never appear in
    logs or in a failed statement's error text (`hide_parameters`): those go to log pipelines."""
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        pool: dict[str, Any] = {}
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            pool = {"pool_size": pool_size, "max_overflow": 2 * pool_size, "pool_timeout": pool_timeout}
        # Writes leave the gevent hub (server/db/offhub.py); a short busy timeout turns a held lock
        # into a quick 503 instead of a request hanging for half a minute.
        engine = sa.create_engine(
            url,
            hide_parameters=True,
            **pool,
            connect_args={
                "check_same_thread": False,
                "timeout": sqlite_busy_timeout,
                "factory": sqlite_connection_class(offhub or OffHub()),
            },
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL lets readers run beside the one writer, and with it synchronous=NORMAL is safe from
            # corruption while making each commit far cheaper (commits block a gevent worker's loop).
            # Foreign keys are off by default in SQLite.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout * 1000)}")
            cursor.close()
    else:
        engine = sa.create_engine(
            url,
            hide_parameters=True,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=2 * pool_size,
            pool_timeout=pool_timeout,
            pool_recycle=1800,
            connect_args={"connect_timeout": max(1, int(connect_timeout))},
        )

        @sa.event.listens_for(engine, "do_connect")
        def _connect_within_timeout(dialect, _record, cargs, cparams):
            # libpq applies connect_timeout only to a blocking connect. Under gevent (psycogreen's wait
            # callback) it connects without blocking and would wait on an unreachable server for minutes.
            import psycopg2.extensions

            if psycopg2.extensions.get_wait_callback() is None:
                return None  # SQLAlchemy connects as usual, within libpq's connect_timeout
            import gevent

            with gevent.Timeout(connect_timeout, psycopg2.OperationalError("timeout expired")):
                return dialect.connect(*cargs, **cparams)

    @sa.event.listens_for(engine, "handle_error")
    def _busy_is_unavailable(context):
        # Every caller, route or job, sees one clear error: the HTTP answer is a 503 to retry later.
        if is_sqlite_busy(context.original_exception):
            raise DomainError(
                Problem.UNAVAILABLE,
                "database_busy",
                "the database is busy; try again in a moment",
                retry_after=RETRY_AFTER_SECONDS,
            ) from context.sqlalchemy_exception

    return engine


class Database:
    """The engine plus a session factory; `scope()` is a unit of work that commits or rolls back."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_busy_timeout: float = DEFAULT_SQLITE_BUSY_TIMEOUT,
        secrets_box=None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ):
        self.engine = make_engine(
            url,
            sqlite_busy_timeout=sqlite_busy_timeout,
            connect_timeout=connect_timeout,
            pool_size=pool_size,
            pool_timeout=pool_timeout,
        )
        self._sqlite_busy_timeout_ms = int(sqlite_busy_timeout * 1000)
        # Sessions carry the box that seals stored secrets (server/security/secrets_box.py).
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, info={"secrets_box": secrets_box})
        capture_events(self.sessions)  # every change a staff console shows becomes an `events` row

    @contextlib.contextmanager
    def scope(self) -> Iterator[Session]:
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def probe_write(self, name: str, timeout: float) -> None:
        """Rewrite the `service_state` row `name` within `timeout` seconds of lock waiting, or raise.

        A database that answers SELECT 1 may still refuse writes (a held lock, a full disk, a
        read-only replica); readiness has to know."""
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            else:
                millis = int(timeout * 1000)
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {millis}")
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {millis * 2}")
            try:
                now = utcnow()
                beat = sa.update(ServiceState).where(ServiceState.key == name).values(updated_at=now)
                if conn.execute(beat).rowcount == 0:
                    conn.execute(sa.insert(ServiceState).values(key=name, value={}, updated_at=now))
                conn.commit()
            except sa.exc.IntegrityError:  # another worker wrote the first beat at the same moment
                conn.rollback()
            finally:
                if sqlite:
                    conn.rollback()
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={self._sqlite_busy_timeout_ms}")

"""Additive migrations, applied at start-up by every process, safely.

Each file `migrations/NNNN_name.py` defines `upgrade(op)`, where `op` is Alembic's `Operations`
bound to one transaction, or `upgrade(op, env)` when it also needs the running configuration
(`MigrationEnv`: a data migration that seals stored secrets needs the secrets key).
We use Alembic's portable DDL but not its revision chain and env.py:
the files are applied in name order, recorded by name in `schema_migrations`, and guarded by a
lock (a PostgreSQL advisory lock, or a file lock beside the SQLite file) so that several workers
starting together apply each migration exactly once and all come up.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import inspect
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.engine import Connection, Engine

from server.config import PROJECT_ROOT

log = logging.getLogger("agentlocator.migrate")

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
# Any constant works; it only has to be the same for every process of this application.
ADVISORY_LOCK_KEY = 0x41474C43

VERSION_TABLE = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class MigrationEnv:
    """What a migration may need beyond the schema; None where the caller has no such thing."""

    secrets_box: Any = None


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("[0-9]*.py"))


def _load_upgrade(path: Path):
    spec = importlib.util.spec_from_file_location(f"agentlocator_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"migration {path.name} can't be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.upgrade


def applied_names(conn: Connection) -> set[str]:
    if not sa.inspect(conn).has_table(VERSION_TABLE.name):
        return set()
    return set(conn.execute(sa.select(VERSION_TABLE.c.name)).scalars())


def pending_migrations(engine: Engine, directory: Path = MIGRATIONS_DIR) -> list[str]:
    with engine.connect() as conn:
        done = applied_names(conn)
    return [p.stem for p in migration_files(directory) if p.stem not in done]


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                conn.commit()
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock_path = Path(engine.url.database + ".migrate.lock")
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def run_migrations(
    engine: Engine, directory: Path = MIGRATIONS_DIR, *, env: MigrationEnv = MigrationEnv()
) -> list[str]:
    """Apply every migration not yet recorded; return the names applied (empty on a second run)."""
    applied: list[str] = []
    with _migration_lock(engine):
        with engine.begin() as conn:
            VERSION_TABLE.create(conn, checkfirst=True)
        for path in migration_files(directory):
            with engine.begin() as conn:
                if path.stem in applied_names(conn):
                    continue
                upgrade = _load_upgrade(path)
                ops = Operations(MigrationContext.configure(conn))
                if len(inspect.signature(upgrade).parameters) > 1:
                    upgrade(ops, env)
                else:
                    upgrade(ops)
                conn.execute(VERSION_TABLE.insert().values(name=path.stem, applied_at=datetime.now(timezone.utc)))
            log.info("Applied migration: %s", path.stem, extra={"event": "migration_applied", "migration": path.stem})
            applied.append(path.stem)
    return applied

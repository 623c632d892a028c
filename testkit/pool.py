"""Apps built once and lent to one test after another.

Building an app (werkzeug compiling every URL rule, the migrations check, the job queue's schema)
costs far more than most tests that use it, so `AppPool` keeps each distinct app (one per database
and set of extra settings) and lends it again. What a test leaves behind must not reach the next:

- the database is emptied by the fixtures before each test (`empty_database`);
- on return, what an app makes on first use (the live-call engine, the console's event hub and its
  poller, the sign-in limiter, the token policy) is dropped, so the next test makes its own; its
  lifecycle starts over (not draining) and its job queue is emptied;
- an app a test changed in any other way (a setting, a route or hook, a replaced service, a
  database connection still checked out, a queue that is not a local file) is disposed of instead
  of being lent again.
"""

from __future__ import annotations

import collections
import functools
import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import sqlalchemy as sa
from flask import Flask
from huey import SqliteHuey

from server.app_state import AppServices, services
from server.lifecycle import Lifecycle
from server.logs import configure_logging

# Made on first use: dropped when the app is returned, so the next test starts without them.
MADE_ON_FIRST_USE = ("voice_engine", "event_hub", "login_limiter", "token_policy")
# The migrations' own bookkeeping: kept when the database is emptied.
KEPT_TABLES = {"schema_migrations"}


@dataclass
class _Lent:
    key: tuple
    shape: dict[str, Any]


class AppPool:
    """Idle apps by (database URL, extra settings); at most `max_idle` are kept, the least recently used go.
    Only the `warm` most recently returned keep their database connections open: several test sessions
    share one PostgreSQL server and its connection limit."""

    def __init__(
        self, build: Callable[[str, dict[str, str]], Flask], jobs_dir: Path, *, max_idle: int = 12, warm: int = 4
    ):
        self._build = build
        self._jobs_dir = jobs_dir
        self._max_idle = max_idle
        self._warm = warm
        self._idle: collections.OrderedDict[tuple, list[Flask]] = collections.OrderedDict()
        self._lent: dict[int, _Lent] = {}
        self._numbers = itertools.count(1)
        self.built = self.reused = 0

    def acquire(self, database_url: str, env: Mapping[str, str]) -> Flask:
        """An app on `database_url` with `env` on top of the test settings: an idle one, or a new one."""
        key = (database_url, tuple(sorted(env.items())))
        idle = self._idle.get(key)
        if idle:
            app = idle.pop()
            if not idle:
                del self._idle[key]
            # Building an app configures logging; a lent one must leave logging as a new one would.
            configure_logging(app.config["SETTINGS"].log_level)
            self.reused += 1
        else:
            env = {"JOBS_URL": f"sqlite:///{self._jobs_dir / f'jobs-{next(self._numbers)}.db'}", **env}
            app = self._build(database_url, env)
            self.built += 1
        self._lent[id(app)] = _Lent(key, _shape(app))
        return app

    def build_fresh(self, database_url: str, env: Mapping[str, str]) -> Flask:
        """A new app that is never lent again (for tests of what building an app does)."""
        env = {"JOBS_URL": f"sqlite:///{self._jobs_dir / f'jobs-{next(self._numbers)}.db'}", **env}
        self.built += 1
        return self._build(database_url, env)

    def release(self, app: Flask) -> None:
        """Take `app` back after a test: reset for the next one, or disposed of when that can't be done."""
        lent = self._lent.pop(id(app), None)
        if lent is None or not _reset(app, lent.shape):
            dispose(app)
            return
        self._idle.setdefault(lent.key, []).append(app)
        self._idle.move_to_end(lent.key)
        while sum(len(apps) for apps in self._idle.values()) > self._max_idle:
            _, apps = self._idle.popitem(last=False)
            for old in apps:
                dispose(old)
        newest_first = [app for apps in reversed(self._idle.values()) for app in reversed(apps)]
        for cold in newest_first[self._warm :]:
            if services(cold).database.engine.pool.checkedin():
                dispose(cold)  # closes its pooled connections; the engine connects again when next used

    def close(self) -> None:
        for apps in self._idle.values():
            for app in apps:
                dispose(app)
        self._idle.clear()


def dispose(app: Flask) -> None:
    services(app).database.engine.dispose()


def _shape(app: Flask) -> dict[str, Any]:
    """What a test must leave as it found it for the app to be lent again: each entry a flat dict or
    list, compared element by element by identity (`_same`)."""
    state = services(app)
    hooks = []
    for kind, registry in (
        ("before_request", app.before_request_funcs),
        ("after_request", app.after_request_funcs),
        ("teardown_request", app.teardown_request_funcs),
        ("teardown_appcontext", {None: app.teardown_appcontext_funcs}),
        ("url_value_preprocessor", app.url_value_preprocessors),
        ("template_context_processor", app.template_context_processors),
    ):
        hooks += [(kind, scope, func) for scope, funcs in registry.items() for func in funcs]
    return {
        "config": dict(app.config),
        "routes": [(rule.rule, rule.endpoint, rule.methods) for rule in app.url_map.iter_rules()],
        "views": dict(app.view_functions),
        "blueprints": dict(app.blueprints),
        "hooks": hooks,
        "error_handlers": [
            (scope, code, exception, handler)
            for scope, by_code in app.error_handler_spec.items()
            for code, handlers in by_code.items()
            for exception, handler in handlers.items()
        ],
        "extensions": dict(app.extensions),
        "services": {
            f.name: getattr(state, f.name)
            for f in fields(AppServices)
            if f.name not in MADE_ON_FIRST_USE and f.name not in ("lifecycle", "openapi_spec")
        },
        "probes": list(state.readiness_probes),
        "openapi_parts": list(state.openapi_parts),
        "engine": [state.database.engine],
        "huey": [state.jobs.huey],
    }


def _same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    def same_value(a: Any, b: Any) -> bool:
        if isinstance(a, tuple) and isinstance(b, tuple):  # a route, hook or handler: its parts
            return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
        return a is b or (isinstance(a, (str, int, frozenset, set)) and a == b)

    for key, was in before.items():
        now = after[key]
        if isinstance(was, dict):
            if was.keys() != now.keys() or not all(same_value(was[k], now[k]) for k in was):
                return False
        elif len(was) != len(now) or not all(same_value(a, b) for a, b in zip(was, now, strict=True)):
            return False
    return True


def _reset(app: Flask, shape: dict[str, Any]) -> bool:
    """Make `app` as the next test expects a new one; False when the test changed what can't be reset."""
    if not _same(shape, _shape(app)):
        return False
    state = services(app)
    pool: Any = state.database.engine.pool
    if getattr(pool, "checkedout", lambda: 0)():
        return False
    huey = state.jobs.huey
    if not isinstance(huey, SqliteHuey):
        return False
    for name in MADE_ON_FIRST_USE:
        setattr(state, name, None)
    state.lifecycle = Lifecycle()
    # A new app takes routes and hooks until its first request; a test may add its own (the app is then
    # disposed of when it comes back, as it no longer has the shape it was lent with).
    app._got_first_request = False
    huey.flush()
    state.jobs._database_waits = 0
    return True


# ---- emptying a database between tests ------------------------------------------------------------
@functools.cache
def _emptying_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.StaticPool)


@functools.cache
def _emptying_statements(url: str) -> tuple[str, ...]:
    """DELETE from every table, children first, then restart the ids: the same end state as a new
    database (or `TRUNCATE … RESTART IDENTITY`), at a small fraction of its cost on a handful of rows."""
    engine = _emptying_engine(url)
    metadata = sa.MetaData()
    metadata.reflect(engine)
    tables = [t.name for t in metadata.sorted_tables if t.name not in KEPT_TABLES]
    deletes = [f'DELETE FROM "{name}"' for name in reversed(tables)]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            has_sequences = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
            ).first()
            return (*deletes, *(["DELETE FROM sqlite_sequence"] if has_sequences else []))
        sequences = (
            conn.execute(
                sa.text(
                    "SELECT seq.relname FROM pg_class seq JOIN pg_depend dep ON dep.objid = seq.oid "
                    "JOIN pg_class tab ON dep.refobjid = tab.oid "
                    "WHERE seq.relkind = 'S' AND dep.deptype IN ('a', 'i') AND tab.relname = ANY(:tables)"
                ),
                {"tables": tables},
            )
            .scalars()
            .all()
        )
    return ("; ".join(deletes + [f'ALTER SEQUENCE "{name}" RESTART' for name in sorted(sequences)]),)


def empty_database(url: str) -> None:
    """Empty every table of the database at `url` (but the migrations' record) and restart its ids from 1."""
    with _emptying_engine(url).begin() as conn:
        for statement in _emptying_statements(url):
            conn.exec_driver_sql(statement)


def forget_database(url: str) -> None:
    """Close the emptying connection to `url` (before the database is dropped)."""
    _emptying_engine(url).dispose()

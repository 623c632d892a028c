"""Shared fixtures: `app`, `client` and `db`, parametrised over SQLite and the machine's PostgreSQL.

Each test session gets its own PostgreSQL database (created from the `test` database and dropped
at the end), so parallel runs never see each other's rows. When PostgreSQL can't be reached
(`TEST_PG_ADMIN_URL`, by default 127.0.0.1:5432), its tests are skipped with the connection error as
the reason; under CI (`CI=true`) they fail instead, so a database that vanished can't pass as green.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from server.app_factory import create_app
from server.app_state import services
from server.config import Settings
from server.db.migrate import run_migrations
from server.db.models import Business, BusinessNumber, User
from server.security.auth import issue_token
from server.security.passwords import hash_password
from testkit.env import BASE_TEST_ENV as BASE_TEST_ENV
from testkit.env import TEST_BASE_URL as TEST_BASE_URL
from testkit.env import TEST_TWILIO_TOKEN as TEST_TWILIO_TOKEN
from testkit.pool import AppPool, empty_database, forget_database

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://127.0.0.1:5432/test")


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _pg_admin_engine() -> sa.Engine:
    """An engine on the admin database; without a reachable server the test is skipped, or failed under CI."""
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            return engine
    except sa.exc.OperationalError as exc:
        engine.dispose()
        where = sa.make_url(PG_ADMIN_URL).render_as_string(hide_password=True)
        reason = f"PostgreSQL at {where} can't be reached: {str(exc.orig).strip()}"
        if running_under_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@contextlib.contextmanager
def throwaway_pg_database(prefix: str = "agentlocator_test"):
    """A new, empty PostgreSQL database (its URL), dropped afterwards; see `_pg_admin_engine` without a server."""
    admin = _pg_admin_engine()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database():
    """A fresh PostgreSQL database for this test session, migrated once."""
    with throwaway_pg_database() as url:
        engine = sa.create_engine(url)
        run_migrations(engine)
        engine.dispose()
        yield url
        forget_database(url)


def truncate_all(url: str) -> None:
    """Empty every table of the database at `url` (SQLite or PostgreSQL) and restart its ids from 1."""
    empty_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """An SQLite file migrated once (copying it is much cheaper than migrating)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "agentlocator.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    run_migrations(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def sqlite_database(sqlite_template, tmp_path_factory):
    """This session's SQLite database (a copy of the template), emptied before each test like PostgreSQL's."""
    path = tmp_path_factory.mktemp("sqlite") / "agentlocator.db"
    shutil.copyfile(sqlite_template, path)
    yield f"sqlite:///{path}"
    forget_database(f"sqlite:///{path}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """The session's database of each kind, emptied for this test."""
    url = request.getfixturevalue("sqlite_database" if request.param == "sqlite" else "pg_database")
    truncate_all(url)
    return url


def make_settings(**env: str) -> Settings:
    """Settings from the test defaults plus `env` (environment-variable names → values)."""
    return Settings.from_env({**BASE_TEST_ENV, **env})


def build_test_app(database_url: str, env: dict[str, str]):
    app = create_app(make_settings(DATABASE_URL=database_url, **env))
    app.config["TESTING"] = True
    return app


@pytest.fixture(scope="session")
def app_pool(tmp_path_factory):
    """Apps built once per session and lent to test after test (see testkit/pool.py)."""
    pool = AppPool(build_test_app, tmp_path_factory.mktemp("jobs"))
    yield pool
    pool.close()


@pytest.fixture
def make_app(request, database_url, app_pool):
    """An app on this test's database (with a job queue of its own) with extra environment variables:
    one lent by the session's pool, or, for a test marked `fresh_app`, one built for it alone."""
    apps = []
    fresh = request.node.get_closest_marker("fresh_app") is not None

    def build(**env: str):
        app = app_pool.build_fresh(database_url, env) if fresh else app_pool.acquire(database_url, env)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app_pool.release(app)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    return services(app).database


@dataclass
class Tenant:
    business_id: int
    user_id: int
    token: str
    phone: str
    whatsapp: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@functools.cache
def password_hash(password: str) -> str:
    """The stored hash of a test user's password, computed once: scrypt is slow on purpose."""
    return hash_password(password)


def create_tenant(
    db,
    *,
    name: str = "Salon Dana",
    phone: str = "+97235550001",
    whatsapp: str = "+97235550002",
    role: str = "owner",
    email: str | None = None,
    **business_fields,
) -> Tenant:
    with db.scope() as session:
        business = Business(name=name, **business_fields)
        session.add(business)
        session.flush()
        session.add_all(
            [
                BusinessNumber(business_id=business.id, number=phone, kind="voice"),
                BusinessNumber(business_id=business.id, number=whatsapp, kind="whatsapp"),
            ]
        )
        user = User(
            business_id=business.id,
            email=email or f"{role}-{uuid.uuid4().hex[:6]}@example.test",
            password_hash=password_hash("correct horse"),
            role=role,
        )
        session.add(user)
        session.flush()
        token = issue_token(session, user)
        return Tenant(business.id, user.id, token, phone, whatsapp)


def add_user(db, business_id: int, role: str) -> Tenant:
    """Another user (and token) in an existing business."""
    with db.scope() as session:
        user = User(
            business_id=business_id,
            email=f"{role}-{uuid.uuid4().hex[:6]}@example.test",
            password_hash=password_hash("correct horse"),
            role=role,
        )
        session.add(user)
        session.flush()
        business = session.get(Business, business_id)
        return Tenant(
            business_id,
            user.id,
            issue_token(session, user),
            *(business.numbers_of("voice")[:1] or [""]),
            *(business.numbers_of("whatsapp")[:1] or [""]),
        )


@pytest.fixture
def tenant(db) -> Tenant:
    """Business A, with an owner token."""
    return create_tenant(db)


@pytest.fixture
def other_tenant(db) -> Tenant:
    """Business B: its data must stay invisible to business A."""
    return create_tenant(db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102")

"""The test app pool (testkit/pool.py): an app is lent again only as a new one would start."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Blueprint

from server.app_state import services
from server.db.models import Business
from testkit.pool import AppPool
from tests.conftest import build_test_app, create_tenant, truncate_all


@pytest.fixture
def pool(tmp_path):
    made = AppPool(build_test_app, tmp_path)
    yield made
    made.close()


def test_an_app_comes_back_as_new_and_is_lent_again(pool, database_url):
    app = pool.acquire(database_url, {})
    state = services(app)
    state.lifecycle.start_draining()
    assert app.test_client().get("/readyz").status_code == 503
    state.jobs.enqueue("call_watchdog", "test:pool", "CA0", delay=600)
    assert state.jobs.huey.pending_count() + state.jobs.huey.scheduled_count() == 1
    state.token_policy = object()  # type: ignore[assignment]
    pool.release(app)

    again = pool.acquire(database_url, {})
    assert again is app and (pool.built, pool.reused) == (1, 1)
    assert not state.lifecycle.draining and state.token_policy is None
    assert state.jobs.huey.scheduled_count() == 0 and state.jobs.huey.pending_count() == 0
    assert again.test_client().get("/readyz").status_code == 200
    pool.release(again)


def test_other_settings_get_another_app(pool, database_url):
    plain = pool.acquire(database_url, {})
    pool.release(plain)
    other = pool.acquire(database_url, {"WATCHDOG_SECONDS": "5"})
    assert other is not plain and other.config["SETTINGS"].watchdog_seconds == 5
    pool.release(other)
    assert pool.acquire(database_url, {}) is plain


def test_an_app_given_a_route_is_not_lent_again(pool, database_url):
    app = pool.acquire(database_url, {})
    app.test_client().get("/healthz")  # served a request: a new app would still take routes
    pool.release(app)
    app = pool.acquire(database_url, {})
    bp = Blueprint("extra", __name__)
    bp.get("/api/test/extra")(lambda: "extra")
    app.register_blueprint(bp)
    pool.release(app)
    assert pool.acquire(database_url, {}) is not app


@pytest.mark.parametrize("change", ["config", "service"])
def test_an_app_whose_settings_or_services_changed_is_not_lent_again(pool, database_url, change):
    app = pool.acquire(database_url, {})
    if change == "config":
        app.config["PROPAGATE_EXCEPTIONS"] = False
    else:
        services(app).voicemail_transcriber = object()  # type: ignore[assignment]
    pool.release(app)
    assert pool.acquire(database_url, {}) is not app


def test_an_app_left_with_a_connection_checked_out_is_not_lent_again(pool, database_url):
    app = pool.acquire(database_url, {})
    held = services(app).database.engine.connect()
    pool.release(app)
    held.close()
    assert pool.acquire(database_url, {}) is not app


def test_emptying_deletes_every_row_and_restarts_the_ids(db, database_url):
    first = create_tenant(db)
    create_tenant(db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102")
    truncate_all(database_url)
    with db.scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Business)) == 0
    assert create_tenant(db).business_id == first.business_id == 1

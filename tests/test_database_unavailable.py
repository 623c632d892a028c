"""A database that can't take a request now is a 503 to retry (with Retry-After), never a 500 or a
half-minute wait: a pool with every connection lent, or a database that can't be reached."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.engine import unavailable_error
from tests.conftest import create_tenant


def test_a_full_pool_is_a_quick_503_with_retry_after(make_app):
    app = make_app(DATABASE_POOL_SIZE="1", DATABASE_POOL_TIMEOUT_SECONDS="0.5")
    client = app.test_client()
    database = services(app).database
    tenant = create_tenant(database)
    assert client.get("/api/crm/customers", headers=tenant.headers).status_code == 200
    # Size 1 lends at most three connections (one kept, two more at a peak): others hold them all.
    held = [database.engine.connect() for _ in range(3)]
    try:
        for conn in held:
            conn.execute(sa.text("SELECT 1"))
        started = time.monotonic()
        response = client.get("/api/crm/customers", headers=tenant.headers)
        elapsed = time.monotonic() - started
    finally:
        for conn in held:
            conn.close()
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json["error"] == "database_busy" and response.headers["Retry-After"] == "1"
    assert 0.4 <= elapsed < 3
    assert client.get("/api/crm/customers", headers=tenant.headers).status_code == 200


def test_an_unreachable_database_is_a_503_with_retry_after(make_app, monkeypatch):
    app = make_app()
    client = app.test_client()
    database = services(app).database
    tenant = create_tenant(database)
    database.engine.dispose()

    def refuse(*_args, **_kwargs):
        raise database.engine.dialect.loaded_dbapi.OperationalError("connection refused")

    monkeypatch.setattr(database.engine.dialect, "connect", refuse)
    response = client.get("/api/crm/customers", headers=tenant.headers)
    monkeypatch.undo()
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json["error"] == "database_unavailable" and response.headers["Retry-After"] == "1"
    assert "refused" not in response.get_data(as_text=True)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_failing_statement_is_still_a_bug_not_a_503(make_app):
    app = make_app()
    with pytest.raises(sa.exc.OperationalError) as failed:
        with services(app).database.engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert unavailable_error(failed.value) is None

"""A held database write lock never freezes a worker: SQLite writes wait in OS threads, give up with
a clear 503 after SQLITE_BUSY_TIMEOUT_SECONDS, and `/readyz` proves the database takes a write."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests
import sqlalchemy as sa

from server.app_state import services
from server.db.engine import Database
from server.db.models import Call, ServiceState
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from testkit.servers import PROJECT_ROOT, GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, create_tenant

BUSY_TIMEOUT = 3.0


def _incoming_call(base_url: str, phone: str, call_sid: str) -> tuple[requests.Response, float]:
    params = voice_params(call_sid, to=phone)
    started = time.monotonic()
    response = requests.post(
        base_url + "/webhook/incoming_call",
        data=params,
        timeout=30,
        headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params),
    )
    return response, time.monotonic() - started


def _rename_business(base_url: str, tenant, name: str) -> tuple[requests.Response, float]:
    """A staff write through the API: its answer is the database's (a webhook may answer without it)."""
    started = time.monotonic()
    response = requests.patch(base_url + "/api/crm/business", json={"name": name}, headers=tenant.headers, timeout=30)
    return response, time.monotonic() - started


def _in_background(results: dict, name: str, request, *args) -> threading.Thread:
    def run() -> None:
        results[name] = request(*args)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _timed_get(url: str) -> tuple[int, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=30)
    return response.status_code, time.monotonic() - started


def _hold_write_lock(path) -> sqlite3.Connection:
    """Another connection (as another process would) takes SQLite's write lock and keeps it."""
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    return locker


@pytest.mark.slow
def test_a_held_write_lock_leaves_the_gevent_worker_serving(tmp_path):
    path = tmp_path / "locked.db"
    env = {**BASE_TEST_ENV, "DATABASE_URL": f"sqlite:///{path}", "SQLITE_BUSY_TIMEOUT_SECONDS": str(BUSY_TIMEOUT)}
    with GunicornServer(env, log_path=tmp_path / "gunicorn.log") as server:
        database = Database(f"sqlite:///{path}")
        tenant = create_tenant(database)
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 200

        locker = _hold_write_lock(path)
        waiting: dict = {}
        writers = [
            _in_background(waiting, "webhook", _incoming_call, server.url, tenant.phone, new_call_sid()),
            _in_background(waiting, "api", _rename_business, server.url, tenant, "Renamed"),
        ]
        time.sleep(0.5)  # both are now waiting for the lock
        health = [_timed_get(server.url + "/healthz") for _ in range(5)]
        readiness_status, readiness_seconds = _timed_get(server.url + "/readyz")
        for writer in writers:
            writer.join(30)
        locker.rollback()

        assert all(status == 200 for status, _ in health)
        assert max(seconds for _, seconds in health) < 0.5, health  # the worker's loop is not blocked
        assert readiness_status == 503 and readiness_seconds < 2.5
        response, seconds = waiting["api"]
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_busy"
        assert BUSY_TIMEOUT - 0.5 <= seconds < BUSY_TIMEOUT + 3
        # The webhook waited as long, then answered without a 500 (Twilio gets TwiML or a 503).
        webhook, seconds = waiting["webhook"]
        assert webhook.status_code < 500 or webhook.json()["error"] == "database_busy", webhook.text
        assert BUSY_TIMEOUT - 0.5 <= seconds < BUSY_TIMEOUT + 3

        # A lock released within the busy timeout only delays the write.
        locker = _hold_write_lock(path)
        call_sid = new_call_sid()
        waiting.clear()
        webhook_thread = _in_background(waiting, "webhook", _incoming_call, server.url, tenant.phone, call_sid)
        time.sleep(1.0)
        assert _timed_get(server.url + "/healthz")[1] < 0.5
        locker.rollback()
        locker.close()
        webhook_thread.join(30)
        response, seconds = waiting["webhook"]
        assert response.status_code == 200 and 0.9 <= seconds < BUSY_TIMEOUT
        with database.scope() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Call).where(Call.call_sid == call_sid)) == 1
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
        database.engine.dispose()
    assert "WORKER TIMEOUT" not in server.logs() and "Traceback" not in server.logs()


def test_readyz_writes_a_heartbeat(client, db):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert set(response.json["jobs"]) == {"queued", "scheduled", "taken", "running", "retrying", "failed"}
    with db.scope() as session:
        first = session.get(ServiceState, "readyz_heartbeat").updated_at
    time.sleep(0.01)
    assert client.get("/readyz").status_code == 200
    with db.scope() as session:
        assert session.get(ServiceState, "readyz_heartbeat").updated_at > first


def test_readyz_is_not_ready_when_the_database_refuses_writes(client, db, database_url):
    assert client.get("/readyz").status_code == 200  # the heartbeat row exists
    if database_url.startswith("sqlite"):
        locker = _hold_write_lock(sa.engine.make_url(database_url).database)
        release = locker.rollback
    else:  # another transaction holds the heartbeat row
        blocker = sa.create_engine(database_url, hide_parameters=True)
        conn = blocker.connect()
        conn.execute(sa.select(ServiceState).where(ServiceState.key == "readyz_heartbeat").with_for_update())

        def release():
            conn.rollback()
            conn.close()
            blocker.dispose()

    try:
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        release()
    assert response.status_code == 503 and response.json["reason"] == "database_not_writable"
    assert 0.8 <= elapsed < 3  # it waited its 1 s for the lock, not the 5 s busy timeout
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_busy_database_is_a_503_with_the_error_shape(make_app, database_url):
    client = make_app(SQLITE_BUSY_TIMEOUT_SECONDS="0.5").test_client()
    tenant = create_tenant(services(client.application).database)
    locker = _hold_write_lock(sa.engine.make_url(database_url).database)
    try:
        started = time.monotonic()
        response = client.patch("/api/crm/business", json={"name": "Renamed"}, headers=tenant.headers)
        elapsed = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
    assert 0.4 <= elapsed < 3
    assert response.status_code == 503
    assert response.json == {
        "error": "database_busy",
        "message": "the database is busy; try again in a moment",
        "retry_after": 1,
    }
    assert response.headers["Retry-After"] == "1"


PROBE = """
from gevent import monkey
monkey.patch_all()
import sqlite3, sys, time
import gevent
from server.db.engine import Database
path = sys.argv[1]
database = Database("sqlite:///" + path, sqlite_busy_timeout=2.0)
with database.scope() as session:
    session.execute(__import__("sqlalchemy").text("CREATE TABLE t (x INTEGER)"))
locker = sqlite3.connect(path, isolation_level=None)
locker.execute("BEGIN IMMEDIATE")
ticks = []
def ticker():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.05)
gevent.spawn(ticker)
def write():
    try:
        with database.scope() as session:
            session.execute(__import__("sqlalchemy").text("INSERT INTO t VALUES (1)"))
        return "written"
    except Exception as exc:
        return getattr(exc, "code", type(exc).__name__)
started = time.monotonic()
result = gevent.spawn(write).get()
elapsed = time.monotonic() - started
gaps = [b - a for a, b in zip(ticks, ticks[1:])]
print(result, round(elapsed, 1), round(max(gaps), 2))
"""


def test_under_gevent_a_write_waits_off_the_hub_and_gives_up_after_the_busy_timeout(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "probe.db")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    result, elapsed, longest_gap = out.stdout.split()
    assert result == "database_busy", out.stderr
    assert 1.5 <= float(elapsed) < 4
    assert float(longest_gap) < 0.3  # the hub kept running the other greenlet all along


CROWD = """
from gevent import monkey
monkey.patch_all()
import sys, time
import gevent
import sqlalchemy as sa
from server.db.engine import Database
path, writers = sys.argv[1], int(sys.argv[2])
database = Database("sqlite:///" + path, sqlite_busy_timeout=3.0)
with database.scope() as session:
    session.execute(sa.text("CREATE TABLE t (writer INTEGER, step INTEGER)"))
ticks = []
def ticker():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.02)
gevent.spawn(ticker)
def write(writer):
    try:
        with database.scope() as session:
            session.execute(sa.text("INSERT INTO t VALUES (:w, 1)"), {"w": writer})
            gevent.sleep(0.01)  # the lock is held while the others pile up behind it
            session.execute(sa.text("INSERT INTO t VALUES (:w, 2)"), {"w": writer})
        return "written"
    except Exception as exc:
        return getattr(exc, "code", type(exc).__name__)
started = time.monotonic()
results = [g.get() for g in [gevent.spawn(write, n) for n in range(writers)]]
elapsed = time.monotonic() - started
with database.scope() as session:
    rows = session.scalar(sa.text("SELECT count(*) FROM t"))
gaps = [b - a for a, b in zip(ticks, ticks[1:])]
print(results.count("written"), rows, round(elapsed, 2), round(max(gaps), 3))
"""


def test_under_gevent_many_more_writers_than_threads_all_commit_while_the_hub_keeps_serving(tmp_path):
    """Each transaction writes twice and commits: three trips to the write threads, the last two
    while it holds the lock the others wait for. Waiting writers must not keep the threads it needs."""
    writers = 24  # six times the pool's threads
    out = subprocess.run(
        [sys.executable, "-c", CROWD, str(tmp_path / "crowd.db"), str(writers)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    written, rows, elapsed, longest_gap = out.stdout.split()
    assert (int(written), int(rows)) == (writers, 2 * writers), out.stderr
    assert float(elapsed) < 2.5  # well within the busy timeout, not stuck until it ran out
    assert float(longest_gap) < 0.3  # the hub kept running the other greenlet all along

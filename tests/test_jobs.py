"""Durable background jobs: one run per key, retries with capped exponential backoff, failures an
operator can see (`/readyz`, `flask --app main jobs`), the queue in SQLite or Redis."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis
import requests
import sqlalchemy as sa

from server.app_state import services
from server.config import PROJECT_ROOT, ConfigError
from server.db.engine import Database
from server.jobs import JobQueue, backoff_seconds, job
from server.jobs.queue import BACKOFF_CAP, queue_location
from server.jobs.runs import JobRun
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from testkit.jobs import InProcessJobs
from testkit.servers import GunicornServer, JobsWorker, flask_cli
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN, create_tenant, make_settings
from tests.test_voice_webhooks import AI_ENV

CALLS: list[str] = []


@job("test_record", attempts=3)
def record(ctx, label: str, failures: int) -> None:
    """Records each run; raises for its first `failures` runs (the message quotes data it must not leak)."""
    CALLS.append(label)
    if CALLS.count(label) <= failures:
        raise RuntimeError(f"upstream refused card 4580-1111-2222-3333 for {label}")


class WorkerKilled(BaseException):
    """Stands for the worker process dying mid-job: nothing of the job's own handling runs."""


@job("test_killed_once")
def killed_once(ctx, label: str) -> None:
    CALLS.append(label)
    if CALLS.count(label) == 1:
        raise WorkerKilled()


SLOW_STARTED, SLOW_RELEASE = threading.Event(), threading.Event()


@job("test_slow")
def slow(ctx) -> None:
    SLOW_STARTED.set()
    SLOW_RELEASE.wait(10)


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()


def _run(db, key: str) -> JobRun:
    with db.scope() as session:
        return session.get(JobRun, key)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def test_a_job_runs_once_per_key(app, db):
    queue = services(app).jobs
    key = f"test:{uuid.uuid4().hex}"
    queue.enqueue("test_record", key, "once", 0)
    queue.enqueue("test_record", key, "once", 0)  # a replayed webhook enqueues the same job again
    assert queue.counts()["queued"] == 2
    assert InProcessJobs(app).run_due() == 2
    assert CALLS == ["once"]
    run = _run(db, key)
    assert (run.state, run.attempts, run.kind) == ("done", 1, "test_record")
    assert queue.counts() == {"queued": 0, "scheduled": 0, "taken": 0, "running": 0, "retrying": 0, "failed": 0}


def test_a_failed_attempt_is_retried_after_its_backoff(app, db):
    queue, jobs = services(app).jobs, InProcessJobs(app)
    key = f"test:{uuid.uuid4().hex}"
    queue.enqueue("test_record", key, "flaky", 1)
    before = _now()
    jobs.run_due()
    assert CALLS == ["flaky"] and _run(db, key).state == "retrying"
    assert queue.counts()["scheduled"] == 1
    [retry] = queue.huey.scheduled()
    assert timedelta(seconds=1.5) <= retry.eta - before <= timedelta(seconds=3)  # 2 s after the first failure
    assert jobs.run_due() == 0  # not before its time
    assert jobs.run_due(at=_now() + timedelta(seconds=3)) == 1
    run = _run(db, key)
    assert (run.state, run.attempts, run.error) == ("done", 2, "RuntimeError")
    assert CALLS == ["flaky", "flaky"]


def test_a_job_whose_worker_died_mid_run_is_queued_again_once_its_lease_runs_out(make_app, db):
    app = make_app(JOBS_LEASE_SECONDS="0.3")
    queue, jobs = services(app).jobs, InProcessJobs(app)
    key = f"test:{uuid.uuid4().hex}"
    queue.enqueue("test_killed_once", key, "killed")
    with pytest.raises(WorkerKilled):
        jobs.run_due()  # taken off the queue, then the worker is gone
    run = _run(db, key)
    assert (run.state, queue.counts()["queued"]) == ("running", 0)
    assert queue.requeue_expired() == 0  # its lease still holds
    time.sleep(0.7)  # the lease, and as long again for a live worker to renew it
    assert queue.requeue_expired() == 1
    assert _run(db, key).state == "retrying" and queue.requeue_expired() == 0
    assert jobs.run_due() == 1
    run = _run(db, key)
    assert (run.state, run.attempts, run.error, run.lease_until) == ("done", 2, "WorkerLost", None)
    assert CALLS == ["killed", "killed"]
    time.sleep(0.7)
    assert queue.requeue_expired() == 0 and jobs.run_due() == 0  # done: never again


def test_a_running_job_keeps_its_lease_while_its_worker_renews_it(make_app, db):
    app = make_app(JOBS_LEASE_SECONDS="0.3")
    queue = services(app).jobs
    other_worker = JobQueue(app.config["SETTINGS"], queue.context)  # another process on the same queue
    SLOW_STARTED.clear()
    SLOW_RELEASE.clear()
    key = f"test:{uuid.uuid4().hex}"
    queue.enqueue("test_slow", key)
    stop = queue.start_lease_keeper()
    runner = threading.Thread(target=InProcessJobs(queue).run_due)
    try:
        runner.start()
        assert SLOW_STARTED.wait(10)
        for _ in range(4):  # well past its lease, twice over: renewed all along
            time.sleep(0.4)
            assert other_worker.requeue_expired() == 0 and _run(db, key).state == "running"
        stop.set()  # the worker stops renewing (as a dead one would)
        time.sleep(0.8)
        assert other_worker.requeue_expired() == 1
    finally:
        stop.set()
        SLOW_RELEASE.set()
        runner.join(10)


def test_backoff_doubles_and_is_capped():
    assert [backoff_seconds(n) for n in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, BACKOFF_CAP, BACKOFF_CAP]


def test_a_job_whose_attempts_run_out_is_failed_and_shown_to_the_operator(app, client, db, database_url, tmp_path):
    queue, jobs = services(app).jobs, InProcessJobs(app)
    key = f"test:{uuid.uuid4().hex}"
    queue.enqueue("test_record", key, "broken", 99)
    at = _now()
    for _ in range(5):
        jobs.run_due(at=at)
        at += timedelta(seconds=BACKOFF_CAP + 1)
    assert CALLS == ["broken"] * 3  # its three attempts, no more
    run = _run(db, key)
    assert (run.state, run.attempts, run.error) == ("failed", 3, "RuntimeError")
    assert queue.counts()["failed"] == 1 and queue.counts()["scheduled"] == 0
    assert client.get("/readyz").json["jobs"]["failed"] == 1
    # a replay of a job that failed for good doesn't run it again
    queue.enqueue("test_record", key, "broken", 99)
    jobs.run_due()
    assert CALLS == ["broken"] * 3

    shown = flask_cli(
        {
            "DATABASE_URL": database_url,
            "JOBS_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "APP_SECRET": "test-app-secret",
        },
        "jobs",
    )
    assert shown["failed"] == 1 and shown["queued"] == 0
    assert shown["recent_failures"][0]["key"] == key and shown["recent_failures"][0]["attempts"] == 3
    assert {"wa_auto_reply", "voicemail_transcription", "call_watchdog"} <= set(shown["kinds"])
    assert "4580" not in json.dumps(shown)  # the error's kind, never its text


def test_the_queue_lives_where_the_settings_say(tmp_path):
    sqlite_app = make_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}")
    assert queue_location(sqlite_app) == f"sqlite:///{tmp_path / 'shop-jobs.db'}"
    postgres_app = make_settings(DATABASE_URL="postgresql://db.example/agentlocator")
    assert queue_location(postgres_app) == f"sqlite:///{PROJECT_ROOT / 'instance' / 'jobs.db'}"
    assert queue_location(make_settings(REDIS_URL="redis://127.0.0.1:6379/3")) == "redis://127.0.0.1:6379/3"
    assert queue_location(make_settings(REDIS_URL="redis://r:6379/3", JOBS_URL="sqlite:///x.db")) == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="JOBS_URL"):
        make_settings(JOBS_URL="amqp://rabbit")


@pytest.mark.xdist_group("redis-jobs")  # one Redis queue name: its runs must not overlap on two workers
def test_the_queue_on_redis(make_app, db):
    url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    app = make_app(JOBS_URL=url)
    queue, jobs = services(app).jobs, InProcessJobs(app)
    assert type(queue.huey).__name__ == "RedisJobHuey"
    key = f"test:{uuid.uuid4().hex}"
    queue.enqueue("test_record", key, "redis", 1)
    jobs.run_due()
    assert _run(services(app).database, key).state == "retrying"
    assert jobs.run_due(at=_now() + timedelta(seconds=3)) == 1
    assert CALLS == ["redis", "redis"] and _run(services(app).database, key).state == "done"
    # the in-process drain reads the same Redis keys the consumer process does
    with services(app).database.scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(JobRun).where(JobRun.key == key)) == 1


def test_an_unreachable_queue_is_a_503_for_the_enqueuer_and_shown_by_readyz(make_app):
    app = make_app(JOBS_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    from server.errors import DomainError

    with pytest.raises(DomainError) as raised:
        services(app).jobs.enqueue("test_record", "test:unreachable", "x", 0)
    assert raised.value.code == "jobs_unavailable"
    response = app.test_client().get("/readyz")
    assert response.status_code == 200 and response.json["jobs"] == {"error": "unreachable"}


@pytest.mark.slow
def test_queued_jobs_survive_restarts_and_an_interrupted_job_runs_again(tmp_path):
    """The web server only enqueues; the jobs worker, started after the web server is gone, still runs
    the call's watchdog; a worker stopped in the middle of it leaves it queued for the next one."""
    with FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as twilio:
        env = {
            **BASE_TEST_ENV,
            **AI_ENV,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "TWILIO_API_BASE_URL": twilio.url,
            "WATCHDOG_SECONDS": "0.5",
            "TWILIO_API_TIMEOUT_SECONDS": "10",
            "SHUTDOWN_GRACE_SECONDS": "1",
        }
        with GunicornServer(env, log_path=tmp_path / "gunicorn.log") as server:
            database = Database(f"sqlite:///{tmp_path / 'app.db'}")
            tenant = create_tenant(database)
            call_sid = new_call_sid()
            params = voice_params(call_sid, to=tenant.phone)
            assert requests.post(
                server.url + "/webhook/incoming_call",
                data=params,
                timeout=10,
                headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params),
            ).ok
            time.sleep(1.5)  # well past WATCHDOG_SECONDS: no job runs in the web process
            assert twilio.requests_for("Calls") == []
            waiting = requests.get(server.url + "/readyz", timeout=5).json()["jobs"]
            # the call's watchdog, and the making of its prompts in the agent's voice (none made yet)
            assert waiting["queued"] + waiting["scheduled"] == 2
        # the web server has stopped; its queue stays on disk

        twilio.stall("Calls", seconds=8, times=1)
        first = JobsWorker(server.env, log_path=tmp_path / "worker-1.log").start()
        assert twilio.wait_for_requests("Calls", sid=call_sid, timeout=10)  # the redirect is under way…
        assert first.stop() == 0  # …when the platform stops the worker: SIGTERM, 1 s of grace, a clean exit
        assert '"job_requeued"' in first.logs()
        with database.scope() as session:
            assert session.get(JobRun, f"call_watchdog:{call_sid}").state == "retrying"

        with JobsWorker(server.env, log_path=tmp_path / "worker-2.log") as second:
            assert len(twilio.wait_for_requests("Calls", 2, sid=call_sid, timeout=15)) == 2, second.logs()[-3000:]
            deadline = time.monotonic() + 10
            while _run(database, f"call_watchdog:{call_sid}").state != "done" and time.monotonic() < deadline:
                time.sleep(0.1)
        run = _run(database, f"call_watchdog:{call_sid}")
        assert (run.state, run.attempts) == ("done", 2)
        assert '"voicemail_redirect"' in second.logs()
        database.engine.dispose()


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_mid_run_runs_again_on_the_next_worker(tmp_path):
    """SIGKILL leaves no chance to put the job back: its lease runs out and the next worker queues it."""
    with FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as twilio:
        env = {
            **BASE_TEST_ENV,
            **AI_ENV,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "TWILIO_API_BASE_URL": twilio.url,
            "WATCHDOG_SECONDS": "0.5",
            "TWILIO_API_TIMEOUT_SECONDS": "10",
            "JOBS_LEASE_SECONDS": "1",
        }
        with GunicornServer(env, log_path=tmp_path / "gunicorn.log") as server:
            database = Database(f"sqlite:///{tmp_path / 'app.db'}")
            tenant = create_tenant(database)
            call_sid = new_call_sid()
            params = voice_params(call_sid, to=tenant.phone)
            assert requests.post(
                server.url + "/webhook/incoming_call",
                data=params,
                timeout=10,
                headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params),
            ).ok

            twilio.stall("Calls", seconds=8, times=1)
            first = JobsWorker(server.env, log_path=tmp_path / "worker-1.log").start()
            assert twilio.wait_for_requests("Calls", sid=call_sid, timeout=10)  # the redirect is under way…
            assert first.kill() == -9  # …when the worker is killed outright
            with database.scope() as session:
                assert session.get(JobRun, f"call_watchdog:{call_sid}").state == "running"

            with JobsWorker(server.env, log_path=tmp_path / "worker-2.log") as second:
                assert len(twilio.wait_for_requests("Calls", 2, sid=call_sid, timeout=15)) == 2, second.logs()[-3000:]
                deadline = time.monotonic() + 10
                while _run(database, f"call_watchdog:{call_sid}").state != "done" and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(3)  # a second copy would have run by now
            run = _run(database, f"call_watchdog:{call_sid}")
            assert (run.state, run.attempts, run.error) == ("done", 2, "WorkerLost")
            assert len(twilio.requests_for("Calls")) == 2
            assert '"reason": "lease expired"' in second.logs()
            database.engine.dispose()

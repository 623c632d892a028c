"""The queue's store keeps what a consumer took until huey is done with it: a consumer killed between
taking a job and the job claiming its run loses nothing, on SQLite and on Redis."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis

from server.app_state import services
from server.jobs import JobQueue
from server.jobs.store import RedisJobStore, SqliteJobStore
from testkit.jobs import InProcessJobs
from tests.test_jobs import CALLS

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL).ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request, tmp_path):
    """`open_store()`: a store on one queue, as another consumer process would open it (its own owner)."""
    name = f"test{uuid.uuid4().hex}"
    if request.param == "sqlite":
        yield lambda: SqliteJobStore(name, filename=str(tmp_path / "jobs.db"))
        return
    if not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    yield lambda: RedisJobStore(name, url=REDIS_URL, blocking=False)
    connection = redis.Redis.from_url(REDIS_URL)
    connection.delete(*(connection.keys(f"huey.*.{name}*") or [b"-"]))


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def test_what_a_silent_consumer_took_goes_back_on_the_queue(open_store):
    killed, survivor = open_store(), open_store()
    killed.heartbeat()
    survivor.heartbeat()
    killed.enqueue(b"first")
    killed.enqueue(b"second")
    assert killed.dequeue() == b"first"  # taken, then the consumer is killed: it never releases it
    assert (survivor.queue_size(), survivor.taken_count()) == (1, 1)

    assert survivor.recover_abandoned(older_than=0.5) == 0  # it said it was alive just now
    time.sleep(0.6)
    survivor.heartbeat()
    assert survivor.recover_abandoned(older_than=0.5) == 1
    assert (survivor.queue_size(), survivor.taken_count()) == (2, 0)
    assert sorted([survivor.dequeue(), survivor.dequeue()]) == [b"first", b"second"]
    survivor.release()
    assert survivor.recover_abandoned(older_than=0.5) == 0  # the dead consumer is forgotten


def test_what_was_released_is_not_taken_again_and_a_live_consumer_keeps_what_it_took(open_store):
    busy, other = open_store(), open_store()
    busy.heartbeat()
    other.heartbeat()
    busy.enqueue(b"done")
    busy.enqueue(b"long")
    assert busy.dequeue() == b"done"
    busy.release()
    assert busy.dequeue() == b"long"  # a long job: its consumer keeps saying it is alive
    for _ in range(3):
        time.sleep(0.25)
        busy.heartbeat()
        assert other.recover_abandoned(older_than=0.5) == 0
    assert (other.queue_size(), other.taken_count()) == (0, 1)
    busy.release()
    assert other.taken_count() == 0


def test_due_tasks_move_from_the_schedule_to_the_queue_in_one_step(open_store):
    store = open_store()
    store.add_to_schedule(b"due", _now() - timedelta(seconds=1))
    store.add_to_schedule(b"later", _now() + timedelta(hours=1))
    assert store.read_schedule(_now()) == []  # nothing for the scheduler to hold in its hands
    assert (store.queue_size(), store.schedule_size()) == (1, 1)
    assert store.dequeue() == b"due"


def test_a_job_whose_consumer_died_before_it_started_runs_on_the_next_consumer(make_app, db, tmp_path):
    app = make_app(JOBS_URL=f"sqlite:///{tmp_path / 'jobs.db'}", JOBS_LEASE_SECONDS="0.2")
    survivor = services(app).jobs
    killed = JobQueue(app.config["SETTINGS"], survivor.context)  # another consumer process on the queue
    CALLS.clear()
    key = f"test:{uuid.uuid4().hex}"
    survivor.enqueue("test_record", key, "taken", 0)
    killed.huey.storage.heartbeat()
    assert killed.huey.dequeue() is not None  # taken; the process dies before the job claims its run
    assert InProcessJobs(survivor).run_due() == 0

    assert survivor.recover_abandoned() == 0  # three leases have not passed
    time.sleep(0.7)
    assert survivor.recover_abandoned() == 1
    assert InProcessJobs(survivor).run_due() == 1
    assert CALLS == ["taken"]

"""A job a killed worker left `running` is queued again by another worker's lease keeper, which
queues the copy first and marks the run after; with several consumers the copy can be taken in
between. It must still run (seen with two instances and one of them SIGKILLed: an AI reply was never
sent, because the copy found the run still `running` and was skipped)."""

from __future__ import annotations

import time
import uuid

import pytest

from server.app_state import services
from server.jobs import job, runs
from server.jobs.runs import JobRun
from testkit.jobs import InProcessJobs

CALLS: list[str] = []


class WorkerKilled(BaseException):
    """Stands for the worker process dying mid-job: nothing of the job's own handling runs."""


@job("test_taken_over")
def killed_once(ctx, label: str) -> None:
    CALLS.append(label)
    if CALLS.count(label) == 1:
        raise WorkerKilled()


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()


def test_a_requeued_copy_taken_before_the_run_is_marked_still_runs(make_app, db, monkeypatch):
    # A lease of its own: this app is built here, after the job kind above is registered.
    app = make_app(JOBS_LEASE_SECONDS="0.27")
    queue, jobs = services(app).jobs, InProcessJobs(app)
    key = f"test:{uuid.uuid4().hex}"
    queue.enqueue("test_taken_over", key, "taken over")
    with pytest.raises(WorkerKilled):
        jobs.run_due()
    time.sleep(0.65)  # the lease, and as long again

    mark = runs.release_expired
    taken_first: list[int] = []

    def another_consumer_first(session, key, older_than):
        taken_first.append(jobs.run_due())  # the copy is consumed before the mark
        return mark(session, key, older_than)

    monkeypatch.setattr(runs, "release_expired", another_consumer_first)
    queue.requeue_expired()
    assert taken_first == [1]
    assert CALLS == ["taken over", "taken over"]
    with db.scope() as session:
        run = session.get(JobRun, key)
        assert (run.state, run.attempts, run.lease_until) == ("done", 2, None)
    monkeypatch.setattr(runs, "release_expired", mark)
    time.sleep(0.65)
    assert queue.requeue_expired() == 0 and jobs.run_due() == 0  # done: never again


def test_a_run_whose_lease_still_holds_is_not_taken_over(make_app, db):
    app = make_app(JOBS_LEASE_SECONDS="0.27")
    queue, jobs = services(app).jobs, InProcessJobs(app)
    key = f"test:{uuid.uuid4().hex}"
    queue.enqueue("test_taken_over", key, "live")
    with pytest.raises(WorkerKilled):
        jobs.run_due()
    queue.enqueue("test_taken_over", key, "live")  # a duplicate while its worker may still be alive
    assert jobs.run_due() == 1
    assert CALLS.count("live") == 1  # skipped: the lease holds
    with db.scope() as session:
        assert session.get(JobRun, key).state == "running"

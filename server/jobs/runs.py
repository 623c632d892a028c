"""What the service keeps about its background jobs.

It lives in the application's database, beside the data the jobs change, so that a job's "already
done" check is shared by every worker process and instance that runs jobs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional, cast

import sqlalchemy as sa
from sqlalchemy import Index, LargeBinary, String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from server.db.models import Base, utcnow


class JobRun(Base):
    """One background job, by its idempotency key: `running`, `retrying` (its next attempt is scheduled),
    `done` (a rerun is a no-op) or `failed` (its attempts ran out). `error` names the last failure's
    kind, never its message (a message may quote a customer's words or a credential)."""

    __tablename__ = "job_runs"
    __table_args__ = (
        Index("ix_job_runs_state_updated", "state", "updated_at"),
        Index("ix_job_runs_state_lease", "state", "lease_until"),
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(60))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, nullable=False)
    # While `running`: until when its worker holds it (renewed as it runs), and the job's arguments
    # (pickled), so that a job whose worker died can be queued again.
    lease_until: Mapped[Optional[datetime]] = mapped_column(nullable=True)
    task_args: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)


# Claimed runs older than this are taken to belong to a worker that died mid-job.
STALE_RUN = timedelta(minutes=15)


def claim(
    session: Session,
    key: str,
    kind: str,
    *,
    resume: bool = False,
    lease: timedelta = STALE_RUN,
    task_args: Optional[bytes] = None,
) -> Optional[int]:
    """Start a run of job `key`: its attempt number, or None when it is done, failed for good, or
    running on another worker (a duplicate of the same job is then a no-op). `resume` takes over a
    run left `running` by an attempt the database went away under (it could record nothing), and
    any worker takes over a run whose lease ran out more than a lease ago (its worker died: the copy
    `requeue_expired` queued can be taken before that run is marked). The run is leased for `lease`
    (see `renew`) and keeps `task_args` to be queued again (`expired`)."""
    now = utcnow()
    if session.get(JobRun, key) is None:
        try:
            with session.begin_nested():
                session.add(
                    JobRun(
                        key=key,
                        kind=kind,
                        state="running",
                        attempts=1,
                        error="",
                        created_at=now,
                        updated_at=now,
                        lease_until=now + lease,
                        task_args=task_args,
                    )
                )
                session.flush()
            return 1
        except IntegrityError:  # the same job, enqueued twice, started on another worker just now
            return None
    result = session.execute(
        sa.update(JobRun)
        .where(
            JobRun.key == key,
            sa.or_(
                JobRun.state == "retrying",
                sa.and_(
                    JobRun.state == "running",
                    sa.or_(
                        sa.true() if resume else sa.false(),
                        JobRun.updated_at < now - STALE_RUN,
                        JobRun.lease_until < now - lease,
                    ),
                ),
            ),
        )
        .values(
            state="running", attempts=JobRun.attempts + 1, updated_at=now, lease_until=now + lease, task_args=task_args
        )
        .execution_options(synchronize_session=False)
    )
    if cast(sa.CursorResult, result).rowcount != 1:
        return None
    return session.scalar(sa.select(JobRun.attempts).where(JobRun.key == key))


def finish(session: Session, key: str, state: str, error: str = "") -> None:
    """Record the end of a run: `done`, `retrying` (another attempt is scheduled) or `failed`.
    A run that succeeds keeps the error of its last failed attempt, if any."""
    values: dict = {"state": state, "updated_at": utcnow(), "lease_until": None}
    if error:
        values["error"] = error[:200]
    session.execute(
        sa.update(JobRun).where(JobRun.key == key).values(**values).execution_options(synchronize_session=False)
    )


def renew(session: Session, keys: list[str], lease: timedelta) -> None:
    """Extend the leases of the runs of `keys` that this worker is running."""
    if keys:
        session.execute(
            sa.update(JobRun)
            .where(JobRun.key.in_(keys), JobRun.state == "running")
            .values(lease_until=utcnow() + lease)
            .execution_options(synchronize_session=False)
        )


def expired(session: Session, older_than: timedelta) -> list[tuple[str, str, bytes]]:
    """Runs left `running` whose lease ran out more than `older_than` ago: (key, kind, task_args)."""
    rows = session.execute(
        sa.select(JobRun.key, JobRun.kind, JobRun.task_args).where(
            JobRun.state == "running", JobRun.lease_until < utcnow() - older_than, JobRun.task_args.is_not(None)
        )
    ).all()
    return [(key, kind, args) for key, kind, args in rows if args is not None]  # as the query asked


def release_expired(session: Session, key: str, older_than: timedelta) -> bool:
    """Mark run `key` (found by `expired`) as waiting for its next attempt, unless it has meanwhile
    finished or been renewed: whether it was still expired."""
    result = session.execute(
        sa.update(JobRun)
        .where(JobRun.key == key, JobRun.state == "running", JobRun.lease_until < utcnow() - older_than)
        .values(state="retrying", error="WorkerLost", lease_until=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return cast(sa.CursorResult, result).rowcount == 1


def state_counts(session: Session) -> dict[str, int]:
    rows = session.execute(sa.select(JobRun.state, sa.func.count()).group_by(JobRun.state)).all()
    return {state: count for state, count in rows}


def recent_failures(session: Session, limit: int = 20) -> list[dict]:
    rows = session.scalars(
        sa.select(JobRun).where(JobRun.state == "failed").order_by(JobRun.updated_at.desc()).limit(limit)
    ).all()
    return [
        {"key": r.key, "kind": r.kind, "attempts": r.attempts, "error": r.error, "failed_at": r.updated_at.isoformat()}
        for r in rows
    ]

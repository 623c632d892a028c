"""A running job holds a lease its worker keeps renewing, and its row keeps what is needed to queue it
again: a worker killed mid-job (no acknowledgement reaches the queue) leaves a lease that runs out,
and another worker queues the job again."""
import sqlalchemy as sa


def upgrade(op):
    op.add_column("job_runs", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("job_runs", sa.Column("task_args", sa.LargeBinary(), nullable=True))
    op.create_index("ix_job_runs_state_lease", "job_runs", ["state", "lease_until"])

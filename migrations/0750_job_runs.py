"""Background jobs: one row per job key, so a job that already ran is a no-op on every worker and
an operator can count the jobs whose attempts ran out."""
import sqlalchemy as sa


def upgrade(op):
    op.create_table(
        "job_runs",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_job_runs_state_updated", "job_runs", ["state", "updated_at"])

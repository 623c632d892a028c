"""Rate-limit counters (sign-in tries per address and per account) in the database, so that every
worker and instance counts against the same window when no Redis is configured."""
import sqlalchemy as sa


def upgrade(op):
    op.create_table(
        "rate_limit_windows",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_rate_limit_windows_expires_at", "rate_limit_windows", ["expires_at"])

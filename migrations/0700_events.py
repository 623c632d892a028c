"""Live updates for the staff console: one row per change worth telling a browser about (a message
stored, a delivery status, a thread, a call, a payment), written in the same transaction as the
change by whichever worker made it. Every worker reads new rows by id and streams them to its
browsers; the id is the SSE event id, so a reconnecting browser resumes after the last one it saw.
On SQLite the table is AUTOINCREMENT, so ids never go back after old rows are pruned."""

import sqlalchemy as sa


def upgrade(op):
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("business_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["business_id"], ["businesses.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_business_id", "events", ["business_id", "id"])
    op.create_index("ix_events_created_at", "events", ["created_at"])

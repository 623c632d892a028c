"""WhatsApp delivery statuses that arrived before their message had the provider's id: the send
stores that id only once the provider has answered, and the provider's status callback can come
first. Each waits here until the id is stored, and is then applied; one whose message never shows
up is pruned after a day."""

import sqlalchemy as sa


def upgrade(op):
    op.create_table(
        "pending_statuses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "provider_message_id", "status", name="uq_pending_statuses_report"),
    )
    op.create_index("ix_pending_statuses_received_at", "pending_statuses", ["received_at"])

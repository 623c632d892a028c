"""A lease on each thread for AI auto-replies, so that one worker at a time answers a conversation."""
import sqlalchemy as sa


def upgrade(op):
    op.add_column("threads", sa.Column("ai_reply_lease_token", sa.String(length=32), nullable=True))
    op.add_column("threads", sa.Column("ai_reply_lease_until", sa.DateTime(timezone=True), nullable=True))

"""Calls: when Twilio reported the media stream over (`<Connect>` action), so the watchdog leaves it alone."""
import sqlalchemy as sa


def upgrade(op):
    op.add_column("calls", sa.Column("stream_ended_at", sa.DateTime(timezone=True), nullable=True))

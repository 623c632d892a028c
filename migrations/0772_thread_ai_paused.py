"""Threads: a staff member has taken the conversation over from the AI (the console's "take over"
switch). While it is set, WhatsApp AI auto-replies stay silent in that thread; existing threads keep
the AI answering, as before."""

import sqlalchemy as sa


def upgrade(op):
    op.add_column("threads", sa.Column("ai_paused", sa.Boolean(), nullable=False, server_default=sa.false()))

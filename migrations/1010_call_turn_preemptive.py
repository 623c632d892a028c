"""Call turns: whether the reply was written ahead of the final transcript (preemptive generation:
"used", "dropped" or "none"), how many replies written ahead were thrown away and their characters."""

import sqlalchemy as sa


def upgrade(op):
    op.add_column("call_turns", sa.Column("preemptive", sa.String(8), nullable=False, server_default="none"))
    op.add_column("call_turns", sa.Column("preemptive_dropped", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("call_turns", sa.Column("preemptive_dropped_chars", sa.Integer(), nullable=False, server_default="0"))

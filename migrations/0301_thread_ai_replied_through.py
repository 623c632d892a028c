"""The newest customer message an AI auto-reply has answered, per thread, so no message is answered twice."""
import sqlalchemy as sa


def upgrade(op):
    op.add_column("threads", sa.Column("ai_replied_through_id", sa.Integer(), nullable=True))

"""Businesses: where the AI hands a live call to a person (`transfer_number`, E.164; none until the
owner sets one) and what that person hears first (`transfer_announcement`)."""

import sqlalchemy as sa


def upgrade(op):
    op.add_column("businesses", sa.Column("transfer_number", sa.String(32), nullable=True))
    op.add_column("businesses", sa.Column("transfer_announcement", sa.Text(), nullable=False, server_default=""))

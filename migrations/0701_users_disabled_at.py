"""Users: when an owner disabled the account (null: active). A disabled user can't sign in and
none of their tokens or sessions work."""

import sqlalchemy as sa


def upgrade(op):
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))

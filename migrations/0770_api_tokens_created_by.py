"""API tokens: who made each one (the user signing in, an owner or admin minting it for someone,
or null for the admin CLI), so a token's actions can be traced to whoever could hand it out."""
import sqlalchemy as sa


def upgrade(op):
    op.add_column("api_tokens", sa.Column("created_by_user_id", sa.Integer(), nullable=True))

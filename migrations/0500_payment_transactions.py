"""Payments: the provider's transaction id (one transaction can pay one payment only) and the moment
a Tranzila notification nonce was used up (a replay finds it consumed and changes nothing)."""
import sqlalchemy as sa


def upgrade(op):
    op.add_column("payments", sa.Column("provider_txn_id", sa.String(length=128), nullable=True))
    op.add_column("payments", sa.Column("notify_consumed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("uq_payments_provider_txn", "payments", ["provider", "provider_txn_id"], unique=True)

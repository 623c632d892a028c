"""Indexes for the CRM API's lists and filters: keyset pages (business, created_at, id), a thread's
messages in time order, a call's voicemail, the caller's number, audit by entity, and on
PostgreSQL full-text (GIN over to_tsvector('simple', …)) for searching transcripts and messages."""
import sqlalchemy as sa


def upgrade(op):
    op.create_index("ix_messages_thread_created", "messages", ["thread_id", "created_at", "id"])
    op.create_index("ix_messages_call_id", "messages", ["call_id"])
    op.create_index("ix_calls_business_from", "calls", ["business_id", "from_number"])
    op.create_index("ix_customers_business_created", "customers", ["business_id", "created_at", "id"])
    for table in ("deals", "invoices", "contracts"):
        op.create_index(f"ix_{table}_business_created", table, ["business_id", "created_at", "id"])
    op.create_index("ix_audit_log_business_entity", "audit_log", ["business_id", "entity_type", "entity_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_calls_transcript_fts", "calls", [sa.text("to_tsvector('simple', transcript)")],
                        postgresql_using="gin")
        op.create_index("ix_messages_body_fts", "messages", [sa.text("to_tsvector('simple', body)")],
                        postgresql_using="gin")

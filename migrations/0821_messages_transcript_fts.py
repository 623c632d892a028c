"""Voice notes are found by the words of their transcript: on PostgreSQL a GIN index over
to_tsvector('simple', transcript), beside the one over the message body (0400), which the thread
search uses the same way. SQLite searches with LIKE and needs none."""

import sqlalchemy as sa


def upgrade(op):
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_messages_transcript_fts",
            "messages",
            [sa.text("to_tsvector('simple', transcript)")],
            postgresql_using="gin",
        )

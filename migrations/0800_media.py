"""WhatsApp media: one row per picture, voice note, video, document or sticker a message carries (or
a file staff uploaded to send). The bytes live in the media store (a local directory or an
S3-compatible bucket) under a key made of the business id and the bytes' sha256; the row keeps what
the console and the API show (kind, sniffed MIME type, size, caption) and why an item was refused
(`status = "rejected"` with the reason: the message itself is still kept). Twilio media waits as
`pending` with its MediaUrl until the download job stores it.

Messages gain the transcript of a voice note and its state (`pending` while transcription runs).
"""

import sqlalchemy as sa


def upgrade(op):
    op.create_table(
        "media",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("business_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("mime_type", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("storage_key", sa.String(length=255), nullable=True),
        sa.Column("file_name", sa.String(length=255), nullable=True),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("voice_note", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("source_url", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["business_id"], ["businesses.id"]),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_media_business_id", "media", ["business_id"])
    op.create_index("ix_media_message_id", "media", ["message_id"])
    op.create_index("ix_media_created_at", "media", ["created_at"])
    op.add_column("messages", sa.Column("transcript", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("transcript_status", sa.String(length=16), nullable=True))
    op.add_column("messages", sa.Column("transcript_error", sa.Text(), nullable=True))

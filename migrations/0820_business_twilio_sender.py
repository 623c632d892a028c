"""Each business's own Twilio WhatsApp sender: a Messaging Service SID (MG…) or one of its WhatsApp
numbers. Empty: its first WhatsApp number, else the deployment's TWILIO_WA_FROM."""

import sqlalchemy as sa


def upgrade(op):
    op.add_column("businesses", sa.Column("twilio_sender", sa.String(length=40), nullable=True))

"""The one way to send a WhatsApp message: `send_whatsapp()` (the API route, staff replies from the
CRM and AI auto-replies all call it). It picks the provider, stores the outgoing message and
answers a `SendResult`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy.orm import Session

from server.config import Settings


@dataclass(frozen=True)
class SendResult:
    success: bool
    provider: Optional[str] = None
    message_id: Optional[int] = None
    provider_message_id: Optional[str] = None
    error: Optional[str] = None
    status_code: int = 200
    message: str = ""


def send_whatsapp(session: Session, settings: Settings, business_id: int, *, to: str, text: str | None = None,
                  provider: str = "auto", content_sid: str | None = None,
                  content_variables: dict[str, Any] | str | None = None, idempotency_key: str | None = None,
                  sender_user_id: int | None = None) -> SendResult:
    """Send `text` (or the template `content_sid`) to `to` and store it as an outgoing message.

    Commits `session` (the stored message must survive a failed send). Never raises for a bad
    input or a provider failure: the result carries the HTTP status the API answers with.
    """
    raise NotImplementedError("arrives with the WhatsApp issue")

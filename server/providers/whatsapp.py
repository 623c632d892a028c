"""The WhatsApp transport interface: what every WhatsApp provider (Twilio, the Baileys bridge) offers
the send service, and how a send fails.

The router may try the next provider only when the first one certainly did not send: a customer
who gets the same message twice is worse than a failed send a person can retry. So a provider
raises `NotSent` only when that is certain (refused before anything went out), and
`OutcomeUnknown` for everything else (timeouts, 5xx, a dropped connection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import requests
import urllib3

from server.providers.base import ProviderError


class WhatsAppSendError(ProviderError):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class NotSent(WhatsAppSendError):
    """Certainly not sent (refused connection, `not_connected`, a request rejected as invalid)."""


class OutcomeUnknown(WhatsAppSendError):
    """The message may or may not have gone out (timeout, 5xx): never resend it elsewhere."""


@dataclass(frozen=True)
class OutgoingMedia:
    """A file to send: its bytes (the bridge takes them base64) and a link Twilio fetches them from
    (`MediaUrl`: public, signed, expiring). `text` of the message is its caption."""

    data: bytes
    mime_type: str
    kind: str  # image, audio, video or document
    file_name: Optional[str] = None
    public_url: Optional[str] = None
    sha256: str = ""


@dataclass(frozen=True)
class Outgoing:
    to: str  # E.164, or a `…@lid` address (Baileys only)
    text: Optional[str] = None
    content_sid: Optional[str] = None
    content_variables: Optional[str] = None  # a JSON object, as Twilio takes it
    idempotency_key: Optional[str] = None
    # The business it is sent for: the bridge sends through that business's WhatsApp account.
    business_id: Optional[int] = None
    # The business's Twilio sender: a number (E.164, sent as `From=whatsapp:<number>`) or a
    # Messaging Service SID (`MG…`, Twilio picks the number from its pool); None: `TWILIO_WA_FROM`.
    sender: Optional[str] = None
    media: Optional[OutgoingMedia] = None


class WhatsAppProvider(Protocol):
    name: str

    def send(self, message: Outgoing) -> str:
        """Send and return the provider's message id; raise `NotSent` or `OutcomeUnknown`."""


def classify_transport_error(exc: requests.RequestException, provider: str) -> WhatsAppSendError:
    """A connection that was never opened sent nothing; anything later (read timeout, reset) may have."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.ConnectTimeout) or isinstance(reason, urllib3.exceptions.NewConnectionError):
        return NotSent("unreachable", f"{provider} could not be reached ({type(reason or exc).__name__})")
    if isinstance(exc, requests.Timeout):
        return OutcomeUnknown("timeout", f"{provider} did not answer in time; the message may have been sent")
    return OutcomeUnknown(
        "connection_error",
        f"the connection to {provider} failed ({type(exc).__name__}); the message may have been sent",
    )

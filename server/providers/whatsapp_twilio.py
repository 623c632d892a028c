"""WhatsApp through Twilio's Messages API (the `twilio` SDK, pointed at `TWILIO_API_BASE_URL`).

Each business sends from its own sender (`Outgoing.sender`, see `server.whatsapp.send`): one of its
WhatsApp numbers (`From=whatsapp:+…`) or a Messaging Service (`MessagingServiceSid=MG…`, Twilio then
picks the number from the service's pool); `TWILIO_WA_FROM` is the default for a business without
one. Every send asks Twilio to report delivery to `/webhook/whatsapp/twilio/status`. A free-form
`Body` only reaches a customer inside the 24-hour window; outside it Twilio needs an approved
template (`ContentSid` + `ContentVariables`), and `Body` must then be left out (error 63016).
"""

from __future__ import annotations

import re
from typing import Optional

import requests

from server.config import Settings
from server.phones import InvalidPhone, to_e164
from server.providers.twilio_rest import TwilioRestException, twilio_client
from server.providers.whatsapp import NotSent, OutcomeUnknown, Outgoing, classify_transport_error
from server.urls import abs_url

STATUS_CALLBACK_PATH = "/webhook/whatsapp/twilio/status"
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")


def twilio_whatsapp_problem(settings: Settings) -> str | None:
    """Why Twilio WhatsApp can't send with these settings, or None when it can."""
    if not settings.enable_wa_twilio:
        return "WhatsApp via Twilio is disabled (ENABLE_WA_TWILIO)"
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not configured"
    try:
        to_e164(settings.twilio_wa_from)
    except InvalidPhone:
        return "TWILIO_WA_FROM is not a phone number"
    return None


class TwilioWhatsApp:
    name = "twilio"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.default_sender = "whatsapp:" + to_e164(settings.twilio_wa_from)
        self.status_callback = abs_url(settings.base_url, STATUS_CALLBACK_PATH)

    def send(self, message: Outgoing) -> str:
        if message.to.endswith("@lid"):
            raise NotSent("unsupported_recipient", "Twilio can only send to a phone number")
        params: dict[str, Optional[str]] = {
            "to": "whatsapp:" + message.to,
            **self._sender(message.sender),
            "status_callback": self.status_callback,
        }
        if message.content_sid:
            params["content_sid"] = message.content_sid
            if message.content_variables:
                params["content_variables"] = message.content_variables
        elif message.text or message.media is None:
            params["body"] = message.text
        media_urls: dict[str, list[str]] = {}
        if message.media is not None:
            if not message.media.public_url:
                raise NotSent("media_not_linked", "Twilio needs a public link to the file (MediaUrl)")
            # Twilio fetches the file from us (a signed, expiring link) as it sends the message.
            media_urls["media_url"] = [message.media.public_url]
        try:
            sent = twilio_client(self.settings).messages.create(**params, **media_urls)
        except TwilioRestException as exc:
            detail = f"Twilio error {exc.code}: {exc.msg}" if exc.code else f"Twilio answered HTTP {exc.status}"
            code = f"twilio_{exc.code or exc.status}"
            # A 4xx is Twilio refusing the request before accepting it; after a 5xx nobody knows.
            if 400 <= exc.status < 500:
                raise NotSent(code, detail) from exc
            raise OutcomeUnknown(code, detail) from exc
        except requests.RequestException as exc:
            raise classify_transport_error(exc, "Twilio") from exc
        return sent.sid

    def _sender(self, sender: Optional[str]) -> dict[str, Optional[str]]:
        if not sender:
            return {"from_": self.default_sender}
        if MESSAGING_SERVICE_SID.match(sender):
            return {"messaging_service_sid": sender}
        try:
            return {"from_": "whatsapp:" + to_e164(sender)}
        except InvalidPhone:
            raise NotSent("invalid_sender", "the business's Twilio sender is neither a number nor MG…") from None

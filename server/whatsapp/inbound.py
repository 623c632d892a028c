"""Inbound WhatsApp messages from either provider, normalised and stored once in the CRM.

Both webhooks turn their wire format into an `InboundMessage`; `store_inbound` finds the business
by the number the customer wrote to, upserts the customer and the conversation, and inserts the
message idempotently on (provider, provider message id): a replayed webhook stores nothing new.

What a provider sends can't be sent back to be fixed, so it is made storable here rather than
refused: every string loses its NUL characters and lone surrogates (`server.text`), and text is
cut to its column (a WhatsApp profile name has no length limit; `customers.name` has). Only an
identifier that can't be stored as it is (a message id or LID longer than its column) makes the
webhook a 400, since cutting it could merge two messages or two customers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from sqlalchemy.orm import Session

from server import safe_json
from server.db.dao_crm import business_by_number, insert_message, upsert_customer, upsert_thread
from server.db.models import Business, Customer, Message, Thread, string_length
from server.logs import log_event
from server.phones import try_e164
from server.text import storable_fields, storable_json, storable_text

log = logging.getLogger("agentlocator.whatsapp")

MAX_TWILIO_MEDIA = 10  # Twilio sends at most MediaUrl0…MediaUrl9
MAX_PROVIDER_ID = string_length(Message, "provider_message_id")
MAX_NAME = string_length(Customer, "name")
MAX_LID = string_length(Customer, "wa_lid")
MAX_BRIDGE_STATE = 32  # `open`, `connecting`, `close`, `logged_out`…
BRIDGE_EVENTS = ("message", "status", "connection")


class InvalidInbound(ValueError):
    """The webhook is authentic but its content is unusable (answered 400)."""


@dataclass(frozen=True)
class InboundMessage:
    provider: str
    provider_message_id: str
    business_number: str  # the business's number the customer wrote to, E.164
    phone: Optional[str]  # the customer's number, E.164 (may be unknown on Baileys: LID only)
    lid: Optional[str] = None
    name: str = ""
    body: str = ""
    kind: str = "text"
    media: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StoredInbound:
    message: Message
    created: bool
    business: Business
    thread: Thread


def twilio_inbound(form: Mapping[str, str]) -> InboundMessage:
    """An inbound message from Twilio's webhook form (`From`/`To` are `whatsapp:+E164`)."""
    form = storable_fields(form)
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    if not sid:
        raise InvalidInbound("MessageSid is missing")
    if len(sid) > MAX_PROVIDER_ID:
        raise InvalidInbound(f"MessageSid is longer than {MAX_PROVIDER_ID} characters")
    phone, business_number = try_e164(form.get("From")), try_e164(form.get("To"))
    if phone is None or business_number is None:
        raise InvalidInbound("From and To must be WhatsApp phone numbers (whatsapp:+E164)")
    media = []
    for index in range(min(_int(form.get("NumMedia")), MAX_TWILIO_MEDIA)):
        url = form.get(f"MediaUrl{index}")
        if url:
            media.append({"url": url, "content_type": form.get(f"MediaContentType{index}", "")})
    located = bool(form.get("Latitude") and form.get("Longitude"))
    if located:
        media.append(
            {
                "type": "location",
                "latitude": form["Latitude"],
                "longitude": form["Longitude"],
                "address": form.get("Address", ""),
                "label": form.get("Label", ""),
            }
        )
    return InboundMessage(
        provider="twilio",
        provider_message_id=sid,
        business_number=business_number,
        phone=phone,
        name=form.get("ProfileName", "")[:MAX_NAME],
        body=form.get("Body", ""),
        kind=_twilio_kind(form.get("MessageType"), located, media),
        media=media,
    )


def _twilio_kind(message_type: str | None, located: bool, media: list[dict[str, Any]]) -> str:
    """Twilio's `MessageType` (text, image, document, location, …) or, when absent, what the fields show."""
    stated = (message_type or "").strip().lower()
    if stated.isalpha() and len(stated) <= 16:
        return stated
    if located:
        return "location"
    if media:
        major = media[0]["content_type"].partition("/")[0]
        return {"image": "image", "audio": "audio", "video": "video"}.get(major, "document")
    return "text"


def is_twilio_status_callback(form: Mapping[str, str]) -> bool:
    """A delivery report posted to the inbound URL: a status, and nothing a customer wrote."""
    return (
        bool(form.get("MessageStatus"))
        and form.get("MessageStatus") not in ("received", "receiving")
        and not form.get("Body")
        and _int(form.get("NumMedia")) == 0
        and not form.get("Latitude")
    )


def bridge_event(raw: bytes) -> dict[str, Any]:
    """The bridge's event (baileys-bridge/README.md), shape-checked; `InvalidInbound` says what is wrong."""
    try:
        event = storable_json(safe_json.loads(raw))
    except ValueError as exc:
        raise InvalidInbound(
            str(exc) if isinstance(exc, safe_json.JsonTooDeep) else "the body is not valid JSON"
        ) from None
    if not isinstance(event, dict) or event.get("event") not in BRIDGE_EVENTS:
        raise InvalidInbound(f"expected a JSON object with event one of {', '.join(BRIDGE_EVENTS)}")
    if event["event"] == "connection":
        _require(event, "state", str)
        if not isinstance(event.get("qr", False), bool):
            raise InvalidInbound("qr must be true or false")
        return {**event, "state": event["state"][:MAX_BRIDGE_STATE]}
    _require(event, "id", str)
    if event["event"] == "status":
        _require(event, "status", str)
        return event
    for name in ("chat", "to"):
        _require(event, name, str)
    if not isinstance(event.get("text"), str):
        raise InvalidInbound("text must be a string")
    for name in ("from", "lid", "push_name"):
        if event.get(name) is not None and not isinstance(event[name], str):
            raise InvalidInbound(f"{name} must be a string or null")
    if event.get("timestamp") is not None and (
        isinstance(event["timestamp"], bool) or not isinstance(event["timestamp"], (int, float))
    ):
        raise InvalidInbound("timestamp must be a number")
    if not (event.get("from") or event.get("lid")):
        raise InvalidInbound("a message needs from (a phone number) or lid")
    if event.get("lid") and not event["lid"].endswith("@lid"):
        raise InvalidInbound("lid must look like 1234@lid")
    if event.get("lid") and len(event["lid"]) > MAX_LID:
        raise InvalidInbound(f"lid is longer than {MAX_LID} characters")
    normalised = {"from": event.get("from") and try_e164(event["from"]), "to": try_e164(event["to"])}
    if normalised["to"] is None or (event.get("from") and normalised["from"] is None):
        raise InvalidInbound("from and to must be phone numbers (+E164)")
    if len(event["chat"]) + 1 + len(event["id"]) > MAX_PROVIDER_ID:
        raise InvalidInbound("chat and id are too long")
    return {**event, **normalised}


def _require(event: Mapping[str, Any], name: str, kind: type) -> None:
    if not isinstance(event.get(name), kind) or not event[name]:
        raise InvalidInbound(f"{name} is missing or not a {kind.__name__}")


def baileys_inbound(event: Mapping[str, Any]) -> InboundMessage:
    """An inbound message from the bridge's `message` event (checked by `bridge_event`)."""
    return InboundMessage(
        provider="baileys",
        provider_message_id=f"{event['chat']}:{event['id']}",
        business_number=event["to"],
        phone=event.get("from"),
        lid=event.get("lid"),
        name=storable_text(event.get("push_name"))[:MAX_NAME],
        body=storable_text(event["text"]),
    )


def store_inbound(session: Session, inbound: InboundMessage) -> Optional[StoredInbound]:
    """Store the message; None when no business owns the number it was sent to (nothing is stored)."""
    business = business_by_number(session, inbound.business_number, "whatsapp")
    if business is None:
        log_event(
            log,
            "whatsapp_unknown_number",
            logging.WARNING,
            provider=inbound.provider,
            to=inbound.business_number,
            provider_message_id=inbound.provider_message_id,
        )
        return None
    customer = upsert_customer(session, business.id, phone=inbound.phone, lid=inbound.lid, name=inbound.name or None)
    thread = upsert_thread(session, business.id, customer.id, "whatsapp")
    message, created = insert_message(
        session,
        thread,
        direction="in",
        body=inbound.body,
        provider=inbound.provider,
        provider_message_id=inbound.provider_message_id,
        kind=inbound.kind,
        media=inbound.media,
    )
    log_event(
        log,
        "whatsapp_inbound" if created else "whatsapp_inbound_replay",
        provider=inbound.provider,
        business_id=business.id,
        message_id=message.id,
        thread_id=thread.id,
    )
    return StoredInbound(message, created, business, thread)


def _int(raw: Any) -> int:
    try:
        return max(int(raw or 0), 0)
    except (TypeError, ValueError):
        return 0

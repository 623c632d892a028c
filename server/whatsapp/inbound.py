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

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from sqlalchemy.orm import Session

from server import safe_json
from server.config import Settings
from server.db.dao_crm import business_by_number, insert_message, upsert_customer, upsert_thread
from server.db.models import Business, Customer, Media, Message, Thread, string_length
from server.logs import log_event
from server.media import KINDS as MEDIA_KINDS
from server.media import IncomingMedia, attach_media
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
    # The business it is for, when the provider says so (the bridge's instance); else found by business_number.
    business_id: Optional[int] = None
    name: str = ""
    body: str = ""
    kind: str = "text"
    media: list[dict[str, Any]] = field(default_factory=list)
    # The message's pictures, voice notes, files: bytes (Baileys) or URLs to download (Twilio).
    attachments: tuple[IncomingMedia, ...] = ()


@dataclass(frozen=True)
class StoredInbound:
    message: Message
    created: bool
    business: Business
    thread: Thread
    media: list[Media] = field(default_factory=list)  # recorded with this delivery (none on a replay)


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
    attachments = []
    for index in range(min(_int(form.get("NumMedia")), MAX_TWILIO_MEDIA)):
        url = form.get(f"MediaUrl{index}")
        if url:
            content_type = form.get(f"MediaContentType{index}", "")
            media.append({"url": url, "content_type": content_type})
            attachments.append(IncomingMedia(source_url=url, mime_type=content_type))
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
        attachments=tuple(attachments),
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
    if event.get("media") is not None:
        _check_bridge_media(event["media"])
    return {**event, **normalised}


def _check_bridge_media(media: Any) -> None:
    """The shape of a message event's `media` (baileys-bridge/README.md); its content is judged when stored."""
    if not isinstance(media, dict):
        raise InvalidInbound("media must be an object")
    if not isinstance(media.get("kind"), str) or not isinstance(media.get("mimetype", ""), str):
        raise InvalidInbound("media.kind and media.mimetype must be strings")
    for name in ("data", "file_name", "caption", "sha256", "error"):
        if media.get(name) is not None and not isinstance(media[name], str):
            raise InvalidInbound(f"media.{name} must be a string or null")
    for name in ("size", "seconds"):
        value = media.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidInbound(f"media.{name} must be an integer or null")
    if not isinstance(media.get("voice_note", False), bool):
        raise InvalidInbound("media.voice_note must be true or false")


def _require(event: Mapping[str, Any], name: str, kind: type) -> None:
    if not isinstance(event.get(name), kind) or not event[name]:
        raise InvalidInbound(f"{name} is missing or not a {kind.__name__}")


def baileys_inbound(event: Mapping[str, Any], business_id: Optional[int] = None) -> InboundMessage:
    """An inbound message from the bridge's `message` event (checked by `bridge_event`), for the
    business whose instance received it (`bridge_routing.event_business_id`)."""
    return InboundMessage(
        provider="baileys",
        provider_message_id=f"{event['chat']}:{event['id']}",
        business_number=event["to"],
        phone=event.get("from"),
        lid=event.get("lid"),
        business_id=business_id,
        name=storable_text(event.get("push_name"))[:MAX_NAME],
        body=storable_text(event["text"]),
        kind=_bridge_kind(event.get("media")),
        attachments=_bridge_attachments(event.get("media")),
    )


def _bridge_kind(media: Optional[Mapping[str, Any]]) -> str:
    if not media:
        return "text"
    return media["kind"] if media["kind"] in MEDIA_KINDS else "document"


def _bridge_attachments(media: Optional[Mapping[str, Any]]) -> tuple[IncomingMedia, ...]:
    """The bridge's media item: its bytes (base64 in `data`), or the reason the bridge refused it."""
    if not media:
        return ()
    data, error = None, media.get("error")
    if not error:
        try:
            data = base64.b64decode(media.get("data") or "", validate=True)
        except (binascii.Error, ValueError):
            error = "download_failed"  # authentic but unreadable: recorded, the message still kept
        if not error and media.get("sha256") and hashlib.sha256(data or b"").hexdigest() != media["sha256"].lower():
            data, error = None, "download_failed"
    return (
        IncomingMedia(
            data=data,
            kind=media["kind"],
            mime_type=media.get("mimetype"),
            file_name=media.get("file_name"),
            caption=media.get("caption"),
            voice_note=bool(media.get("voice_note")),
            duration_seconds=media.get("seconds"),
            size=media.get("size"),
            error=error,
        ),
    )


def store_inbound(
    session: Session, inbound: InboundMessage, settings: Optional[Settings] = None
) -> Optional[StoredInbound]:
    """Store the message, and with `settings` its media (`server.media`); None when no business owns
    the number it was sent to (nothing is stored)."""
    business = (
        session.get(Business, inbound.business_id)
        if inbound.business_id is not None
        else business_by_number(session, inbound.business_number, "whatsapp")
    )
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
    media: list[Media] = []
    if created and inbound.attachments and settings is not None:
        media = attach_media(session, settings, business.id, message.id, inbound.attachments)
    log_event(
        log,
        "whatsapp_inbound" if created else "whatsapp_inbound_replay",
        provider=inbound.provider,
        business_id=business.id,
        message_id=message.id,
        thread_id=thread.id,
        media=[f"{item.kind}:{item.status}" for item in media] or None,
    )
    return StoredInbound(message, created, business, thread, media)


def _int(raw: Any) -> int:
    try:
        return max(int(raw or 0), 0)
    except (TypeError, ValueError):
        return 0

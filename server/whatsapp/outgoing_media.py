"""The file of a WhatsApp message staff send: an upload, or a media item already stored (`media_id`),
made into the `OutgoingMedia` both transports take: the bytes for the Baileys bridge, and for Twilio
a public link to them, signed and expiring (`server.security.media_token`), since Twilio fetches
the file from us without a session."""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy.orm import Session

from server.config import Settings
from server.db.models import Media
from server.errors import DomainError, Problem
from server.media import STORED, get_media, load_bytes, store_upload
from server.providers.whatsapp import OutgoingMedia
from server.security.media_token import media_token
from server.urls import abs_url

PUBLIC_MEDIA_PATH = "/media/public/"


def outgoing_media(
    session: Session,
    settings: Settings,
    app_secret: str,
    business_id: int,
    *,
    upload: Optional[tuple[bytes, Optional[str], Optional[str]]] = None,
    media_id: Any = None,
) -> tuple[Optional[int], Optional[OutgoingMedia]]:
    """`(media id, OutgoingMedia)` for an `upload` (bytes, file name, declared type) or a stored
    `media_id` of the business; `(None, None)` when neither is given."""
    if upload is not None and media_id is not None:
        raise DomainError(Problem.INVALID, "invalid_field", "send a file or a media_id, not both", field="media_id")
    if upload is not None:
        data, file_name, declared = upload
        media = store_upload(session, settings, business_id, data, file_name=file_name, declared_type=declared)
    elif media_id is not None:
        media = get_media(session, business_id, _media_id(media_id))
        if media.status != STORED:
            raise DomainError(
                Problem.CONFLICT, "media_not_stored", f"this media item is {media.status}; nothing to send"
            )
        data = load_bytes(settings, media)
    else:
        return None, None
    return media.id, _outgoing(settings, app_secret, media, data)


def _outgoing(settings: Settings, app_secret: str, media: Media, data: bytes) -> OutgoingMedia:
    return OutgoingMedia(
        data=data,
        mime_type=media.mime_type,
        kind="image" if media.kind == "sticker" else media.kind,
        file_name=media.file_name,
        public_url=public_media_url(settings, app_secret, media.id),
        sha256=media.sha256 or "",
    )


def public_media_url(settings: Settings, app_secret: str, media_id: int) -> str:
    return abs_url(settings.base_url, PUBLIC_MEDIA_PATH + media_token(app_secret, media_id))


def _media_id(raw: Any) -> int:
    """A media item's id from a JSON number or a form field's digits."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).isdigit() or int(raw) < 1:
        raise DomainError(Problem.INVALID, "invalid_field", "media_id must be a media item's id", field="media_id")
    return int(raw)

"""WhatsApp media kept by the CRM: the bytes in the media store (`server.providers.media_storage`),
one `media` row each (`server.db.models.Media`).

Everything that arrives is recorded, nothing is lost: an item that is too large
(`MEDIA_MAX_BYTES`), beyond the per-message count (`MEDIA_MAX_PER_MESSAGE`), of a type not kept, or
that the bridge or the download could not fetch becomes a `rejected` row with the reason, and its
message is stored all the same. The MIME type is sniffed from the bytes with `filetype` (magic
numbers of ~80 formats, pure Python, no libmagic to install on the host): what a sender declares,
and the name they gave, decide nothing about how the bytes are stored or served. Only the business
id and the sha256 name the stored object.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Optional

import filetype
import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.config import Settings
from server.db.models import Media, Message, utcnow
from server.errors import DomainError, Problem
from server.providers.media_storage import MediaNotFound, MediaStorage, MediaStorageError, media_storage

KINDS = ("audio", "image", "video", "document", "sticker")
PENDING, STORED, REJECTED, EXPIRED = "pending", "stored", "rejected", "expired"
# Kept besides pictures, sound and video (any the sniffer knows): documents people send businesses.
DOCUMENT_TYPES = frozenset(
    {
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/rtf",
        "application/epub+zip",
        "application/zip",
        "application/x-rar-compressed",
        "application/x-7z-compressed",
        "application/gzip",
    }
)
# Bytes no magic number identifies (plain text, CSV, a contact card) keep one of these declared
# types; anything else unidentified is `application/octet-stream`, always served as a download.
PLAIN_TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/vcard", "text/x-vcard"})
UNKNOWN_TYPE = "application/octet-stream"
# Programs and the like are refused: the console would offer them to staff as a download.
REFUSED_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-executable",
        "application/x-shockwave-flash",
        "application/x-google-chrome-extension",
        "application/x-deb",
        "application/x-rpm",
        "application/vnd.ms-cab-compressed",
        "application/wasm",
        "application/x-nintendo-nes-rom",
    }
)
# What the browser may show in the page (everything else is served as an attachment).
INLINE_PREFIXES = ("image/", "audio/", "video/")
INLINE_TYPES = frozenset({"application/pdf"})
INLINE_REFUSED = frozenset({"image/svg+xml"})  # never sniffed, but an SVG could carry script
MAX_FILE_NAME = 120
MAX_CAPTION = 4096

REASONS = {
    "too_large": "the file is larger than the {limit} bytes kept per item",
    "too_many": "the message has more than {count} media items; the rest are not kept",
    "not_allowed": "files of this type ({mime}) are not kept",
    "download_failed": "the file could not be downloaded",
    "empty": "the file is empty",
}


@dataclass(frozen=True)
class IncomingMedia:
    """One media item as a provider (or a staff upload) gave it. `data` is None when it was refused
    before it reached us (`error`), or is still to be downloaded (`source_url`)."""

    data: Optional[bytes] = None
    kind: Optional[str] = None  # as declared: decides only sticker vs image and voice notes
    mime_type: Optional[str] = None  # as declared: used only for text nothing can sniff
    file_name: Optional[str] = None
    caption: Optional[str] = None
    voice_note: bool = False
    duration_seconds: Optional[int] = None
    size: Optional[int] = None  # as declared, for an item refused before it got here
    error: Optional[str] = None  # `too_large`, `download_failed`
    source_url: Optional[str] = None


# ---- what the bytes are ---------------------------------------------------------------------------
def sniff_mime(data: bytes, declared: Optional[str] = None) -> str:
    """The MIME type the bytes' magic numbers show; else the declared plain-text type; else unknown."""
    found = filetype.guess_mime(data[:8192])
    if found:
        return str(found)
    declared_type = (declared or "").split(";", 1)[0].strip().lower()
    return declared_type if declared_type in PLAIN_TEXT_TYPES else UNKNOWN_TYPE


def kind_of(mime_type: str, declared_kind: Optional[str] = None) -> str:
    """The media kind the MIME type makes it (a declared sticker stays one if it is a picture)."""
    major = mime_type.partition("/")[0]
    if major == "image":
        return "sticker" if declared_kind == "sticker" else "image"
    if major in ("audio", "video"):
        return major
    return "document"


def allowed(mime_type: str) -> bool:
    if mime_type in REFUSED_TYPES:
        return False
    return (
        mime_type.startswith(INLINE_PREFIXES)
        or mime_type in DOCUMENT_TYPES
        or mime_type in PLAIN_TEXT_TYPES
        or mime_type == UNKNOWN_TYPE
    )


def shown_inline(mime_type: str) -> bool:
    return (mime_type.startswith(INLINE_PREFIXES) or mime_type in INLINE_TYPES) and mime_type not in INLINE_REFUSED


_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


def safe_file_name(name: Optional[str]) -> Optional[str]:
    """A sender's file name fit to show and to offer as a download's name: no path, no control or
    quoting characters, at most MAX_FILE_NAME characters. Never used to name a stored file."""
    if not name or not isinstance(name, str):
        return None
    name = unicodedata.normalize("NFC", name).replace("\u202e", "").replace("\u202d", "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" ._")
    if not name:
        return None
    if len(name) > MAX_FILE_NAME:
        stem, dot, extension = name.rpartition(".")
        name = (stem[: MAX_FILE_NAME - len(extension) - 1] + dot + extension) if dot and len(extension) <= 10 else name
        name = name[:MAX_FILE_NAME]
    return name


def storage_key(business_id: int, sha256: str) -> str:
    return f"business-{business_id}/{sha256}"


# ---- storing ----------------------------------------------------------------------------------------
def attach_media(
    session: Session,
    settings: Settings,
    business_id: int,
    message_id: Optional[int],
    items: Iterable[IncomingMedia],
    storage: Optional[MediaStorage] = None,
) -> list[Media]:
    """Record every item of one message: stored, pending (to be downloaded) or rejected with the
    reason. Items past MEDIA_MAX_PER_MESSAGE are rejected (`too_many`) without being kept."""
    storage = storage or media_storage(settings)
    rows = []
    for index, item in enumerate(items):
        if index >= settings.media_max_per_message:
            rows.append(
                _rejected(
                    business_id,
                    message_id,
                    item,
                    "too_many",
                    REASONS["too_many"].format(count=settings.media_max_per_message),
                )
            )
        elif item.data is None and item.source_url and not item.error:
            rows.append(_pending(business_id, message_id, item))
        else:
            rows.append(_stored_or_rejected(settings, storage, business_id, message_id, item))
    session.add_all(rows)
    session.flush()
    return rows


def complete_download(
    session: Session, settings: Settings, media: Media, data: bytes, storage: Optional[MediaStorage] = None
) -> Media:
    """A pending item's bytes have arrived: store them (or reject them) on the same row."""
    item = IncomingMedia(data=data, kind=media.kind, mime_type=media.mime_type, file_name=media.file_name)
    done = _stored_or_rejected(settings, storage or media_storage(settings), media.business_id, media.message_id, item)
    for column in ("kind", "mime_type", "size", "sha256", "storage_key", "status", "error_code", "error_message"):
        setattr(media, column, getattr(done, column))
    media.source_url = None
    session.flush()
    return media


def reject_pending(media: Media, code: str, detail: Optional[str] = None) -> None:
    media.status = REJECTED
    media.error_code = code
    media.error_message = detail or REASONS.get(code, code)
    media.source_url = None


def _stored_or_rejected(
    settings: Settings, storage: MediaStorage, business_id: int, message_id: Optional[int], item: IncomingMedia
) -> Media:
    if item.error or item.data is None:
        code = item.error if item.error in REASONS else "download_failed"
        return _rejected(business_id, message_id, item, code, rejection_reason(code, settings, item.mime_type))
    data = item.data
    if len(data) > settings.media_max_bytes:
        return _rejected(
            business_id, message_id, item, "too_large", rejection_reason("too_large", settings), size=len(data)
        )
    if not data:
        return _rejected(business_id, message_id, item, "empty", REASONS["empty"], size=0)
    mime_type = sniff_mime(data, item.mime_type)
    if not allowed(mime_type):
        row = _rejected(
            business_id, message_id, item, "not_allowed", rejection_reason("not_allowed", settings, mime_type)
        )
        row.mime_type, row.size = mime_type, len(data)
        return row
    digest = hashlib.sha256(data).hexdigest()
    key = storage_key(business_id, digest)
    try:
        storage.put(key, data, mime_type)
    except (MediaStorageError, OSError) as exc:
        # Not the item's fault: the webhook answers 503 (the provider delivers it again) or the job retries.
        raise DomainError(
            Problem.UNAVAILABLE, "media_storage_unavailable", "the media store cannot be written now"
        ) from exc
    return Media(
        business_id=business_id,
        message_id=message_id,
        kind=kind_of(mime_type, item.kind),
        mime_type=mime_type,
        size=len(data),
        sha256=digest,
        storage_key=key,
        file_name=safe_file_name(item.file_name),
        caption=_caption(item.caption),
        duration_seconds=_seconds(item.duration_seconds),
        voice_note=bool(item.voice_note) and mime_type.startswith("audio/"),
        status=STORED,
    )


def rejection_reason(code: str, settings: Settings, mime_type: Optional[str] = None) -> str:
    """The stored explanation of rejection `code` (a key of REASONS)."""
    return REASONS[code].format(limit=settings.media_max_bytes, count=settings.media_max_per_message, mime=mime_type)


def _rejected(
    business_id: int,
    message_id: Optional[int],
    item: IncomingMedia,
    code: str,
    detail: str,
    *,
    size: Optional[int] = None,
) -> Media:
    declared_kind = item.kind if item.kind in KINDS else "document"
    return Media(
        business_id=business_id,
        message_id=message_id,
        kind=declared_kind,
        mime_type=_declared_type(item.mime_type),
        size=size if size is not None else max(int(item.size or 0), 0),
        file_name=safe_file_name(item.file_name),
        caption=_caption(item.caption),
        duration_seconds=_seconds(item.duration_seconds),
        voice_note=bool(item.voice_note),
        status=REJECTED,
        error_code=code,
        error_message=detail,
    )


def _pending(business_id: int, message_id: Optional[int], item: IncomingMedia) -> Media:
    declared = _declared_type(item.mime_type)
    return Media(
        business_id=business_id,
        message_id=message_id,
        kind=kind_of(declared, item.kind),
        mime_type=declared,
        size=0,
        file_name=safe_file_name(item.file_name),
        caption=_caption(item.caption),
        voice_note=bool(item.voice_note),
        status=PENDING,
        source_url=(item.source_url or "")[:1000],
    )


def _declared_type(declared: Optional[str]) -> str:
    """A declared type is only shown while nothing better is known (pending, or refused unseen)."""
    value = (declared or "").split(";", 1)[0].strip().lower()
    return value if re.fullmatch(r"[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,80}", value) else UNKNOWN_TYPE


def _caption(caption: Optional[str]) -> Optional[str]:
    return caption[:MAX_CAPTION] if isinstance(caption, str) and caption else None


def _seconds(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**6 else None


# ---- reading ----------------------------------------------------------------------------------------
def get_media(session: Session, business_id: int, media_id: int) -> Media:
    """The business's media item; another business's (or none) is 404, the same answer."""
    media = session.get(Media, media_id)
    if media is None or media.business_id != business_id:
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such media")
    return media


def load_bytes(settings: Settings, media: Media, storage: Optional[MediaStorage] = None) -> bytes:
    """The stored bytes of `media`; DomainError(NOT_FOUND) when there are none (pending, rejected,
    expired, or gone from the store)."""
    if media.status != STORED or not media.storage_key:
        raise DomainError(Problem.NOT_FOUND, "media_not_stored", f"this media item is {media.status}, no file is kept")
    try:
        return (storage or media_storage(settings)).get(media.storage_key)
    except MediaNotFound:
        raise DomainError(Problem.NOT_FOUND, "media_not_stored", "the file is no longer kept") from None
    except (MediaStorageError, OSError) as exc:
        raise DomainError(
            Problem.UNAVAILABLE, "media_storage_unavailable", "the media store cannot be read now"
        ) from exc


def media_of_messages(session: Session, message_ids: Iterable[int]) -> dict[int, list[Media]]:
    ids = sorted(set(message_ids))
    found: dict[int, list[Media]] = {message_id: [] for message_id in ids}
    if not ids:
        return found
    rows = session.scalars(sa.select(Media).where(Media.message_id.in_(ids)).order_by(Media.id)).all()
    for row in rows:
        if row.message_id is not None:
            found[row.message_id].append(row)
    return found


def media_json(media: Media) -> dict[str, Any]:
    return {
        "id": media.id,
        "kind": media.kind,
        "mime_type": media.mime_type,
        "size": media.size,
        "sha256": media.sha256,
        "file_name": media.file_name,
        "caption": media.caption,
        "duration_seconds": media.duration_seconds,
        "voice_note": media.voice_note,
        "status": media.status,
        "error_code": media.error_code,
        "error_message": media.error_message,
        "url": f"/api/crm/media/{media.id}" if media.status == STORED else None,
        "download_url": f"/api/crm/media/{media.id}/download" if media.status == STORED else None,
    }


def has_pending_media(session: Session, message_id: int) -> bool:
    return bool(
        session.scalar(
            sa.select(sa.func.count()).select_from(Media).where(Media.message_id == message_id, Media.status == PENDING)
        )
    )


# ---- retention --------------------------------------------------------------------------------------
def purge_expired(
    session: Session, settings: Settings, *, now: Optional[datetime] = None, storage: Optional[MediaStorage] = None
) -> int:
    """Delete the files of media older than MEDIA_RETENTION_DAYS (0: keep forever). The rows stay,
    `expired`, so a conversation still shows that a picture was there. A file whose bytes a newer
    item of the business shares is kept for that item. Answers how many items expired."""
    if settings.media_retention_days <= 0:
        return 0
    storage = storage or media_storage(settings)
    cutoff = (now or utcnow()) - timedelta(days=settings.media_retention_days)
    old = session.scalars(
        sa.select(Media).where(Media.status == STORED, Media.created_at < cutoff).order_by(Media.id).limit(1000)
    ).all()
    for media in old:
        key = media.storage_key
        still_used = session.scalar(
            sa.select(sa.func.count())
            .select_from(Media)
            .where(Media.storage_key == key, Media.id != media.id, Media.created_at >= cutoff)
        )
        if key and not still_used:
            storage.delete(key)
        media.status, media.storage_key = EXPIRED, None
        media.error_code, media.error_message = "expired", "the file was deleted after the retention period"
    session.flush()
    return len(old)


def message_has_audio(items: Iterable[Media]) -> bool:
    return any(item.kind == "audio" and item.status == STORED for item in items)


def mark_transcript_pending(message: Message) -> None:
    message.transcript_status = "pending"


# ---- sending ----------------------------------------------------------------------------------------
def store_upload(
    session: Session,
    settings: Settings,
    business_id: int,
    data: bytes,
    *,
    file_name: Optional[str] = None,
    declared_type: Optional[str] = None,
    storage: Optional[MediaStorage] = None,
) -> Media:
    """A file staff upload to send: stored as an item of no message yet. Refused at once (413, 415)
    rather than recorded as rejected: the person uploading can pick another file."""
    if len(data) > settings.media_max_bytes:
        raise DomainError(Problem.TOO_LARGE, "media_too_large", rejection_reason("too_large", settings), field="file")
    if not data:
        raise DomainError(Problem.INVALID, "invalid_field", "the file is empty", field="file")
    row = _stored_or_rejected(
        settings,
        storage or media_storage(settings),
        business_id,
        None,
        IncomingMedia(data=data, mime_type=declared_type, file_name=file_name),
    )
    if row.status != STORED:
        raise DomainError(Problem.UNSUPPORTED_MEDIA, "media_not_allowed", row.error_message or "", field="file")
    if row.kind == "sticker":
        row.kind = "image"
    session.add(row)
    session.flush()
    return row


def attach_sent_media(session: Session, business_id: int, message_id: int, media_id: int) -> Media:
    """Make item `media_id` the file of outgoing message `message_id`: an upload is attached as it
    is; an item already on another message (a file sent on) gets a row of its own, same bytes."""
    media = get_media(session, business_id, media_id)
    if media.message_id is None:
        media.message_id = message_id
        session.flush()
        return media
    copy = Media(
        business_id=business_id,
        message_id=message_id,
        kind="image" if media.kind == "sticker" else media.kind,
        mime_type=media.mime_type,
        size=media.size,
        sha256=media.sha256,
        storage_key=media.storage_key,
        file_name=media.file_name,
        duration_seconds=media.duration_seconds,
        voice_note=media.voice_note,
        status=media.status,
    )
    session.add(copy)
    session.flush()
    return copy

"""WhatsApp media files: `GET /api/crm/media/<id>` (and `/download`) for staff, business-scoped like
every CRM route, and `GET /media/public/<token>`, the signed, expiring link Twilio fetches a file we
send from (`server.security.media_token`).

Files are answered with their sniffed Content-Type and `X-Content-Type-Options: nosniff`; only
pictures, sound, video and PDF are shown inline, everything else is an attachment, and a sandboxing
CSP keeps any file from running script on our origin. Range requests (a player seeking in a voice
note or a video) are answered 206 with just those bytes.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, current_app, g, request

from server.db.models import Media
from server.errors import DomainError, Problem
from server.media import get_media, load_bytes, shown_inline
from server.openapi import document, error_responses, operation, path_param
from server.routes import db_session, settings
from server.routes.auth_api import require_auth
from server.security.media_token import read_media_token

bp = Blueprint("media_api", __name__)


@bp.get("/api/crm/media/<int:media_id>")
@require_auth()
def media_file(media_id: int) -> Response:
    return file_response(get_media(db_session(), g.business_id, media_id), attachment=False)


@bp.get("/api/crm/media/<int:media_id>/download")
@require_auth()
def media_download(media_id: int) -> Response:
    return file_response(get_media(db_session(), g.business_id, media_id), attachment=True)


@bp.get("/media/public/<token>")
def public_media_file(token: str) -> Response:
    media_id = read_media_token(current_app.config["APP_SECRET"], token)
    media = db_session().get(Media, media_id) if media_id is not None else None
    if media is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such media, or the link has expired")
    return file_response(media, attachment=not shown_inline(media.mime_type))


def file_response(media: Media, *, attachment: bool) -> Response:
    data = load_bytes(settings(), media)
    attachment = attachment or not shown_inline(media.mime_type)
    name = media.file_name or f"{media.kind}-{media.id}"
    status, body, headers = 200, data, {"Accept-Ranges": "bytes"}
    wanted = request.range
    # One range is what players ask for; several in one request are answered whole, as RFC 9110 allows.
    if (
        wanted is not None
        and len(wanted.ranges) == 1
        and request.headers.get("If-Range") in (None, f'"{media.sha256}"')
    ):
        span = wanted.range_for_length(len(data))
        if span is None:
            return Response(
                status=416, headers={"Content-Range": f"bytes */{len(data)}", "X-Content-Type-Options": "nosniff"}
            )
        start, stop = span
        status, body = 206, data[start:stop]
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
    response = Response(body, status=status, mimetype=media.mime_type, headers=headers)
    response.headers["Content-Disposition"] = _disposition("attachment" if attachment else "inline", name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["ETag"] = f'"{media.sha256}"'
    return response


def _disposition(kind: str, name: str) -> str:
    """`kind; filename="<ASCII fallback>"; filename*=UTF-8''<the name>` (RFC 6266): Hebrew names
    survive, and no quote or line break of the sender's can reach the header."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;' else "_" for ch in name) or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


_FILE = {"description": "the file's bytes", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
_PARTIAL = {"description": "the requested byte range (Range: bytes=…)", "content": _FILE["content"]}
_ID = path_param("media_id", {"type": "integer"}, "the media item's id (`attachments[].id` of a message)")

OPENAPI_PATHS = {
    "/api/crm/media/{media_id}": {
        "get": operation(
            "A message's media file",
            tags=["messages"],
            description=(
                "The stored bytes with their sniffed Content-Type. Pictures, audio, video and PDF are served "
                "inline, other files as an attachment. Supports Range (206, 416). 404 for another business's "
                "item, or one that is pending, rejected or expired."
            ),
            parameters=[_ID],
            responses={"200": _FILE, "206": _PARTIAL, **error_responses(416)},
        )
    },
    "/api/crm/media/{media_id}/download": {
        "get": operation(
            "A message's media file, as a download",
            tags=["messages"],
            description="As `GET /api/crm/media/{media_id}`, with `Content-Disposition: attachment`.",
            parameters=[_ID],
            responses={"200": _FILE, "206": _PARTIAL, **error_responses(416)},
        )
    },
}
document(bp, OPENAPI_PATHS)

"""A media file's public link, for Twilio to fetch what we send (`MediaUrl`): the file's id and an
expiry, signed with APP_SECRET. Twilio fetches without our session, so the link itself must be the
permission: it names one file, can't be altered or extended, and stops working after
MEDIA_LINK_SECONDS. No row is kept for it."""

from __future__ import annotations

import hashlib
import hmac
import time

MEDIA_LINK_SECONDS = 3600  # Twilio fetches within seconds of the send; retries stay well inside this


def media_token(secret: str, media_id: int, *, now: float | None = None, ttl: int = MEDIA_LINK_SECONDS) -> str:
    expires = int((time.time() if now is None else now) + ttl)
    body = f"{media_id}.{expires}"
    return f"{body}.{_mac(secret, body)}"


def read_media_token(secret: str, token: str | None, *, now: float | None = None) -> int | None:
    """The media id a valid, unexpired token names; None for a forged, altered or expired one."""
    if not token or len(token) > 200 or token.count(".") != 2:
        return None
    media_id, expires, mac = token.split(".")
    if not (media_id.isdigit() and expires.isdigit()):
        return None
    if not hmac.compare_digest(_mac(secret, f"{media_id}.{expires}"), mac):
        return None
    if int(expires) < (time.time() if now is None else now):
        return None
    return int(media_id)


def _mac(secret: str, body: str) -> str:
    return hmac.new(secret.encode("utf-8"), b"media:" + body.encode("ascii"), hashlib.sha256).hexdigest()

"""Media a customer sent to a Twilio WhatsApp number, downloaded from Twilio.

The webhook's `MediaUrlN` names the file; only its path is used, joined to `TWILIO_API_BASE_URL`,
so the account's credentials (HTTP basic auth) go to the configured Twilio host and nowhere a
webhook could point. Twilio answers with a redirect to the file on its media host; requests follows
it and drops the credentials when the host changes, as it should. The body is read up to the size
limit and no further.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from server.config import Settings
from server.urls import abs_url

CHUNK = 64 * 1024


class MediaTooLarge(Exception):
    """The file is larger than the limit (nothing more is read)."""


class MediaGone(Exception):
    """Twilio refused the download for good (404, 403…): another try will not change that."""


class MediaFetchFailed(Exception):
    """Twilio could not be reached or failed (timeout, 5xx, 429): worth another try."""


def twilio_media_url(settings: Settings, media_url: str) -> str:
    parts = urlsplit(media_url)
    if not parts.path.startswith("/"):
        raise MediaGone("the MediaUrl has no path")
    return abs_url(settings.twilio_api_base_url, parts.path + (f"?{parts.query}" if parts.query else ""))


def download_twilio_media(settings: Settings, media_url: str, max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes and the Content-Type Twilio declared (only a hint: the bytes are sniffed)."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        raise MediaFetchFailed("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not configured")
    try:
        response = requests.get(
            twilio_media_url(settings, media_url),
            stream=True,
            auth=(settings.twilio_account_sid, settings.twilio_auth_token),
            timeout=settings.twilio_api_timeout_seconds,
            allow_redirects=True,
        )
    except requests.RequestException as exc:
        raise MediaFetchFailed(f"Twilio did not answer ({type(exc).__name__})") from exc
    with response:
        if response.status_code == 429 or response.status_code >= 500:
            raise MediaFetchFailed(f"Twilio answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise MediaGone(f"Twilio answered HTTP {response.status_code}")
        declared = int(response.headers.get("Content-Length") or 0)
        if declared > max_bytes:
            raise MediaTooLarge(declared)
        body = bytearray()
        try:
            for chunk in response.iter_content(CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise MediaTooLarge(len(body))
        except requests.RequestException as exc:
            raise MediaFetchFailed(f"the download broke off ({type(exc).__name__})") from exc
    return bytes(body), response.headers.get("Content-Type", "")

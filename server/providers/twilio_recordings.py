"""Call recordings (voicemails) from Twilio's REST API, as audio bytes.

    GET {TWILIO_API_BASE_URL}/2010-04-01/Accounts/{AccountSid}/Recordings/{RecordingSid}.mp3

with HTTP basic auth (account SID and auth token). The URL is built from the settings and the
recording SID, never taken from a webhook, so the credentials go to the configured Twilio host only.
Plain `requests`, not the SDK: the SDK's response keeps decoded text, not audio bytes.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import requests

from server.config import Settings
from server.urls import abs_url

RECORDING_SID = re.compile(r"^RE[0-9a-fA-F]{32}$")
FORMATS = {"mp3": "audio/mpeg", "wav": "audio/x-wav"}
MAX_BYTES = 50 * 1024 * 1024  # a voicemail is far smaller; this only bounds a misbehaving answer


class RecordingNotFound(Exception):
    """Twilio has no such recording (deleted, or never existed)."""


class RecordingFetchFailed(Exception):
    """Twilio could not be reached, refused our credentials, or answered something else."""


def recording_media_url(settings: Settings, recording_sid: str, extension: str = "mp3") -> str:
    if not RECORDING_SID.match(recording_sid):
        raise ValueError("not a Twilio recording SID")
    return abs_url(
        settings.twilio_api_base_url,
        f"/2010-04-01/Accounts/{settings.twilio_account_sid}/Recordings/{recording_sid}.{extension}",
    )


def download_recording(settings: Settings, recording_sid: str, destination: Path, extension: str = "mp3") -> None:
    """Write the recording's audio to `destination` (atomically: a reader never sees half a file)."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        raise RecordingFetchFailed("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not configured")
    try:
        response = requests.get(
            recording_media_url(settings, recording_sid, extension),
            stream=True,
            auth=(settings.twilio_account_sid, settings.twilio_auth_token),
            timeout=settings.twilio_api_timeout_seconds,
        )
    except requests.RequestException as exc:
        raise RecordingFetchFailed(f"Twilio did not answer ({type(exc).__name__})") from exc
    with response:
        if response.status_code == 404:
            raise RecordingNotFound(recording_sid)
        if response.status_code != 200:
            raise RecordingFetchFailed(f"Twilio answered {response.status_code}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=destination.parent, prefix=".download-")
        try:
            size = 0
            with os.fdopen(fd, "wb") as handle:
                try:
                    for chunk in response.iter_content(64 * 1024):
                        size += len(chunk)
                        if size > MAX_BYTES:
                            raise RecordingFetchFailed(f"the recording is larger than {MAX_BYTES} bytes")
                        handle.write(chunk)
                except requests.RequestException as exc:  # the connection dropped mid-download
                    raise RecordingFetchFailed(f"the download broke off ({type(exc).__name__})") from exc
            if size == 0:
                raise RecordingFetchFailed("Twilio answered an empty recording")
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

"""A call's recording (its voicemail) as audio for the console's player.

The audio is fetched once from Twilio with the account's credentials and kept on disk
(`RECORDING_CACHE_DIR`, by default `instance/recordings/`), so playing, seeking (HTTP ranges) and
replaying never go back to Twilio. Recording SIDs are unique across Twilio, so the file is named by
SID; who may hear it is decided before the file is touched: the call must be the caller's business's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session

from server.config import Settings
from server.db.models import Call
from server.errors import DomainError, Problem
from server.logs import log_event
from server.providers.twilio_recordings import (
    FORMATS,
    RECORDING_SID,
    RecordingFetchFailed,
    RecordingNotFound,
    download_recording,
)
from server.security.auth import get_owned

log = logging.getLogger("agentlocator.console.recordings")

AUDIO_FORMAT = "mp3"  # what every browser plays, and a tenth of the WAV's size
MAX_CALL_SID = 64


def recording_file(session: Session, settings: Settings, business_id: int, call_sid: str) -> tuple[Path, str]:
    """The path of the call's recording on disk and its content type; 404 when there is none."""
    if not 0 < len(call_sid) <= MAX_CALL_SID or not call_sid.isascii() or not call_sid.isprintable():
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such call")
    call = get_owned(session, Call, business_id, call_sid, column="call_sid")
    recording_sid = call.recording_sid or ""
    if not RECORDING_SID.match(recording_sid):
        raise DomainError(Problem.NOT_FOUND, "no_recording", "this call has no recording")
    path = settings.recording_cache_path / f"{recording_sid}.{AUDIO_FORMAT}"
    if not path.is_file():
        try:
            download_recording(settings, recording_sid, path, AUDIO_FORMAT)
        except RecordingNotFound:
            raise DomainError(Problem.NOT_FOUND, "no_recording", "Twilio no longer has this recording") from None
        except RecordingFetchFailed as exc:
            log_event(
                log,
                "recording_fetch_failed",
                logging.WARNING,
                call_sid=call_sid,
                recording_sid=recording_sid,
                reason=str(exc),
            )
            raise DomainError(
                Problem.UPSTREAM_FAILED,
                "recording_unavailable",
                "the recording could not be fetched from Twilio; try again later",
            ) from None
        log_event(log, "recording_cached", call_sid=call_sid, recording_sid=recording_sid)
    return path, FORMATS[AUDIO_FORMAT]

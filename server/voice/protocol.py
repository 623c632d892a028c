"""Twilio Media Streams messages: parse what Twilio sends, build what we send back.

Twilio sends `connected`, `start`, `media`, `mark`, `dtmf` and `stop` as JSON text messages; we
send `media` (base64 8 kHz μ-law), `mark` and `clear`. Numeric fields (`sequenceNumber`, `chunk`,
`timestamp`) arrive as strings from Twilio and as numbers from some clones, so both are accepted.
Anything malformed raises `ProtocolError`; the caller logs it and skips the message.

Every call sends 50 `media` messages a second, so parsing one is kept cheap: orjson (about a fifth
of `json.loads`' time on these messages; the nesting limit is still checked first) and a plain
slotted `Media` (a frozen dataclass's `__init__` costs a `object.__setattr__` per field).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import orjson

from server import safe_json

# Twilio's frames are about 300 bytes; anything this large is not a Twilio message.
MAX_MESSAGE_BYTES = 64 * 1024
SUBPROTOCOL = "audio.twilio.com"


class ProtocolError(ValueError):
    """A message that isn't valid Twilio Media Streams JSON (the text says what is wrong)."""


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(default_factory=dict)
    media_format: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Media:
    payload: bytes
    track: str
    chunk: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str


InboundMessage = Union[Connected, Start, Media, Mark, Dtmf, Stop]
DTMF_DIGITS = frozenset("0123456789*#ABCD")


def parse_message(raw: str | bytes) -> InboundMessage:
    """One WebSocket text message from Twilio → a typed message, or `ProtocolError`."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(raw)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        safe_json.check_depth(raw)  # `[[[[…` is refused with a clear reason, before any parsing
        message = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    event = message.get("event")
    parse = _PARSERS.get(event) if isinstance(event, str) else None
    if parse is None:
        raise ProtocolError(f"unknown event {event!r}")
    try:
        return parse(message)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed {event!r} message: missing or wrong {exc}") from None


def _parse_media(message: dict) -> Media:
    media = message["media"]
    try:
        payload = base64.b64decode(media["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("media payload is not base64") from None
    return Media(payload, media.get("track") or "inbound", _number(media.get("chunk")), _number(media.get("timestamp")))


def _parse_start(message: dict) -> Start:
    start = message["start"]
    call_sid = _text(start["callSid"])
    stream_sid = _text(start.get("streamSid") or message["streamSid"])
    if not call_sid or not stream_sid:
        raise ProtocolError("start without callSid or streamSid")
    parameters = start.get("customParameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("customParameters is not an object")
    return Start(
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=_text(start.get("accountSid") or ""),
        tracks=tuple(str(t) for t in start.get("tracks") or ("inbound",)),
        custom_parameters={str(k): str(v) for k, v in parameters.items()},
        media_format=dict(start.get("mediaFormat") or {}),
    )


def _parse_mark(message: dict) -> Mark:
    return Mark(_text(message["mark"]["name"]))


def _parse_dtmf(message: dict) -> Dtmf:
    digit = _text(message["dtmf"]["digit"])
    if digit not in DTMF_DIGITS:
        raise ProtocolError(f"unknown DTMF digit {digit!r}")
    return Dtmf(digit)


def _parse_stop(message: dict) -> Stop:
    stop = message.get("stop") or {}
    return Stop(_text(stop.get("callSid") or ""))


def _parse_connected(message: dict) -> Connected:
    return Connected(_text(message.get("protocol") or ""), _text(message.get("version") or ""))


_PARSERS: dict[str, Callable[[dict], InboundMessage]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "mark": _parse_mark,
    "dtmf": _parse_dtmf,
    "stop": _parse_stop,
}


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} (expected a string)")
    return value


def _number(value: Any) -> int:
    """`"42"` or `42` → 42; absent → 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{value!r} (expected a number)")
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(f"{value!r} is not a number") from None


# ---- outbound ---------------------------------------------------------------------------------
# Built by string formatting: `media` is sent 50 times a second per call, and the SIDs and the
# base64 alphabet never need JSON escaping (the SID is checked once, in `OutboundMessages`).


class OutboundMessages:
    """The messages we send on one stream, pre-bound to its `streamSid`."""

    def __init__(self, stream_sid: str):
        if not stream_sid.isalnum():
            raise ProtocolError(f"unexpected streamSid {stream_sid!r}")
        self._media_prefix = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":'
        self.clear = '{"event":"clear","streamSid":"' + stream_sid + '"}'

    def media(self, mulaw: bytes) -> str:
        return self._media_prefix + base64.b64encode(mulaw).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        return self._mark_prefix + json.dumps(name) + "}}"

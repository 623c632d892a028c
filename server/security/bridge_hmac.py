"""`X-Bridge-Signature` between the app and the Baileys bridge (baileys-bridge/README.md, "Signatures").

Two schemes share the header; each side accepts only the one its direction uses.

Requests the app makes to the bridge (`POST /send`, `GET /qr.json?business_id=N`, the instance
admin routes) are signed with `v2`, which binds the signature to the request it was made for:

    X-Bridge-Signature: t=<unix seconds>,v2=<hex HMAC-SHA256(secret, message)>[,v2=…]
    message = <t> LF <METHOD> LF <path?query> LF <raw body>

`<METHOD>` is the upper-case HTTP method; `<path?query>` is the request target exactly as the
bridge receives it: the route's path and, when there is one, `?` and the query string, byte for
byte as sent (no decoding, sorting or normalising; without `WA_BAILEYS_URL`'s own path, which a
proxy in front of the bridge would strip); `<raw body>` is the body bytes (empty for a GET). So a
captured `GET /qr.json?business_id=1` cannot be replayed as `?business_id=2`, as a `DELETE`, or on
another path within the freshness window. The method and the target are printable ASCII without
spaces (as on an HTTP request line), so the message splits one way only.

Events the bridge posts to the app (`POST /webhook/whatsapp/baileys`) keep `v1`, over the
timestamp and body only:

    X-Bridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=…]

That webhook is the bridge's only destination and every event names its business inside the signed
body, so binding the path would add nothing there, while it would make every event of a bridge
behind a path-rewriting proxy (or an older bridge during an upgrade) a 401, which the bridge drops
without retrying. A `v1` message always has `.` right after the timestamp's digits and a `v2`
message a LF, so a signature made for one scheme never verifies under the other, even relabelled.

Several values of a scheme are allowed so a secret can be rotated; a timestamp more than 300 s
away from now is refused, so a captured request can't be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Callable, Iterable

MAX_SKEW_SECONDS = 300
HEADER = "X-Bridge-Signature"
MAX_TIMESTAMP_DIGITS = 12  # unix seconds have 10 digits until the year 2286
EVENT_SCHEME = "v1"
REQUEST_SCHEME = "v2"


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _event_message(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode("ascii") + b"." + body


def request_message(timestamp: str, method: str, target: str, body: bytes) -> bytes:
    """What a `v2` signature covers (module docstring)."""
    if not _is_token(method) or not _is_token(target):
        raise ValueError("an HTTP method or request target is printable ASCII without spaces")
    return b"\n".join([timestamp.encode("ascii"), method.upper().encode("ascii"), target.encode("ascii"), body])


def _is_token(text: str) -> bool:
    # What may stand in a request line's method or target: printable ASCII, no space (RFC 9112).
    return bool(text) and text.isascii() and text.isprintable() and " " not in text


def _secrets(secrets: Iterable[str] | str) -> list[str]:
    return [s for s in ([secrets] if isinstance(secrets, str) else secrets) if s]


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """A `v1` (event) signature: what the bridge puts on what it posts to the app."""
    t = str(int(time.time()) if timestamp is None else timestamp)
    return f"t={t},{EVENT_SCHEME}={_hmac_hex(secret, _event_message(t, body))}"


def sign_request(
    secrets: Iterable[str] | str, method: str, target: str, body: bytes = b"", timestamp: int | None = None
) -> str:
    """A `v2` signature for a request to the bridge, one value per secret (so the app and the bridge
    can move to a new secret in either order). `target` is the path and query as sent."""
    keys = _secrets(secrets)
    if not keys:
        raise ValueError("no shared secret to sign with")
    t = str(int(time.time()) if timestamp is None else timestamp)
    message = request_message(t, method, target, body)
    return ",".join([f"t={t}"] + [f"{REQUEST_SCHEME}={_hmac_hex(key, message)}" for key in keys])


def verify(secrets: list[str] | str, body: bytes, header: str | None, now: float | None = None) -> str | None:
    """Checks a `v1` (event) signature. Return None when the header is valid, else the reason it is not."""
    return _verify(secrets, EVENT_SCHEME, lambda t: _event_message(t, body), header, now)


def verify_request(
    secrets: list[str] | str, method: str, target: str, body: bytes, header: str | None, now: float | None = None
) -> str | None:
    """Checks a `v2` (request) signature against the request as received. None when valid, else why not."""
    if not _is_token(method) or not _is_token(target):
        return "malformed request"
    return _verify(secrets, REQUEST_SCHEME, lambda t: request_message(t, method, target, body), header, now)


def _verify(
    secrets: list[str] | str, scheme: str, message: Callable[[str], bytes], header: str | None, now: float | None
) -> str | None:
    if not header:
        return "missing signature"
    candidates = _secrets(secrets)
    if not candidates:
        return "no shared secret configured"
    timestamp, macs, other_schemes = None, [], False
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == scheme and value:
            macs.append(value)
        elif key in (EVENT_SCHEME, REQUEST_SCHEME) and value:
            other_schemes = True
    if not macs and other_schemes and timestamp:
        # Most likely one side runs a release from before the other scheme; say so in the log.
        return f"wrong signature scheme (expected {scheme})"
    # `str.isdigit` alone takes "²" and "٣", which `int()` refuses or reads as another number, and
    # `hmac.compare_digest` raises on non-ASCII text: only ASCII reaches either.
    if (
        not timestamp
        or not timestamp.isascii()
        or not timestamp.isdigit()
        or len(timestamp) > MAX_TIMESTAMP_DIGITS
        or not macs
        or not all(m.isascii() for m in macs)
    ):
        return "malformed signature header"
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW_SECONDS:
        return "stale timestamp"
    signed = message(timestamp)
    expected = [_hmac_hex(secret, signed) for secret in candidates]
    if any(hmac.compare_digest(e, m) for e in expected for m in macs):
        return None
    return "signature does not match"

"""`X-Bridge-Signature` between the app and the Baileys bridge, both ways (baileys-bridge/README.md).

    X-Bridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=…]

Several `v1` values are allowed so a secret can be rotated; a timestamp more than 300 s away
from now is refused, so a captured request can't be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

MAX_SKEW_SECONDS = 300
HEADER = "X-Bridge-Signature"
MAX_TIMESTAMP_DIGITS = 12  # unix seconds have 10 digits until the year 2286


def _mac(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = str(int(time.time()) if timestamp is None else timestamp)
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(secrets: list[str] | str, body: bytes, header: str | None, now: float | None = None) -> str | None:
    """Return None when the header is valid, else the reason it is not."""
    if not header:
        return "missing signature"
    candidates = [secrets] if isinstance(secrets, str) else list(secrets)
    candidates = [s for s in candidates if s]
    if not candidates:
        return "no shared secret configured"
    timestamp, macs = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1" and value:
            macs.append(value)
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
    expected = [_mac(secret, timestamp, body) for secret in candidates]
    if any(hmac.compare_digest(e, m) for e in expected for m in macs):
        return None
    return "signature does not match"

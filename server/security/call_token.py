"""The `token` <Parameter> of a call's media stream: an HMAC of the CallSid.

Only the server that served the TwiML can produce it, so a stranger who knows the WebSocket URL
can't attach to (or inject audio into) somebody's call.
"""

from __future__ import annotations

import hashlib
import hmac


def call_token(secret: str, call_sid: str) -> str:
    return hmac.new(secret.encode("utf-8"), b"call:" + call_sid.encode("utf-8"), hashlib.sha256).hexdigest()


def call_token_is_valid(secret: str, call_sid: str, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(call_token(secret, call_sid), token)

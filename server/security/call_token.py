"""The `token` <Parameter> of a call's media stream: an HMAC of the CallSid.

Only the server that served the TwiML can produce it, so a stranger who knows the WebSocket URL
can't attach to (or inject audio into) somebody's call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time


def call_token(secret: str, call_sid: str) -> str:
    return hmac.new(secret.encode("utf-8"), b"call:" + call_sid.encode("utf-8"), hashlib.sha256).hexdigest()


def call_token_is_valid(secret: str, call_sid: str, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(call_token(secret, call_sid), token)


# ---- the whisper of a transferred call --------------------------------------------------------
# The person who answers a transfer hears why the caller is being put through. Twilio fetches that
# announcement from a URL we put in the `<Dial>`; the reason travels in the URL, signed, so nobody
# can make our number read out their own text, and no row has to be kept for it.
TRANSFER_TOKEN_MAX_AGE_SECONDS = 600  # fetched within the ring time; 60 s of clock skew between machines is forgiven


def transfer_token(secret: str, call_sid: str, reason: str, *, issued_at: float | None = None) -> str:
    payload = json.dumps(
        {"call": call_sid, "reason": reason, "at": int(time.time() if issued_at is None else issued_at)},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    return f"{body}.{_transfer_mac(secret, body)}"


def read_transfer_token(secret: str, token: str | None, *, now: float | None = None) -> dict[str, str] | None:
    """`{"call": CallSid, "reason": text}` from a token `transfer_token` made and that has not expired,
    else None (forged, altered, expired or malformed)."""
    if not token or token.count(".") != 1 or len(token) > 4096:
        return None
    body, mac = token.split(".")
    if not hmac.compare_digest(_transfer_mac(secret, body), mac):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("at"), int):
        return None
    age = (time.time() if now is None else now) - data["at"]
    if not -60 <= age <= TRANSFER_TOKEN_MAX_AGE_SECONDS or not isinstance(data.get("call"), str):
        return None
    return {"call": data["call"], "reason": str(data.get("reason") or "")}


def _transfer_mac(secret: str, body: str) -> str:
    return hmac.new(secret.encode("utf-8"), b"transfer:" + body.encode("ascii"), hashlib.sha256).hexdigest()

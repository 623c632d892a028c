"""Twilio's side of a voice webhook: the form parameters it posts and the `X-Twilio-Signature` it adds.

    params = voice_params(call_sid, to=tenant.phone)
    client.post("/webhook/incoming_call", data=params,
                headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params))

Signatures come from the official SDK (`RequestValidator.compute_signature`) over the public URL
Twilio called, exactly as Twilio computes them.
"""

from __future__ import annotations

import secrets

from twilio.request_validator import RequestValidator

from testkit.env import BASE_TEST_ENV, TEST_TWILIO_TOKEN

ACCOUNT_SID = BASE_TEST_ENV["TWILIO_ACCOUNT_SID"]


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def signature_header(url: str, params: dict[str, str], token: str = TEST_TWILIO_TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def voice_params(
    call_sid: str, *, to: str = "+97235550001", from_: str = "+972501234567", status: str = "ringing", **extra: str
) -> dict[str, str]:
    """The parameters Twilio posts to a voice webhook (incoming call, status, `<Connect>` action …)."""
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": status,
        "Called": to,
        "Caller": from_,
        "Direction": "inbound",
        "From": from_,
        "To": to,
        "FromCountry": "IL",
        "ToCountry": "IL",
        **extra,
    }

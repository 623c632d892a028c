"""The Twilio REST client, built from `Settings` only.

`TWILIO_API_BASE_URL` replaces the host of Twilio's `api` domain (calls, messages, recordings)
through the SDK's own per-domain `base_url`, so production (https://api.twilio.com) and tests (a
local fake) go through exactly the same code. The SDK's `environment` is built from Settings too,
so stray `TWILIO_EDGE`/`TWILIO_REGION` variables in the process can't re-route requests.
"""

from __future__ import annotations

import functools

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from server.config import Settings

__all__ = ["TwilioNotConfigured", "TwilioRestException", "TwilioException", "twilio_client"]


class TwilioNotConfigured(RuntimeError):
    """TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN are missing."""


@functools.lru_cache(maxsize=8)
def twilio_client(settings: Settings) -> Client:
    """A REST client for `settings` (cached: one connection pool per configuration)."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        raise TwilioNotConfigured("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required")
    client = Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        http_client=TwilioHttpClient(timeout=settings.twilio_api_timeout_seconds),
        environment={
            "TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": settings.twilio_auth_token,
        },
    )
    client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client

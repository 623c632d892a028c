"""The Baileys bridge's login side, for the owner's WhatsApp connection screen (baileys-bridge/README.md).

    GET {WA_BAILEYS_URL}/status    → {"state", "me", "qr_available", "last_disconnect_code"}   (unsigned)
    GET {WA_BAILEYS_URL}/qr.json   → {"qr": "<QR string>"} | 404 {"error": "no_qr"}            (signed)

The QR string links a phone to the business's WhatsApp account, so it is asked for with the
shared-secret signature (over the empty body) and only ever leaves the app drawn as an image for
an authenticated owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import requests

from server.config import Settings
from server.providers.http_json import json_object
from server.security import bridge_hmac

TIMEOUT_SECONDS = (2.0, 3.0)


class BridgeUnavailable(Exception):
    """The bridge did not answer, or answered something we can't read."""


@dataclass(frozen=True)
class BridgeStatus:
    state: str  # connecting | open | close | logged_out
    qr_available: bool


def bridge_status(settings: Settings) -> BridgeStatus:
    answer = _get(settings, "/status", signed=False)
    if answer.status_code != 200:
        raise BridgeUnavailable(f"GET /status answered {answer.status_code}")
    body = json_object(answer)
    state = body.get("state")
    if not isinstance(state, str) or not state:
        raise BridgeUnavailable("GET /status answered no state")
    return BridgeStatus(state=state, qr_available=body.get("qr_available") is True)


def bridge_qr(settings: Settings) -> Optional[str]:
    """The current QR string, or None when the bridge has none (connected, or not ready yet)."""
    answer = _get(settings, "/qr.json", signed=True)
    if answer.status_code == 404:
        return None
    qr = json_object(answer).get("qr")
    if answer.status_code != 200 or not isinstance(qr, str) or not qr:
        raise BridgeUnavailable(f"GET /qr.json answered {answer.status_code}")
    return qr


def _get(settings: Settings, path: str, *, signed: bool) -> requests.Response:
    headers = {}
    if signed:
        headers[bridge_hmac.HEADER] = bridge_hmac.sign(settings.wa_shared_secret, b"")
    try:
        return requests.get(settings.bridge_url + path, headers=headers, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        raise BridgeUnavailable(f"the bridge did not answer ({type(exc).__name__})") from exc

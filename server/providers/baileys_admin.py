"""The Baileys bridge's login and instance side (baileys-bridge/README.md): one instance, one linked
WhatsApp account, per business.

    GET    {WA_BAILEYS_URL}/status?business_id=N    → {"state", "me", "qr_available", "last_disconnect_code"}
    GET    {WA_BAILEYS_URL}/qr.json?business_id=N   → {"qr": "<QR string>"} | 404 no_qr         (signed)
    GET    {WA_BAILEYS_URL}/instances               → {"instances": [{business_id, state, me, …}]} (signed)
    POST   {WA_BAILEYS_URL}/instances {"business_id"} → the instance, added and started (idempotent)
    POST   {WA_BAILEYS_URL}/instances/N/logout      → the instance, logged out, waiting for a new QR
    DELETE {WA_BAILEYS_URL}/instances/N             → {"business_id", "removed": true}
    Unknown instance: 404 {"error": "unknown_instance"}.

The QR string links a phone to the business's WhatsApp account, so it is asked for with the
shared-secret signature and only ever leaves the app drawn as an image for an authenticated owner.
Signed requests carry a `v2` signature (server/security/bridge_hmac.py) over the method, the path
with its query and the body, so one business's signed request can't be replayed for another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlencode

import requests

from server.config import Settings
from server.providers.http_json import json_object
from server.security import bridge_hmac

TIMEOUT_SECONDS = (2.0, 3.0)
# Adding starts a socket and logging out tells WhatsApp first: give those a little longer.
ADMIN_TIMEOUT_SECONDS = (2.0, 15.0)


class BridgeUnavailable(Exception):
    """The bridge did not answer, or answered something we can't read."""


class UnknownInstance(Exception):
    """The bridge runs no instance for this business."""


@dataclass(frozen=True)
class BridgeStatus:
    state: str  # connecting | open | close | logged_out
    qr_available: bool
    me: Optional[str] = None  # the linked account's number, once connected
    last_disconnect_code: Optional[int] = None


def _status(body: dict[str, Any]) -> BridgeStatus:
    state = body.get("state")
    if not isinstance(state, str) or not state:
        raise BridgeUnavailable("the bridge answered no state")
    me = body.get("me")
    code = body.get("last_disconnect_code")
    return BridgeStatus(
        state=state,
        qr_available=body.get("qr_available") is True,
        me=me if isinstance(me, str) else None,
        last_disconnect_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
    )


def bridge_status(settings: Settings, business_id: int) -> BridgeStatus:
    answer = _request(settings, "GET", "/status", params={"business_id": business_id}, signed=False)
    _raise_for_unknown(answer, business_id)
    if answer.status_code != 200:
        raise BridgeUnavailable(f"GET /status answered {answer.status_code}")
    return _status(json_object(answer))


def bridge_qr(settings: Settings, business_id: int) -> Optional[str]:
    """The business's current QR string, or None when its instance has none (connected, or not ready yet)."""
    answer = _request(settings, "GET", "/qr.json", params={"business_id": business_id})
    _raise_for_unknown(answer, business_id)
    if answer.status_code == 404:
        return None
    qr = json_object(answer).get("qr")
    if answer.status_code != 200 or not isinstance(qr, str) or not qr:
        raise BridgeUnavailable(f"GET /qr.json answered {answer.status_code}")
    return qr


def list_instances(settings: Settings) -> list[dict[str, Any]]:
    answer = _request(settings, "GET", "/instances")
    instances = json_object(answer).get("instances")
    if answer.status_code != 200 or not isinstance(instances, list):
        raise BridgeUnavailable(f"GET /instances answered {answer.status_code}")
    return [item for item in instances if isinstance(item, dict)]


def add_instance(settings: Settings, business_id: int) -> dict[str, Any]:
    """Adds and starts the business's instance; the bridge answers the one it has when it exists."""
    answer = _request(settings, "POST", "/instances", body={"business_id": business_id}, admin=True)
    if answer.status_code not in (200, 201):
        raise BridgeUnavailable(f"POST /instances answered {answer.status_code}")
    return json_object(answer)


def logout_instance(settings: Settings, business_id: int) -> dict[str, Any]:
    answer = _request(settings, "POST", f"/instances/{business_id}/logout", admin=True)
    _raise_for_unknown(answer, business_id)
    if answer.status_code != 200:
        raise BridgeUnavailable(f"POST /instances/{business_id}/logout answered {answer.status_code}")
    return json_object(answer)


def remove_instance(settings: Settings, business_id: int) -> None:
    answer = _request(settings, "DELETE", f"/instances/{business_id}", admin=True)
    _raise_for_unknown(answer, business_id)
    if answer.status_code != 200:
        raise BridgeUnavailable(f"DELETE /instances/{business_id} answered {answer.status_code}")


def bridge_secrets(settings: Settings) -> list[str]:
    """The secrets requests to the bridge are signed with: both while one is rotated, so the app and
    the bridge can take the new one in either order."""
    return [s for s in (settings.wa_shared_secret, settings.wa_shared_secret_previous) if s]


def _raise_for_unknown(answer: requests.Response, business_id: int) -> None:
    if answer.status_code == 404 and json_object(answer).get("error") == "unknown_instance":
        raise UnknownInstance(f"the bridge has no instance for business {business_id}")


def _request(
    settings: Settings,
    method: str,
    path: str,
    *,
    params: Optional[dict[str, Any]] = None,
    body: Optional[dict[str, Any]] = None,
    signed: bool = True,
    admin: bool = False,
) -> requests.Response:
    raw = b"" if body is None else json.dumps(body).encode("utf-8")
    # The query is written here, not by `requests`, so that what is signed is what is sent.
    target = path + ("?" + urlencode(params) if params else "")
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if signed:
        headers[bridge_hmac.HEADER] = bridge_hmac.sign_request(bridge_secrets(settings), method, target, raw)
    try:
        return requests.request(
            method,
            settings.bridge_url + target,
            data=raw or None,
            headers=headers,
            timeout=ADMIN_TIMEOUT_SECONDS if admin else TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:
        raise BridgeUnavailable(f"the bridge did not answer ({type(exc).__name__})") from exc

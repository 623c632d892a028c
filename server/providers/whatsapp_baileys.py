"""WhatsApp through the Baileys bridge (`baileys-bridge/`), over its signed HTTP API (baileys-bridge/README.md).

`POST {WA_BAILEYS_URL}/send {"to", "text", "idempotency_key", "media"?}`, signed with `X-Bridge-Signature`
→ 200 `{"id"}`; 503 `{"error": "not_connected"}` when WhatsApp is not connected (nothing sent);
400 for bad input. Each send opens a fresh connection: a pooled keep-alive connection that the
bridge closed on restart would fail mid-request, and that failure could not be told apart from a
message that went out.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import requests

from server.config import Settings
from server.providers.http_json import json_object
from server.providers.whatsapp import NotSent, OutcomeUnknown, Outgoing, OutgoingMedia, classify_transport_error
from server.security import bridge_hmac

CONNECT_TIMEOUT_SECONDS = 3.0


def baileys_problem(settings: Settings) -> str | None:
    """Why the bridge can't be used with these settings, or None when it can."""
    if not settings.enable_wa_baileys:
        return "WhatsApp via Baileys is disabled (ENABLE_WA_BAILEYS)"
    if not settings.wa_shared_secret:
        return "WA_SHARED_SECRET is not configured"
    return None


class BaileysBridge:
    name = "baileys"

    def __init__(self, settings: Settings):
        self.url = settings.bridge_url + "/send"
        self.secrets = [s for s in (settings.wa_shared_secret, settings.wa_shared_secret_previous) if s]
        self.timeout = (CONNECT_TIMEOUT_SECONDS, settings.wa_baileys_timeout_seconds)

    def send(self, message: Outgoing) -> str:
        if message.content_sid and not message.text:
            raise NotSent("unsupported_content", "the Baileys bridge sends text only, not Twilio templates")
        if message.business_id is None:  # the bridge has one WhatsApp account per business
            raise NotSent("no_business", "the Baileys bridge needs the business the message is sent for")
        payload: dict[str, Any] = {"to": message.to, "text": message.text, "idempotency_key": message.idempotency_key}
        if message.media is not None:
            payload["media"] = bridge_media(message.media)
        payload["business_id"] = message.business_id  # its instance: that business's own WhatsApp account
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", bridge_hmac.HEADER: self._signature(body)}
        try:
            response = requests.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise classify_transport_error(exc, "the Baileys bridge") from exc
        answer = json_object(response)
        if response.status_code == 200 and isinstance(answer.get("id"), str) and answer["id"]:
            return answer["id"]
        error = str(answer.get("error") or f"http_{response.status_code}")
        detail = f"the Baileys bridge answered {response.status_code}: {answer.get('message') or error}"
        # 503 not_connected and any 4xx (bad input, bad signature) come before WhatsApp is touched.
        if (response.status_code == 503 and error == "not_connected") or 400 <= response.status_code < 500:
            raise NotSent(error, detail)
        raise OutcomeUnknown(error, detail)

    def _signature(self, body: bytes) -> str:
        """One `v2` per active secret, so the app and the bridge can move to a new secret in either order."""
        return bridge_hmac.sign_request(self.secrets, "POST", "/send", body)


def bridge_media(media: OutgoingMedia) -> dict[str, Any]:
    """`/send`'s `media` (baileys-bridge/README.md): a sticker goes out as a picture."""
    kind = media.kind if media.kind in ("image", "audio", "video", "document") else "image"
    return {
        "kind": kind,
        "mimetype": media.mime_type,
        "file_name": media.file_name,
        "data": base64.b64encode(media.data).decode("ascii"),
    }

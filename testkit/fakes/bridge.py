"""A local fake of the Baileys bridge's HTTP API (baileys-bridge/README.md), for the app's send path.

A real HTTP server (threads, 127.0.0.1, a free port). Point the app at it with the production
setting `WA_BAILEYS_URL=<fake.url>` and the same `WA_SHARED_SECRET`.

The real bridge runs one instance (one WhatsApp account) per business, named by `business_id`.
Here a business listed in `instances` ({business_id: {"state", "qr", "me"}}) has its own state;
any other business gets the fake's default `state` and `qr`, unless `strict` is set, when it is
404 {"error": "unknown_instance"} as on the real bridge. Requests without a business_id are
answered with the defaults (a bridge of before instances).

Signed requests are checked as the real bridge checks them: a `v2` signature over the method, the
path with its query as received, and the raw body (server/security/bridge_hmac.py).

    POST /send {"business_id", "to", "text", "idempotency_key", "media"?}, signed:
        401 {"error": "unauthorized"} when missing, stale or wrong
        mode "ok"            → 200 {"id": "<wa message id>"}   (the same id again for a repeated idempotency_key)
        mode "not_connected" → 503 {"error": "not_connected"}
        mode "error"         → 502 {"error": "send_failed"}    (the bridge can't tell whether it went out)
        mode "stall"         → answers nothing until `release()` (or `stall_seconds`), then 200
        a business whose instance is not "open" → 503 {"error": "not_connected"}
    GET /status?business_id=N → {"state", "me", "qr_available", "last_disconnect_code"}
    GET /qr.json?business_id=N (signed, empty body) → 200 {"qr": "<string>"} while its `qr` is set, else 404
        {"error": "no_qr"}; 401 without a valid signature. Each one is recorded in `qr_requests`
        (headers, signature verdict, and the business_id in `body`).
    GET /instances (signed) → {"instances": [...]}; POST /instances {"business_id"} → 201 (200 when it
        exists), state connecting with a QR code; POST /instances/N/logout → logged out, a new QR code;
        DELETE /instances/N → removed. Each is recorded in `admin_requests` (method, path, verdict).

Every POST /send is recorded in `sends` (parsed body, headers, whether the signature verified).

`before_answer`, when set, is called with the id of each message sent before its 200 goes out: the
real bridge forwards the message's first status events as they happen, and they can reach the app
before the answer to /send does.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from server.security import bridge_hmac
from testkit.fakes.local_http import LocalHTTPFake


@dataclass
class RecordedSend:
    body: dict[str, Any]
    headers: dict[str, str]
    signature_ok: bool
    at: float = field(default_factory=time.monotonic)


class FakeBridge(LocalHTTPFake):
    def __init__(self, secret: str, *, previous_secret: str | None = None):
        self._first_secrets = [s for s in (secret, previous_secret) if s]
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.reset()
        self._listen(type("Handler", (_Handler,), {"fake": self}))

    def reset(self) -> "FakeBridge":
        """Back to how it started, with nothing recorded (one server can serve test after test: starting
        one costs more than a test). Sends still stalled from before are let go first."""
        self._release.set()
        with self._lock:
            self.secrets = list(self._first_secrets)
            self.mode = "ok"
            self.stall_seconds = 30.0
            self.state = "open"
            self.qr: str | None = None  # the QR string the bridge would show while logging in
            self.instances: dict[int, dict[str, Any]] = {}
            self.strict = False
            self.admin_requests: list[tuple[str, str, bool]] = []
            self.qr_requests: list[RecordedSend] = []
            self.sends: list[RecordedSend] = []
            self._ids_by_key: dict[str, str] = {}
            self.before_answer: Optional[Callable[[str], None]] = None
            self._release = threading.Event()
        return self

    def _wake_stalled(self) -> None:
        self._release.set()

    def release(self) -> None:
        """Let stalled sends answer."""
        self._release.set()

    def instance(self, business_id: Any) -> Optional[dict[str, Any]]:
        """The state the fake shows for a business; None when it has no instance (strict)."""
        with self._lock:
            if isinstance(business_id, int) and business_id in self.instances:
                return self.instances[business_id]
            if self.strict:
                return None
            return {"state": self.state, "qr": self.qr, "me": "+972500000000" if self.state == "open" else None}

    def add_instance(self, business_id: int, state: str = "connecting", qr: str | None = None, me: str | None = None):
        with self._lock:
            self.instances[business_id] = {
                "state": state,
                "qr": qr if qr is not None or state == "open" else f"2@fake-{business_id}-{secrets.token_hex(4)},n=,a=",
                "me": me,
            }
            return self.instances[business_id]

    @property
    def accepted(self) -> list[RecordedSend]:
        with self._lock:
            return [s for s in self.sends if s.signature_ok]

    def _record(self, send: RecordedSend) -> None:
        with self._lock:
            self.sends.append(send)

    def _message_id(self, key: str | None) -> str:
        with self._lock:
            if key and key in self._ids_by_key:
                return self._ids_by_key[key]
            message_id = "3EB0" + secrets.token_hex(8).upper()
            if key:
                self._ids_by_key[key] = message_id
            return message_id


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBridge
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _business_id(self, query: dict[str, list[str]]) -> Any:
        raw = (query.get("business_id") or [None])[0]
        return int(raw) if raw and raw.isdigit() else raw

    def do_GET(self) -> None:
        fake = self.fake
        url = urlsplit(self.path)
        business_id = self._business_id(parse_qs(url.query))
        if url.path == "/status":
            instance = fake.instance(business_id)
            if instance is None:
                return self._unknown(business_id)
            return self._json(
                200,
                {
                    "state": instance["state"],
                    "me": instance["me"] if instance["state"] == "open" else None,
                    "qr_available": instance["qr"] is not None,
                    "last_disconnect_code": None,
                },
            )
        if url.path == "/qr.json":
            verdict = self._verdict(b"")
            with fake._lock:
                fake.qr_requests.append(
                    RecordedSend({"business_id": business_id}, dict(self.headers.items()), verdict is None)
                )
            if verdict is not None:
                return self._json(401, {"error": "unauthorized", "message": verdict})
            instance = fake.instance(business_id)
            if instance is None:
                return self._unknown(business_id)
            if instance["qr"] is None:
                return self._json(404, {"error": "no_qr", "message": "no QR code yet; try again in a few seconds"})
            return self._json(200, {"qr": instance["qr"]})
        if url.path == "/instances":
            if not self._admin_allowed(b""):
                return None
            with fake._lock:
                listed = [
                    {"business_id": bid, "state": i["state"], "me": i["me"], "qr_available": i["qr"] is not None}
                    for bid, i in sorted(fake.instances.items())
                ]
            return self._json(200, {"instances": listed})
        self._json(404, {"error": "not_found", "message": self.path})

    def _verdict(self, raw: bytes) -> str | None:
        """The signature check of the real bridge: `v2` over this method, the target as received
        (path and query, byte for byte) and the raw body. None when it verifies."""
        return bridge_hmac.verify_request(
            self.fake.secrets, self.command, self.path, raw, self.headers.get(bridge_hmac.HEADER)
        )

    def _admin_allowed(self, raw: bytes) -> bool:
        verdict = self._verdict(raw)
        with self.fake._lock:
            self.fake.admin_requests.append((self.command, self.path, verdict is None))
        if verdict is not None:
            self._json(401, {"error": "unauthorized", "message": verdict})
        return verdict is None

    def _unknown(self, business_id: Any) -> None:
        if not isinstance(business_id, int):
            return self._json(400, {"error": "invalid_business_id", "message": "business_id must be a number"})
        self._json(404, {"error": "unknown_instance", "message": f"no WhatsApp instance for business {business_id}"})

    def _described(self, business_id: int, instance: dict[str, Any]) -> dict[str, Any]:
        return {
            "business_id": business_id,
            "state": instance["state"],
            "me": instance["me"],
            "qr_available": instance["qr"] is not None,
            "last_disconnect_code": None,
        }

    def do_DELETE(self) -> None:
        match = re.fullmatch(r"/instances/(\d+)", self.path)
        if not match:
            return self._json(404, {"error": "not_found", "message": self.path})
        if not self._admin_allowed(b""):
            return None
        business_id = int(match.group(1))
        with self.fake._lock:
            removed = self.fake.instances.pop(business_id, None)
        if removed is None:
            return self._unknown(business_id)
        self._json(200, {"business_id": business_id, "removed": True})

    def do_POST(self) -> None:
        fake = self.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        verdict = self._verdict(raw)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        if self.path.startswith("/instances"):
            return self._instances_post(raw, body)
        fake._record(RecordedSend(body if isinstance(body, dict) else {}, dict(self.headers.items()), verdict is None))
        if self.path != "/send":
            return self._json(404, {"error": "not_found", "message": self.path})
        if verdict is not None:
            return self._json(401, {"error": "unauthorized", "message": verdict})
        if not isinstance(body, dict) or not body.get("to") or not (body.get("text") or body.get("media")):
            return self._json(400, {"error": "invalid_to", "message": "to and text (or media) are required"})
        instance = fake.instance(body.get("business_id"))
        if instance is None:
            return self._unknown(body.get("business_id"))
        if instance["state"] != "open":
            return self._json(503, {"error": "not_connected", "message": "WhatsApp is not connected; nothing was sent"})
        if fake.mode == "not_connected":
            return self._json(503, {"error": "not_connected", "message": "WhatsApp is not connected; nothing was sent"})
        if fake.mode == "error":
            return self._json(502, {"error": "send_failed", "message": "rate-overlimit"})
        if fake.mode == "stall" and fake._release.wait(fake.stall_seconds) is False:
            return
        message_id = fake._message_id(body.get("idempotency_key"))
        if fake.before_answer is not None:
            fake.before_answer(message_id)
        self._json(200, {"id": message_id})

    def _instances_post(self, raw: bytes, body: Any) -> None:
        fake = self.fake
        if not self._admin_allowed(raw):
            return None
        if self.path == "/instances":
            business_id = body.get("business_id") if isinstance(body, dict) else None
            if isinstance(business_id, bool) or not isinstance(business_id, int) or business_id <= 0:
                return self._unknown(None)
            with fake._lock:
                existing = fake.instances.get(business_id)
            if existing is not None:
                return self._json(200, {**self._described(business_id, existing), "created": False})
            return self._json(201, {**self._described(business_id, fake.add_instance(business_id)), "created": True})
        match = re.fullmatch(r"/instances/(\d+)/logout", self.path)
        if not match:
            return self._json(404, {"error": "not_found", "message": self.path})
        business_id = int(match.group(1))
        with fake._lock:
            known = business_id in fake.instances
        if not known:
            return self._unknown(business_id)
        return self._json(200, self._described(business_id, fake.add_instance(business_id)))

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the app gave up waiting (its timeout)
            pass

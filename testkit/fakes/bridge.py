"""A local fake of the Baileys bridge's HTTP API (baileys-bridge/README.md), for the app's send path.

A real HTTP server (threads, 127.0.0.1, a free port). Point the app at it with the production
setting `WA_BAILEYS_URL=<fake.url>` and the same `WA_SHARED_SECRET`.

    POST /send {"to", "text", "idempotency_key"}   X-Bridge-Signature checked over the raw body:
        401 {"error": "unauthorized"} when missing, stale or wrong
        mode "ok"            → 200 {"id": "<wa message id>"}   (the same id again for a repeated idempotency_key)
        mode "not_connected" → 503 {"error": "not_connected"}
        mode "error"         → 502 {"error": "send_failed"}    (the bridge can't tell whether it went out)
        mode "stall"         → answers nothing until `release()` (or `stall_seconds`), then 200
    GET /status → {"state", "me", "qr_available", "last_disconnect_code"}    (`state`, `qr` set by the test)
    GET /qr.json (signed, empty body) → 200 {"qr": "<string>"} while `qr` is set, else 404 {"error": "no_qr"};
        401 without a valid signature. Each one is recorded in `qr_requests` (headers, signature verdict).

Every POST /send is recorded in `sends` (parsed body, headers, whether the signature verified).

`before_answer`, when set, is called with the id of each message sent before its 200 goes out: the
real bridge forwards the message's first status events as they happen, and they can reach the app
before the answer to /send does.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Optional

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

    def do_GET(self) -> None:
        fake = self.fake
        if self.path == "/status":
            return self._json(
                200,
                {
                    "state": fake.state,
                    "me": "+972500000000" if fake.state == "open" else None,
                    "qr_available": fake.qr is not None,
                    "last_disconnect_code": None,
                },
            )
        if self.path == "/qr.json":
            verdict = bridge_hmac.verify(fake.secrets, b"", self.headers.get(bridge_hmac.HEADER))
            with fake._lock:
                fake.qr_requests.append(RecordedSend({}, dict(self.headers.items()), verdict is None))
            if verdict is not None:
                return self._json(401, {"error": "unauthorized", "message": verdict})
            if fake.qr is None:
                return self._json(404, {"error": "no_qr", "message": "no QR code yet; try again in a few seconds"})
            return self._json(200, {"qr": fake.qr})
        self._json(404, {"error": "not_found", "message": self.path})

    def do_POST(self) -> None:
        fake = self.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        verdict = bridge_hmac.verify(fake.secrets, raw, self.headers.get(bridge_hmac.HEADER))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        fake._record(RecordedSend(body if isinstance(body, dict) else {}, dict(self.headers.items()), verdict is None))
        if self.path != "/send":
            return self._json(404, {"error": "not_found", "message": self.path})
        if verdict is not None:
            return self._json(401, {"error": "unauthorized", "message": verdict})
        if not isinstance(body, dict) or not body.get("to") or not body.get("text"):
            return self._json(400, {"error": "invalid_to", "message": "to and text are required"})
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

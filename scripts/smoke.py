#!/usr/bin/env python3
"""GO/NO-GO checks against a running AgentLocator deployment (`smoke.sh [BASE_URL] [--json]`).

Standard library only, so an operator can run it from anywhere. Each check prints one line,
PASS / FAIL / SKIP with what it saw; the exit status is non-zero when any check failed. What
`/readyz` lists under `warnings` (a deployment that works but should be looked at, such as a
Tranzila terminal without API keys) prints as WARN lines, which don't make the run NO-GO.

Environment: PUBLIC_BASE_URL (default base; signed requests are signed for it, as Twilio signs
them, so BASE_URL may be an internal address), TWILIO_AUTH_TOKEN (signs the stream_ended check),
SMOKE_TO (a business's Twilio number for the TwiML preview), SMOKE_WA_TO + SMOKE_API_TOKEN (an
optional real WhatsApp send), SMOKE_TIMEOUT (seconds per request, default 10).

`--deep` also has the deployment check every configured vendor with one tiny real request
(`POST /api/admin/vendor-check` with an admin's token in SMOKE_ADMIN_TOKEN, the same check as
`flask --app main check-providers`): one line per vendor, PASS with its latency, FAIL with the
reason (wrong credentials make the run NO-GO), SKIP when the vendor isn't configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass

TIMEOUT = float(os.environ.get("SMOKE_TIMEOUT", "10"))
PRODUCT_NAMES = {"agentlocator", "agent locator", "agent-locator"}


@dataclass
class Result:
    name: str
    status: str  # PASS | FAIL | SKIP | WARN
    detail: str


class Response:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def request(
    method: str, url: str, *, data: bytes | None = None, headers: dict | None = None, timeout: float = TIMEOUT
) -> Response:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, err.headers, err.read())


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented algorithm: HMAC-SHA1 over the URL + sorted name/value pairs, base64."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def has_no_double_slash(url: str) -> bool:
    return "//" not in url.split("://", 1)[-1]


class Smoke:
    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.public_base = (os.environ.get("PUBLIC_BASE_URL") or base).rstrip("/")
        self.results: list[Result] = []
        self.readyz_warnings: list = []

    def url(self, path: str) -> str:
        return self.base + path

    def check(self, name: str):
        def decorator(fn):
            try:
                outcome = fn()
                status, detail = outcome if isinstance(outcome, tuple) else ("PASS", outcome)
            except AssertionError as exc:
                status, detail = "FAIL", str(exc)
            except Exception as exc:  # a connection error is a FAIL with its reason, not a crash
                status, detail = "FAIL", f"{type(exc).__name__}: {exc}"
            self.results.append(Result(name, status, detail))
            return fn

        return decorator

    def run(self) -> None:
        @self.check("root")
        def _():
            r = request("GET", self.url("/"))
            assert r.status == 200 and r.body.strip() == b"ok", f"GET / → {r.status} {r.body[:60]!r}"
            return "GET / → 200 ok"

        @self.check("healthz")
        def _():
            r = request("GET", self.url("/healthz"))
            assert r.status == 200, f"GET /healthz → {r.status}"
            return f"GET /healthz → 200 {r.json()}"

        @self.check("readyz")
        def _():
            r = request("GET", self.url("/readyz"))
            body = r.json()
            assert r.status == 200, f"GET /readyz → {r.status} reason={body.get('reason')}"
            off = sorted(k for k, v in body.get("providers", {}).items() if not v)
            self.readyz_warnings = [w for w in body.get("warnings") or [] if isinstance(w, dict)]
            return f"GET /readyz → 200 voice={body.get('voice')} unconfigured={','.join(off) or 'none'}"

        for warning in self.readyz_warnings:
            self.results.append(
                Result(f"warning {warning.get('code', '')}".strip(), "WARN", str(warning.get("message", "")))
            )

        @self.check("version")
        def _():
            r = request("GET", self.url("/version"))
            body = r.json()
            assert r.status == 200, f"GET /version → {r.status}"
            assert set(body) == {"git_commit", "build_time", "deploy_id"}, f"unexpected keys {sorted(body)}"
            named = [v for v in body.values() if isinstance(v, str) and v.strip().lower() in PRODUCT_NAMES]
            assert not named, f"/version holds a hard-coded name: {named}"
            assert body["git_commit"], "git_commit is null: set GIT_COMMIT (start_all.sh reads it from git)"
            return f"GET /version → {body}"

        for name in ("greeting_he.mp3", "fallback_he.mp3"):

            @self.check(f"static {name}")
            def _(name=name):
                r = request("HEAD", self.url(f"/static/tts/{name}"))
                kind = r.headers.get("Content-Type", "")
                assert r.status == 200 and kind.startswith("audio/"), f"HEAD → {r.status} {kind}"
                return f"HEAD → 200 {kind} {r.headers.get('Content-Length')} bytes"

        @self.check("twiml preview")
        def _():
            query = urllib.parse.urlencode({"to": os.environ["SMOKE_TO"]}) if os.environ.get("SMOKE_TO") else ""
            r = request("GET", self.url("/webhook/incoming_call_preview" + (f"?{query}" if query else "")))
            assert r.status == 200, f"preview → {r.status}"
            root = ET.fromstring(r.body)
            connect = root.find("Connect")
            stream = connect.find("Stream") if connect is not None else None
            assert stream is not None, "no <Connect><Stream> (unknown SMOKE_TO number, or voice degraded)"
            urls = {
                "Stream url": stream.get("url", ""),
                "Connect action": connect.get("action", ""),
                "statusCallback": stream.get("statusCallback", ""),
            }
            # Twilio only connects to wss://; plain ws:// is acceptable only for a local http deployment.
            wanted = "wss://" if self.public_base.startswith("https://") else ("wss://", "ws://")
            assert urls["Stream url"].startswith(wanted), f"Stream url is not wss://: {urls['Stream url']}"
            for label, value in urls.items():
                assert value.startswith(("https://", "wss://", "http://", "ws://")), f"{label} not absolute: {value!r}"
                assert has_no_double_slash(value), f"{label} has '//': {value}"
            return f"<Connect action={urls['Connect action']}><Stream url={urls['Stream url']}>"

        @self.check("stream_status")
        def _():
            params = {"StreamEvent": "stream-started", "StreamSid": "MZsmoke", "CallSid": "CAsmoke"}
            token = os.environ.get("TWILIO_AUTH_TOKEN")
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if token:  # signed like every Twilio callback, over the public URL
                headers["X-Twilio-Signature"] = twilio_signature(
                    token, self.public_base + "/webhook/stream_status", params
                )
            r = request(
                "POST",
                self.url("/webhook/stream_status"),
                data=urllib.parse.urlencode(params).encode(),
                headers=headers,
            )
            if not token and r.status == 403:
                return "SKIP", "TWILIO_AUTH_TOKEN not set: can't sign the request (unsigned → 403)"
            assert r.status == 204, f"POST /webhook/stream_status → {r.status}"
            return f"{'signed ' if token else ''}POST /webhook/stream_status → 204"

        @self.check("stream_ended")
        def _():
            token = os.environ.get("TWILIO_AUTH_TOKEN")
            if not token:
                return "SKIP", "TWILIO_AUTH_TOKEN not set: can't sign the request"
            params = {"CallSid": "CAsmoke0000000000000000000000000", "AccountSid": "ACsmoke"}
            # The app checks signatures over its public URL, which is what Twilio calls.
            signed_url = self.public_base + "/webhook/stream_ended"
            r = request(
                "POST",
                self.url("/webhook/stream_ended"),
                data=urllib.parse.urlencode(params).encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": twilio_signature(token, signed_url, params),
                },
            )
            assert r.status in (200, 204), f"signed POST /webhook/stream_ended → {r.status} {r.body[:120]!r}"
            if r.status == 200:
                ET.fromstring(r.body)
            return f"signed POST /webhook/stream_ended → {r.status}"

        @self.check("websocket handshake")
        def _():
            status, headers = websocket_handshake(self.url("/ws/twilio-media"))
            assert status == 101, f"handshake → {status}"
            protocol = headers.get("sec-websocket-protocol", "")
            assert protocol == "audio.twilio.com", f"Sec-WebSocket-Protocol echoed as {protocol!r}"
            return "101 Switching Protocols, Sec-WebSocket-Protocol: audio.twilio.com"

        @self.check("bad signature refused")
        def _():
            data = urllib.parse.urlencode({"CallSid": "CAsmoke", "From": "+972500000000", "To": "+972500000001"})
            r = request(
                "POST",
                self.url("/webhook/incoming_call"),
                data=data.encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl",
                },
            )
            assert r.status == 403, f"forged POST /webhook/incoming_call → {r.status}"
            return "forged POST /webhook/incoming_call → 403"

        @self.check("whatsapp send")
        def _():
            to, token = os.environ.get("SMOKE_WA_TO"), os.environ.get("SMOKE_API_TOKEN")
            if not (to and token):
                return "SKIP", "set SMOKE_WA_TO and SMOKE_API_TOKEN to send a real message"
            body = json.dumps({"to": to, "text": "בדיקת מערכת (smoke)", "provider": "auto"}).encode()
            r = request(
                "POST",
                self.url("/api/whatsapp/send"),
                data=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            result = r.json()
            assert r.status == 200 and result.get("success"), f"send → {r.status} {result}"
            return f"sent via {result.get('provider')} id={result.get('provider_message_id')}"


def deep_vendor_check(smoke: Smoke) -> None:
    """The deployment's own vendor check: each vendor as one result line."""
    token = os.environ.get("SMOKE_ADMIN_TOKEN")
    if not token:
        smoke.results.append(Result("vendors", "FAIL", "--deep needs SMOKE_ADMIN_TOKEN (an admin's bearer token)"))
        return
    deep_timeout = max(TIMEOUT, 30.0)  # the vendors are checked side by side, each within 5 s
    try:
        r = request(
            "POST",
            smoke.url("/api/admin/vendor-check"),
            data=b"",
            headers={"Authorization": f"Bearer {token}"},
            timeout=deep_timeout,
        )
        report = r.json()
    except Exception as exc:
        smoke.results.append(Result("vendors", "FAIL", f"{type(exc).__name__}: {exc}"))
        return
    if r.status != 200:
        smoke.results.append(
            Result("vendors", "FAIL", f"POST /api/admin/vendor-check → {r.status} {report.get('code', '')}")
        )
        return
    labels = {"ok": "PASS", "failed": "FAIL", "skipped": "SKIP"}
    for result in report.get("results", []):
        latency = f" ({result['latency_ms']} ms)" if result.get("latency_ms") is not None else ""
        smoke.results.append(
            Result(f"vendor {result['vendor']}", labels.get(result["status"], "FAIL"), result["detail"] + latency)
        )


def websocket_handshake(http_url: str) -> tuple[int, dict[str, str]]:
    """A real RFC 6455 opening handshake offering `audio.twilio.com`, then a clean close."""
    parts = urllib.parse.urlsplit(http_url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    sock = socket.create_connection((parts.hostname, port), timeout=TIMEOUT)
    if secure:
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    host = parts.netloc
    sock.sendall(
        (
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: audio.twilio.com\r\n\r\n"
        ).encode()
    )
    raw = b""
    deadline = time.monotonic() + TIMEOUT
    while b"\r\n\r\n" not in raw and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        raw += chunk
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1]) if head and len(head[0].split()) > 1 else 0
    headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip() for line in head[1:] if ":" in line}
    if status == 101:
        expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if headers.get("sec-websocket-accept", "").encode() != expected:
            status = -1  # not a valid WebSocket answer
        mask = os.urandom(4)
        payload = (1000).to_bytes(2, "big")
        sock.sendall(bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    sock.close()
    return status, headers


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    deep = "--deep" in argv
    args = [a for a in argv if a not in ("--json", "--deep")]
    base = args[0] if args else os.environ.get("PUBLIC_BASE_URL", "")
    if not base:
        print("usage: smoke.sh [BASE_URL] [--json] [--deep]   (or set PUBLIC_BASE_URL)", file=sys.stderr)
        return 2
    smoke = Smoke(base)
    smoke.run()
    if deep:
        deep_vendor_check(smoke)
    failed = [r for r in smoke.results if r.status == "FAIL"]
    counts = {s: sum(r.status == s for r in smoke.results) for s in ("PASS", "FAIL", "SKIP", "WARN")}
    if as_json:
        print(
            json.dumps(
                {
                    "base_url": smoke.base,
                    "results": [asdict(r) for r in smoke.results],
                    "summary": counts,
                    "go": not failed,
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for r in smoke.results:
            print(f"{r.status:4}  {r.name:24} {r.detail}")
        print(
            f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped, "
            f"{counts['WARN']} warnings — {'GO' if not failed else 'NO-GO'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

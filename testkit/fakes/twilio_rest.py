"""A local fake of Twilio's REST API (api.twilio.com), speaking the real wire protocol.

It is a real HTTP server (threads, 127.0.0.1, a free port). Point the production code at it with
the production setting `TWILIO_API_BASE_URL=<fake.url>`; the real `twilio` SDK then talks to it.

    with FakeTwilioRest(account_sid=SID, auth_token=TOKEN) as twilio:
        app = make_app(TWILIO_API_BASE_URL=twilio.url, ...)
        ...
        [req] = twilio.requests_for("Calls")
        assert req.form["Twiml"].startswith("<?xml")

What it serves (every request needs HTTP basic auth `AccountSid:AuthToken`, else 401 / code 20003;
another account in the path answers 404 / code 20404):

    POST /2010-04-01/Accounts/{Sid}/Calls/{CallSid}.json   call update (Twiml / Url / Status …)
    GET  /2010-04-01/Accounts/{Sid}/Calls/{CallSid}.json   call fetch
    POST /2010-04-01/Accounts/{Sid}/Messages.json          send (From, To, Body | ContentSid +
                                                           ContentVariables, StatusCallback, …);
                                                           From and To on different channels
                                                           (`whatsapp:+…` to `+…`) answer 400 / 21910;
                                                           with `whatsapp_senders` set, a From not
                                                           among them answers 400 / 63007
    GET  /2010-04-01/Accounts/{Sid}/Messages/{SmSid}.json  message fetch
    GET  /2010-04-01/Accounts/{Sid}/Recordings/{ReSid}[.wav|.mp3]   recording media bytes
    GET  /2010-04-01/Accounts/{Sid}/Messages/{MmSid}/Media/{MeSid}  an inbound message's media:
                                                           302 to its file on the media host
                                                           (`/media-cdn/…`, no auth, as Twilio's CDN)
    GET  /2010-04-01/Accounts/{Sid}.json                    the account (`account_status`)

Resources answer with Twilio's JSON shapes (`sid`, `account_sid`, `status`, `uri`, `date_created`
in RFC 2822, …). Errors use Twilio's error shape:
`{"code": 21211, "message": "…", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}`.

Behaviour per resource kind (`"Calls"`, `"Messages"`, `"Recordings"`), optionally for one SID only:

    twilio.fail("Calls", code=20404, status=404)      # answer that error (every time, or `times=n`)
    twilio.stall("Messages", seconds=5)               # sleep before answering (beyond a client timeout)
    twilio.succeed("Calls")                           # back to normal
    twilio.set_call_status("CA…", "completed")        # then a redirect (Twiml/Url) answers 21220
    twilio.recordings["RE…"] = b"RIFF…"               # media bytes (default: `default_recording`)
    url = twilio.inbound_media(b"%PDF…", "application/pdf")  # a MediaUrl0 for an inbound webhook
    twilio.attach_stream("CA…", on_redirect)         # a live call's media stream (the phone fake's)

A call update's `Twiml` is checked as Twilio does: it must be an XML `<Response>` (else 400 / 12100)
whose `action`/`url`/`statusCallback` attributes are absolute URLs (else 400 / 15004). The call then
runs the new TwiML: `twilio.calls[sid]["twiml"]` holds it, and like Twilio the fake ends the call's
media stream (`on_redirect()`, in a thread of its own, after the REST answer: the phone fake sends
`stop` and closes the WebSocket). `twilio.dial_of(sid)` reads the `<Dial>` of the call's TwiML.

`twilio.before_answer = fn` calls `fn(message)` with each message created (its JSON) before the
201 goes out: Twilio posts status callbacks as the message moves, and one can reach the app before
the answer to the create does.

Every request is recorded (`requests`, `requests_for(kind)`, `wait_for_requests(kind, n)`) with
its method, path, query, form params (last value per key, plus `form_lists`), headers and the
basic-auth user. To extend it, add a route in `_Handler._route` and a `_kind` name for it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from testkit.fakes.local_http import LocalHTTPFake

API_VERSION = "2010-04-01"
WAV_SILENCE = (  # 8 kHz mono 16-bit PCM WAV, 0.1 s of silence
    b"RIFF"
    + (36 + 1600).to_bytes(4, "little")
    + b"WAVEfmt "
    + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little")
    + (1).to_bytes(2, "little")
    + (8000).to_bytes(4, "little")
    + (16000).to_bytes(4, "little")
    + (2).to_bytes(2, "little")
    + (16).to_bytes(2, "little")
    + b"data"
    + (1600).to_bytes(4, "little")
    + b"\x00" * 1600
)

_ERROR_MESSAGES = {
    20003: "Authenticate",
    12100: "Document parse failure",
    15004: "Action Callback URL must be an absolute URL when using TwiML to update in-progress calls",
    20404: "The requested resource {path} was not found",
    21211: "The 'To' number is not a valid phone number.",
    21220: "Call is not in-progress. Cannot redirect.",
    21910: "Invalid 'From' and 'To' pair. 'From' and 'To' should be of the same channel",
    21620: "Invalid media URL(s)",
    63007: "Twilio could not find a Channel with the specified From address",
    63016: "Failed to send freeform message because you are outside the allowed window.",
}

_ROUTES = [
    ("Accounts", re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)\.json$")),
    ("Calls", re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Calls/(?P<sid>CA\w+)\.json$")),
    ("Messages", re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Messages\.json$")),
    ("Messages", re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Messages/(?P<sid>(SM|MM)\w+)\.json$")),
    (
        "Recordings",
        re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Recordings/(?P<sid>RE\w+)(?P<ext>\.wav|\.mp3)?$"),
    ),
    (
        "Media",
        re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Messages/(?:MM|SM)\w+/Media/(?P<sid>ME\w+)$"),
    ),
]
# Where Twilio's media host serves a file the Media resource redirects to (no credentials needed).
MEDIA_CDN_PATH = re.compile(r"^/media-cdn/(?P<sid>ME\w+)$")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822_now() -> str:
    return formatdate(usegmt=False).replace("-0000", "+0000")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, str]
    form_lists: dict[str, list[str]]
    headers: dict[str, str]
    auth_user: str | None
    kind: str | None
    sid: str | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Behaviour:
    mode: str  # "succeed" | "fail" | "stall"
    code: int = 0
    status: int = 400
    message: str | None = None
    seconds: float = 0.0
    times: int | None = None  # None = every time


class FakeTwilioRest(LocalHTTPFake):
    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "test-auth-token"):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.recordings: dict[str, bytes] = {}
        self.media: dict[str, tuple[bytes, str]] = {}  # inbound media by ME sid: (bytes, content type)
        self.sent_media: dict[str, list[str]] = {}  # each sent message's MediaUrl values, by SM sid
        self.default_recording = WAV_SILENCE
        self.before_answer: Optional[Callable[[dict[str, Any]], None]] = None
        self.account_status = "active"  # or "suspended" / "closed", as an account fetch shows it
        # The account's WhatsApp senders (`whatsapp:+…`); when set, a message from another is 400 / 63007.
        self.whatsapp_senders: Optional[set[str]] = None
        self._streams: dict[str, Callable[[], None]] = {}
        self._behaviours: dict[tuple[str, str | None], _Behaviour] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listen(type("Handler", (_Handler,), {"fake": self}))

    def _wake_stalled(self) -> None:
        self._stopping.set()

    # ---- behaviour -----------------------------------------------------------------------
    def fail(
        self,
        kind: str,
        *,
        code: int,
        status: int = 400,
        message: str | None = None,
        sid: str | None = None,
        times: int | None = None,
    ) -> None:
        self._set(kind, sid, _Behaviour("fail", code=code, status=status, message=message, times=times))

    def stall(self, kind: str, *, seconds: float, sid: str | None = None, times: int | None = None) -> None:
        self._set(kind, sid, _Behaviour("stall", seconds=seconds, times=times))

    def succeed(self, kind: str, *, sid: str | None = None) -> None:
        with self._lock:
            self._behaviours.pop((kind, sid), None)

    def set_call_status(self, call_sid: str, status: str) -> None:
        with self._lock:
            self._call(call_sid)["status"] = status

    def account_resource(self) -> dict[str, Any]:
        """`GET /2010-04-01/Accounts/{Sid}.json`: the account, as Twilio shows it (`status`: active)."""
        return {
            "sid": self.account_sid,
            "friendly_name": "My first Twilio account",
            "status": self.account_status,
            "type": "Full",
            "owner_account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "date_created": formatdate(usegmt=True),
            "date_updated": formatdate(usegmt=True),
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}.json",
        }

    def attach_stream(self, call_sid: str, on_redirect: Callable[[], None]) -> None:
        """`on_redirect()` ends the call's media stream once the call is given new TwiML (Twiml/Url)."""
        with self._lock:
            self._streams[call_sid] = on_redirect

    def dial_of(self, call_sid: str) -> Optional[dict[str, Any]]:
        """The `<Dial>` of the call's current TwiML: its attributes, and its `<Number>` (text and attributes)."""
        with self._lock:
            twiml = self.calls.get(call_sid, {}).get("twiml")
        root = ElementTree.fromstring(twiml) if twiml else None
        dial = root.find("Dial") if root is not None else None
        if dial is None:
            return None
        number = dial.find("Number")
        return {
            **dial.attrib,
            "number": (number.text or "").strip() if number is not None else (dial.text or "").strip(),
            "number_attributes": dict(number.attrib) if number is not None else {},
        }

    def _set(self, kind: str, sid: str | None, behaviour: _Behaviour) -> None:
        with self._lock:
            self._behaviours[(kind, sid)] = behaviour

    def _take_behaviour(self, kind: str, sid: str | None) -> _Behaviour | None:
        with self._lock:
            key = (kind, sid) if (kind, sid) in self._behaviours else (kind, None)
            behaviour = self._behaviours.get(key)
            if behaviour and behaviour.times is not None:
                behaviour.times -= 1
                if behaviour.times <= 0:
                    del self._behaviours[key]
            return behaviour

    # ---- inspection ----------------------------------------------------------------------
    def requests_for(self, kind: str, sid: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.kind == kind and (sid is None or r.sid == sid)]

    def wait_for_requests(
        self, kind: str, count: int = 1, timeout: float = 5.0, sid: str | None = None
    ) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests_for(kind, sid)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        return self.requests_for(kind, sid)

    def inbound_media(self, data: bytes, content_type: str) -> str:
        """Keep `data` as an inbound message's media and answer its MediaUrl, as Twilio's webhook
        carries it (the account's credentials fetch it; Twilio redirects to its media host)."""
        sid = new_sid("ME")
        with self._lock:
            self.media[sid] = (data, content_type)
        return f"{self.url}/{API_VERSION}/Accounts/{self.account_sid}/Messages/{new_sid('MM')}/Media/{sid}"

    def recording_url(self, recording_sid: str) -> str:
        """The `RecordingUrl` Twilio would put in a callback (no extension), on this server."""
        return f"{self.url}/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{recording_sid}"

    # ---- resources -----------------------------------------------------------------------
    def _call(self, sid: str) -> dict[str, Any]:
        if sid not in self.calls:
            now = rfc2822_now()
            self.calls[sid] = {
                "account_sid": self.account_sid,
                "annotation": None,
                "answered_by": None,
                "api_version": API_VERSION,
                "caller_name": None,
                "date_created": now,
                "date_updated": now,
                "direction": "inbound",
                "duration": None,
                "end_time": None,
                "forwarded_from": None,
                "from": "+972500000000",
                "from_formatted": "+972500000000",
                "group_sid": None,
                "parent_call_sid": None,
                "phone_number_sid": new_sid("PN"),
                "price": None,
                "price_unit": "USD",
                "queue_time": "0",
                "sid": sid,
                "start_time": now,
                "status": "in-progress",
                "to": "+972300000000",
                "to_formatted": "+972300000000",
                "trunk_sid": None,
                "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json",
                "subresource_uris": {
                    "recordings": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}/Recordings.json",
                },
            }
        return self.calls[sid]

    def _update_call(self, sid: str, form: dict[str, str]) -> tuple[int, dict[str, Any], Optional[Callable[[], None]]]:
        """The answer, and the call's media stream to end once it has been sent (a redirect)."""
        with self._lock:
            call = self._call(sid)
            redirect = "Twiml" in form or "Url" in form
            if call["status"] in {"completed", "canceled", "failed", "busy", "no-answer"} and redirect:
                return 400, error_body(21220), None
            if "Twiml" in form:
                problem = twiml_problem(form["Twiml"])
                if problem:
                    return 400, error_body(problem), None
                call["twiml"] = form["Twiml"]
            if form.get("Status") in {"completed", "canceled"}:
                call["status"] = form["Status"]
                call["end_time"] = rfc2822_now()
            call["date_updated"] = rfc2822_now()
            answer = {k: v for k, v in call.items() if k != "twiml"}
            return 200, answer, self._streams.pop(sid, None) if redirect else None

    def _fetch_call(self, sid: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            return 200, {k: v for k, v in self._call(sid).items() if k != "twiml"}

    def _create_message(self, form: dict[str, str], media_urls: list[str] = ()) -> tuple[int, dict[str, Any]]:
        if not form.get("To") or not (form.get("From") or form.get("MessagingServiceSid")):
            return 400, error_body(
                21211 if not form.get("To") else 21603,
                message=None if not form.get("To") else "A 'From' phone number is required.",
            )
        if form.get("From") and _channel(form["From"]) != _channel(form["To"]):
            # e.g. From=whatsapp:+1… To=+972…: Twilio refuses a message between two channels.
            return 400, error_body(21910)
        sender = form.get("From", "")
        if self.whatsapp_senders is not None and _channel(sender) == "whatsapp" and sender not in self.whatsapp_senders:
            return 400, error_body(63007)
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            return 400, error_body(21602, message="Message body is required.")
        if any(not re.match(r"^https?://[^/\s]+/", url) for url in media_urls):
            return 400, error_body(21620)
        sid = new_sid("SM")
        now = rfc2822_now()
        body = form.get("Body", "")
        message = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": str(len(media_urls)),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "to": form["To"],
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
            "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
        }
        with self._lock:
            self.messages[sid] = message
            self.sent_media[sid] = list(media_urls)
        return 201, dict(message)

    def _fetch_message(self, sid: str, path: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if sid not in self.messages:
                return 404, error_body(20404, status=404, path=path)
            return 200, dict(self.messages[sid])


def twiml_problem(twiml: str) -> int:
    """Twilio's error code for TwiML it refuses on a call update (0 when it takes it): not an XML
    `<Response>` (12100), or an `action`/`url`/`statusCallback` that isn't an absolute URL (15004)."""
    try:
        root = ElementTree.fromstring(twiml)
    except ElementTree.ParseError:
        return 12100
    if root.tag != "Response":
        return 12100
    for element in root.iter():
        for name in ("action", "url", "statusCallback"):
            value = element.get(name)
            if value is not None and not value.startswith(("https://", "http://", "wss://")):
                return 15004
    return 0


def _channel(address: str) -> str:
    """`whatsapp` for `whatsapp:+972…`, `messenger` for `messenger:…`; "" (SMS) for a bare number."""
    prefix, colon, _ = address.partition(":")
    return prefix.lower() if colon else ""


def error_body(code: int, *, status: int = 400, message: str | None = None, path: str = "") -> dict[str, Any]:
    """Twilio's REST error JSON."""
    text = message or _ERROR_MESSAGES.get(code, f"Error {code}").format(path=path)
    return {"code": code, "message": text, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeTwilioRest
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        form_lists = (
            parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or "")
            else {}
        )
        kind, match = _match(parts.path)
        record = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            form={k: v[-1] for k, v in form_lists.items()},
            form_lists=form_lists,
            headers=dict(self.headers.items()),
            auth_user=self._auth_user(),
            kind=kind,
            sid=match.group("sid") if match and "sid" in match.groupdict() else None,
        )
        with fake._lock:
            fake.requests.append(record)

        cdn = MEDIA_CDN_PATH.match(parts.path)
        if cdn and self.command == "GET":  # the media host: the file itself, for whoever has the link
            found = fake.media.get(cdn.group("sid"))
            if found is None:
                return self._send(404, b"Not Found", "text/plain")
            return self._send(200, *found)
        if not self._authorized():
            return self._json(401, error_body(20003, status=401))
        if match is None or match.group("account") != fake.account_sid:
            return self._json(404, error_body(20404, status=404, path=parts.path))
        behaviour = fake._take_behaviour(kind, record.sid)
        if behaviour and behaviour.mode == "stall":
            if fake._stopping.wait(behaviour.seconds):
                return
        elif behaviour and behaviour.mode == "fail":
            return self._json(
                behaviour.status,
                error_body(behaviour.code, status=behaviour.status, message=behaviour.message, path=parts.path),
            )
        self._route(kind, match, record)

    def _route(self, kind: str, match: re.Match, record: RecordedRequest) -> None:
        fake = self.fake
        if kind == "Accounts" and self.command == "GET":
            return self._json(200, fake.account_resource())
        if kind == "Calls" and self.command == "POST":
            status, answer, end_stream = fake._update_call(record.sid, record.form)
            self._json(status, answer)
            if end_stream is not None:  # Twilio leaves the stream's TwiML: the stream stops
                threading.Thread(target=end_stream, daemon=True, name=f"redirect-{record.sid[:8]}").start()
            return None
        if kind == "Calls" and self.command == "GET":
            return self._json(*fake._fetch_call(record.sid))
        if kind == "Messages" and self.command == "POST" and record.sid is None:
            status, message = fake._create_message(record.form, record.form_lists.get("MediaUrl", []))
            if status == 201 and fake.before_answer is not None:
                fake.before_answer(message)
            return self._json(status, message)
        if kind == "Messages" and self.command == "GET" and record.sid:
            return self._json(*fake._fetch_message(record.sid, record.path))
        if kind == "Media" and self.command == "GET":
            if record.sid not in fake.media:
                return self._json(404, error_body(20404, status=404, path=record.path))
            return self._redirect(f"/media-cdn/{record.sid}")
        if kind == "Recordings" and self.command == "GET":
            audio = fake.recordings.get(record.sid, fake.default_recording)
            content_type = "audio/mpeg" if match.group("ext") == ".mp3" else "audio/x-wav"
            return self._send(200, audio, content_type)
        return self._json(405, error_body(20004, status=405, message="Method not allowed"))

    def _auth_user(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            return None
        try:
            return base64.b64decode(header[6:]).decode("utf-8").partition(":")[0]
        except ValueError:
            return None

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        expected = base64.b64encode(f"{self.fake.account_sid}:{self.fake.auth_token}".encode()).decode()
        return secrets.compare_digest(header, f"Basic {expected}")

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode("utf-8"), "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout)
            pass


def _match(path: str) -> tuple[str | None, re.Match | None]:
    for kind, pattern in _ROUTES:
        match = pattern.match(path)
        if match:
            return kind, match
    return None, None

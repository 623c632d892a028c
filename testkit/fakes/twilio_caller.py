"""A Twilio-faithful Media Streams client: what Twilio's media servers do on a `<Connect><Stream>`.

It opens a real WebSocket (raw socket, RFC 6455 handshake, masked frames) offering the
`audio.twilio.com` subprotocol and signed with `X-Twilio-Signature`, sends `connected` and
`start`, then a `media` frame every 20 ms for as long as the call lasts (silence unless the caller
is "speaking"), exactly like a phone line. Inbound `media` goes into a simulated playback buffer;
each `mark` is echoed when the audio queued before it would have finished playing, and every
pending mark is echoed at once on `clear`, as Twilio does.

Plain threads: usable from pytest, from `scripts/simulate_call.py`, and (after gevent's
monkey-patching, which turns the threads into greenlets) from the benchmark's hundreds of calls.

    caller = TwilioCaller.dial(server_url, call_sid, auth_token=..., app_secret=..., business_id=...)
    caller.play(speech("שלום"))                 # paced at 20 ms, returns once sent
    caller.wait_for(lambda c: c.marks_echoed >= 1, timeout=5)
    caller.hang_up()
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import secrets
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator

FRAME_BYTES = 160
FRAME_SECONDS = 0.02
SILENCE_FRAME = b"\xff" * FRAME_BYTES
SUBPROTOCOL = "audio.twilio.com"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def twilio_signature(auth_token: str, url: str) -> str:
    """`X-Twilio-Signature` for a WebSocket upgrade (a GET: no parameters are signed)."""
    return RequestValidator(auth_token).compute_signature(url, {})


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class ReceivedMedia:
    at: float
    payload: bytes


@dataclass
class ReceivedMark:
    at: float
    name: str


@dataclass
class ReceivedClear:
    at: float


@dataclass
class Handshake:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names


class HandshakeRejected(Exception):
    def __init__(self, handshake: Handshake, body: bytes):
        super().__init__(f"HTTP {handshake.status}: {body[:200]!r}")
        self.handshake = handshake
        self.body = body


class TwilioCaller:
    def __init__(
        self,
        url: str,
        *,
        call_sid: str,
        custom_parameters: dict[str, str] | None = None,
        signature: Optional[str] = None,
        offer_subprotocol: bool = True,
        account_sid: str = "AC" + "0" * 32,
        stream_sid: Optional[str] = None,
        timeout: float = 10.0,
    ):
        self.url = url
        self.call_sid = call_sid
        self.stream_sid = stream_sid or new_sid("MZ")
        self.account_sid = account_sid
        self.custom_parameters = dict(custom_parameters or {})
        self.events: list[ReceivedMedia | ReceivedMark | ReceivedClear] = []
        self.frames_sent = 0
        self.marks_echoed = 0
        self.mic_late_ticks = 0  # 20 ms ticks this client itself ran late for (its own load)
        self.closed = threading.Event()
        self._hanging_up = threading.Event()
        self._microphone_thread: Optional[threading.Thread] = None
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self._changed = threading.Condition()
        self._send_lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()
        self._speech: deque[Playback] = deque()  # what the caller is about to say, in order
        self._playout_end = 0.0  # when the simulated Twilio buffer runs dry
        self._pending_marks: list[tuple[float, str]] = []
        self._started_at = 0.0
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handshake = self._handshake(parts, signature, offer_subprotocol)
        self._sock.settimeout(None)
        self._buffer = bytearray()
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name=f"reader-{call_sid[:8]}")
        self._reader.start()

    # ---- dialling ----------------------------------------------------------------------------
    @classmethod
    def dial(
        cls,
        server_url: str,
        call_sid: str,
        *,
        auth_token: str,
        app_secret: str,
        business_id: int | str,
        path: str = "/ws/twilio-media",
        token: Optional[str] = None,
        signed_url: Optional[str] = None,
        start: bool = True,
        **kwargs,
    ) -> "TwilioCaller":
        """Connect like Twilio does for our TwiML: signed upgrade, the call's token parameter, `start`."""
        from server.security.call_token import call_token

        url = "ws" + server_url[len("http") :].rstrip("/") + path
        caller = cls(
            url,
            call_sid=call_sid,
            signature=twilio_signature(auth_token, signed_url or url),
            custom_parameters={
                "business_id": str(business_id),
                "call_sid": call_sid,
                "token": token if token is not None else call_token(app_secret, call_sid),
            },
            **kwargs,
        )
        if start:
            caller.start()
        return caller

    def _handshake(self, parts, signature: Optional[str], offer_subprotocol: bool) -> Handshake:
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target or '/'} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "User-Agent: Twilio.TmeWs/1.0",
        ]
        if offer_subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {SUBPROTOCOL}")
        if signature is not None:
            lines.append(f"X-Twilio-Signature: {signature}")
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = self._sock.recv(4096)
            if not chunk:
                break
            raw += chunk
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        handshake = Handshake(int(status_line.split()[1]) if len(status_line.split()) > 1 else 0)
        for line in header_lines:
            name, _, value = line.partition(":")
            handshake.headers[name.strip().lower()] = value.strip()
        if handshake.status != 101:
            self._sock.close()
            raise HandshakeRejected(handshake, rest)
        expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if handshake.headers.get("sec-websocket-accept") != expected:
            raise HandshakeRejected(handshake, b"bad Sec-WebSocket-Accept")
        self._initial = rest
        return handshake

    @property
    def subprotocol(self) -> Optional[str]:
        return self.handshake.headers.get("sec-websocket-protocol")

    # ---- what Twilio sends -------------------------------------------------------------------
    def start(self) -> None:
        """`connected`, `start`, then the microphone: a media frame every 20 ms until hang-up."""
        self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.send_json(
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        self._started_at = time.monotonic()
        self._microphone_thread = threading.Thread(
            target=self._microphone, daemon=True, name=f"mic-{self.call_sid[:8]}"
        )
        self._microphone_thread.start()

    def play(self, mulaw: bytes, *, wait: bool = True) -> "Playback":
        """Say `mulaw`: its 20 ms frames replace the silence, in order after anything still queued.
        With `wait`, return once its last frame was sent; the `Playback` tells when each end went."""
        playback = Playback(
            deque(mulaw[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff") for i in range(0, len(mulaw), FRAME_BYTES))
        )
        with self._lock:
            self._speech.append(playback)
        if wait:
            playback.wait()
        return playback

    def dtmf(self, digit: str) -> None:
        self.send_json(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_sequence(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def send_json(self, message: dict) -> None:
        self.send_text(json.dumps(message))

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def hang_up(self) -> None:
        """`stop`, then close the socket (what Twilio does when the caller hangs up)."""
        self._hanging_up.set()
        if self._microphone_thread is not None:
            self._microphone_thread.join(1)
        if not self.closed.is_set():
            try:
                self.send_json(
                    {
                        "event": "stop",
                        "sequenceNumber": self._next_sequence(),
                        "streamSid": self.stream_sid,
                        "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                    }
                )
                self._send_frame(0x8, struct.pack("!H", 1000))
            except OSError:
                pass
        self.closed.wait(5)
        self._finish(None, "")

    def close(self) -> None:
        self._finish(None, "")

    # ---- what we observe ---------------------------------------------------------------------
    @property
    def media(self) -> list[ReceivedMedia]:
        return [e for e in self.events if isinstance(e, ReceivedMedia)]

    @property
    def marks(self) -> list[ReceivedMark]:
        return [e for e in self.events if isinstance(e, ReceivedMark)]

    @property
    def clears(self) -> list[ReceivedClear]:
        return [e for e in self.events if isinstance(e, ReceivedClear)]

    def audio(self) -> bytes:
        return b"".join(e.payload for e in self.media)

    def wait_for(self, predicate: Callable[["TwilioCaller"], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
        return True

    def wait_until_quiet(self, quiet: float = 0.5, timeout: float = 15.0) -> bool:
        """Wait until everything sent to us has played and nothing new arrived for `quiet` seconds."""

        def idle(c: "TwilioCaller") -> bool:
            last = c.events[-1].at if c.events else 0.0
            now = time.monotonic()
            return not c._pending_marks and now >= c._playout_end and now - last >= quiet

        return self.wait_for(idle, timeout)

    # ---- internals ---------------------------------------------------------------------------
    def _next_sequence(self) -> str:
        return str(next(self._sequence))

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
        with self._send_lock:
            self._sock.sendall(header + mask + masked)

    def _microphone(self) -> None:
        silence_b64 = base64.b64encode(SILENCE_FRAME).decode()
        tick = 0
        while not (self.closed.is_set() or self._hanging_up.is_set()):
            now = time.monotonic()
            frame_b64, finished = silence_b64, None
            with self._lock:
                if self._speech:
                    playback = self._speech[0]
                    if playback.frames:
                        frame_b64 = base64.b64encode(playback.frames.popleft()).decode()
                        if playback.first_sent_at is None:
                            playback.first_sent_at = now
                    if not playback.frames:
                        playback.last_sent_at = now
                        finished = self._speech.popleft()
            tick += 1
            try:
                self._send_frame(
                    0x1,
                    (
                        '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound",'
                        '"chunk":"%d","timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
                        % (next(self._sequence), tick, (tick - 1) * 20, frame_b64, self.stream_sid)
                    ).encode(),
                )
            except OSError:
                return
            self.frames_sent += 1
            if finished is not None:
                finished.done.set()
            self._echo_due_marks(now)
            delay = self._started_at + tick * FRAME_SECONDS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self.mic_late_ticks += 1

    def _echo_due_marks(self, now: float) -> None:
        with self._lock:
            due = [name for at, name in self._pending_marks if at <= now]
            self._pending_marks = [(at, name) for at, name in self._pending_marks if at > now]
        for name in due:
            self._echo_mark(name)

    def _echo_mark(self, name: str) -> None:
        try:
            self.send_json(
                {
                    "event": "mark",
                    "sequenceNumber": self._next_sequence(),
                    "streamSid": self.stream_sid,
                    "mark": {"name": name},
                }
            )
            self.marks_echoed += 1
        except OSError:
            pass

    def _read_loop(self) -> None:
        buffer = bytearray(self._initial)
        code, reason = 1006, "connection lost"
        try:
            while True:
                frame = _take_frame(buffer)
                if frame is None:
                    chunk = self._sock.recv(65536)
                    if not chunk:
                        break
                    buffer += chunk
                    continue
                opcode, payload = frame
                if opcode == 0x1:
                    self._on_message(payload)
                elif opcode == 0x9:
                    self._send_frame(0xA, payload)
                elif opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    reason = payload[2:].decode("utf-8", "replace")
                    try:
                        self._send_frame(0x8, payload[:2])
                    except OSError:
                        pass
                    break
        except OSError:
            pass
        self._finish(code, reason)

    def _on_message(self, payload: bytes) -> None:
        message = json.loads(payload)
        now = time.monotonic()
        event = message.get("event")
        if message.get("streamSid") != self.stream_sid:
            raise AssertionError(f"message for another stream: {message}")
        if event == "media":
            self.events.append(ReceivedMedia(now, base64.b64decode(message["media"]["payload"])))
            self._playout_end = max(self._playout_end, now) + FRAME_SECONDS
        elif event == "mark":
            name = message["mark"]["name"]
            self.events.append(ReceivedMark(now, name))
            with self._lock:
                self._pending_marks.append((max(self._playout_end, now), name))
        elif event == "clear":
            self.events.append(ReceivedClear(now))
            with self._lock:
                pending, self._pending_marks = self._pending_marks, []
                self._playout_end = now
            for _, name in pending:
                self._echo_mark(name)
        with self._changed:
            self._changed.notify_all()

    def _finish(self, code: Optional[int], reason: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()
        try:
            # shutdown() first: it wakes our reader blocked in recv() and sends the FIN (a bare
            # close() from another thread does neither while that recv() is pending)
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._changed:
            self._changed.notify_all()


@dataclass(eq=False)
class Playback:
    """Audio the caller is saying: when its first and last frames went out."""

    frames: deque
    done: threading.Event = field(default_factory=threading.Event)
    first_sent_at: Optional[float] = None
    last_sent_at: Optional[float] = None

    def wait(self, timeout: float = 60.0) -> "Playback":
        self.done.wait(timeout)
        return self


def _take_frame(buffer: bytearray) -> Optional[tuple[int, bytes]]:
    """Pop one complete (unmasked, server → client) frame off `buffer`, or None if incomplete."""
    if len(buffer) < 2:
        return None
    opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
    if len(buffer) < offset + length:
        return None
    payload = bytes(buffer[offset : offset + length])
    del buffer[: offset + length]
    return opcode, payload

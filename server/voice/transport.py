"""The call's WebSocket, as the engine sees it: receive text, send text, close with a code.

simple-websocket does the handshake (`accept` in `server/routes/media_ws.py`); after that the
frames are read and written here, in the greenlet that calls `receive` and `send`:

* Reading. simple-websocket would run a reader greenlet per socket that feeds wsproto, waits in a
  selector (for its pings) before every read, and hands each message over through an event. At
  50 inbound frames a second per call that was 40 % of a worker's CPU at 100 calls (py-spy, see
  docs/performance.md), 29 % in wsproto's generator-based parser alone. Twilio's traffic is one
  small masked text frame per message, so `receive` parses RFC 6455 frames itself: a header of 2-14
  bytes, the payload unmasked as one integer XOR, control frames (ping, pong, close) answered on the
  spot, fragmented messages put together. No extension is negotiated (the route drops the client's
  offer), so any RSV bit is a protocol error (1002); a message over `max_message_size` closes the
  socket with 1009, as simple-websocket did. Pings go out every `ping_interval`; no pong by the next
  one closes with 1008.
* Writing. Frames go through `sendall` under a lock: a single `socket.send` may write only part of
  a frame when the kernel buffer is full, and two greenlets (the pacer and the session) writing one
  gevent socket at once would raise `ConcurrentObjectUseError`. Outbound frames are unmasked and
  uncompressed (RFC 6455 §5.2). `send` takes text, or a frame already built with `text_frame`
  (the pacer renders a sentence's frames once, off its timing path).
"""

from __future__ import annotations

import socket as socket_module
import struct
import time
from collections import deque
from typing import Optional

from gevent.lock import Semaphore
from simple_websocket import ConnectionClosed

__all__ = ["ConnectionClosed", "MediaSocket", "POLICY_VIOLATION", "NORMAL_CLOSURE", "text_frame"]

NORMAL_CLOSURE = 1000
PROTOCOL_ERROR = 1002
ABNORMAL_CLOSURE = 1006  # the connection dropped without a close frame
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
NO_STATUS = 1005  # a close frame without a code

RECEIVE_BYTES = 4096
_TEXT, _BINARY, _CONTINUATION, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked WebSocket text frame (server → client)."""
    return _frame(0x81, payload)


def _frame(first_byte: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((first_byte, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", first_byte, 126, length) + payload
    return struct.pack("!BBQ", first_byte, 127, length) + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key, as one big-integer operation (no Python loop per byte)."""
    length = len(payload)
    if not length:
        return payload
    mask = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(length, "big")


class _ProtocolViolation(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class MediaSocket:
    def __init__(self, ws, *, ping_interval: Optional[float] = None, max_message_size: Optional[int] = None):
        self._ws = ws  # the accepted simple_websocket.Server: its socket, subprotocol and state
        self._write_lock = Semaphore()
        self._ping_interval = ping_interval
        self._max_message_size = max_message_size
        self._buffer = bytearray()
        self._messages: deque[bytes] = deque()
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._next_ping = time.monotonic() + ping_interval if ping_interval else None
        self._pong_received = True

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol

    @property
    def connected(self) -> bool:
        return self._ws.connected

    # ---- reading ---------------------------------------------------------------------------
    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message (None on timeout); `ConnectionClosed` once the socket is closed.

        Text arrives as its UTF-8 bytes (the JSON parser takes them as they are)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sock = self._ws.sock
        while not self._messages:
            if not self._ws.connected:
                raise ConnectionClosed(self._ws.close_reason, self._ws.close_message)
            now = time.monotonic()
            if self._next_ping is not None and now >= self._next_ping:
                self._ping(now)
                continue
            wait = _earliest(deadline, self._next_ping)
            if wait is not None and wait - now <= 0:
                return None  # the caller's timeout
            sock.settimeout(None if wait is None else wait - now)
            try:
                data = sock.recv(RECEIVE_BYTES)
            except socket_module.timeout:
                continue
            except OSError as exc:
                self._gone(str(exc))
                continue
            if not data:
                self._gone("the peer closed the connection")
                continue
            self._buffer += data
            try:
                self._parse()
            except _ProtocolViolation as violation:
                self.close(violation.code, violation.reason)
        return self._messages.popleft()

    def _parse(self) -> None:
        """Every whole frame in the buffer → messages, control frames answered."""
        buffer = self._buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length = int.from_bytes(buffer[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length = int.from_bytes(buffer[2:10], "big")
                offset = 10
            if not second & 0x80:
                raise _ProtocolViolation(PROTOCOL_ERROR, "client frames must be masked")
            if first & 0x70:
                raise _ProtocolViolation(PROTOCOL_ERROR, "no extension was negotiated (RSV bit set)")
            if self._max_message_size and self._fragments_size + length > self._max_message_size:
                raise _ProtocolViolation(MESSAGE_TOO_BIG, "Message is too big")
            end = offset + 4 + length
            if len(buffer) < end:
                return
            payload = unmask(bytes(buffer[offset + 4 : end]), bytes(buffer[offset : offset + 4]))
            del buffer[:end]
            self._frame(first & 0x80, first & 0x0F, payload)

    def _frame(self, final: int, opcode: int, payload: bytes) -> None:
        if opcode in (_TEXT, _BINARY):
            if self._fragments:
                raise _ProtocolViolation(PROTOCOL_ERROR, "a new message inside a fragmented one")
            if final:
                self._messages.append(payload)
            else:
                self._fragments, self._fragments_size = [payload], len(payload)
        elif opcode == _CONTINUATION:
            if not self._fragments:
                raise _ProtocolViolation(PROTOCOL_ERROR, "a continuation without a message")
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if final:
                self._messages.append(b"".join(self._fragments))
                self._fragments, self._fragments_size = [], 0
        elif opcode == _PING:
            self._write(_frame(0x80 | _PONG, payload[:125]))
        elif opcode == _PONG:
            self._pong_received = True
        elif opcode == _CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS
            reason = payload[2:].decode("utf-8", "replace")
            if self._ws.connected:
                self._send_close(code if len(payload) >= 2 else NORMAL_CLOSURE, "")
            self._ws.close_reason, self._ws.close_message = code, reason
            self._mark_closed()
        else:
            raise _ProtocolViolation(PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _ping(self, now: float) -> None:
        assert self._ping_interval is not None
        if not self._pong_received:
            self.close(POLICY_VIOLATION, "Ping/Pong timeout")
            return
        self._pong_received = False
        self._next_ping = max(now, self._next_ping or now) + self._ping_interval
        try:
            self._write(_frame(0x80 | _PING, b""))
        except ConnectionClosed:
            pass  # _write marked the socket closed: the next turn of the loop raises

    # ---- writing ---------------------------------------------------------------------------
    def send(self, message: str | bytes) -> None:
        """Send one text message (or a ready `text_frame`); `ConnectionClosed` if the peer is gone."""
        if not self._ws.connected:
            raise ConnectionClosed(self._ws.close_reason, self._ws.close_message)
        self._write(message if isinstance(message, bytes) else text_frame(message.encode("utf-8")))

    def _write(self, frame: bytes) -> None:
        try:
            with self._write_lock:
                self._ws.sock.sendall(frame)
        except OSError as exc:  # broken pipe, reset: the caller hung up under us
            self._gone(str(exc))
            raise ConnectionClosed(ABNORMAL_CLOSURE, str(exc)) from None

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame (once) and wake whoever waits in `receive`."""
        if self._ws.connected:
            self._send_close(code, reason)
            self._ws.close_reason, self._ws.close_message = code, reason
        self._mark_closed()

    def _send_close(self, code: int, reason: str) -> None:
        try:
            with self._write_lock:
                self._ws.sock.sendall(_frame(0x80 | _CLOSE, code.to_bytes(2, "big") + _short_utf8(reason, 120)))
        except OSError:
            pass

    def _gone(self, why: str) -> None:
        if self._ws.connected:
            self._ws.close_reason, self._ws.close_message = ABNORMAL_CLOSURE, why
        self._mark_closed()

    def _mark_closed(self) -> None:
        self._ws.connected = False
        event = getattr(self._ws, "event", None)
        if event is not None:
            event.set()


def _short_utf8(text: str, limit: int) -> bytes:
    """At most `limit` bytes of UTF-8, never cut inside a character (a close frame carries 125 at most)."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


def _earliest(*moments: Optional[float]) -> Optional[float]:
    known = [m for m in moments if m is not None]
    return min(known) if known else None

"""The call's WebSocket, as the engine sees it: receive text, send text, close with a code.

It wraps a `simple_websocket.Server` (which did the handshake and runs the reader greenlet), but
sends data frames itself, through `sendall` under a lock: simple-websocket's `send` uses a single
`socket.send`, which may write only part of a frame when the kernel buffer is full, and two
greenlets (the pacer and the session) writing one gevent socket at once would raise
`ConcurrentObjectUseError`. Outbound frames are unmasked and uncompressed text frames (RFC 6455
§5.2; RSV1 unset is valid even when permessage-deflate was negotiated).
"""

from __future__ import annotations

import struct

from gevent.lock import Semaphore
from simple_websocket import ConnectionClosed

__all__ = ["ConnectionClosed", "MediaSocket", "POLICY_VIOLATION", "NORMAL_CLOSURE", "text_frame"]

NORMAL_CLOSURE = 1000
ABNORMAL_CLOSURE = 1006  # the connection dropped without a close frame
POLICY_VIOLATION = 1008


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked WebSocket text frame (server → client)."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class MediaSocket:
    def __init__(self, ws):
        self._ws = ws
        self._write_lock = Semaphore()

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol

    @property
    def connected(self) -> bool:
        return self._ws.connected

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message (None on timeout); `ConnectionClosed` once the socket is closed."""
        return self._ws.receive(timeout)

    def send(self, text: str) -> None:
        """Send one text message; `ConnectionClosed` if the socket is closed or the peer is gone."""
        if not self._ws.connected:
            raise ConnectionClosed(self._ws.close_reason, self._ws.close_message)
        frame = text_frame(text.encode("utf-8"))
        try:
            with self._write_lock:
                self._ws.sock.sendall(frame)
        except OSError as exc:  # broken pipe, reset: the caller hung up under us
            self._ws.connected = False
            self._ws.event.set()
            raise ConnectionClosed(ABNORMAL_CLOSURE, str(exc)) from None

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame (once) and wake whoever waits in `receive`."""
        if self._ws.connected:
            with self._write_lock:
                try:
                    self._ws.close(reason=code, message=reason[:120])
                except (ConnectionClosed, OSError):
                    pass
        self._ws.connected = False
        self._ws.event.set()

"""CPU per 20 ms frame on the live-call path, measured apart from the rest of the server, printed as JSON.

    python -m bench.bench_frame_path [--frames 20000]

A whole-call benchmark (`bench_calls`) needs the CPU to itself for its latencies to mean anything;
CPU time per frame does not. This plays Twilio-shaped `media` messages (masked WebSocket text
frames, as Twilio sends them) into a real socket pair and times, in CPU microseconds per frame:

* ws_receive_simple_websocket: simple-websocket's reader (its thread, wsproto, the hand-over)
* ws_receive_media_socket: `MediaSocket.receive`, which reads the frames in the caller's greenlet
* parse_message: the JSON message → `Media` (base64 payload decoded)
* outbound_render: one outbound `media` message rendered (envelope, base64) and framed
* outbound_send: one pre-rendered frame written with `MediaSocket.send`

Each figure is the best of `--repeat` runs (the least disturbed by other processes).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import gevent  # noqa: E402
from simple_websocket import Server  # noqa: E402

from server.voice.protocol import OutboundMessages, parse_message  # noqa: E402
from server.voice.transport import MediaSocket, text_frame  # noqa: E402

STREAM_SID = "MZ" + "0" * 32
MASK = b"\x1f\x2e\x3d\x4c"


def masked_frame(text: str) -> bytes:
    payload = text.encode()
    mask = (MASK * (len(payload) // 4 + 1))[: len(payload)]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(payload), "big")
    header = (
        bytes((0x81, 0x80 | len(payload)))
        if len(payload) < 126
        else bytes((0x81, 0xFE)) + len(payload).to_bytes(2, "big")
    )
    return header + MASK + masked


def media_message(n: int) -> str:
    payload = base64.b64encode(bytes((n + i) % 256 for i in range(160))).decode()
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(n + 2),
            "media": {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20), "payload": payload},
            "streamSid": STREAM_SID,
        }
    )


def accepted(no_reader: bool) -> tuple[Server, socket.socket]:
    """A simple-websocket server on one end of a socket pair, handshake done; the other end."""
    server_end, client_end = socket.socketpair()
    environ = {
        "gunicorn.socket": server_end,
        "HTTP_HOST": "bench",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(os.urandom(16)).decode(),
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_SEC_WEBSOCKET_PROTOCOL": "audio.twilio.com",
    }

    class NoReader:
        def __init__(self, target=None):
            self.name = "bench"

        def start(self) -> None:
            pass

    ws = Server.accept(environ, subprotocols=["audio.twilio.com"], thread_class=NoReader if no_reader else None)
    response = b""
    while b"\r\n\r\n" not in response:
        response += client_end.recv(4096)
    return ws, client_end


def cpu_per_frame(frames: int, work: Callable[[], None]) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) / frames * 1e6


def receive_with(frames: int, wire: bytes, no_reader: bool) -> float:
    ws, client = accepted(no_reader)
    receive = MediaSocket(ws).receive if no_reader else ws.receive

    def feed() -> None:
        client.sendall(wire)

    def work() -> None:
        writer = gevent.spawn(feed)
        for _ in range(frames):
            receive()
        writer.join()

    try:
        return cpu_per_frame(frames, work)
    finally:
        client.close()
        ws.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    messages = [media_message(n) for n in range(args.frames)]
    wire = b"".join(masked_frame(m) for m in messages)
    outbound = OutboundMessages(STREAM_SID)
    mulaw = bytes(range(160))

    def best(measure: Callable[[], float]) -> float:
        return round(min(measure() for _ in range(args.repeat)), 2)

    def parse_all() -> None:
        for message in messages:
            parse_message(message)

    def render_all() -> None:
        for _ in range(args.frames):
            text_frame(outbound.media(mulaw).encode())

    def send_all() -> None:
        ws, client = accepted(True)
        socket_ = MediaSocket(ws)
        frame = text_frame(outbound.media(mulaw).encode())
        drain = gevent.spawn(lambda: [client.recv(65536) for _ in iter(int, 1)])
        for _ in range(args.frames):
            socket_.send(frame)
        drain.kill()
        client.close()
        ws.sock.close()

    figures = {
        "frames": args.frames,
        "cpu_us_per_frame": {
            "ws_receive_simple_websocket": best(lambda: receive_with(args.frames, wire, no_reader=False)),
            "ws_receive_media_socket": best(lambda: receive_with(args.frames, wire, no_reader=True)),
            "parse_message": best(lambda: cpu_per_frame(args.frames, parse_all)),
            "outbound_render": best(lambda: cpu_per_frame(args.frames, render_all)),
            "outbound_send": best(lambda: cpu_per_frame(args.frames, send_all)),
        },
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

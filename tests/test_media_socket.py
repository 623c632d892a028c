"""`MediaSocket` reads the call's WebSocket frames itself (server/voice/transport.py): over a real socket
pair, after simple-websocket's handshake, masked text frames come out as messages; fragments are put
together; pings are answered; a close is echoed; what breaks RFC 6455 closes the socket with the
right code; and the server's own pings close a socket whose peer never answers."""

from __future__ import annotations

import base64
import os
import struct

import gevent
import pytest
from gevent import socket  # cooperative, so the test and the client end share the hub
from simple_websocket import Server

from server.voice.transport import ConnectionClosed, MediaSocket, unmask

MASK = b"\x01\x02\x03\x04"


def client_frame(opcode: int, payload: bytes, *, final: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    first = (0x80 if final else 0) | rsv | opcode
    length = len(payload)
    if length < 126:
        header = bytes((first, (0x80 if masked else 0) | length))
    elif length < 65536:
        header = bytes((first, (0x80 if masked else 0) | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, (0x80 if masked else 0) | 127)) + struct.pack("!Q", length)
    return header + (MASK + unmask(payload, MASK) if masked else payload)


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = sock.recv(2)
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", sock.recv(2))[0]
    payload = b""
    while len(payload) < length:
        payload += sock.recv(length - len(payload))
    return head[0] & 0x0F, payload


class NoReader:
    def __init__(self, target=None):
        self.name = "test"

    def start(self) -> None:
        pass


@pytest.fixture
def pair():
    """(MediaSocket, the client's end), handshake done; `make(**options)` for other options."""
    made = []

    def make(**options) -> tuple[MediaSocket, socket.socket]:
        server_end, client_end = socket.socketpair()
        environ = {
            "gunicorn.socket": server_end,
            "HTTP_HOST": "test",
            "HTTP_UPGRADE": "websocket",
            "HTTP_CONNECTION": "Upgrade",
            "HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(os.urandom(16)).decode(),
            "HTTP_SEC_WEBSOCKET_VERSION": "13",
        }
        ws = Server.accept(environ, thread_class=NoReader)
        response = b""
        while b"\r\n\r\n" not in response:
            response += client_end.recv(4096)
        assert response.startswith(b"HTTP/1.1 101")
        made.append((server_end, client_end))
        return MediaSocket(ws, **options), client_end

    yield make
    for ends in made:
        for end in ends:
            end.close()


def test_unmask_is_the_xor_with_the_rotating_key():
    data = bytes(range(11))
    assert unmask(data, MASK) == bytes(b ^ MASK[i % 4] for i, b in enumerate(data))
    assert unmask(b"", MASK) == b""


def test_masked_text_frames_come_out_as_messages_even_split_across_reads(pair):
    media, client = pair()
    wire = client_frame(0x1, b'{"event":"media"}') + client_frame(0x1, "שלום".encode() * 50)
    client.sendall(wire[:3])
    gevent.spawn_later(0.05, client.sendall, wire[3:])
    assert media.receive() == b'{"event":"media"}'
    assert media.receive().decode() == "שלום" * 50


def test_fragments_are_joined_and_pings_answered_in_between(pair):
    media, client = pair()
    client.sendall(
        client_frame(0x1, b"ab", final=False) + client_frame(0x9, b"hi") + client_frame(0x0, b"cd", final=True)
    )
    assert media.receive() == b"abcd"
    assert read_frame(client) == (0xA, b"hi")


def test_a_receive_with_a_timeout_returns_none_when_nothing_comes(pair):
    media, _ = pair()
    assert media.receive(0.05) is None and media.connected


def test_a_close_from_the_caller_is_echoed_and_ends_receiving(pair):
    media, client = pair()
    client.sendall(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
    with pytest.raises(ConnectionClosed):
        media.receive()
    assert read_frame(client) == (0x8, struct.pack("!H", 1000))
    assert not media.connected


def test_a_vanished_peer_is_a_closed_connection(pair):
    media, client = pair()
    client.close()
    with pytest.raises(ConnectionClosed):
        media.receive()
    assert not media.connected


@pytest.mark.parametrize(
    "frame, code",
    [
        (client_frame(0x1, b"x", masked=False), 1002),  # clients must mask
        (client_frame(0x1, b"x", rsv=0x40), 1002),  # no extension was negotiated
        (client_frame(0x0, b"x"), 1002),  # a continuation with nothing to continue
        (client_frame(0x3, b"x"), 1002),  # a reserved opcode
        (client_frame(0x1, b"x" * 2000), 1009),  # over max_message_size
    ],
)
def test_frames_that_break_the_protocol_close_with_its_code(pair, frame, code):
    media, client = pair(max_message_size=1000)
    client.sendall(frame)
    with pytest.raises(ConnectionClosed):
        media.receive()
    opcode, payload = read_frame(client)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == code


def test_the_servers_pings_close_a_socket_whose_peer_never_answers(pair):
    media, client = pair(ping_interval=0.05)
    with pytest.raises(ConnectionClosed):
        media.receive()  # ping, no pong, then the close
    assert read_frame(client) == (0x9, b"")
    opcode, payload = read_frame(client)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1008


def test_a_peer_that_answers_pings_stays_connected(pair):
    media, client = pair(ping_interval=0.05)
    answered = []

    def answer() -> None:
        while len(answered) < 3:
            assert read_frame(client) == (0x9, b"")
            client.sendall(client_frame(0xA, b""))
            answered.append(True)
        client.sendall(client_frame(0x1, b"still here"))

    gevent.spawn(answer)
    assert media.receive() == b"still here" and media.connected and len(answered) == 3


def test_send_writes_one_unmasked_text_frame(pair):
    media, client = pair()
    media.send('{"event":"clear"}')
    assert read_frame(client) == (0x1, b'{"event":"clear"}')

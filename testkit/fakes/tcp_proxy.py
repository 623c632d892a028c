"""A TCP proxy in front of a real server, to make it fail the ways networks do.

    with FaultyProxy(("127.0.0.1", 5432)) as proxy:   # clients dial proxy.port
        proxy.refuse()     # the server is down: connections are cut, new ones closed at once
        proxy.blackhole()  # the server is unreachable: connections are accepted and never answered
        proxy.forward()    # back to normal

Bytes are passed through untouched, so the client speaks the server's real protocol.
"""

from __future__ import annotations

import socket
import threading
from typing import Optional

FORWARD, REFUSE, BLACKHOLE = "forward", "refuse", "blackhole"


class FaultyProxy:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.mode = FORWARD
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ---- the faults ------------------------------------------------------------------------
    def forward(self) -> None:
        self.mode = FORWARD

    def refuse(self) -> None:
        self.mode = REFUSE
        self._cut_all()

    def blackhole(self) -> None:
        self.mode = BLACKHOLE
        self._cut_all()

    # ---- plumbing --------------------------------------------------------------------------
    def start(self) -> "FaultyProxy":
        self._thread = threading.Thread(target=self._accept_loop, name="faulty-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closed.set()
        self._listener.close()
        self._cut_all()

    def __enter__(self) -> "FaultyProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == REFUSE:
                client.close()
                continue
            self._track(client)
            if self.mode == BLACKHOLE:
                continue  # held open, never read, never answered
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._track(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.append(sock)

    def _cut_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

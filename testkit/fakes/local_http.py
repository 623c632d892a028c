"""The lifecycle shared by the fakes that serve stdlib request handlers.

A threaded HTTP server on 127.0.0.1 (a free port unless one is given), served from a daemon thread
between `start()` and `stop()`, usable as `with Fake(...) as fake:`. A subclass calls `_listen` with
its handler class and may override `_wake_stalled` so deliberately stalled requests end on stop.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LocalHTTPFake:
    url = ""

    def _listen(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def _wake_stalled(self) -> None:
        """Called first on stop: let requests that stall on purpose return."""

    def start(self):
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._wake_stalled()
        if self._thread is not None:  # shutdown() waits forever on a server that never served
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

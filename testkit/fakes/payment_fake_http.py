"""The common part of the PayPal and Tranzila fakes: a Flask app on a real local HTTP server.

`FakeHttpServer` runs its `app` with werkzeug's threaded server on 127.0.0.1 and a free port, records
every request, and can make a route fail or stall to exercise the production error paths:

    fake.fail("capture", status=500, times=1)      # answer 500 (body: `error_body(status)`)
    fake.stall("create_order", seconds=2)          # sleep first (beyond the client's timeout)

Route names are the Flask endpoint names the subclass gives its routes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from flask import Flask, jsonify, request
from werkzeug.serving import make_server


@dataclass
class RecordedRequest:
    endpoint: Optional[str]
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)


class FakeHttpServer:
    name = "fake"

    def __init__(self) -> None:
        self.app = Flask(self.name)
        self.requests: list[RecordedRequest] = []
        self._failures: dict[str, list[int]] = {}  # endpoint → [status, times left]
        self._stalls: dict[str, list[float]] = {}  # endpoint → [seconds, times left]
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self._thread: Optional[threading.Thread] = None
        self.app.before_request(self._before)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> "FakeHttpServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._stalls.clear()

    # ---- failure modes ---------------------------------------------------------------------------
    def fail(self, endpoint: str, *, status: int = 500, times: int = 1) -> None:
        with self._lock:
            self._failures[endpoint] = [status, times]

    def stall(self, endpoint: str, *, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._stalls[endpoint] = [seconds, times]

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error": "fake_failure", "status": status}

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    def _take(self, table: dict[str, list], endpoint: str):
        entry = table.get(endpoint)
        if not entry:
            return None
        entry[1] -= 1
        if entry[1] <= 0:
            del table[endpoint]
        return entry[0]

    def _before(self):
        endpoint = request.endpoint
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    endpoint,
                    request.method,
                    request.path,
                    dict(request.headers),
                    request.get_data(),
                    request.args.to_dict(),
                )
            )
            stall = self._take(self._stalls, endpoint)
            failure = self._take(self._failures, endpoint)
        if stall:
            time.sleep(stall)
        if failure:
            response = jsonify(self.error_body(failure))
            response.status_code = failure
            return response
        return None

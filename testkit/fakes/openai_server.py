"""A real local HTTP server speaking OpenAI's Chat Completions API, for the `openai` SDK in tests.

Point the app at it with `OPENAI_BASE_URL=<fake.base_url>` and `OPENAI_API_KEY=<fake.api_key>`.
`POST /v1/chat/completions` answers like OpenAI: `stream: true` gives `text/event-stream` with
`data: {chat.completion.chunk}` lines (role chunk, content deltas, finish chunk) and `data: [DONE]`,
sent with chunked transfer encoding over a keep-alive HTTP/1.1 connection; otherwise one
`chat.completion` JSON. A missing or wrong `Authorization: Bearer` gets OpenAI's 401 error body; a
message with a role OpenAI doesn't know gets its 400 `invalid_value` error on `messages[i].role`.

Which reply is given, first match wins:
1. `fake.script("reply one", "reply two")` queues replies, used in order;
2. `fake.reply_fn = lambda messages: "..."` computes one;
3. `fake.replies_for["last user text"] = "reply"` keys on the last user message;
4. otherwise `"קיבלתי: <last user text>"`.

Failure modes: `first_token_delay` (seconds before the first content delta), `token_delay`,
`stall` (send the role chunk, then nothing until `release()` or stop), `fail_next(status, count)`.
Every request is recorded in `fake.requests` (path, authorization, JSON body).

Run standalone: `python -m testkit.fakes.openai_server --port 0` prints `OPENAI_BASE_URL=...`.
"""

from __future__ import annotations

import argparse
import collections
import json
import pkgutil
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from testkit.fakes.local_http import LocalHTTPFake

DEFAULT_API_KEY = "test-openai-key"


class FakeOpenAI(LocalHTTPFake):
    def __init__(self, *, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", port: int = 0):
        self.api_key = api_key
        self.reply_fn: Callable[[list[dict[str, Any]]], str] | None = None
        self.replies_for: dict[str, str] = {}
        self.first_token_delay = 0.0
        self.token_delay = 0.0
        self.stall = False
        self.requests: list[dict[str, Any]] = []
        self._scripted: collections.deque[str] = collections.deque()
        self._failures: collections.deque[tuple[int, str]] = collections.deque()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._listen(_handler_for(self), host, port)

    # ---- lifecycle ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _wake_stalled(self) -> None:
        self._release.set()

    # ---- scripting ----------------------------------------------------------------------
    def script(self, *replies: str) -> None:
        with self._lock:
            self._scripted.extend(replies)

    def fail_next(self, status: int = 500, count: int = 1, message: str = "The server had an error") -> None:
        with self._lock:
            self._failures.extend([(status, message)] * count)

    def release(self) -> None:
        """Let stalled responses finish (they end without `[DONE]`, like a dropped connection)."""
        self._release.set()

    def reset(self) -> None:
        with self._lock:
            self._scripted.clear()
            self._failures.clear()
            self.requests.clear()
        self.reply_fn, self.replies_for = None, {}
        self.first_token_delay = self.token_delay = 0.0
        self.stall = False
        self._release = threading.Event()

    # ---- used by the handler ------------------------------------------------------------
    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def _next_failure(self) -> tuple[int, str] | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def _reply_for(self, messages: list[dict[str, Any]]) -> str:
        with self._lock:
            if self._scripted:
                return self._scripted.popleft()
        if self.reply_fn is not None:
            return self.reply_fn(messages)
        last_user = last_user_text(messages)
        return self.replies_for.get(last_user, f"קיבלתי: {last_user}")


# The roles Chat Completions accepts; any other is refused with 400 `invalid_value` on `messages[i].role`.
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


def split_into_deltas(text: str) -> list[str]:
    """Word-sized deltas with their following spaces, as a model streams them."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            authorization = self.headers.get("Authorization", "")
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            fake._record({"path": self.path, "authorization": authorization, "body": body, "time": time.time()})
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._error(404, f"Unknown request URL: POST {self.path}", "invalid_request_error")
            if authorization != f"Bearer {fake.api_key}":
                return self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
                return self._error(400, "'model' and 'messages' are required.", "invalid_request_error")
            for index, message in enumerate(body["messages"]):
                role = message.get("role") if isinstance(message, dict) else None
                if role not in MESSAGE_ROLES:
                    return self._error(
                        400,
                        f"Invalid value: {json.dumps(role)}. Supported values are: "
                        + ", ".join(f"'{r}'" for r in MESSAGE_ROLES)
                        + ".",
                        "invalid_request_error",
                        "invalid_value",
                        param=f"messages[{index}].role",
                    )
            failure = fake._next_failure()
            if failure:
                status, message = failure
                return self._error(status, message, "server_error" if status >= 500 else "invalid_request_error")
            reply = fake._reply_for(body["messages"])
            if body.get("stream"):
                self._stream(body["model"], reply)
            else:
                self._complete(body["model"], reply)

        def _complete(self, model: str, reply: str) -> None:
            time.sleep(fake.first_token_delay)
            self._json(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": len(split_into_deltas(reply)),
                        "total_tokens": 0,
                    },
                },
            )

        def _stream(self, model: str, reply: str) -> None:
            completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            created = int(time.time())

            def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
                payload = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
                }
                return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                self._send_chunk(chunk({"role": "assistant", "content": "", "refusal": None}))
                if fake.stall:
                    fake._release.wait(60)
                    self.close_connection = True
                    return
                time.sleep(fake.first_token_delay)
                for index, delta in enumerate(split_into_deltas(reply)):
                    if index and fake.token_delay:
                        time.sleep(fake.token_delay)
                    self._send_chunk(chunk({"content": delta}))
                self._send_chunk(chunk({}, "stop"))
                self._send_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _error(
            self, status: int, message: str, kind: str, code: str | None = None, param: str | None = None
        ) -> None:
            self._json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--first-token-delay-ms", type=int, default=0)
    parser.add_argument("--token-delay-ms", type=int, default=0)
    parser.add_argument("--reply-with", help="module:function turning the last user message into the reply")
    args = parser.parse_args()
    with FakeOpenAI(api_key=args.api_key, port=args.port) as fake:
        fake.first_token_delay, fake.token_delay = args.first_token_delay_ms / 1000, args.token_delay_ms / 1000
        if args.reply_with:
            reply = pkgutil.resolve_name(args.reply_with)
            fake.reply_fn = lambda messages: reply(last_user_text(messages))
        print(f"OPENAI_BASE_URL={fake.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()

"""A real local HTTP server speaking OpenAI's Chat Completions API, for the `openai` SDK in tests.

Point the app at it with `OPENAI_BASE_URL=<fake.base_url>` and `OPENAI_API_KEY=<fake.api_key>`.
`POST /v1/chat/completions` answers like OpenAI: `stream: true` gives `text/event-stream` with
`data: {chat.completion.chunk}` lines (role chunk, content deltas, finish chunk) and `data: [DONE]`,
sent with chunked transfer encoding over a keep-alive HTTP/1.1 connection; otherwise one
`chat.completion` JSON. A missing or wrong `Authorization: Bearer` gets OpenAI's 401 error body; a
message with a role OpenAI doesn't know gets its 400 `invalid_value` error on `messages[i].role`.

Which reply is given, first match wins:
1. `fake.script("reply one", ToolCalls([("find_slots", {"day": "2026-03-01"})]), "reply two")` queues
   replies, used in order;
2. `fake.reply_fn = lambda messages: "..."` (or a `ToolCalls`) computes one;
3. `fake.replies_for["last user text"] = "reply"` keys on the last user message;
4. otherwise `"קיבלתי: <last user text>"`.

A `ToolCalls` reply is a function call as OpenAI sends one: streamed, optional content deltas (the
text before the call), then for each call a first chunk with `index`, `id`, `type` and the function's
`name` and empty `arguments`, then the arguments in small fragments, and a last chunk with
`finish_reason: "tool_calls"`; not streamed, one message with `tool_calls`. Arguments given as a
dict are sent as JSON; a string is sent as is (to script malformed JSON). As OpenAI does, a request
whose assistant `tool_calls` are not each answered by a following `tool` message (or with a `tool`
message answering no call) is refused with 400; the answers are kept in `fake.tool_results`
(tool_call_id → parsed content). A request that offered no `tools` is never answered with calls
(the model can't call what it wasn't given): it gets `ToolCalls.fallback` text instead.

Failure modes: `first_token_delay` (seconds before the first content delta), `token_delay`,
`stall` (send the role chunk, then nothing until `release()` or stop), `fail_next(status, count)`.
Every request is recorded in `fake.requests` (path, authorization, JSON body); `fake.disconnects`
counts streams the client closed before their end.

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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Union

from testkit.fakes.local_http import LocalHTTPFake

DEFAULT_API_KEY = "test-openai-key"


@dataclass
class ToolCalls:
    """A scripted reply that calls tools: `calls` are (name, arguments) pairs; `text` is said first."""

    calls: list[tuple[str, Union[dict[str, Any], str]]]
    text: str = ""
    fallback: str = "סליחה, אני לא יכולה לעשות את זה עכשיו."
    ids: list[str] = field(default_factory=list)

    def wire_calls(self) -> list[dict[str, Any]]:
        if not self.ids:
            self.ids = [f"call_{uuid.uuid4().hex[:24]}" for _ in self.calls]
        return [
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False),
                },
            }
            for call_id, (name, arguments) in zip(self.ids, self.calls, strict=True)
        ]


Reply = Union[str, ToolCalls]


class FakeOpenAI(LocalHTTPFake):
    def __init__(self, *, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", port: int = 0):
        self.api_key = api_key
        self.reply_fn: Callable[[list[dict[str, Any]]], Reply] | None = None
        self.replies_for: dict[str, str] = {}
        self.first_token_delay = 0.0
        self.token_delay = 0.0
        self.stall = False
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0  # streams the client closed before their end (a cancelled reply)
        self.tool_results: dict[str, Any] = {}
        self._scripted: collections.deque[Reply] = collections.deque()
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
    def script(self, *replies: Reply) -> None:
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
            self.disconnects = 0
            self.tool_results.clear()
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

    def _keep_tool_results(self, results: dict[str, Any]) -> None:
        with self._lock:
            self.tool_results.update(results)

    def _reply_for(self, messages: list[dict[str, Any]]) -> Reply:
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


def tool_call_problem(messages: list[dict[str, Any]]) -> tuple[str, int] | None:
    """What OpenAI refuses about the tool messages of a request: every assistant `tool_calls` id must
    be answered by the `tool` messages right after it, and a `tool` message must answer one."""
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if message.get("role") == "assistant" and message.get("tool_calls"):
            expected = {call.get("id") for call in message["tool_calls"] if isinstance(call, dict)}
            following = messages[index + 1 : index + 1 + len(expected)]
            answered = {m.get("tool_call_id") for m in following if isinstance(m, dict) and m.get("role") == "tool"}
            if answered != expected:
                return (
                    "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                    "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                    + ", ".join(sorted(str(i) for i in expected - answered)),
                    index,
                )
        if message.get("role") == "tool":
            previous = messages[:index]
            calls = [
                call.get("id")
                for m in previous
                if isinstance(m, dict) and m.get("role") == "assistant"
                for call in (m.get("tool_calls") or [])
                if isinstance(call, dict)
            ]
            if message.get("tool_call_id") not in calls:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    index,
                )
    return None


def tool_messages(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The `tool` messages' contents by tool_call_id, JSON-decoded where they are JSON."""
    found: dict[str, Any] = {}
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "tool":
            content = message.get("content")
            try:
                found[str(message.get("tool_call_id"))] = json.loads(content) if isinstance(content, str) else content
            except ValueError:
                found[str(message.get("tool_call_id"))] = content
    return found


def split_into_deltas(text: str) -> list[str]:
    """Word-sized deltas with their following spaces, as a model streams them."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (ConnectionResetError, BrokenPipeError):  # the client cut its stream, or died: normal
                self.close_connection = True

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
            problem = tool_call_problem(body["messages"])
            if problem:
                message, index = problem
                return self._error(400, message, "invalid_request_error", None, param=f"messages.[{index}].role")
            fake._keep_tool_results(tool_messages(body["messages"]))
            failure = fake._next_failure()
            if failure:
                status, message = failure
                return self._error(status, message, "server_error" if status >= 500 else "invalid_request_error")
            reply = fake._reply_for(body["messages"])
            if isinstance(reply, ToolCalls) and not body.get("tools"):
                reply = reply.fallback
            if body.get("stream"):
                self._stream(body["model"], reply)
            else:
                self._complete(body["model"], reply)

        def _complete(self, model: str, reply: Reply) -> None:
            time.sleep(fake.first_token_delay)
            if isinstance(reply, ToolCalls):
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": reply.text or None,
                    "refusal": None,
                    "tool_calls": reply.wire_calls(),
                }
                finish_reason, text = "tool_calls", reply.text
            else:
                message = {"role": "assistant", "content": reply, "refusal": None}
                finish_reason, text = "stop", reply
            self._json(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": len(split_into_deltas(text)),
                        "total_tokens": 0,
                    },
                },
            )

        def _stream(self, model: str, reply: Reply) -> None:
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
                text = reply.text if isinstance(reply, ToolCalls) else reply
                for index, delta in enumerate(split_into_deltas(text) if text else []):
                    if index and fake.token_delay:
                        time.sleep(fake.token_delay)
                    self._send_chunk(chunk({"content": delta}))
                if isinstance(reply, ToolCalls):
                    for index, call in enumerate(reply.wire_calls()):
                        function = call["function"]
                        head = {"index": index, "id": call["id"], "type": "function"}
                        self._send_chunk(
                            chunk({"tool_calls": [{**head, "function": {"name": function["name"], "arguments": ""}}]})
                        )
                        arguments = function["arguments"]
                        for start in range(0, len(arguments), 7):  # OpenAI sends a few characters per chunk
                            piece = arguments[start : start + 7]
                            self._send_chunk(
                                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                            )
                    self._send_chunk(chunk({}, "tool_calls"))
                else:
                    self._send_chunk(chunk({}, "stop"))
                self._send_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                with fake._lock:
                    fake.disconnects += 1

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

"""OpenAI chat completions behind the `LanguageModel` interface: `stream_reply()` for live calls,
`complete()` for text answers (WhatsApp).

The `openai` SDK's client is created lazily (after gunicorn forks) and reads only our settings:
`OPENAI_API_KEY`, `OPENAI_MODEL` and `OPENAI_BASE_URL` (any OpenAI-compatible server works).

A live call cannot wait for the SDK's default 10-minute timeout and two retries, so streaming uses
one retry and short connect/read timeouts, and a watchdog bounds the time from the request to the
first text token (`LLM_FIRST_TOKEN_TIMEOUT_SECONDS`). The HTTP stream is read by a background
reader (`server.cooperative.start_background`) that hands deltas over a queue; the caller waits on
the queue with a timeout. In gunicorn's gevent worker the reader is a greenlet and both waits are
cooperative; without gevent it is an OS thread.

Tools (function calling): both methods take the conversation's `ToolRunner`; the model's calls
are assembled from the stream, run in the caller (between two requests, so no time limit of the
stream applies while a tool works), and answered with `tool` messages. A tool that fails answers
`{"error": ...}` (the runner never raises), so the model can say something sensible.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any, Iterator, Optional, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from server.config import Settings
from server.cooperative import start_background
from server.logs import log_event
from server.providers.base import ProviderError, ProviderTimeout, ToolRunner

log = logging.getLogger("agentlocator.providers.openai")

# Live turns: fail fast and let the engine apologise rather than keep the caller waiting.
STREAM_CONNECT_TIMEOUT_SECONDS = 3.0
STREAM_READ_TIMEOUT_SECONDS = 10.0
STREAM_MAX_RETRIES = 1
# Text replies (WhatsApp) can afford to wait longer and retry more.
COMPLETE_TIMEOUT_SECONDS = 30.0
COMPLETE_MAX_RETRIES = 2

_TEXT, _TOOL, _END, _ERROR = "text", "tool", "end", "error"
# Rounds of tool calls in one reply before the model must answer in words: a booking takes two
# (find the slots, book), so four leaves room for a retry after an error.
MAX_TOOL_ROUNDS = 4


class OpenAILanguageModel:
    """A `LanguageModel`; one instance (one client, one connection pool) serves a whole process."""

    def __init__(self, settings: Settings):
        self.model = settings.openai_model
        self.first_token_timeout = settings.llm_first_token_timeout_seconds
        self._api_key = settings.openai_api_key
        self._base_url = settings.openai_base_url or None
        self._client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    if not self._api_key:
                        raise ProviderError("OPENAI_API_KEY is not set")
                    self._client = openai.OpenAI(
                        api_key=self._api_key,
                        base_url=self._base_url,
                        max_retries=STREAM_MAX_RETRIES,
                        timeout=openai.Timeout(STREAM_READ_TIMEOUT_SECONDS, connect=STREAM_CONNECT_TIMEOUT_SECONDS),
                    )
        return self._client

    def stream_reply(self, messages: list[dict[str, Any]], tools: Optional[ToolRunner] = None) -> Iterator[str]:
        """Text deltas of the reply; `ProviderTimeout` if the first one takes too long.

        With `tools`, streamed `tool_calls` fragments are put together (by their index: id, name,
        argument pieces); when the model stops for them (`finish_reason: "tool_calls"`) each is run,
        its result goes back as a `tool` message, and the model is asked again, for at most
        `MAX_TOOL_ROUNDS` rounds (the last one offers no tools, so it must answer in words). Text
        written before a tool call is yielded at once, so it is spoken while the tool runs.
        Closing the iterator early (the caller barged in) closes the HTTP stream too.
        """
        client = self.client  # a missing key fails here, in the caller, not in the reader
        conversation = list(messages)
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            offered = tools.specs() if tools is not None and round_number < MAX_TOOL_ROUNDS else None
            text: list[str] = []
            calls: dict[int, dict[str, str]] = {}
            for kind, value in self._stream_round(client, conversation, offered or None):
                if kind == _TEXT:
                    text.append(value)
                    yield value
                else:
                    _add_fragment(calls, value)
            if not calls or tools is None:
                return
            conversation += self._run_tools(tools, "".join(text), calls)

    def _stream_round(
        self, client: openai.OpenAI, messages: list[dict[str, Any]], tool_specs: Optional[list[dict[str, Any]]]
    ) -> Iterator[tuple[str, Any]]:
        """One streamed request: ("text", delta) and ("tool", tool call fragment) items."""
        deltas: queue.Queue[tuple[str, Any]] = queue.Queue()
        cancelled = threading.Event()
        opened: list[Any] = []
        started = time.monotonic()
        extra: dict[str, Any] = {"tools": tool_specs} if tool_specs else {}

        def read_stream() -> None:
            try:
                stream = client.chat.completions.create(
                    model=self.model, messages=_sdk_messages(messages), stream=True, **extra
                )
                opened.append(stream)
                with stream:
                    for chunk in stream:
                        if cancelled.is_set():
                            return
                        text = _delta_text(chunk)
                        if text:
                            deltas.put((_TEXT, text))
                        for fragment in _delta_tool_calls(chunk):
                            deltas.put((_TOOL, fragment))
                deltas.put((_END, None))
            except Exception as exc:  # handed to the caller, which raises it as a ProviderError
                deltas.put((_ERROR, exc))

        start_background(read_stream, "openai-stream")
        wait = self.first_token_timeout
        try:
            while True:
                try:
                    kind, value = deltas.get(timeout=wait)
                except queue.Empty:
                    first = wait == self.first_token_timeout
                    log_event(
                        log,
                        "llm_timeout",
                        logging.WARNING,
                        model=self.model,
                        first_token=first,
                        waited_ms=int((time.monotonic() - started) * 1000),
                    )
                    raise ProviderTimeout(
                        "no first token from the language model in time"
                        if first
                        else "the language model stopped sending"
                    ) from None
                if kind == _END:
                    return
                if kind == _ERROR:
                    raise _provider_error(value) from value
                wait = STREAM_READ_TIMEOUT_SECONDS + STREAM_CONNECT_TIMEOUT_SECONDS
                yield kind, value
        finally:
            cancelled.set()
            for stream in opened:
                _close_quietly(stream)

    def complete(self, messages: list[dict[str, Any]], tools: Optional[ToolRunner] = None) -> str:
        """The whole reply as one string (WhatsApp text answers); tools are run as in `stream_reply`."""
        conversation = list(messages)
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            offered = tools.specs() if tools is not None and round_number < MAX_TOOL_ROUNDS else None
            extra: dict[str, Any] = {"tools": offered} if offered else {}
            try:
                response = self.client.with_options(
                    timeout=COMPLETE_TIMEOUT_SECONDS, max_retries=COMPLETE_MAX_RETRIES
                ).chat.completions.create(model=self.model, messages=_sdk_messages(conversation), **extra)
            except openai.OpenAIError as exc:
                raise _provider_error(exc) from exc
            if not response.choices:
                raise ProviderError("the language model returned no choices")
            message = response.choices[0].message
            requested = [call for call in (message.tool_calls or []) if getattr(call, "function", None) is not None]
            if not requested or tools is None:
                return (message.content or "").strip()
            calls = {
                index: {"id": call.id, "name": call.function.name, "arguments": call.function.arguments or ""}
                for index, call in enumerate(requested)
            }
            conversation += self._run_tools(tools, message.content or "", calls)
        return ""  # not reached: the last round offers no tools

    def _run_tools(self, tools: ToolRunner, text: str, calls: dict[int, dict[str, str]]) -> list[dict[str, Any]]:
        """The assistant's tool-calling message and one `tool` message per call, each call run."""
        ordered = [calls[index] for index in sorted(calls)]
        for number, call in enumerate(ordered):
            call["id"] = call.get("id") or f"call_{number}"
        messages: list[dict[str, Any]] = [
            {
                "role": "assistant",
                "content": text or None,
                "tool_calls": [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in ordered
                ],
            }
        ]
        for call in ordered:
            result = tools.run(call["name"], call["arguments"])
            content = json.dumps(result, ensure_ascii=False, default=str)
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
        return messages


def _sdk_messages(messages: list[dict[str, Any]]) -> list[ChatCompletionMessageParam]:
    """Our messages ({"role": "system" | "user" | "assistant", "content": text}, as the prompt
    builders make them, plus the assistant's `tool_calls` and the `tool` results) under the SDK's
    type, which has one dict type per role."""
    return cast("list[ChatCompletionMessageParam]", messages)


def _delta_text(chunk: Any) -> str:
    if not chunk.choices:
        return ""
    return chunk.choices[0].delta.content or ""


def _delta_tool_calls(chunk: Any) -> list[Any]:
    if not chunk.choices:
        return []
    return list(chunk.choices[0].delta.tool_calls or [])


def _add_fragment(calls: dict[int, dict[str, str]], fragment: Any) -> None:
    """A streamed piece of a tool call: the first names its id and function, later ones add
    argument text; `index` says which call of the reply it belongs to."""
    call = calls.setdefault(fragment.index or 0, {"id": "", "name": "", "arguments": ""})
    if fragment.id:
        call["id"] = fragment.id
    function = fragment.function
    if function is not None:
        if function.name:
            call["name"] += function.name
        if function.arguments:
            call["arguments"] += function.arguments


def _provider_error(exc: BaseException) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout("the language model timed out")
    status = getattr(exc, "status_code", None)
    log_event(log, "llm_error", logging.WARNING, error=type(exc).__name__, status=status)
    detail = f"HTTP {status}" if status else type(exc).__name__
    return ProviderError(f"language model request failed ({detail})")


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # closing a stream that already failed must not mask the real outcome
        pass

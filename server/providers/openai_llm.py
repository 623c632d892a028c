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
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterator, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from server.config import Settings
from server.cooperative import start_background
from server.logs import log_event
from server.providers.base import ProviderError, ProviderTimeout

log = logging.getLogger("agentlocator.providers.openai")

# Live turns: fail fast and let the engine apologise rather than keep the caller waiting.
STREAM_CONNECT_TIMEOUT_SECONDS = 3.0
STREAM_READ_TIMEOUT_SECONDS = 10.0
STREAM_MAX_RETRIES = 1
# Text replies (WhatsApp) can afford to wait longer and retry more.
COMPLETE_TIMEOUT_SECONDS = 30.0
COMPLETE_MAX_RETRIES = 2

_TEXT, _END, _ERROR = "text", "end", "error"


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

    def stream_reply(self, messages: list[dict[str, str]]) -> Iterator[str]:
        """Text deltas of the reply; `ProviderTimeout` if the first one takes too long.

        Closing the iterator early (the caller barged in) closes the HTTP stream too.
        """
        client = self.client  # a missing key fails here, in the caller, not in the reader
        deltas: queue.Queue[tuple[str, Any]] = queue.Queue()
        cancelled = threading.Event()
        opened: list[Any] = []
        started = time.monotonic()

        def read_stream() -> None:
            try:
                stream = client.chat.completions.create(model=self.model, messages=_sdk_messages(messages), stream=True)
                opened.append(stream)
                with stream:
                    for chunk in stream:
                        if cancelled.is_set():
                            return
                        text = _delta_text(chunk)
                        if text:
                            deltas.put((_TEXT, text))
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
                yield value
        finally:
            cancelled.set()
            for stream in opened:
                _close_quietly(stream)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The whole reply as one string (WhatsApp text answers)."""
        try:
            response = self.client.with_options(
                timeout=COMPLETE_TIMEOUT_SECONDS, max_retries=COMPLETE_MAX_RETRIES
            ).chat.completions.create(model=self.model, messages=_sdk_messages(messages))
        except openai.OpenAIError as exc:
            raise _provider_error(exc) from exc
        if not response.choices:
            raise ProviderError("the language model returned no choices")
        return (response.choices[0].message.content or "").strip()


def _sdk_messages(messages: list[dict[str, str]]) -> list[ChatCompletionMessageParam]:
    """Our messages ({"role": "system" | "user" | "assistant", "content": text}, as the prompt
    builders make them) under the SDK's type, which has one dict type per role."""
    return cast("list[ChatCompletionMessageParam]", messages)


def _delta_text(chunk: Any) -> str:
    if not chunk.choices:
        return ""
    return chunk.choices[0].delta.content or ""


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

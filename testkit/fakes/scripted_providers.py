"""In-process scripted STT, LLM and TTS with controllable delays and failures.

Load them through the production plug-in setting:

    VOICE_PROVIDERS=testkit.fakes.scripted_providers:build

`build(settings)` reads its script from environment variables (test code may; production code
may not), all optional:

    SCRIPTED_STT_FINAL_MS        final transcript this long after the last loud frame of a burst (300)
    SCRIPTED_STT_INTERIM_MS      interim transcript this long after a burst starts (200)
    SCRIPTED_LLM_FIRST_TOKEN_MS  delay before the first token (400)
    SCRIPTED_LLM_TOKEN_MS        delay between later tokens (20)
    SCRIPTED_TTS_MS              synthesis latency per call (150)
    SCRIPTED_TTS_MS_PER_CHAR     length of the synthesised audio per character of text (60)

**What the caller says** is carried in the audio itself, so every call (and every turn) of one
shared server can follow its own script: `speech(text, ms)` makes a burst of loud μ-law whose
first bytes encode `text`; the scripted STT decodes it. A burst without that encoding (a real
recording) is heard as `DEFAULT_UTTERANCE`.

**Directives** in what the caller says steer the fakes for that turn:

    "llm:error"  the LLM fails (ProviderError) after its first-token delay
    "llm:stall"  the LLM never sends a token (the engine's first-token timeout fires)
    "tts:error"  the LLM's reply contains "tts:error", which the TTS refuses to synthesise
    "stt:die"    the STT stream ends instead of delivering this utterance's final transcript (once per
                 distinct utterance: the engine replays the audio into a new stream, which hears it)
    "long"       a reply of many sentences (to be interrupted)
    "bye"        a goodbye reply that ends with the END_CALL marker
    "tool:NAME"  when the call has tools, the LLM first calls tool NAME (after its first-token delay;
                 `take_message` with the caller's words as the reason), then answers after another
                 first-token delay, as a model's follow-up request would
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import gevent
from gevent.event import Event
from gevent.queue import Queue

from server.config import Settings
from server.providers.base import ProviderError, ProviderTimeout, Transcript, VoiceProviders
from server.voice.audio import FRAME_BYTES, FRAME_MS, MULAW_SILENCE, mulaw_to_linear
from server.voice.conversation import END_CALL_MARKER

DEFAULT_UTTERANCE = "שלום"
LOUDNESS_THRESHOLD = 400
NOISE_MS = 100  # a burst shorter than this (a click, a cough) is noise: no transcript at all
_MAGIC = bytes((0x0A, 0x05, 0x0A, 0x05))
_FILLER = 0x07  # like every byte of a scripted burst, a loud μ-law value (0x00-0x0F)
# |sample| >> 7 for every μ-law byte: a frame's sum of these × 128 / its length is its mean amplitude.
_LOUDNESS = bytes(min(255, abs(mulaw_to_linear(b)) >> 7) for b in range(256))


@dataclass(frozen=True)
class Script:
    stt_final_ms: int = 300
    stt_interim_ms: int = 200
    llm_first_token_ms: int = 400
    llm_token_ms: int = 20
    tts_ms: int = 150
    tts_ms_per_char: int = 60

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Script":
        environ = os.environ if environ is None else environ
        fields = {
            "stt_final_ms": "SCRIPTED_STT_FINAL_MS",
            "stt_interim_ms": "SCRIPTED_STT_INTERIM_MS",
            "llm_first_token_ms": "SCRIPTED_LLM_FIRST_TOKEN_MS",
            "llm_token_ms": "SCRIPTED_LLM_TOKEN_MS",
            "tts_ms": "SCRIPTED_TTS_MS",
            "tts_ms_per_char": "SCRIPTED_TTS_MS_PER_CHAR",
        }
        return cls(**{name: int(environ[var]) for name, var in fields.items() if var in environ})


def build(settings: Settings) -> VoiceProviders:
    script = Script.from_env()
    return VoiceProviders(
        stt=ScriptedSpeechToText(script), llm=ScriptedLanguageModel(script), tts=ScriptedTextToSpeech(script)
    )


def build_with_openai(settings: Settings) -> VoiceProviders:
    """Scripted STT and TTS with the real OpenAI client (`OPENAI_BASE_URL`: the OpenAI wire fake), for
    calls whose model calls tools: the language model's side is the real SDK on the real wire."""
    from server.providers.openai_llm import OpenAILanguageModel

    script = Script.from_env()
    return VoiceProviders(
        stt=ScriptedSpeechToText(script), llm=OpenAILanguageModel(settings), tts=ScriptedTextToSpeech(script)
    )


# ---- what the caller says ---------------------------------------------------------------------
def speech(text: str, ms: int = 800) -> bytes:
    """A burst of loud μ-law audio, `ms` long (at least long enough to hold `text`), that says `text`."""
    data = text.encode("utf-8")
    nibbles = bytearray(_MAGIC)
    for byte in len(data).to_bytes(2, "big") + data:
        nibbles += bytes((byte >> 4, byte & 0x0F))
    frames = max(-(-ms // FRAME_MS), -(-len(nibbles) // FRAME_BYTES))
    return bytes(nibbles) + bytes((_FILLER,)) * (frames * FRAME_BYTES - len(nibbles))


def is_loud(frame: bytes) -> bool:
    """The frame's mean absolute amplitude (16-bit scale) reaches LOUDNESS_THRESHOLD: what this STT hears."""
    return bool(frame) and sum(frame.translate(_LOUDNESS)) * 128 // len(frame) >= LOUDNESS_THRESHOLD


def silence(ms: int) -> bytes:
    return MULAW_SILENCE * (ms * FRAME_BYTES // FRAME_MS)


def decode_speech(burst: bytes) -> Optional[str]:
    """The text `speech()` put at the start of `burst`; DEFAULT_UTTERANCE if there is none; None if
    the burst is too short to tell yet."""
    if len(burst) < len(_MAGIC) + 4:
        return None
    if burst[: len(_MAGIC)] != _MAGIC:
        return DEFAULT_UTTERANCE
    packed = burst[len(_MAGIC) :]
    length = int.from_bytes(bytes((packed[0] << 4 | packed[1], packed[2] << 4 | packed[3])), "big")
    if len(packed) < 4 + 2 * length:
        return None
    body = packed[4 : 4 + 2 * length]
    return bytes(body[i] << 4 | body[i + 1] for i in range(0, len(body), 2)).decode("utf-8", "replace")


# ---- STT --------------------------------------------------------------------------------------
class _Burst:
    __slots__ = ("started_at", "last_voice_at", "voiced_frames", "head", "text", "interim_sent")

    def __init__(self, started_at: float):
        self.started_at = started_at
        self.last_voice_at = started_at
        self.voiced_frames = 0
        self.head = bytearray()
        self.text: Optional[str] = None
        self.interim_sent = False


class ScriptedSpeechStream:
    """Each burst of loud frames → an interim (`stt_interim_ms` after it starts) and a final
    (`stt_final_ms` after its last loud frame), timed by when each frame reached the server.
    Bursts with less than NOISE_MS of loud audio give neither."""

    def __init__(self, script: Script, died_on: set[str]):
        self._script = script
        self._died_on = died_on
        self._results: Queue = Queue()
        self._burst: Optional[_Burst] = None
        self._wake = Event()
        self._closed = False
        self._timer = gevent.spawn(self._emit_when_due)

    def send_audio(self, mulaw: bytes) -> None:
        if self._closed:
            return
        now = time.monotonic()
        count = len(mulaw) // FRAME_BYTES
        for i in range(count):
            frame = mulaw[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]
            if not is_loud(frame):
                continue
            # Frames of one request arrived 20 ms apart; the last one just now.
            arrived_at = now - (count - 1 - i) * FRAME_MS / 1000
            burst = self._burst
            if burst is None:
                burst = self._burst = _Burst(arrived_at)
                self._wake.set()
            burst.last_voice_at = arrived_at
            burst.voiced_frames += 1
            if burst.text is None:
                burst.head += frame
                burst.text = decode_speech(bytes(burst.head))

    def transcripts(self) -> Iterator[Transcript]:
        while True:
            result = self._results.get()
            if result is None:
                return
            yield result

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._results.put(None)
            self._timer.kill(block=False)

    def _emit_when_due(self) -> None:
        script = self._script
        while not self._closed:
            burst = self._burst
            if burst is None:
                self._wake.clear()
                self._wake.wait()
                continue
            now = time.monotonic()
            final_due = burst.last_voice_at + script.stt_final_ms / 1000
            interim_due = burst.started_at + script.stt_interim_ms / 1000
            is_noise = burst.voiced_frames * FRAME_MS < NOISE_MS
            text = burst.text or DEFAULT_UTTERANCE
            if now >= final_due:
                self._burst = None
                if is_noise:
                    continue
                if "stt:die" in text and text not in self._died_on:
                    self._died_on.add(text)
                    self._closed = True
                    self._results.put(None)
                    return
                self._results.put(Transcript(text, is_final=True, confidence=0.9))
            elif not burst.interim_sent and now >= interim_due and not is_noise:
                burst.interim_sent = True
                self._results.put(Transcript(text.split()[0] if text.split() else text, is_final=False))
            elif not burst.interim_sent and now >= interim_due:
                gevent.sleep(FRAME_MS / 1000)  # the interim is due once the burst proves not to be noise
            else:
                due = final_due if burst.interim_sent else min(final_due, interim_due)
                gevent.sleep(max(0.0, due - now))


class ScriptedSpeechToText:
    def __init__(self, script: Script):
        self._script = script
        self._died_on: set[str] = set()

    def open_stream(self) -> ScriptedSpeechStream:
        return ScriptedSpeechStream(self._script, self._died_on)

    def transcribe(self, audio: bytes, *, encoding: str, sample_rate_hz: int) -> str:
        return DEFAULT_UTTERANCE


# ---- LLM --------------------------------------------------------------------------------------
LONG_REPLY = " ".join(f"זה משפט מספר {n} בתשובה ארוכה שאפשר לקטוע אותה." for n in range(1, 9))
GOODBYE_REPLY = f"תודה שהתקשרתם, להתראות! {END_CALL_MARKER}"


def scripted_reply(user_text: str) -> str:
    """What the scripted LLM answers to `user_text` (directives as in the module docstring)."""
    if "long" in user_text:
        return LONG_REPLY
    if "bye" in user_text:
        return GOODBYE_REPLY
    if "tts:error" in user_text:
        return "את המשפט הזה tts:error לא יצליח להגיד."
    return f"שמעתי: {user_text}. מה עוד אפשר לעשות בשבילכם?"


def reply_tokens(reply: str) -> list[str]:
    """How the scripted LLM streams a reply: one word (with its trailing space) per token."""
    return re.findall(r"\S+\s*", reply)


_TOOL_DIRECTIVE = re.compile(r"tool:(\w+)")


def tool_directive(user_text: str) -> Optional[str]:
    found = _TOOL_DIRECTIVE.search(user_text)
    return found.group(1) if found else None


def first_sentence_ms(user_text: str, script: Script) -> int:
    """Scripted time from the request to the end of the reply's first sentence (for the benchmark);
    a tool call adds one first-token delay (the tool's own time is not scripted: it is the server's)."""
    tool_round = script.llm_first_token_ms if tool_directive(user_text) else 0
    tokens = reply_tokens(scripted_reply(user_text))
    for count, token in enumerate(tokens, start=1):
        if re.search(r"[.!?]\s", token):
            return tool_round + script.llm_first_token_ms + (count - 1) * script.llm_token_ms
    return tool_round + script.llm_first_token_ms + (len(tokens) - 1) * script.llm_token_ms


class ScriptedLanguageModel:
    def __init__(self, script: Script):
        self._script = script

    def stream_reply(self, messages: list[dict[str, Any]], tools: Any = None) -> Iterator[str]:
        """Tokens on an exact schedule from the call (deadlines, not sleeps, so timer slack doesn't add up).
        With `tools`, a "tool:NAME" directive calls that tool first (the benchmark's tool turns; the
        tests of tools use `build_with_openai` and the OpenAI wire fake)."""
        started = time.monotonic()
        user_text = messages[-1]["content"]
        if "llm:stall" in user_text:
            gevent.sleep(3600)
        _sleep_until(started + self._script.llm_first_token_ms / 1000)
        name = tool_directive(user_text)
        if name and tools is not None:
            arguments = {"reason": user_text} if name == "take_message" else {}
            tools.run(name, json.dumps(arguments, ensure_ascii=False))
            started = time.monotonic()  # the follow-up request with the tool's result
            _sleep_until(started + self._script.llm_first_token_ms / 1000)
        if "llm:error" in user_text:
            raise ProviderError("scripted LLM failure")
        for index, token in enumerate(reply_tokens(scripted_reply(user_text))):
            _sleep_until(started + (self._script.llm_first_token_ms + index * self._script.llm_token_ms) / 1000)
            yield token

    def complete(self, messages: list[dict[str, Any]], tools: Any = None) -> str:
        """The whole scripted reply to the last user message, after the first-token delay
        ("llm:error" and "llm:stall" fail it, the stall as the timeout a real model would hit)."""
        started = time.monotonic()
        user_text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        _sleep_until(started + self._script.llm_first_token_ms / 1000)
        if "llm:error" in user_text:
            raise ProviderError("scripted LLM failure")
        if "llm:stall" in user_text:
            raise ProviderTimeout("scripted LLM stall")
        return scripted_reply(user_text).strip()


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        gevent.sleep(delay)


# ---- TTS --------------------------------------------------------------------------------------
class ScriptedTextToSpeech:
    def __init__(self, script: Script):
        self._script = script

    def synthesize(self, text: str) -> bytes:
        _sleep_until(time.monotonic() + self._script.tts_ms / 1000)
        if "tts:error" in text:
            raise ProviderError("scripted TTS failure")
        return tone(text, max(200, len(text) * self._script.tts_ms_per_char))


def tone(text: str, ms: int) -> bytes:
    """Deterministic, moderately loud μ-law audio standing for `text` spoken for `ms`."""
    pattern = bytes(0x20 + (b & 0x1F) for b in hashlib.sha256(text.encode("utf-8")).digest())
    length = ms * FRAME_BYTES // FRAME_MS
    return (pattern * (length // len(pattern) + 1))[:length]

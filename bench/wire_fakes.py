"""`--providers wire-fakes`: the real Google and OpenAI clients against the wire-level fakes.

The fakes run as child processes (`tests/fakes/wire_fakes.py`) and are tuned to the benchmark's
script, so the figures compare with `--providers scripted`: the speech fake finalises after the
same silence and reads what each caller says from the audio (`decode_speech`), the OpenAI fake
answers `scripted_reply` with the same token timing, and the TTS fake takes the same time and
speaks as long per character. What differs is everything the production providers add: gRPC
streams batched to 100 ms, HTTP streaming and SSE parsing, WAV parsing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from tests.fakes.scripted_providers import Script
from tests.fakes.wire_fakes import wire_fakes


@contextlib.contextmanager
def provider_env(script: Script) -> Iterator[dict[str, str]]:
    options = {
        "tests.fakes.google_speech": ["--final-silence-ms", str(script.stt_final_ms),
                                      "--interim-every-ms", str(script.stt_interim_ms),
                                      "--decode", "tests.fakes.scripted_providers:decode_speech"],
        "tests.fakes.google_tts": ["--delay-ms", str(script.tts_ms), "--ms-per-character", str(script.tts_ms_per_char)],
        "tests.fakes.openai_server": ["--first-token-delay-ms", str(script.llm_first_token_ms),
                                      "--token-delay-ms", str(script.llm_token_ms),
                                      "--reply-with", "tests.fakes.scripted_providers:scripted_reply"],
    }
    with wire_fakes(options) as env:
        yield {**env, "VOICE_PROVIDERS": "server.providers.google_openai:build_voice_providers"}

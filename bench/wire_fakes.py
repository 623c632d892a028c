"""`--providers wire-fakes`: the real Google and OpenAI clients against the wire-level fakes.

The fakes run as child processes (`testkit/fakes/wire_fakes.py`) and are tuned to the benchmark's
script, so the figures compare with `--providers scripted`: the speech fake finalises after the
same silence and reads what each caller says from the audio (`decode_speech`), showing the whole
utterance as its last interim as soon as the caller stops (what preemptive generation answers), the OpenAI fake
answers `scripted_reply` with the same token timing, and the TTS fake takes the same time and
speaks as long per character. What differs is everything the production providers add: gRPC
streams batched to 100 ms, HTTP streaming and SSE parsing, WAV parsing.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from testkit.fakes.scripted_providers import Script
from testkit.fakes.wire_fakes import wire_fakes


@contextlib.contextmanager
def provider_env(script: Script) -> Iterator[dict[str, str]]:
    options = {
        "testkit.fakes.google_speech": [
            "--final-silence-ms",
            str(script.stt_final_ms),
            "--interim-every-ms",
            str(script.stt_interim_ms),
            "--last-interim-ms",  # as Google does, the whole utterance as an interim when the caller stops
            "0",
            "--decode",
            "testkit.fakes.scripted_providers:decode_speech",
        ],
        "testkit.fakes.google_tts": [
            "--delay-ms",
            str(script.tts_ms),
            "--ms-per-character",
            str(script.tts_ms_per_char),
        ],
        "testkit.fakes.openai_server": [
            "--first-token-delay-ms",
            str(script.llm_first_token_ms),
            "--token-delay-ms",
            str(script.llm_token_ms),
            "--reply-with",
            "testkit.fakes.scripted_providers:scripted_reply",
        ],
    }
    with wire_fakes(options) as env:
        yield {**env, "VOICE_PROVIDERS": "server.providers.google_openai:build_voice_providers"}

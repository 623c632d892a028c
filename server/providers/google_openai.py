"""The production agent stack: Google STT (he-IL) → OpenAI → Google TTS.

Live calls and WhatsApp auto-replies load it through the plug-in setting (`server.providers.plugin`)
`VOICE_PROVIDERS=server.providers.google_openai:build_voice_providers`. The providers hold the
(lazily built) vendor clients, so one set, cached per configuration, serves every call and every
WhatsApp reply in a process: one OpenAI connection pool, one pair of gRPC channels.
"""

from __future__ import annotations

import functools

from server.config import Settings
from server.providers.base import VoiceProviders
from server.providers.google_stt import GoogleSpeechToText
from server.providers.google_tts import GoogleTextToSpeech
from server.providers.openai_llm import OpenAILanguageModel


@functools.lru_cache(maxsize=8)
def build_voice_providers(settings: Settings) -> VoiceProviders:
    return VoiceProviders(
        stt=GoogleSpeechToText(settings), llm=OpenAILanguageModel(settings), tts=GoogleTextToSpeech(settings)
    )

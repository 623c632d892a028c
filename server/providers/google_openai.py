"""The production voice stack: Google STT (he-IL) → OpenAI → Google TTS.

The live-call engine loads it through `VOICE_PROVIDERS=server.providers.google_openai:build_voice_providers`.
The providers hold the (lazily built) vendor clients, so one set serves every call in a process.
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
    return VoiceProviders(stt=GoogleSpeechToText(settings), llm=OpenAILanguageModel(settings),
                          tts=GoogleTextToSpeech(settings))

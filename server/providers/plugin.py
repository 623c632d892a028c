"""The one way the app gets its agent providers: the `VOICE_PROVIDERS` plug-in.

`VOICE_PROVIDERS=package.module:factory` names a function that takes `Settings` and returns
`VoiceProviders` (production: `server.providers.google_openai:build_voice_providers`; tests load
scripted or wire-faked providers the same way). Live calls and WhatsApp auto-replies both load
their providers here, so one setting decides which speech and language vendors the agent uses on
every channel.

Load in the worker, after fork, on first use: gRPC channels must not cross a fork. A factory that
wants one set of clients per process caches its own result (the production one does).
"""

from __future__ import annotations

import importlib

from server.config import Settings
from server.providers.base import ProviderError, VoiceProviders


def load_providers(settings: Settings) -> VoiceProviders:
    """Build the providers named by `VOICE_PROVIDERS`; any failure is a `ProviderError` saying why."""
    module_name, _, factory_name = settings.voice_providers.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ProviderError(f"VOICE_PROVIDERS={settings.voice_providers!r} can't be loaded: {exc}") from None
    try:
        providers = factory(settings)
    except ProviderError:
        raise
    except Exception as exc:  # a vendor SDK's own error (credentials, configuration): the same outcome
        raise ProviderError(f"VOICE_PROVIDERS factory failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(providers, VoiceProviders):
        raise ProviderError(f"VOICE_PROVIDERS factory returned {type(providers).__name__}, not VoiceProviders")
    return providers

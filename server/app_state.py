"""The app's shared services, typed: one `AppServices` kept in `app.extensions` under one key.

`create_app` builds it once (`install_services`); everything else reads it through `services(app)`,
so each service has a declared type and a misspelt one is a type error, not a `KeyError` at run time.
The services a worker makes on first use (after gunicorn forked: the voice engine, the console's
event hub, the sign-in limiter…) start as None and are filled in by the module that owns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from flask import Flask

from server.console.live import EventHub
from server.db import Database
from server.jobs import JobQueue
from server.lifecycle import Lifecycle
from server.providers.base import VoicemailTranscriber, VoiceNoteTranscriber
from server.security.auth import TokenPolicy
from server.security.rate_limits import LoginLimiter
from server.security.secrets_box import SecretsBox
from server.voice.engine import VoiceEngine

EXTENSION_KEY = "agentlocator"

# `/readyz` adds what each probe returns to its answer (a `warnings` list is merged into its own).
ReadinessProbe = Callable[[], dict[str, Any]]
# A blueprint's part of the OpenAPI document: its name, its path items, its component schemas.
OpenApiPart = tuple[str, Mapping[str, Any], Mapping[str, Any]]


@dataclass
class AppServices:
    lifecycle: Lifecycle
    secrets_box: SecretsBox
    database: Database
    voicemail_transcriber: Optional[VoicemailTranscriber]  # None without speech recognition
    # Set right after the rest: the queue's job context refers back to these services.
    jobs: JobQueue = field(init=False)
    readiness_probes: list[ReadinessProbe] = field(default_factory=list)
    openapi_parts: list[OpenApiPart] = field(default_factory=list)
    # Made on first use, in each worker process.
    openapi_spec: Optional[dict[str, Any]] = None
    voice_engine: Optional[VoiceEngine] = None
    event_hub: Optional[EventHub] = None
    token_policy: Optional[TokenPolicy] = None
    login_limiter: Optional[LoginLimiter] = None
    # WhatsApp voice notes' speech recognition (None without it); set by `create_app`.
    voice_note_transcriber: Optional[VoiceNoteTranscriber] = None


def install_services(app: Flask, app_services: AppServices) -> None:
    app.extensions[EXTENSION_KEY] = app_services


def services(app: Flask) -> AppServices:
    """`app`'s services (`current_app` works too, inside a request or an app context)."""
    found = app.extensions.get(EXTENSION_KEY)
    if not isinstance(found, AppServices):
        raise LookupError("this Flask app was not made by server.app_factory.create_app")
    return found

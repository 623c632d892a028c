"""How the Google clients reach Google: credentials, or a plaintext channel to an emulator.

Credentials come from `GCP_CREDENTIALS_JSON` (the service-account JSON itself, handy on PaaS
hosts without a file system for secrets) or `GOOGLE_APPLICATION_CREDENTIALS` (a path to a
credentials file); with neither, the client library's own application-default lookup applies
(e.g. the metadata server on Google Cloud). `GOOGLE_SPEECH_EMULATOR_HOST` /
`GOOGLE_TTS_EMULATOR_HOST` (`host:port`) replace all of that with an insecure gRPC channel to a
local server and no credentials at all.

gRPC must be made gevent-cooperative after gevent has patched the process and before the first
channel exists, or the first streaming call freezes the whole worker. Gunicorn's gevent worker
patches only after the `post_fork` hook, so clients are created lazily, on first use, and
`make_grpc_cooperative()` runs just before the first channel is built.
"""

from __future__ import annotations

import importlib
import json
import threading
from typing import Any, Callable, Sequence

import google.auth
import google.auth.exceptions
import grpc
from google.oauth2 import service_account

from server.config import Settings
from server.providers.base import ProviderError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

GRPC_WAIT_THREADS = 64  # gevent's pool threads for gRPC's waits (see make_grpc_cooperative)
# gRPC shares one connection among channels to the same address unless told otherwise; a client's
# channel gets a connection of its own, so several channels spread streams over several connections.
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)
_cooperative_lock = threading.Lock()


def make_grpc_cooperative() -> None:
    """Switch gRPC to gevent's hub when (and only when) gevent has monkey-patched this process."""
    import gevent
    from gevent import monkey

    cygrpc = importlib.import_module("grpc._cython.cygrpc")  # compiled; grpc's type stubs don't describe it

    with _cooperative_lock:
        if monkey.is_module_patched("socket") and not getattr(cygrpc, "g_gevent_activated", False):
            import grpc.experimental.gevent as grpc_gevent

            grpc_gevent.init_gevent()
            # In gevent mode gRPC waits for every completion in a thread of the hub's pool: each
            # channel's poller and each blocking call in flight (a synthesis, a recognition) holds one
            # while it waits. The pool's default of 10 would queue a busy worker's syntheses.
            hub_pool = gevent.get_hub().threadpool
            hub_pool.maxsize = max(hub_pool.maxsize, GRPC_WAIT_THREADS)


def google_credentials(settings: Settings) -> Any:
    """Explicit credentials from the settings, or None to let the library find its defaults."""
    if settings.gcp_credentials_json:
        try:
            info = json.loads(settings.gcp_credentials_json)
            return service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM_SCOPE])
        except (ValueError, KeyError, TypeError) as exc:
            # The message must not echo the JSON: it holds the private key.
            raise ProviderError(
                f"GCP_CREDENTIALS_JSON is not a valid service-account key ({type(exc).__name__})"
            ) from None
    if settings.google_application_credentials:
        try:
            credentials, _project = google.auth.load_credentials_from_file(
                settings.google_application_credentials, scopes=[CLOUD_PLATFORM_SCOPE]
            )
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ProviderError(f"GOOGLE_APPLICATION_CREDENTIALS cannot be used: {exc}") from None
        return credentials
    return None


def build_google_client(
    client_class: Callable[..., Any], transport_class: Callable[..., Any], emulator_host: str, settings: Settings
) -> Any:
    """A GAPIC client: plaintext to `emulator_host` when set, otherwise TLS to Google with credentials."""
    make_grpc_cooperative()
    if emulator_host:
        # A transport instance carries its own channel; GAPIC rejects credentials next to it.
        channel = grpc.insecure_channel(emulator_host, options=[OWN_CONNECTION])
        return client_class(transport=transport_class(channel=channel))

    def channel_of_its_own(*args: Any, options: Sequence[tuple[str, Any]] = (), **kwargs: Any) -> grpc.Channel:
        return transport_class.create_channel(*args, options=[*options, OWN_CONNECTION], **kwargs)  # type: ignore[attr-defined]

    return client_class(transport=transport_class(credentials=google_credentials(settings), channel=channel_of_its_own))


class LazyClient:
    """Builds a client on first use (after fork) and shares it across greenlets and threads."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
        return self._client

"""A plaintext local gRPC server built from generic handlers (no generated stubs: proto-plus
messages bring their own `serialize`/`deserialize`). Base of the Google Speech and TTS fakes.

`required_token`: when set (at start or later), every call must carry `authorization: Bearer
<token>` metadata, as Google's APIs require an OAuth access token; any other call is refused with
UNAUTHENTICATED and Google's own message, the way a revoked or wrong service-account key fails.
The app's emulator mode sends no credentials, so setting it makes the fake refuse the app."""

from __future__ import annotations

import argparse
import threading
from concurrent import futures
from typing import Any, Callable, Optional

import grpc

UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class GrpcFake:
    service = ""  # e.g. "google.cloud.speech.v1.Speech"
    emulator_variable = ""  # the setting that points the app here

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, workers: int = 64, required_token: Optional[str] = None
    ):
        self.required_token = required_token
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fake-grpc"),
            interceptors=(_RequireToken(self),),
        )
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(self.service, self.handlers()),))
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.address = f"{host}:{self.port}"
        self._lock = threading.Lock()

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        raise NotImplementedError

    def start(self) -> "GrpcFake":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0.5).wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Command-line options for the fake's behaviour (see `configure`)."""

    def configure(self, args: argparse.Namespace) -> None:
        """Apply the options of `add_arguments`."""

    @classmethod
    def serve_forever_from_command_line(cls) -> None:
        """Serve until killed; the first line on stdout is `<emulator variable>=host:port`."""
        parser = argparse.ArgumentParser(description=f"Fake {cls.service} gRPC server")
        parser.add_argument("--port", type=int, default=0)
        parser.add_argument("--workers", type=int, default=256)
        cls.add_arguments(parser)
        args = parser.parse_args()
        fake = cls(port=args.port, workers=args.workers)
        fake.configure(args)
        fake.start()
        print(f"{cls.emulator_variable}={fake.address}", flush=True)
        fake._server.wait_for_termination()


class _RequireToken(grpc.ServerInterceptor):
    """Refuses calls without the fake's `required_token` as a bearer, like Google does."""

    def __init__(self, fake: GrpcFake):
        self._fake = fake

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler]], details: Any
    ) -> Optional[grpc.RpcMethodHandler]:
        handler = continuation(details)
        token = self._fake.required_token
        if handler is None or token is None:
            return handler
        sent = dict(details.invocation_metadata or ()).get("authorization")
        if sent == f"Bearer {token}":
            return handler

        def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

        kind = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return kind(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

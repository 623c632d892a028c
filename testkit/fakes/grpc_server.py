"""A plaintext local gRPC server built from generic handlers (no generated stubs: proto-plus
messages bring their own `serialize`/`deserialize`). Base of the Google Speech and TTS fakes."""

from __future__ import annotations

import argparse
import threading
from concurrent import futures
from typing import Any

import grpc


class GrpcFake:
    service = ""  # e.g. "google.cloud.speech.v1.Speech"
    emulator_variable = ""  # the setting that points the app here

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, workers: int = 64):
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fake-grpc"))
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

"""Blocking drivers made cooperative under gunicorn's gevent worker.

The gevent worker monkey-patches the standard library before it imports the app, but psycopg2 has
its own C-level I/O: without this a PostgreSQL query would block every other call on the worker.
gRPC is switched to gevent lazily, just before the first Google channel is made
(`providers.google_credentials.make_grpc_cooperative`), so a worker that never talks to Google
doesn't pay for gRPC's gevent poller. Outside gevent (tests, the CLI) this does nothing.
"""
from __future__ import annotations


def make_io_cooperative() -> None:
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()

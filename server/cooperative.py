"""Blocking drivers made cooperative under gunicorn's gevent worker.

The gevent worker monkey-patches the standard library before it imports the app, but psycopg2 and
gRPC have their own C-level I/O: without these calls a PostgreSQL query or a Google stream would
block every other call on the worker. Outside gevent (tests, the CLI) this does nothing.
"""
from __future__ import annotations


def make_io_cooperative() -> None:
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    from server.providers.google_credentials import make_grpc_cooperative

    make_grpc_cooperative()

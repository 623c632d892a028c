"""Blocking drivers made cooperative under gunicorn's gevent worker, and the one way to start
background work in the process.

The gevent worker monkey-patches the standard library before it imports the app, but psycopg2 has
its own C-level I/O: without this a PostgreSQL query would block every other call on the worker.
gRPC is switched to gevent lazily, just before the first Google channel is made
(`providers.google_credentials.make_grpc_cooperative`), so a worker that never talks to Google
doesn't pay for gRPC's gevent poller. Outside gevent (tests, the CLI) none of this is needed.

Background work that waits on I/O (a provider's stream reader, the console's event poller) starts
with `start_background`: a gevent greenlet on the hub in the gevent worker. A blocking C call that
must stay off the hub gets a real OS thread of its own, where it is made (gevent's `ThreadPool`,
see `server.db.offhub` and `server.voice.store`), never here.
"""

from __future__ import annotations

import threading
from typing import Callable

import gevent
from gevent import monkey


def make_io_cooperative() -> None:
    if not monkey.is_module_patched("socket"):
        return
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()


def gevent_patched() -> bool:
    """True in a process gevent has patched (gunicorn's gevent worker): its sockets, locks and
    queues yield to the hub instead of blocking the OS thread."""
    return monkey.is_module_patched("socket") and monkey.is_module_patched("threading")


def start_background(target: Callable[[], None], name: str) -> Callable[[], bool]:
    """Run `target()` beside the caller, which goes on at once; returns a check of whether it still runs.

    In a gevent-patched process it is a greenlet: its waits (sockets, gRPC made cooperative, the
    standard library's locks and queues, all patched) yield to the hub like every other greenlet's.
    Without gevent (tests, the CLI) there is no hub to yield to, so it is an OS thread, and a
    blocking read in it never holds up the caller. Either way the standard library's `queue` and
    `threading` primitives are the ones to share with it.
    """
    if gevent_patched():
        greenlet = gevent.spawn(target)
        greenlet.name = name
        return lambda: not greenlet.dead
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread.is_alive

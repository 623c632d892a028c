"""Password hashing (scrypt through Werkzeug) and bearer-token generation; tokens are stored hashed.

One scrypt hash costs ~120 ms of CPU and 32 MB. Under gunicorn's gevent worker every request and
every live call's audio shares one OS thread (the hub), so hashing there would stall them all: eight
concurrent wrong-password logins once pushed `/healthz` from 4 ms to a 1.9 s median. Hashing and
checking therefore run in a small pool of real OS threads (`hashlib.scrypt` releases the GIL), and
the calling greenlet waits cooperatively. The pool is small on purpose: each hash in flight holds
32 MB, and more threads than cores would only queue inside the kernel instead of here.

Off the hub is not enough when the CPU itself is short: hashing threads would still take the core
the hub needs for the calls' audio. So they run at the lowest CPU priority (Linux: per-thread
nice 19), using only what the calls leave; and at most `MAX_IN_FLIGHT` hashes may wait or run at
once, beyond which a sign-in is refused at once (503 `sign_in_busy`) instead of queueing, holding
its database connection, behind a flood.

An unknown account (or one without a usable hash) is checked against a dummy hash of the same
cost, so the time a login takes doesn't tell which e-mail addresses have accounts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import threading
from typing import Any, Callable, Optional, TypeVar

from werkzeug.security import check_password_hash, generate_password_hash

from server.db.offhub import OffHub
from server.errors import DomainError, Problem

T = TypeVar("T")
TOKEN_PREFIX = "al_"
HASH_METHOD = "scrypt"
HASH_THREADS = 2
MAX_IN_FLIGHT = 4 * HASH_THREADS
LOWEST_PRIORITY = 19
_USABLE_METHODS = ("scrypt:", "pbkdf2:")  # the methods Werkzeug checks; anything else can't match

_hashing = OffHub(threads=HASH_THREADS)
_in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)  # cooperative under gevent's patching
_dummy_hash: Optional[str] = None


def hash_password(password: str) -> str:
    return _off_the_hub(generate_password_hash, password, HASH_METHOD)


def verify_password(password_hash: Optional[str], password: str) -> bool:
    """True if `password` matches `password_hash`. Without a usable hash the dummy one is checked
    (and False answered), so both cases take the same time."""
    if not password_hash or not password_hash.startswith(_USABLE_METHODS):
        _off_the_hub(check_password_hash, dummy_hash(), password)
        return False
    return _off_the_hub(check_password_hash, password_hash, password)


def _off_the_hub(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a low-priority hashing thread when called on the gevent hub; else right here
    (tests, the CLI, a job's thread: only the caller waits)."""
    if not _hashing.offloads_here():
        return fn(*args)
    if not _in_flight.acquire(blocking=False):
        raise DomainError(
            Problem.UNAVAILABLE, "sign_in_busy", "too many sign-ins at once; try again in a moment", retry_after=1
        )
    try:
        return _hashing.run(_at_lowest_priority, fn, args)
    finally:
        _in_flight.release()


def _at_lowest_priority(fn: Callable[..., T], args: tuple) -> T:
    if sys.platform.startswith("linux"):  # there a thread's id names it to setpriority (nice is per thread)
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        except OSError:
            pass
    return fn(*args)


def dummy_hash() -> str:
    """A hash of a random password with the same method and cost as real ones (made once per process)."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    return _dummy_hash


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

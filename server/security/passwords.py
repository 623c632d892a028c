"""Password hashing (scrypt through Werkzeug) and bearer-token generation; tokens are stored hashed.

One scrypt hash costs ~120 ms of CPU and 32 MB. Under gunicorn's gevent worker every request and
every live call's audio shares one OS thread (the hub), so hashing there would stall them all: eight
concurrent wrong-password logins once pushed `/healthz` from 4 ms to a 1.9 s median. Hashing and
checking therefore run in a small pool of real OS threads (`hashlib.scrypt` releases the GIL), and
the calling greenlet waits cooperatively. The pool is small on purpose: each hash in flight holds
32 MB, and more threads than cores would only queue inside the kernel instead of here.

An unknown account (or one without a usable hash) is checked against a dummy hash of the same
cost, so the time a login takes doesn't tell which e-mail addresses have accounts.
"""
from __future__ import annotations

import hashlib
import secrets
from typing import Optional

from werkzeug.security import check_password_hash, generate_password_hash

from server.db.offhub import OffHub

TOKEN_PREFIX = "al_"
HASH_METHOD = "scrypt"
HASH_THREADS = 2
_USABLE_METHODS = ("scrypt:", "pbkdf2:")  # the methods Werkzeug checks; anything else can't match

_hashing = OffHub(threads=HASH_THREADS)
_dummy_hash: Optional[str] = None


def hash_password(password: str) -> str:
    return _hashing.run(generate_password_hash, password, HASH_METHOD)


def verify_password(password_hash: Optional[str], password: str) -> bool:
    """True if `password` matches `password_hash`. Without a usable hash the dummy one is checked
    (and False answered), so both cases take the same time."""
    if not password_hash or not password_hash.startswith(_USABLE_METHODS):
        _hashing.run(check_password_hash, dummy_hash(), password)
        return False
    return _hashing.run(check_password_hash, password_hash, password)


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

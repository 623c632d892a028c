"""Sign-in rate limits that hold across workers and instances.

The counting is the `limits` library's fixed-window strategy. Its counters live in Redis when
`REDIS_URL` is set (the library's own Redis storage), otherwise in the application's database
(`SqlWindowStorage` below: one row per window, bumped by a single atomic
`INSERT … ON CONFLICT DO UPDATE … RETURNING`, the same statement on SQLite and PostgreSQL). Either
way every gunicorn worker and every instance counts against the same window; a counter in process
memory would give each worker the whole allowance.

A try is counted before its password is checked, so a burst of concurrent tries can't all slip in
under the limit, and a refused try costs no hashing. The address is counted first: a try it
refuses is not counted against the account, so a single noisy address locks nobody out.
Identifiers are hashed before they become keys, so neither store holds addresses or e-mails.

If Redis can't be reached the try is let through (and logged): a Redis outage must not lock every
member of staff out, and each try still costs an attacker a full password hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import math
import time
from typing import Iterable, Iterator, Optional, cast

import sqlalchemy as sa
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.dialects import postgresql, sqlite

from server.db.models import RateLimitWindow
from server.errors import DomainError, Problem

log = logging.getLogger("agentlocator.rate_limits")

REDIS_KEY_PREFIX = "agentlocator:limits"
REDIS_TIMEOUT_SECONDS = 2.0
PRUNE_EVERY_SECONDS = 300.0
SQLITE_LOCK_WAIT_MS = 250
_WINDOWS = cast(sa.Table, RateLimitWindow.__table__)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class SqlWindowStorage(Storage):
    """`limits` storage for fixed windows in the `rate_limit_windows` table (no moving windows).

    Each write is one statement in autocommit on a connection of its own: the count survives the
    request's rollback (a refused login is an error answer), and on SQLite the statement and its
    commit are one trip to the database's writer threads, never a lock held while waiting for a
    second trip (with more writers than threads, that wait would last until the busy timeout)."""

    STORAGE_SCHEME = None  # made with an engine, never looked up by URL

    def __init__(self, engine: sa.Engine):
        super().__init__()
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._next_prune = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return sa.exc.SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        expired = _WINDOWS.c.expires_at <= now
        insert = self._insert(_WINDOWS).values(key=_digest(key), hits=amount, expires_at=now + expiry)
        upsert = insert.on_conflict_do_update(
            index_elements=[_WINDOWS.c.key],
            set_={
                "hits": sa.case((expired, amount), else_=_WINDOWS.c.hits + amount),
                "expires_at": sa.case((expired, now + expiry), else_=_WINDOWS.c.expires_at),
            },
        ).returning(_WINDOWS.c.hits)
        with self._autocommit() as conn:
            hits = conn.execute(upsert).scalar_one()
            if now >= self._next_prune:  # windows that ended long ago are dead rows; drop them now and then
                self._next_prune = now + PRUNE_EVERY_SECONDS
                conn.execute(sa.delete(_WINDOWS).where(_WINDOWS.c.expires_at < now - PRUNE_EVERY_SECONDS))
        return hits

    @contextlib.contextmanager
    def _autocommit(self) -> Iterator[sa.Connection]:
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.dialect.name != "sqlite":
                yield conn
                return
            # A count shares SQLite's few writer threads with the live calls' writes; behind another
            # writer's lock it gives up soon (503 database_busy) instead of holding a thread for the
            # whole busy timeout, so a login flood can't make the calls' writes queue.
            previous = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_LOCK_WAIT_MS}")
            try:
                yield conn
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={int(previous or 0)}")

    def get(self, key: str) -> int:
        with self._engine.connect() as conn:
            hits = conn.scalar(
                sa.select(_WINDOWS.c.hits).where(_WINDOWS.c.key == _digest(key), _WINDOWS.c.expires_at > time.time())
            )
        return hits or 0

    def get_expiry(self, key: str) -> float:
        with self._engine.connect() as conn:
            expires_at = conn.scalar(sa.select(_WINDOWS.c.expires_at).where(_WINDOWS.c.key == _digest(key)))
        return expires_at if expires_at is not None else time.time()

    def check(self) -> bool:
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True

    def reset(self) -> Optional[int]:
        with self._autocommit() as conn:
            return conn.execute(sa.delete(_WINDOWS)).rowcount

    def clear(self, key: str) -> None:
        with self._autocommit() as conn:
            conn.execute(sa.delete(_WINDOWS).where(_WINDOWS.c.key == _digest(key)))


def make_storage(redis_url: str, engine: sa.Engine) -> Storage:
    """Redis when `redis_url` is set, else the database."""
    if not redis_url:
        return SqlWindowStorage(engine)
    url = "redis+unix://" + redis_url.removeprefix("unix://") if redis_url.startswith("unix://") else redis_url
    return RedisStorage(
        url,
        key_prefix=REDIS_KEY_PREFIX,
        wrap_exceptions=True,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )


def client_address(remote_addr: Optional[str], forwarded_for: Optional[str], trusted_hops: int) -> str:
    """The address a request came from. Behind `trusted_hops` proxies that each append to
    `X-Forwarded-For`, it is the entry that many places from the right; anything further left was
    written by the client and proves nothing. Without trusted proxies the header is ignored."""
    if trusted_hops and forwarded_for:
        entries = [part.strip() for part in forwarded_for.split(",") if part.strip()]
        if entries:
            return entries[-min(trusted_hops, len(entries))]
    return remote_addr or ""


def address_bucket(address: str) -> str:
    """The unit an address is counted in: an IPv4 address, or the /64 an IPv6 address belongs to
    (one subscriber gets a whole /64, so single IPv6 addresses would cost an attacker nothing)."""
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return "other:" + address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class LoginLimiter:
    """Counts sign-in tries per address and per account; `hit` raises 429 `rate_limited` (with
    `retry_after` seconds) for a try over a limit."""

    def __init__(self, storage: Storage, per_address: str, per_account: str):
        self._limiter = FixedWindowRateLimiter(storage)
        self._per_address = parse_many(per_address)
        self._per_account = parse_many(per_account)

    @classmethod
    def from_settings(cls, settings, engine: sa.Engine) -> "LoginLimiter":
        return cls(
            make_storage(settings.redis_url, engine), settings.login_limit_per_address, settings.login_limit_per_account
        )

    def hit(self, address: str, account: str) -> None:
        """Count a sign-in try from `address` for the e-mail `account` (known or not)."""
        self._count("login-address", self._per_address, address_bucket(address))
        self._count("login-account", self._per_account, account.strip().lower())

    def hit_account(self, account: str) -> None:
        """Count a password check for `account` alone (a signed-in user proving their password)."""
        self._count("login-account", self._per_account, account.strip().lower())

    def _count(self, scope: str, items: Iterable[RateLimitItem], identifier: str) -> None:
        key = _digest(identifier)
        for item in items:
            try:
                allowed = self._limiter.hit(item, scope, key)
            except StorageError as exc:
                log.error(
                    "rate limit store unreachable; try let through",
                    extra={"event": "rate_limit_store_error", "error": type(exc.storage_error).__name__},
                )
                return
            if not allowed:
                raise DomainError(
                    Problem.RATE_LIMITED,
                    "rate_limited",
                    "too many sign-in attempts; try again later",
                    retry_after=self._retry_after(item, scope, key),
                )

    def _retry_after(self, item: RateLimitItem, scope: str, key: str) -> int:
        try:
            reset_at = self._limiter.get_window_stats(item, scope, key).reset_time
        except StorageError:
            return item.get_expiry()
        return max(1, math.ceil(reset_at - time.time()))

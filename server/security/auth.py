"""Bearer tokens, roles and tenant scoping, without HTTP.

`authenticate()` turns the request's credentials (the `Authorization` and `X-Business-Id` header
values, handed in by the route layer's `require_auth`) into the user and the business they act
for. Every query of a business's data goes through `scoped()` / `get_owned()` with that business,
so another business's object is a 404, never a leak. `admin` users (support) may act for any
business by sending `X-Business-Id`.

Tokens expire (`TokenPolicy`): every token `TOKEN_TTL_DAYS` after it was made, and a console
session also after `SESSION_IDLE_MINUTES` without use (sliding: each use pushes it on). A disabled
user's tokens stop working at once. Signing in is rate-limited per address and per account before
any password is checked (`server.security.rate_limits`), and an unknown e-mail costs the same hash
as a known one.

Who manages whom: owners manage agents; only admins manage owners (and admins).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Optional, Type, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db.models import ApiToken, Business, User, utcnow
from server.errors import DomainError, Problem
from server.security.passwords import new_token, token_digest, verify_password
from server.security.rate_limits import LoginLimiter
from server.security.sessions import SESSION_IDLE, SESSION_TOKEN_NAME

log = logging.getLogger("agentlocator.auth")
ROLES = ("agent", "owner", "admin")
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns: a larger number names no row
_RANK = {role: rank for rank, role in enumerate(ROLES)}
M = TypeVar("M")


# Tokens made by signing in (a console session, or POST /api/auth/login), as opposed to API tokens
# an owner made on purpose: a new password ends the former only.
SIGN_IN_TOKEN_NAMES = (SESSION_TOKEN_NAME, "login")


@dataclass(frozen=True)
class TokenPolicy:
    """How long tokens work: any token for `ttl` after it was made (None: no limit), and a console
    session only while it is used at least every `session_idle`."""

    ttl: Optional[timedelta] = timedelta(days=90)
    session_idle: timedelta = SESSION_IDLE

    @classmethod
    def from_settings(cls, settings: Any) -> "TokenPolicy":
        return cls(
            ttl=timedelta(days=settings.token_ttl_days) if settings.token_ttl_days else None,
            session_idle=timedelta(minutes=settings.session_idle_minutes),
        )

    def expires_at(self, token: ApiToken) -> Optional[datetime]:
        """When the token stops working whatever its use (a session may stop sooner, when idle)."""
        return token.created_at + self.ttl if self.ttl is not None else None

    def expired(self, token: ApiToken, now: datetime) -> bool:
        ends = self.expires_at(token)
        if ends is not None and now >= ends:
            return True
        return token.name == SESSION_TOKEN_NAME and now - (token.last_used_at or token.created_at) > self.session_idle


def issue_token(session: Session, user: User, name: str = "", *, created_by: Optional[User] = None) -> str:
    """Create a bearer token for `user`, made by `created_by` (None: the operator's CLI); only its
    digest is stored, so show it to the user once."""
    token = new_token()
    session.add(
        ApiToken(
            user_id=user.id,
            token_hash=token_digest(token),
            name=name,
            created_by_user_id=created_by.id if created_by is not None else None,
        )
    )
    session.flush()
    return token


def check_login_body(body: Mapping[str, Any]) -> tuple[str, str]:
    for field in ("email", "password"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise DomainError(Problem.INVALID, "invalid_field", f"{field} is required (a string)", field=field)
    return body["email"].strip().lower(), body["password"]


def login(
    session: Session, body: Mapping[str, Any], *, limiter: LoginLimiter, address: str, token_name: str = "login"
) -> tuple[str, User]:
    """Email and password → a new bearer token (named `token_name`) and its user. The try is
    counted against `address` and the account before anything is looked up."""
    email, password = check_login_body(body)
    limiter.hit(address, email)
    user = session.scalar(sa.select(User).where(User.email == email))
    # Nothing is written yet: end the read, so the database connection goes back to the pool while
    # the hash is checked on another thread (a queue of logins must not hold the connections every
    # call needs).
    session.commit()
    # An unknown e-mail is checked against a dummy hash: the answer takes as long either way.
    if not verify_password(user.password_hash if user is not None else None, password) or user is None:
        log.info("login refused", extra={"event": "login_refused"})
        raise DomainError(Problem.UNAUTHENTICATED, "invalid_credentials", "wrong email or password")
    if user.disabled_at is not None:  # said only to someone who knows the password
        raise DomainError(Problem.FORBIDDEN, "account_disabled", "this account has been disabled by the business owner")
    return issue_token(session, user, name=token_name, created_by=user), user


def token_in_use(session: Session, token: str, policy: TokenPolicy) -> Optional[tuple[ApiToken, User]]:
    """The token's row and its user, if it works: known, not revoked, not expired, user enabled."""
    row = session.scalar(
        sa.select(ApiToken).where(ApiToken.token_hash == token_digest(token), ApiToken.revoked_at.is_(None))
    )
    if row is None or policy.expired(row, utcnow()):
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        return None
    return row, user


def user_for_token(session: Session, token: str, policy: TokenPolicy = TokenPolicy()) -> Optional[User]:
    found = token_in_use(session, token, policy)
    if found is None:
        return None
    _record_use(found[0])
    return found[1]


def _record_use(row: ApiToken) -> None:
    # At most once a minute keeps an ordinary GET from becoming a write transaction (and slides a
    # console session's idle limit on).
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now


def may_manage(actor: User, role: str) -> bool:
    """Whether `actor` may create, disable, reset or mint tokens for a user with `role`: owners
    manage agents, admins everyone."""
    return actor.role == "admin" or (actor.role == "owner" and role == "agent")


def check_role(role: str) -> str:
    """`role` if it is one of ROLES (a typo in a route's declaration fails at import, not per request)."""
    if role not in _RANK:
        raise ValueError(f"unknown role {role!r}")
    return role


def authenticate(
    session: Session, authorization: str, acting_for: Optional[str], role: str, policy: TokenPolicy = TokenPolicy()
) -> tuple[User, int]:
    """The user behind `Authorization: Bearer <token>`, if their role is at least `role` (agent <
    owner < admin), and the business they act for: their own, or for an admin the one named by
    `X-Business-Id` (`acting_for`)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError(Problem.UNAUTHENTICATED, "unauthorized", "send Authorization: Bearer <token>")
    found = token_in_use(session, token.strip(), policy)
    if found is None:
        raise DomainError(Problem.UNAUTHENTICATED, "unauthorized", "the token is unknown, revoked or expired")
    row, user = found
    if _RANK.get(user.role, -1) < _RANK[check_role(role)]:
        raise DomainError(Problem.FORBIDDEN, "forbidden", f"this needs the {role} role")
    business_id = _acting_business_id(session, user, acting_for)
    # Last, so the request's session holds no pending write while the route still looks things up.
    _record_use(row)
    return user, business_id


def _acting_business_id(session: Session, user: User, requested: Optional[str]) -> int:
    if not requested or user.role != "admin":
        return user.business_id
    # ASCII digits only ("²" and "٣" pass `isdigit` but not `int`), and few enough for `int` to take
    if (
        not requested.isascii()
        or not requested.isdigit()
        or len(requested) > len(str(MAX_ID))
        or not 1 <= int(requested) <= MAX_ID
        or session.get(Business, int(requested)) is None
    ):
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such business")
    return int(requested)


def scoped(model: Type[M], business_id: int) -> sa.Select:
    """`SELECT model WHERE business_id = business_id`."""
    columns: Any = model  # every model scoped by business has a business_id column
    return sa.select(model).where(columns.business_id == business_id)


def get_owned(
    session: Session, model: Type[M], business_id: int, object_id: Any, *, column: str = "id", for_update: bool = False
) -> M:
    """The business's object, or a 404 (also for another business's object, and for an id no row can
    have). `for_update` locks the row until commit and reads it once locked."""
    name = cast(Any, model).__tablename__.rstrip("s")
    if column == "id" and (
        isinstance(object_id, bool) or not isinstance(object_id, int) or not 1 <= object_id <= MAX_ID
    ):
        raise DomainError(Problem.NOT_FOUND, "not_found", f"no such {name}")
    stmt = scoped(model, business_id).where(getattr(model, column) == object_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    obj = session.scalar(stmt)
    if obj is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", f"no such {name}")
    return obj

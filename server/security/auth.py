"""Bearer tokens, roles and tenant scoping, without HTTP.

`authenticate()` turns the request's credentials (the `Authorization` and `X-Business-Id` header
values, handed in by the route layer's `require_auth`) into the user and the business they act
for. Every query of a business's data goes through `scoped()` / `get_owned()` with that business,
so another business's object is a 404, never a leak. `admin` users (support) may act for any
business by sending `X-Business-Id`.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Mapping, Optional, Type, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db.models import ApiToken, Business, User, utcnow
from server.errors import DomainError, Problem
from server.security.passwords import new_token, token_digest, verify_password
from server.security.sessions import SESSION_IDLE, SESSION_TOKEN_NAME

log = logging.getLogger("agentlocator.auth")
ROLES = ("agent", "owner", "admin")
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns: a larger number names no row
_RANK = {role: rank for rank, role in enumerate(ROLES)}
M = TypeVar("M")


def issue_token(session: Session, user: User, name: str = "") -> str:
    """Create a bearer token for `user`; only its digest is stored, so show it to the user once."""
    token = new_token()
    session.add(ApiToken(user_id=user.id, token_hash=token_digest(token), name=name))
    session.flush()
    return token


def login(session: Session, body: Mapping[str, Any], *, token_name: str = "login") -> tuple[str, User]:
    """Email and password → a new bearer token (named `token_name`) and its user."""
    for field in ("email", "password"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise DomainError(Problem.INVALID, "invalid_field", f"{field} is required (a string)", field=field)
    user = session.scalar(sa.select(User).where(User.email == body["email"].strip().lower()))
    if user is None or not verify_password(user.password_hash, body["password"]):
        log.info("login refused", extra={"event": "login_refused"})
        raise DomainError(Problem.UNAUTHENTICATED, "invalid_credentials", "wrong email or password")
    if user.disabled_at is not None:  # said only to someone who knows the password
        raise DomainError(Problem.FORBIDDEN, "account_disabled", "this account has been disabled by the business owner")
    return issue_token(session, user, name=token_name), user


def user_for_token(session: Session, token: str) -> Optional[User]:
    row = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == token_digest(token),
                                                   ApiToken.revoked_at.is_(None)))
    if row is None:
        return None
    now = utcnow()
    if row.name == SESSION_TOKEN_NAME and now - (row.last_used_at or row.created_at) > SESSION_IDLE:
        return None  # a console session left unused too long has expired
    user = session.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        return None
    # Recording use at most once a minute keeps an ordinary GET from becoming a write transaction.
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return user


def check_role(role: str) -> str:
    """`role` if it is one of ROLES (a typo in a route's declaration fails at import, not per request)."""
    if role not in _RANK:
        raise ValueError(f"unknown role {role!r}")
    return role


def authenticate(session: Session, authorization: str, acting_for: Optional[str], role: str) -> tuple[User, int]:
    """The user behind `Authorization: Bearer <token>`, if their role is at least `role` (agent <
    owner < admin), and the business they act for: their own, or for an admin the one named by
    `X-Business-Id` (`acting_for`)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError(Problem.UNAUTHENTICATED, "unauthorized", "send Authorization: Bearer <token>")
    user = user_for_token(session, token.strip())
    if user is None:
        raise DomainError(Problem.UNAUTHENTICATED, "unauthorized", "the token is unknown or revoked")
    if _RANK.get(user.role, -1) < _RANK[check_role(role)]:
        raise DomainError(Problem.FORBIDDEN, "forbidden", f"this needs the {role} role")
    return user, _acting_business_id(session, user, acting_for)


def _acting_business_id(session: Session, user: User, requested: Optional[str]) -> int:
    if not requested or user.role != "admin":
        return user.business_id
    # ASCII digits only ("²" and "٣" pass `isdigit` but not `int`), and few enough for `int` to take
    if not requested.isascii() or not requested.isdigit() or len(requested) > len(str(MAX_ID)) \
            or not 1 <= int(requested) <= MAX_ID or session.get(Business, int(requested)) is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such business")
    return int(requested)


def scoped(model: Type[M], business_id: int) -> sa.Select:
    """`SELECT model WHERE business_id = business_id`."""
    return sa.select(model).where(model.business_id == business_id)


def get_owned(session: Session, model: Type[M], business_id: int, object_id: Any, *, column: str = "id",
              for_update: bool = False) -> M:
    """The business's object, or a 404 (also for another business's object, and for an id no row can
    have). `for_update` locks the row until commit and reads it once locked."""
    name = model.__tablename__.rstrip("s")
    if column == "id" and (isinstance(object_id, bool) or not isinstance(object_id, int)
                           or not 1 <= object_id <= MAX_ID):
        raise DomainError(Problem.NOT_FOUND, "not_found", f"no such {name}")
    stmt = scoped(model, business_id).where(getattr(model, column) == object_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    obj = session.scalar(stmt)
    if obj is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", f"no such {name}")
    return obj

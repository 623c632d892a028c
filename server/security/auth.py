"""Bearer-token auth, roles and tenant scoping.

`@require_auth(role=…)` puts `g.user` and `g.business_id` on the request. Every query of a
business's data goes through `scoped()` / `get_owned()`, so another business's object is a 404,
never a leak. `admin` users (support) may act for any business by sending `X-Business-Id`.
"""
from __future__ import annotations

import functools
from datetime import timedelta, timezone
from typing import Any, Callable, Optional, Type, TypeVar

import sqlalchemy as sa
from flask import g, request
from sqlalchemy.orm import Session

from server.db.models import ApiToken, Business, User, utcnow
from server.security.passwords import new_token, token_digest
from server.web import ApiError

ROLES = ("agent", "owner", "admin")
LAST_USED_RESOLUTION = timedelta(minutes=1)
_RANK = {role: rank for rank, role in enumerate(ROLES)}
M = TypeVar("M")


def issue_token(session: Session, user: User, name: str = "") -> str:
    """Create a bearer token for `user`; only its digest is stored, so show it to the user once."""
    token = new_token()
    session.add(ApiToken(user_id=user.id, token_hash=token_digest(token), name=name))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> Optional[User]:
    row = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == token_digest(token),
                                                   ApiToken.revoked_at.is_(None)))
    if row is None:
        return None
    now = utcnow()
    last = row.last_used_at
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)  # SQLite hands back naive datetimes
    # Recording use at most once a minute keeps an ordinary GET from becoming a write transaction.
    if last is None or now - last > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return session.get(User, row.user_id)


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    return token.strip()


def _acting_business_id(session: Session, user: User) -> int:
    requested = request.headers.get("X-Business-Id")
    if not requested or user.role != "admin":
        return user.business_id
    if not requested.isdigit() or session.get(Business, int(requested)) is None:
        raise ApiError(404, "not_found", "no such business")
    return int(requested)


def require_auth(role: str = "agent") -> Callable:
    """Allow the view to users whose role is at least `role` (agent < owner < admin)."""
    if role not in _RANK:
        raise ValueError(f"unknown role {role!r}")

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any):
            from server.routes import db_session  # late: routes import this module

            session = db_session()
            user = user_for_token(session, _bearer_token())
            if user is None:
                raise ApiError(401, "unauthorized", "the token is unknown or revoked")
            if _RANK.get(user.role, -1) < _RANK[role]:
                raise ApiError(403, "forbidden", f"this needs the {role} role")
            g.user = user
            g.business_id = _acting_business_id(session, user)
            return view(*args, **kwargs)

        wrapped.required_role = role  # read by the OpenAPI builder
        return wrapped

    return decorator


def scoped(model: Type[M]) -> sa.Select:
    """`SELECT model WHERE business_id = <the caller's business>`."""
    return sa.select(model).where(model.business_id == g.business_id)


def get_owned(session: Session, model: Type[M], object_id: Any, *, column: str = "id") -> M:
    """The caller's business's object, or a 404 (also for another business's object)."""
    obj = session.scalar(scoped(model).where(getattr(model, column) == object_id))
    if obj is None:
        raise ApiError(404, "not_found", f"no such {model.__tablename__.rstrip('s')}")
    return obj

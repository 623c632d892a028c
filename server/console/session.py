"""Signing in to the console and out again; what `/api/auth/me` tells the page about who is signed in."""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db.dao_crm import audit
from server.db.models import ApiToken, Business, User, utcnow
from server.errors import DomainError, Problem
from server.security import auth
from server.security.rate_limits import LoginLimiter
from server.security.sessions import SESSION_TOKEN_NAME


def sign_in(
    session: Session, body: Mapping[str, Any], *, limiter: LoginLimiter, address: str
) -> tuple[str, dict[str, Any]]:
    """Email and password → a new session token (for the cookie) and the session's description;
    limited like every sign-in (per `address` and per account)."""
    token, user = auth.login(session, body, limiter=limiter, address=address, token_name=SESSION_TOKEN_NAME)
    audit(session, user.business_id, f"user:{user.id}", "session.started", "user", user.id)
    return token, session_json(session, user, user.business_id)


def session_json(session: Session, user: User, business_id: int) -> dict[str, Any]:
    business = session.get(Business, business_id)
    if business is None:  # an admin acting for a business is checked first; a user's own always exists
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such business")
    return {
        "user": {"id": user.id, "email": user.email, "role": user.role},
        "business": {"id": business.id, "name": business.name, "time_zone": business.timezone},
    }


def sign_out(session: Session, user: User, business_id: int, token_digest: str) -> None:
    """Revoke the token this request came with (the session's, or a bearer token's)."""
    token = session.scalar(
        sa.select(ApiToken).where(
            ApiToken.token_hash == token_digest, ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)
        )
    )
    if token is not None:
        token.revoked_at = utcnow()
        audit(session, business_id, f"user:{user.id}", "session.ended", "user", user.id)

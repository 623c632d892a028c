"""The owner's user management beyond creating users: disabling an account and setting a new
password for someone who lost theirs. Owners manage agents and only admins manage owners
(`security.auth.may_manage`); nobody disables themselves (a business must not lock its last owner
out by a slip), and one's own password is changed with the current one (POST /api/auth/password)."""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.crm import serializers as out
from server.crm import validation as v
from server.crm.accounts import PASSWORD_MAX, PASSWORD_MIN
from server.db.dao_crm import audit
from server.db.models import ApiToken, User, utcnow
from server.errors import DomainError, Problem
from server.security.auth import SIGN_IN_TOKEN_NAMES, get_owned, may_manage
from server.security.passwords import hash_password


def _target(session: Session, business_id: int, actor: User, user_id: int) -> User:
    user = get_owned(session, User, business_id, user_id)
    if user.id != actor.id and not may_manage(actor, user.role):
        raise DomainError(Problem.FORBIDDEN, "forbidden", f"a {actor.role} can't change a {user.role}'s account")
    return user


def update_user(
    session: Session, business_id: int, actor: User, user_id: int, body: Mapping[str, Any]
) -> dict[str, Any]:
    """`{disabled: bool}`: a disabled user can't sign in, and their tokens and sessions stop working
    (enabling them again restores their API tokens; sessions are signed in anew)."""
    user = _target(session, business_id, actor, user_id)  # another business's user is a 404 whatever the body
    v.reject_unknown(body, ("disabled",))
    disabled = v.require(body, "disabled")
    if not isinstance(disabled, bool):
        raise v.invalid("disabled", "disabled must be true or false")
    if disabled and user.id == actor.id:
        raise DomainError(
            Problem.CONFLICT, "cannot_disable_self", "you can't disable your own account", field="disabled"
        )
    if disabled != (user.disabled_at is not None):
        user.disabled_at = utcnow() if disabled else None
        session.flush()
        audit(
            session, business_id, f"user:{actor.id}", "user.disabled" if disabled else "user.enabled", "user", user.id
        )
    return out.user_json(user)


def reset_password(session: Session, business_id: int, actor: User, user_id: int, body: Mapping[str, Any]) -> None:
    """Set `{password}` for the user and sign them out everywhere (their API tokens stay)."""
    user = _target(session, business_id, actor, user_id)
    if user.id == actor.id:
        raise DomainError(
            Problem.FORBIDDEN,
            "forbidden",
            "change your own password with POST /api/auth/password (it asks for the current one)",
        )
    v.reject_unknown(body, ("password",))
    password = v.require(body, "password")
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise v.invalid("password", f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    v.clean_text(password, "password", max_length=PASSWORD_MAX)
    user.password_hash = hash_password(password)
    now = utcnow()
    signed_in = session.scalars(
        sa.select(ApiToken).where(
            ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None), ApiToken.name.in_(SIGN_IN_TOKEN_NAMES)
        )
    ).all()
    for token in signed_in:
        token.revoked_at = now
    session.flush()
    audit(
        session, business_id, f"user:{actor.id}", "user.password_reset", "user", user.id, sessions_ended=len(signed_in)
    )

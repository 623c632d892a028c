"""A business's users and their API tokens (owner's work). Nobody grants a role above their own,
and a token is shown once, when it is created; only its digest is stored."""
from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.crm import serializers as out
from server.crm import validation as v
from server.db.dao_crm import audit
from server.db.models import ApiToken, User, utcnow
from server.errors import DomainError, Problem
from server.security.auth import ROLES, issue_token, scoped
from server.security.passwords import hash_password, token_digest

PASSWORD_MIN, PASSWORD_MAX, TOKEN_NAME_MAX = 8, 200, 100


def _outranks(actor: User, role: str) -> bool:
    return ROLES.index(role) > ROLES.index(actor.role)


def list_users(session: Session, business_id: int) -> dict[str, Any]:
    users = session.scalars(scoped(User, business_id).order_by(User.id)).all()
    return {"items": [out.user_json(u) for u in users]}


def create_user(session: Session, business_id: int, actor: User, body: Mapping[str, Any]) -> dict[str, Any]:
    v.reject_unknown(body, ("email", "password", "role"))
    email = v.email(v.require(body, "email"))
    if email is None:
        raise v.invalid("email", "email is required")
    password = v.require(body, "password")
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise v.invalid("password", f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    v.clean_text(password, "password", max_length=PASSWORD_MAX)
    role = v.choice(v.require(body, "role"), "role", ROLES)
    if _outranks(actor, role):
        raise DomainError(Problem.FORBIDDEN, "forbidden", f"a {actor.role} can't create a user with the {role} role",
                          field="role")
    if session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise DomainError(Problem.CONFLICT, "duplicate_email", "a user with this email already exists", field="email")
    user = User(business_id=business_id, email=email, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    audit(session, business_id, f"user:{actor.id}", "user.created", "user", user.id, role=role)
    return out.user_json(user)


def list_tokens(session: Session, business_id: int) -> dict[str, Any]:
    tokens = session.scalars(business_tokens(business_id).order_by(ApiToken.id)).all()
    return {"items": [out.token_json(t) for t in tokens]}


def create_token(session: Session, business_id: int, actor: User, body: Mapping[str, Any]) -> dict[str, Any]:
    """The new token, with its secret: shown this once."""
    v.reject_unknown(body, ("name", "user_id"))
    name = v.optional_text(body.get("name"), "name", max_length=TOKEN_NAME_MAX)
    user = actor
    if body.get("user_id") is not None:
        user_id = v.object_id(body["user_id"], "user_id")
        user = session.scalar(sa.select(User).where(User.id == user_id, User.business_id == business_id))
        if user is None:
            raise v.invalid("user_id", f"user {user_id} is not a user of this business")
        if _outranks(actor, user.role):
            raise DomainError(Problem.FORBIDDEN, "forbidden", f"a {actor.role} can't make a token for a {user.role}",
                              field="user_id")
    secret = issue_token(session, user, name=name)
    token = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == token_digest(secret)))
    audit(session, business_id, f"user:{actor.id}", "token.created", "token", token.id, user_id=user.id)
    return {**out.token_json(token), "token": secret}


def business_tokens(business_id: int) -> sa.Select:
    return sa.select(ApiToken).join(User, User.id == ApiToken.user_id).where(User.business_id == business_id)


def revoke_token(session: Session, business_id: int, actor: User, token_id: int) -> None:
    row = None
    if 1 <= token_id <= v.MAX_ID:
        row = session.execute(business_tokens(business_id).add_columns(User.role)
                              .where(ApiToken.id == token_id)).first()
    if row is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such token")
    token, owner_role = row
    if _outranks(actor, owner_role):
        raise DomainError(Problem.FORBIDDEN, "forbidden", f"a {actor.role} can't revoke a {owner_role}'s token")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
        audit(session, business_id, f"user:{actor.id}", "token.revoked", "token", token.id, user_id=token.user_id)

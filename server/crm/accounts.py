"""A business's users and their API tokens, and each user's own password and tokens.

Owners manage agents; only admins manage owners (`security.auth.may_manage`): an owner can't
create, mint a token for, or revoke the token of another owner. A token is shown once, when it is
created; only its digest is stored, with who made it, and its making is audited under that name.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.crm import serializers as out
from server.crm import validation as v
from server.db.dao_crm import audit
from server.db.models import ApiToken, User, utcnow
from server.errors import DomainError, Problem
from server.security.auth import ROLES, SIGN_IN_TOKEN_NAMES, TokenPolicy, issue_token, may_manage, scoped
from server.security.passwords import hash_password, token_digest, verify_password
from server.security.rate_limits import LoginLimiter

PASSWORD_MIN, PASSWORD_MAX, TOKEN_NAME_MAX = 8, 200, 100


def list_users(session: Session, business_id: int) -> dict[str, Any]:
    users = session.scalars(scoped(User, business_id).order_by(User.id)).all()
    return {"items": [out.user_json(u) for u in users]}


def staff_directory(session: Session, business_id: int) -> dict[str, Any]:
    """The business's staff for every role to read (agents see colleagues' names, not numbers);
    disabled users stay in it, since their messages and assignments still name them."""
    users = session.scalars(scoped(User, business_id).order_by(User.id)).all()
    return {"items": [out.staff_json(u) for u in users]}


def new_password(body: Mapping[str, Any], field: str) -> str:
    """The body's `field` as a new password: a string of PASSWORD_MIN to PASSWORD_MAX characters."""
    password = v.require(body, field)
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise v.invalid(field, f"{field} must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    v.clean_text(password, field, max_length=PASSWORD_MAX)
    return password


def create_user(session: Session, business_id: int, actor: User, body: Mapping[str, Any]) -> dict[str, Any]:
    v.reject_unknown(body, ("email", "password", "role"))
    email = v.email(v.require(body, "email"))
    if email is None:
        raise v.invalid("email", "email is required")
    password = new_password(body, "password")
    role = v.choice(v.require(body, "role"), "role", ROLES)
    if not may_manage(actor, role):
        raise DomainError(
            Problem.FORBIDDEN, "forbidden", f"a {actor.role} can't create a user with the {role} role", field="role"
        )
    if session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise DomainError(Problem.CONFLICT, "duplicate_email", "a user with this email already exists", field="email")
    user = User(business_id=business_id, email=email, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    audit(session, business_id, f"user:{actor.id}", "user.created", "user", user.id, role=role)
    return out.user_json(user)


def token_json(token: ApiToken, policy: TokenPolicy) -> dict[str, Any]:
    return {
        **out.token_json(token),
        "created_by_user_id": token.created_by_user_id,
        "expires_at": out.iso(policy.expires_at(token)),
    }


def list_tokens(session: Session, business_id: int, policy: TokenPolicy) -> dict[str, Any]:
    tokens = session.scalars(business_tokens(business_id).order_by(ApiToken.id)).all()
    return {"items": [token_json(t, policy) for t in tokens]}


def create_token(
    session: Session, business_id: int, actor: User, body: Mapping[str, Any], policy: TokenPolicy
) -> dict[str, Any]:
    """The new token, with its secret: shown this once."""
    v.reject_unknown(body, ("name", "user_id"))
    name = v.optional_text(body.get("name"), "name", max_length=TOKEN_NAME_MAX)
    user = actor
    if body.get("user_id") is not None:
        user_id = v.object_id(body["user_id"], "user_id")
        named = session.scalar(sa.select(User).where(User.id == user_id, User.business_id == business_id))
        if named is None:
            raise v.invalid("user_id", f"user {user_id} is not a user of this business")
        if named.id != actor.id and not may_manage(actor, named.role):
            raise DomainError(
                Problem.FORBIDDEN, "forbidden", f"a {actor.role} can't make a token for a {named.role}", field="user_id"
            )
        user = named
    secret = issue_token(session, user, name=name, created_by=actor)
    token = session.scalars(sa.select(ApiToken).where(ApiToken.token_hash == token_digest(secret))).one()
    audit(
        session,
        business_id,
        f"user:{actor.id}",
        "token.created",
        "token",
        token.id,
        user_id=user.id,
        created_by_user_id=actor.id,
        name=name,
    )
    return {**token_json(token, policy), "token": secret}


def business_tokens(business_id: int) -> sa.Select:
    return sa.select(ApiToken).join(User, User.id == ApiToken.user_id).where(User.business_id == business_id)


def revoke_token(session: Session, business_id: int, actor: User, token_id: int) -> None:
    row = None
    if 1 <= token_id <= v.MAX_ID:
        row = session.execute(
            business_tokens(business_id).add_columns(User.role).where(ApiToken.id == token_id)
        ).first()
    if row is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such token")
    token, owner_role = row
    if token.user_id != actor.id and not may_manage(actor, owner_role):
        raise DomainError(Problem.FORBIDDEN, "forbidden", f"a {actor.role} can't revoke a {owner_role}'s token")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
        audit(session, business_id, f"user:{actor.id}", "token.revoked", "token", token.id, user_id=token.user_id)


def revoke_own_token(session: Session, user: User, digest: str) -> None:
    """Revoke the token the request came with (`DELETE /api/auth/token`): a leaked or finished
    script's token ends itself without an owner's help."""
    token = session.scalar(
        sa.select(ApiToken).where(
            ApiToken.token_hash == digest, ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)
        )
    )
    if token is None:  # authenticated a moment ago, so only a concurrent revocation gets here
        return
    token.revoked_at = utcnow()
    session.flush()
    audit(session, user.business_id, f"user:{user.id}", "token.revoked", "token", token.id, user_id=user.id)


def change_own_password(
    session: Session, user: User, digest: str, body: Mapping[str, Any], limiter: LoginLimiter
) -> int:
    """`{current_password, new_password}` for the signed-in user. Proving the current password is
    counted like a sign-in try for the account, so a stolen session can't guess it at leisure.
    Ends the user's other sign-ins (sessions, login tokens), not the one in use nor API tokens;
    answers how many ended."""
    v.reject_unknown(body, ("current_password", "new_password"))
    current = v.require(body, "current_password")
    if not isinstance(current, str) or not current:
        raise v.invalid("current_password", "current_password is required (a string)")
    password = new_password(body, "new_password")
    limiter.hit_account(user.email)  # before any write: the count has a connection of its own
    if not verify_password(user.password_hash, current):
        raise v.invalid("current_password", "the current password is wrong")
    if password == current:
        raise v.invalid("new_password", "the new password must differ from the current one")
    user.password_hash = hash_password(password)
    ended = _end_sign_ins(session, user, keep_digest=digest)
    audit(session, user.business_id, f"user:{user.id}", "user.password_changed", "user", user.id, sessions_ended=ended)
    return ended


def _end_sign_ins(session: Session, user: User, *, keep_digest: Optional[str] = None) -> int:
    tokens = session.scalars(
        sa.select(ApiToken).where(
            ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None), ApiToken.name.in_(SIGN_IN_TOKEN_NAMES)
        )
    ).all()
    now = utcnow()
    ended = 0
    for token in tokens:
        if token.token_hash != keep_digest:
            token.revoked_at = now
            ended += 1
    session.flush()
    return ended

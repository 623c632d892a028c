"""`POST /api/auth/login`: email + password → a bearer token."""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, jsonify

from server.db.models import User
from server.routes import db_session
from server.security.auth import issue_token
from server.security.passwords import verify_password
from server.web import ApiError, json_body

bp = Blueprint("auth_api", __name__)
log = logging.getLogger("agentlocator.auth")


@bp.post("/api/auth/login")
def login():
    body = json_body()
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise ApiError(400, "invalid_request", "email and password are required strings")
    session = db_session()
    user = session.scalar(sa.select(User).where(User.email == email.strip().lower()))
    if user is None or not verify_password(user.password_hash, password):
        log.info("login refused", extra={"event": "login_refused"})
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    return jsonify(token=issue_token(session, user, name="login"), role=user.role, business_id=user.business_id)

"""Authentication over HTTP: `POST /api/auth/login` (email + password → a bearer token) and
`@require_auth(role)`, the guard of every other `/api/*` route.

The rules (tokens, roles, which business an admin acts for) live in `server.security.auth`; this
module only reads the headers, hands them over, and puts the answer on the request.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from flask import Blueprint, g, jsonify, request

from server.openapi import document, error_responses, json_response, obj, operation
from server.routes import db_session, settings
from server.security import auth, sessions
from server.security.passwords import token_digest
from server.web import json_body

bp = Blueprint("auth_api", __name__)


def require_auth(role: str = "agent") -> Callable:
    """Allow the view to users whose role is at least `role` (agent < owner < admin); puts `g.user`
    and `g.business_id` (the business the user acts for) on the request."""
    auth.check_role(role)

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any):
            authenticate_request(role)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def authenticate_request(role: str = "agent") -> None:
    """The bearer header, else the console's session cookie (with its CSRF rule) → `g.user`,
    `g.business_id` and `g.token_digest` (which token this request came with)."""
    authorization = request.headers.get("Authorization")
    cookie = request.cookies.get(sessions.COOKIE_NAME) if authorization is None else None
    if cookie:
        authorization = f"Bearer {cookie}"
    g.user, g.business_id = auth.authenticate(db_session(), authorization or "", request.headers.get("X-Business-Id"),
                                              role)
    if cookie:
        sessions.check_csrf(request.method, request.headers.get("Origin"), request.headers.get("Referer"),
                            sessions.own_origins(settings().public_base_url, request.host_url))
    g.token_digest = token_digest((authorization or "").partition(" ")[2].strip())


@bp.post("/api/auth/login")
def login():
    token, user = auth.login(db_session(), json_body())
    return jsonify(token=token, role=user.role, business_id=user.business_id)


document(bp, {"/api/auth/login": {"post": operation(
    "Log in with email and password; answers a bearer token", tags=["auth"], role=None,
    body=obj({"email": {"type": "string"}, "password": {"type": "string"}}, ["email", "password"]),
    responses={"200": json_response(obj({"token": {"type": "string"}, "role": {"type": "string"},
                                         "business_id": {"type": "integer"}}, ["token", "role", "business_id"])),
               **error_responses(400, 401)})}})

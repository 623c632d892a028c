"""Authentication over HTTP: `POST /api/auth/login` (email + password → a bearer token), a user's
own password and token (`POST /api/auth/password`, `DELETE /api/auth/token`), and
`@require_auth(role)`, the guard of every other `/api/*` route.

The rules (tokens and their expiry, roles, which business an admin acts for, sign-in limits) live
in `server.security.auth`; this module only reads the headers, hands them over, and puts the answer
on the request.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from flask import Blueprint, Response, g, jsonify, request

from server.crm import accounts
from server.openapi import document, error_responses, json_response, obj, operation
from server.routes import app_services, db_session, settings
from server.security import auth, sessions
from server.security.passwords import token_digest
from server.security.rate_limits import LoginLimiter, client_address
from server.web import json_body

bp = Blueprint("auth_api", __name__)


def token_policy() -> auth.TokenPolicy:
    """The app's token lifetimes (TOKEN_TTL_DAYS, SESSION_IDLE_MINUTES)."""
    state = app_services()
    if state.token_policy is None:
        state.token_policy = auth.TokenPolicy.from_settings(settings())
    return state.token_policy


def login_limiter() -> LoginLimiter:
    """The app's sign-in limiter; its counters are shared by every worker (Redis or the database)."""
    state = app_services()
    if state.login_limiter is None:
        state.login_limiter = LoginLimiter.from_settings(settings(), state.database.engine)
    return state.login_limiter


def request_address() -> str:
    """The client's address, through TRUSTED_PROXY_HOPS proxies' X-Forwarded-For."""
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), settings().trusted_proxy_hops)


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
    g.user, g.business_id = auth.authenticate(
        db_session(), authorization or "", request.headers.get("X-Business-Id"), role, token_policy()
    )
    if cookie:
        sessions.check_csrf(
            request.method,
            request.headers.get("Origin"),
            request.headers.get("Referer"),
            sessions.own_origins(settings().public_base_url, request.host_url),
        )
    g.token_digest = token_digest((authorization or "").partition(" ")[2].strip())


@bp.post("/api/auth/login")
def login():
    token, user = auth.login(db_session(), json_body(), limiter=login_limiter(), address=request_address())
    return jsonify(token=token, role=user.role, business_id=user.business_id)


@bp.post("/api/auth/password")
@require_auth()
def change_password():
    accounts.change_own_password(db_session(), g.user, g.token_digest, json_body(), login_limiter())
    return Response(status=204)


@bp.delete("/api/auth/token")
@require_auth()
def revoke_own_token():
    accounts.revoke_own_token(db_session(), g.user, g.token_digest)
    return Response(status=204)


_CREDENTIALS = obj({"email": {"type": "string"}, "password": {"type": "string"}}, ["email", "password"])
_RATE_LIMITED = json_response(
    {"$ref": "#/components/schemas/Error"},
    "Too many sign-in attempts from this address or for this account (rate_limited); "
    "the Retry-After header says in how many seconds to try again",
)
_BUSY = json_response(
    {"$ref": "#/components/schemas/Error"},
    "Too many sign-ins are being checked at once (sign_in_busy), or the database is busy "
    "(database_busy); try again in a moment",
)

document(
    bp,
    {
        "/api/auth/login": {
            "post": operation(
                "Log in with email and password; answers a bearer token",
                tags=["auth"],
                role=None,
                description="The token works for TOKEN_TTL_DAYS (default 90) and can be revoked with DELETE "
                "/api/auth/token. Tries are limited per client address and per account "
                "(LOGIN_LIMIT_PER_ADDRESS, LOGIN_LIMIT_PER_ACCOUNT), counted whether or not the "
                "account exists.",
                body=_CREDENTIALS,
                responses={
                    "200": json_response(
                        obj(
                            {
                                "token": {"type": "string"},
                                "role": {"type": "string"},
                                "business_id": {"type": "integer"},
                            },
                            ["token", "role", "business_id"],
                        )
                    ),
                    "429": _RATE_LIMITED,
                    "503": _BUSY,
                    **error_responses(400, 401, 403),
                },
            )
        },
        "/api/auth/password": {
            "post": operation(
                "Change your own password",
                tags=["auth"],
                description="Needs the current password (400 invalid_field on current_password when it is wrong; the "
                "tries count against the account's sign-in limit). Ends your other console sessions and "
                "login tokens; the token or session used here and your API tokens keep working.",
                body=obj(
                    {
                        "current_password": {"type": "string", "minLength": 1},
                        "new_password": {"type": "string", "minLength": 8, "maxLength": 200},
                    },
                    ["current_password", "new_password"],
                    closed=True,
                ),
                responses={
                    "204": {"description": "Changed"},
                    "429": _RATE_LIMITED,
                    "503": _BUSY,
                    **error_responses(400),
                },
            )
        },
        "/api/auth/token": {
            "delete": operation(
                "Revoke the token this request is made with",
                tags=["auth"],
                description="The bearer token (or console session) sent with this request stops working at once.",
                responses={"204": {"description": "Revoked"}},
            )
        },
    },
)

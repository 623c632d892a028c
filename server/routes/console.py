"""The staff console: its pages at `/app/` and its cookie session (`/api/auth/session`, `/api/auth/me`).

`/app/` and every path below it answer the single page (`static/app/index.html`); the page routes
itself from the address, so a reload or a shared link to `/app/inbox/12` works. Its scripts and
styles are plain files under `/static/app/`. The session is the `al_session` cookie
(`server.security.sessions`); every `/api/*` route also takes it in place of a bearer token.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, redirect, request, send_from_directory
from werkzeug.wrappers import Response as WerkzeugResponse

from server.config import PROJECT_ROOT
from server.console import session as console_session
from server.errors import DomainError, Problem
from server.openapi import document, error_responses, json_response, obj, operation, ref
from server.routes import db_session, settings
from server.routes.auth_api import authenticate_request, login_limiter, request_address, require_auth, token_policy
from server.security import sessions
from server.web import json_body

bp = Blueprint("console", __name__)
APP_DIR = PROJECT_ROOT / "static" / "app"
# Only our own files run or load; the page talks only to its own origin.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@bp.get("/app")
def app_root() -> WerkzeugResponse:
    return redirect("/app/", code=308)


@bp.get("/app/")
@bp.get("/app/<path:_path>")
def app_page(_path: str = "") -> WerkzeugResponse:
    response = send_from_directory(APP_DIR, "index.html", max_age=0)
    response.headers.update(
        {
            "Content-Security-Policy": PAGE_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-cache",
        }
    )
    return response


def _own_origins() -> set[str]:
    return sessions.own_origins(settings().public_base_url, request.host_url)


@bp.post("/api/auth/session")
def sign_in() -> Response:
    sessions.check_sign_in_origin(request.headers.get("Origin"), _own_origins())
    token, body = console_session.sign_in(db_session(), json_body(), limiter=login_limiter(), address=request_address())
    response = jsonify(body)
    response.set_cookie(
        sessions.COOKIE_NAME, token, **sessions.cookie_options(settings().public_base_url, token_policy().ttl)
    )
    return response


@bp.get("/api/auth/me")
@require_auth()
def me() -> Response:
    return jsonify(console_session.session_json(db_session(), g.user, g.business_id))


@bp.delete("/api/auth/session")
def sign_out() -> Response:
    try:
        authenticate_request()
    except DomainError as error:
        if error.problem is not Problem.UNAUTHENTICATED:
            raise  # a forged sign-out (csrf_failed) changes nothing
    else:
        console_session.sign_out(db_session(), g.user, g.business_id, g.token_digest)
    response = current_app.response_class(status=204)
    options = sessions.cookie_options(settings().public_base_url)
    response.delete_cookie(
        sessions.COOKIE_NAME,
        path=options["path"],
        secure=options["secure"],
        httponly=True,
        samesite=options["samesite"],
    )
    return response


_SESSION = obj(
    {
        "user": obj(
            {
                "id": {"type": "integer"},
                "email": {"type": "string"},
                "role": {"type": "string", "enum": ["agent", "owner", "admin"]},
                "name": {"type": "string"},
            },
            ["id", "email", "role"],
        ),
        "business": obj(
            {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "time_zone": {"type": "string", "description": "IANA, e.g. Asia/Jerusalem"},
            },
            ["id", "name", "time_zone"],
        ),
    },
    ["user", "business"],
)

OPENAPI_PATHS = {
    "/api/auth/session": {
        "post": operation(
            "Sign in to the console: sets the al_session cookie",
            tags=["auth"],
            role=None,
            description="The cookie is HttpOnly, SameSite=Lax, Path=/, Secure when PUBLIC_BASE_URL is https; every "
            "/api/* endpoint then takes it instead of a bearer token. A state-changing request "
            "(POST/PUT/PATCH/DELETE) authenticated by the cookie must carry an Origin (or Referer) of "
            "this service, else 403 csrf_failed. A sign-in sent with another site's Origin is refused "
            "the same way.",
            body=obj({"email": {"type": "string"}, "password": {"type": "string"}}, ["email", "password"]),
            responses={
                "200": json_response(_SESSION, "Signed in; Set-Cookie: al_session=…"),
                "429": json_response(
                    ref("Error"), "Too many sign-in attempts (rate_limited, as POST /api/auth/login); see Retry-After"
                ),
                "503": json_response(
                    ref("Error"), "Too many sign-ins being checked at once (sign_in_busy), or the database is busy"
                ),
                **error_responses(400, 401, 403),
            },
        ),
        "delete": operation(
            "Sign out: revokes the session's token and clears the cookie",
            tags=["auth"],
            role=None,
            description="Also answers 204 when the session had already ended.",
            responses={"204": {"description": "Signed out"}, **error_responses(403)},
        ),
    },
    "/api/auth/me": {
        "get": operation(
            "Who is signed in, and for which business",
            tags=["auth"],
            description="401 once the session is revoked or expired (the console then returns to sign-in).",
            responses={"200": json_response(_SESSION)},
        )
    },
}
document(bp, OPENAPI_PATHS)

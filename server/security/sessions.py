"""The staff console's cookie session and its CSRF rule, without HTTP (the route layer hands in the
request's values).

A console session is an ordinary token of the token store, named `console session`, carried in
the `al_session` cookie: HttpOnly (page scripts can't read it), SameSite=Lax (other sites' pages
don't send it with their POSTs), Secure when the service is public over https. Signing out revokes
the token; a session unused for `SESSION_IDLE_MINUTES` (sliding: each use pushes the limit on), or
older than `TOKEN_TTL_DAYS`, is refused like a revoked one (`server.security.auth.TokenPolicy`).

A browser attaches the cookie to any request to this origin, including one a hostile page makes
it send, so a state-changing request (POST, PUT, PATCH, DELETE) authenticated by the cookie must
come from our own pages: its `Origin` (or, without one, its `Referer`) must be this service's own
origin. A bearer token is never attached by a browser on its own, so bearer requests need no check.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Iterable, Optional
from urllib.parse import urlsplit

from server.errors import DomainError, Problem

COOKIE_NAME = "al_session"
SESSION_TOKEN_NAME = "console session"
SESSION_IDLE = timedelta(minutes=720)  # unused this long: signed out (SESSION_IDLE_MINUTES's default)
COOKIE_MAX_AGE = timedelta(days=90)  # TOKEN_TTL_DAYS's default: no session outlives it
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: Optional[str]) -> Optional[str]:
    """`scheme://host[:port]` of an absolute http(s) URL, lower-cased, default port dropped; else None."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def own_origins(public_base_url: str, host_url: str) -> set[str]:
    """This service's origins: the public one (`PUBLIC_BASE_URL`) and the one the request was made to."""
    return {origin for origin in (origin_of(public_base_url), origin_of(host_url)) if origin}


def check_csrf(method: str, origin: Optional[str], referer: Optional[str], allowed: Iterable[str]) -> None:
    """Refuse (403 `csrf_failed`) a cookie-authenticated state-changing request from elsewhere."""
    if method.upper() not in STATE_CHANGING:
        return
    source = origin_of(origin) if origin is not None else origin_of(referer)
    if source is None or source not in set(allowed):
        raise DomainError(
            Problem.FORBIDDEN, "csrf_failed", "this request did not come from the console's own pages (Origin/Referer)"
        )


def cookie_options(public_base_url: str, max_age: Optional[timedelta] = COOKIE_MAX_AGE) -> dict:
    """The `Set-Cookie` attributes of the session cookie (Secure only where the service is https).
    `max_age` is the longest a session can live (TOKEN_TTL_DAYS), so the browser forgets the cookie
    no later than the server would refuse it; None (no limit) keeps the previous default."""
    return {
        "httponly": True,
        "samesite": "Lax",
        "path": "/",
        "secure": (origin_of(public_base_url) or "").startswith("https://"),
        "max_age": int((max_age or COOKIE_MAX_AGE).total_seconds()),
    }


def check_sign_in_origin(origin: Optional[str], allowed: Iterable[str]) -> None:
    """A browser's sign-in must come from our own page, so another site can't sign a visitor into an
    account of its choosing; a client that sends no `Origin` (a script, curl) is not a browser page."""
    if origin is not None and origin_of(origin) not in set(allowed):
        raise DomainError(Problem.FORBIDDEN, "csrf_failed", "sign in from the console's own page")

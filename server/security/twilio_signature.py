"""`X-Twilio-Signature` checks, against the *public* URL Twilio called.

Behind a proxy the app sees another host, port and scheme than Twilio signed, so the URL is
rebuilt from `PUBLIC_BASE_URL` + path + query; `Host`/`X-Forwarded-*` are attacker-controlled and
never used. `signature_problem` is the one check; webhooks use it through
`require_twilio_signature`, the media WebSocket's upgrade through `websocket_signature_problem`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Mapping

from flask import current_app, request
from twilio.request_validator import RequestValidator

from server.config import Settings
from server.errors import DomainError, Problem
from server.logs import log_event
from server.urls import abs_url, ws_url

log = logging.getLogger("agentlocator.twilio")


def public_request_url(base_url: str, path: str, query: str) -> str:
    url = abs_url(base_url, path)
    return f"{url}?{query}" if query else url


def signature_is_valid(auth_token: str, urls: list[str], params: Mapping[str, Any], signature: str) -> bool:
    """`params` is a plain dict of strings or a werkzeug MultiDict (repeated keys are all signed).

    A dict of lists (`form.to_dict(flat=False)`) is not accepted by the SDK: pass the MultiDict.
    """
    if not (auth_token and signature):
        return False
    validator = RequestValidator(auth_token)
    # The SDK tries each URL with and without its default port: Twilio has signed both ways.
    return any(validator.validate(url, params, signature) for url in urls)


def signature_problem(
    auth_token: str,
    signature: str,
    urls: list[str],
    params: Callable[[], Mapping[str, Any]],
    *,
    signed_over: str = "the public URL and parameters",
) -> str:
    """Why `signature` is not Twilio's for any of `urls` with `params()`, or "" when it is.

    `params` is called only once the header is there to check, so a request that fails on the
    header alone never has its body parsed.
    """
    if not auth_token:
        return "TWILIO_AUTH_TOKEN is not configured"
    if not signature:
        return "missing X-Twilio-Signature"
    if not signature_is_valid(auth_token, urls, params(), signature):
        return f"X-Twilio-Signature does not match {signed_over}"
    return ""


def websocket_signature_problem(settings: Settings, path: str, query: str, signature: str) -> str:
    """The check for a WebSocket upgrade (a GET: no parameters are signed), or "" when it passes.

    Twilio has signed the `wss://` URL it dials and, at times, its `https://` form: both are accepted.
    """
    suffix = f"?{query}" if query else ""
    urls = [ws_url(settings.base_url, path) + suffix, abs_url(settings.base_url, path) + suffix]
    return signature_problem(
        settings.twilio_auth_token, signature, urls, dict, signed_over="the public wss:// (or https://) URL"
    )


def require_twilio_signature(view: Callable) -> Callable:
    """Answer 403 JSON unless the request carries a valid `X-Twilio-Signature`."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any):
        settings: Settings = current_app.config["SETTINGS"]
        url = public_request_url(settings.base_url, request.path, request.query_string.decode("latin-1"))
        reason = signature_problem(
            settings.twilio_auth_token, request.headers.get("X-Twilio-Signature", ""), [url], lambda: request.form
        )
        if not reason:
            return view(*args, **kwargs)
        log_event(log, "twilio_signature_rejected", logging.WARNING, reason=reason, url=url, method=request.method)
        raise DomainError(Problem.FORBIDDEN, "invalid_signature", reason)

    return wrapped

"""`X-Twilio-Signature` checks, against the *public* URL Twilio called.

Behind a proxy the app sees another host, port and scheme than Twilio signed, so the URL is
rebuilt from `PUBLIC_BASE_URL` + path + query; `Host`/`X-Forwarded-*` are attacker-controlled and
never used.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Mapping

from flask import current_app, request
from twilio.request_validator import RequestValidator

from server.logs import log_event
from server.urls import abs_url
from server.web import ApiError

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


def require_twilio_signature(view: Callable) -> Callable:
    """Answer 403 JSON unless the request carries a valid `X-Twilio-Signature`."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any):
        settings = current_app.config["SETTINGS"]
        signature = request.headers.get("X-Twilio-Signature", "")
        url = public_request_url(settings.base_url, request.path, request.query_string.decode("latin-1"))
        if not settings.twilio_auth_token:
            reason = "TWILIO_AUTH_TOKEN is not configured"
        elif not signature:
            reason = "missing X-Twilio-Signature"
        elif not signature_is_valid(settings.twilio_auth_token, [url], request.form, signature):
            reason = "X-Twilio-Signature does not match the public URL and parameters"
        else:
            return view(*args, **kwargs)
        log_event(log, "twilio_signature_rejected", logging.WARNING, reason=reason, url=url, method=request.method)
        raise ApiError(403, "invalid_signature", reason)

    return wrapped

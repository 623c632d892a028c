"""HTTP plumbing shared by the PayPal and Tranzila clients: timeouts, and one error type per failure.

A payment provider either answers (any status below 500, which the client interprets), is
unavailable (connection refused, 5xx: `PaymentProviderUnavailable`), or too slow
(`ProviderTimeout`). Messages carry the status and the provider's error name, never credentials.
"""

from __future__ import annotations

from typing import Any

import requests

from server.providers.base import ProviderError, ProviderTimeout
from server.providers.http_json import json_object


class PaymentProviderError(ProviderError):
    """The provider refused the request (4xx) or answered something we cannot use."""

    def __init__(self, provider: str, message: str, *, status: int | None = None, name: str = ""):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status
        self.name = name


class PaymentProviderUnavailable(PaymentProviderError):
    """The provider could not be reached or failed on its side (5xx); trying later may work."""


def send(
    http: requests.Session, provider: str, method: str, url: str, *, timeout: float, **kwargs: Any
) -> requests.Response:
    """`http.request(...)`, with network failures and 5xx answers turned into provider errors."""
    try:
        response = http.request(method, url, timeout=timeout, **kwargs)
    except requests.Timeout:
        raise ProviderTimeout(f"{provider}: no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise PaymentProviderUnavailable(provider, f"unreachable ({type(exc).__name__})") from None
    if response.status_code >= 500:
        raise PaymentProviderUnavailable(
            provider, f"HTTP {response.status_code}", status=response.status_code, name=error_name(response)
        )
    return response


def json_of(response: requests.Response, provider: str) -> dict[str, Any]:
    """The response's JSON object, or a provider error saying it was not one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise PaymentProviderError(
            provider, f"HTTP {response.status_code} without a JSON object", status=response.status_code
        )
    return body


def error_name(response: requests.Response) -> str:
    """PayPal's `name` / OAuth `error`, or Tranzila's `error_code`, when the body has one."""
    body = json_object(response)
    for key in ("name", "error", "error_code"):
        if body.get(key) not in (None, ""):
            return str(body[key])
    return ""

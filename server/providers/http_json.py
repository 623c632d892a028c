"""Reading a vendor's JSON answer when its shape is not guaranteed (an error page, a proxy's HTML)."""

from __future__ import annotations

from typing import Any

import requests


def json_object(response: requests.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when the body is not JSON or not an object."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

"""The only place absolute URLs are built.

Twilio error 11100 ("Invalid play URL") came from a `//` in a joined URL, so every URL the service
hands out goes through `abs_url` / `ws_url`, which join the base and the path with exactly one `/`.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def _join(base_url: str, path: str) -> tuple[str, str, str]:
    parts = urlsplit(base_url.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"base URL must be absolute http(s), got {base_url!r}")
    path, _, query = path.partition("?")
    segments = [s for s in (parts.path + "/" + path).split("/") if s]
    joined = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        joined += "/"
    return parts.scheme, parts.netloc, joined if query == "" else f"{joined}?{query}"


def abs_url(base_url: str, path: str = "/") -> str:
    """`base_url` + `path` as one absolute URL with no empty path segment."""
    scheme, netloc, path_and_query = _join(base_url, path)
    path_part, _, query = path_and_query.partition("?")
    return urlunsplit((scheme, netloc, path_part, query, ""))


def ws_url(base_url: str, path: str) -> str:
    """The WebSocket form of `abs_url`: https → wss, http → ws."""
    url = abs_url(base_url, path)
    return "wss" + url[len("https") :] if url.startswith("https") else "ws" + url[len("http") :]

"""The OpenAPI 3.1 document of every `/api/*` route, served at `/api/openapi.json`.

A route module documents its blueprint with `document(bp, paths, schemas)`: path items keyed by
OpenAPI path (e.g. "/api/crm/calls/{call_sid}") and the component schemas they reference. The
parts reach an app when the blueprint is registered on it, so `openapi_spec(app)` builds the
document from exactly the blueprints that app serves, merged with the shared components below.
`tests/test_openapi.py` walks the URL map and fails for any `/api/*` rule and method the
document lacks, or documents without a rule.

The small builders here (`operation`, `ref`, `error_responses`, …) are for every area's paths, so
that all errors share one schema and one security scheme.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterable, Mapping

from flask import Blueprint, Flask

from server.app_state import services

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "The request is invalid (the field is named)",
    401: "No token, or an unknown or revoked one",
    403: "The caller's role is too low",
    404: "No such object in the caller's business",
    405: "Method not allowed",
    409: "Conflict with the object's current state",
    410: "Gone",
    413: "The body is too large",
    422: "The request is well-formed but can't be processed",
    429: "Too many requests",
    501: "Not configured on this deployment",
    502: "The provider failed",
    503: "Temporarily unavailable",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null (OpenAPI 3.1: a JSON Schema type list, or anyOf for a $ref)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    return {**schema, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}


def obj(
    properties: dict[str, Any], required: Iterable[str] = (), *, closed: bool = False, **extra: Any
) -> dict[str, Any]:
    """An object schema; `closed` refuses unknown properties (request bodies: the API answers 400)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    required = list(required)
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def json_response(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": json_content(schema)}


def error_responses(*statuses: int) -> dict[str, Any]:
    return {str(status): json_response(ref("Error"), _STATUS_TEXT.get(status, "Error")) for status in statuses}


def path_param(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def query_param(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def operation(
    summary: str,
    *,
    tags: list[str],
    responses: dict[str, Any],
    role: str | None = "agent",
    parameters: Iterable[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    description: str = "",
) -> dict[str, Any]:
    """One operation. With a `role`, it takes the bearer token and may answer 401, 403 and 404
    (an admin's `X-Business-Id` naming no business) besides `responses`."""
    op: dict[str, Any] = {"summary": summary, "tags": tags}
    if description or role:
        op["description"] = " ".join(filter(None, [description, f"Role: {role} or above." if role else ""]))
    params = list(parameters)
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": json_content(body)}
    all_responses = dict(responses)
    if role:
        op["security"] = BEARER
        all_responses = {**error_responses(401, 403, 404), **all_responses}
    else:
        op["security"] = []
    op["responses"] = dict(sorted(all_responses.items()))
    return op


SHARED_SCHEMAS: dict[str, Any] = {
    "Error": obj(
        {
            "error": {"type": "string", "description": "a stable code, e.g. invalid_field, not_found"},
            "message": {"type": "string", "description": "human-readable text"},
            "field": {"type": "string", "description": "the request field at fault (invalid_field and others)"},
            "request_id": {"type": "string"},
        },
        ["error", "message"],
    ),
}


_ANY = re.compile(r"<any\(([^)]*)\):\w+>")
_PARAM = re.compile(r"<(?:[^:<>]+:)?(\w+)>")


def openapi_paths(rule: str) -> list[str]:
    """A Flask rule in OpenAPI form: `<int:id>` → `{id}`; an `any(a, b)` segment gives one path per choice."""
    choices = _ANY.search(rule)
    if choices:
        return [
            path
            for choice in choices.group(1).split(",")
            for path in openapi_paths(rule[: choices.start()] + choice.strip() + rule[choices.end() :])
        ]
    return [_PARAM.sub(r"{\1}", rule)]


def document(bp: Blueprint, paths: Mapping[str, Any], schemas: Mapping[str, Any] | None = None) -> None:
    """Publish `bp`'s path items and component schemas in the document of every app it is registered on."""

    def publish(state) -> None:
        services(state.app).openapi_parts.append((bp.name, paths, schemas or {}))

    bp.record_once(publish)


def build_spec(app: Flask, title: str = "AgentLocator API", version: str = "1") -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = dict(SHARED_SCHEMAS)
    for blueprint, bp_paths, bp_schemas in services(app).openapi_parts:
        for path, item in bp_paths.items():
            for method in item:
                if method in HTTP_METHODS and method in paths.get(path, {}):
                    raise ValueError(f"{method.upper()} {path} is documented twice (again by {blueprint})")
            paths.setdefault(path, {}).update(copy.deepcopy(item))
        schemas.update(copy.deepcopy(bp_schemas))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Every /api/* endpoint except login takes `Authorization: Bearer <token>`. "
            'Errors are `{"error": code, "message": text}`; a mistake in one field '
            "(`invalid_field`) names the `field`. Another business's object is a 404.",
        },
        "servers": [{"url": "/"}],
        "security": BEARER,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from POST /api/auth/login or POST /api/crm/tokens",
                }
            },
            "schemas": dict(sorted(schemas.items())),
        },
        "paths": dict(sorted(paths.items())),
    }


def openapi_spec(app: Flask) -> dict[str, Any]:
    """The document for `app`, built once per app (its blueprints don't change while it runs)."""
    state = services(app)
    if state.openapi_spec is None:
        state.openapi_spec = build_spec(app, version=app.config["SETTINGS"].git_commit or "1")
    return state.openapi_spec

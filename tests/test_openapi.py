"""`/api/openapi.json`: a valid OpenAPI 3.1 document that covers exactly the `/api/*` routes.

The document doesn't depend on the database, so one SQLite app serves this module."""

from __future__ import annotations

import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from server.app_factory import create_app
from server.app_state import services
from server.openapi import openapi_paths
from tests.conftest import create_tenant, make_settings

IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = create_app(make_settings(DATABASE_URL=f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'db.sqlite'}"))
    owner = create_tenant(services(app).database)
    response = app.test_client().get("/api/openapi.json", headers=owner.headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    yield app, response.get_json()
    services(app).database.engine.dispose()


def test_the_document_needs_a_token_and_is_valid_openapi_31(served):
    app, spec = served
    assert app.test_client().get("/api/openapi.json").status_code == 401
    assert spec["openapi"] == "3.1.0"
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(spec)]
    assert errors == []
    bearer = spec["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer") and spec["security"] == [{"bearer": []}]


def test_every_api_route_is_documented_and_nothing_else(served):
    app, spec = served
    routes = {
        (path, method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for path in openapi_paths(rule.rule)
        for method in rule.methods - IGNORED_METHODS
    }
    documented = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert sorted(routes - documented) == [], "routes missing from the OpenAPI document"
    assert sorted(documented - routes) == [], "documented operations without a route"


def test_rule_to_path_conversion():
    assert openapi_paths("/api/crm/threads/<int:thread_id>/read") == ["/api/crm/threads/{thread_id}/read"]
    assert openapi_paths("/api/payments/stripe<path:_rest>") == ["/api/payments/stripe{_rest}"]
    assert openapi_paths("/api/crm/<any(deals, invoices):kind>/<int:id>") == [
        "/api/crm/deals/{id}",
        "/api/crm/invoices/{id}",
    ]


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_operation_states_its_security_and_error_shapes(served):
    _app, spec = served
    for path, item in spec["paths"].items():
        for method, op in item.items():
            label = f"{method.upper()} {path}"
            assert op.get("summary") and op.get("responses"), label
            public = op.get("security") == []
            assert public == (path in ("/api/auth/login", "/api/auth/session") or "stripe" in path), label
            if not public:
                assert op["security"] == [{"bearer": []}] and "401" in op["responses"], label
            for status, response in op["responses"].items():
                if status == "204":
                    continue
                if not status.startswith(("4", "5")):  # JSON, or a stream, audio or an image with its type
                    assert response.get("content"), (label, status)
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert {"error", "message"} <= set(_resolve(spec, schema).get("required", [])), (label, status)
            for parameter in op.get("parameters", []):
                assert "schema" in parameter, (label, parameter["name"])
            if "requestBody" in op:
                assert "application/json" in op["requestBody"]["content"], label

"""`/api/openapi.json`: a valid OpenAPI 3.1 document that covers exactly the `/api/*` routes."""
from __future__ import annotations

from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from server.openapi import openapi_paths

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def spec_of(client, tenant) -> dict:
    response = client.get("/api/openapi.json", headers=tenant.headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_the_document_needs_a_token_and_is_valid_openapi_31(client, tenant):
    assert client.get("/api/openapi.json").status_code == 401
    spec = spec_of(client, tenant)
    assert spec["openapi"] == "3.1.0"
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(spec)]
    assert errors == []
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearer"]["description"]}


def test_every_api_route_is_documented_and_nothing_else(app, client, tenant):
    spec = spec_of(client, tenant)
    routes = {(path, method.lower()) for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")
              for path in openapi_paths(rule.rule) for method in rule.methods - IGNORED_METHODS}
    documented = {(path, method) for path, item in spec["paths"].items() for method in item
                  if method in {"get", "post", "put", "patch", "delete"}}
    assert sorted(routes - documented) == [], "routes missing from the OpenAPI document"
    assert sorted(documented - routes) == [], "documented operations without a route"


def test_rule_to_path_conversion():
    assert openapi_paths("/api/crm/threads/<int:thread_id>/read") == ["/api/crm/threads/{thread_id}/read"]
    assert openapi_paths("/api/payments/stripe<path:_rest>") == ["/api/payments/stripe{_rest}"]
    assert openapi_paths("/api/crm/<any(deals, invoices):kind>/<int:id>") == ["/api/crm/deals/{id}",
                                                                             "/api/crm/invoices/{id}"]


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_operation_states_its_security_and_error_shapes(client, tenant):
    spec = spec_of(client, tenant)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            label = f"{method.upper()} {path}"
            assert op.get("summary") and op.get("responses"), label
            public = op.get("security") == []
            assert public == (path in ("/api/auth/login",) or "stripe" in path), label
            if not public:
                assert op["security"] == [{"bearer": []}] and "401" in op["responses"], label
            for status, response in op["responses"].items():
                if status == "204":
                    continue
                schema = response["content"]["application/json"]["schema"]
                if status.startswith(("4", "5")):
                    assert {"error", "message"} <= set(_resolve(spec, schema).get("required", [])), (label, status)
            for parameter in op.get("parameters", []):
                assert "schema" in parameter, (label, parameter["name"])
            if "requestBody" in op:
                assert "application/json" in op["requestBody"]["content"], label

"""Stripe stays retired: every old route and method answers 410, and no code imports Stripe."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _legacy_requests(app):
    """(method, path) for every rule and method of the legacy Stripe blueprint."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != "legacy_stripe":
            continue
        path = rule.rule.replace("/<path:_rest>", "/checkout/sessions/cs_test_1").replace("<path:_rest>", "-session/1")
        assert "<" not in path, rule.rule
        for method in sorted(rule.methods - {"OPTIONS"}):
            yield method, path


def test_every_legacy_stripe_route_and_method_answers_410(client, app):
    seen = list(_legacy_requests(app))
    assert {path for _, path in seen} >= {"/api/webhook/stripe", "/api/payments/stripe"}
    assert {method for method, _ in seen} >= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
    for method, path in seen:
        # a Stripe-looking delivery, even with a malformed body, is neither parsed nor verified
        response = client.open(
            path,
            method=method,
            data=b'{"type": "checkout.session.completed"',
            headers={"Stripe-Signature": "t=1,v1=deadbeef", "Content-Type": "application/json"},
        )
        assert response.status_code == 410, (method, path)
        if method != "HEAD":
            assert response.get_json()["error"] == "gone", (method, path)


def test_no_module_imports_stripe():
    sources = [*PROJECT_ROOT.glob("server/**/*.py"), *PROJECT_ROOT.glob("migrations/*.py"), PROJECT_ROOT / "main.py"]
    assert len(sources) > 10
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(name.split(".")[0] == "stripe" for name in names), path
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module",
                "__import__",
            ):
                assert not any(
                    isinstance(arg, ast.Constant) and str(arg.value).startswith("stripe") for arg in node.args
                ), path
    requirements = (PROJECT_ROOT / "requirements.txt").read_text().lower()
    assert not re.search(r"^stripe\b", requirements, re.MULTILINE)


def test_stripe_is_never_loaded(client):
    client.post("/api/webhook/stripe", json={"type": "invoice.paid"})
    assert "stripe" not in sys.modules

"""Who may do what: roles, tenant isolation on every CRM route, users, tokens and the audit log."""

from __future__ import annotations

import re

import sqlalchemy as sa

from server.db.models import AuditLog
from tests.conftest import add_user, create_tenant
from tests.crm_seed import seed_business

_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_ANY = re.compile(r"<any\(([^)]*)\):\w+>")

# A plausible body for each write, so that a refusal can only come from the id in the path.
_BODIES = {
    "crm_api.update_thread": {"status": "pending"},
    "crm_api.reply_to_thread": {"text": "hi"},
    "crm_api.update_customer": {"name": "x"},
    "crm_api.update_document": {"notes": "x"},
    "crm_api.change_document_status": {"status": "void"},
    "agent_api.update_task": {"status": "done"},
}
# The event stream never ends, so it can't be read to the end here (tests/test_console_events*.py).
_STREAMS = {"events_api.events"}
# A read of our own seeded objects that answers something else by design.
_OWN_GET_STATUS = {
    "console_api.call_recording": 404,  # the seeded call has no recording
    "console_api.whatsapp_qr": 501,  # WhatsApp through the bridge is off in this app
    "media_api.media_file": 404,  # the seeded media item was not kept: there is no file to answer
    "media_api.media_download": 404,
    "agent_api.list_tool_calls": 400,  # asked without the call_sid or thread_id it needs
}


def crm_requests(app, ids: dict) -> list[tuple[str, str, dict]]:
    """(method, URL, body) for every /api/crm rule and method, with `ids` in its path parameters."""
    requests = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/crm/") or rule.endpoint in _STREAMS:
            continue
        kinds = _ANY.search(rule.rule)
        for kind in [k.strip() for k in kinds.group(1).split(",")] if kinds else [None]:

            def value(match, kind=kind):
                found = ids[match.group(2)]
                return str(found[kind] if isinstance(found, dict) else found)

            url = _PARAM.sub(value, _ANY.sub(kind, rule.rule) if kind else rule.rule)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                requests.append((method, url, _BODIES.get(rule.endpoint, {}), rule.endpoint))
    return requests


def test_every_id_of_another_business_is_a_404_on_every_route(app, client, db, tenant, other_tenant):
    theirs = seed_business(db, other_tenant.business_id, phone="+972521111111", label="b")
    ours = seed_business(db, tenant.business_id, phone="+972521111111", label="a")
    requests = [r for r in crm_requests(app, theirs.ids()) if re.search(r"/\d+|/CA", r[1])]
    assert len(requests) >= 17  # every route that takes an id (guards the walk itself)
    for method, url, body, _endpoint in requests:
        response = client.open(url, method=method, json=body, headers=tenant.headers)
        assert response.status_code == 404, (method, url, response.status_code, response.get_json())
        assert response.get_json()["error"] == "not_found"
    for method, url, body, endpoint in crm_requests(app, ours.ids()):  # the same requests on our own ids work
        if method in ("GET",):
            response = client.open(url, method=method, json=body, headers=tenant.headers)
            assert response.status_code == _OWN_GET_STATUS.get(endpoint, 200), (method, url, response.get_json())


def test_lists_and_references_never_reach_another_business(client, db, tenant, other_tenant):
    theirs = seed_business(db, other_tenant.business_id, phone="+972521111111", label="b")
    for url in (
        "/api/crm/calls",
        "/api/crm/threads",
        "/api/crm/customers",
        "/api/crm/deals",
        "/api/crm/invoices",
        "/api/crm/contracts",
        "/api/crm/audit",
    ):
        assert client.get(url, headers=tenant.headers).get_json()["items"] == [], url
    assert [u["id"] for u in client.get("/api/crm/users", headers=tenant.headers).get_json()["items"]] == [
        tenant.user_id
    ]
    assert {t["user_id"] for t in client.get("/api/crm/tokens", headers=tenant.headers).get_json()["items"]} == {
        tenant.user_id
    }
    for url, params in (
        ("/api/crm/calls", {"phone": "0521111111"}),
        ("/api/crm/threads", {"q": "Dana"}),
        ("/api/crm/customers", {"q": "0521111111"}),
        ("/api/crm/deals", {"customer_id": theirs.customer_id}),
        ("/api/crm/audit", {"entity_type": "deal"}),
    ):
        assert client.get(url, headers=tenant.headers, query_string=params).get_json()["items"] == [], url
    for url, body, field in (
        ("/api/crm/deals", {"customer_id": theirs.customer_id}, "customer_id"),
        ("/api/crm/invoices", {"deal_id": theirs.deal_id}, "deal_id"),
        ("/api/crm/tokens", {"user_id": theirs.agent_user_id}, "user_id"),
    ):
        response = client.post(url, json=body, headers=tenant.headers)
        assert response.status_code == 400 and response.get_json()["field"] == field, url
    ours = seed_business(db, tenant.business_id, phone="+972521111111", label="a")
    response = client.patch(
        f"/api/crm/threads/{ours.whatsapp_thread_id}", json={"assignee": theirs.agent_user_id}, headers=tenant.headers
    )
    assert response.status_code == 400 and response.get_json()["field"] == "assignee"
    # the same phone number in two businesses is two customers
    assert client.post("/api/crm/customers", json={"phone": "0529999999"}, headers=tenant.headers).status_code == 201
    other = client.post("/api/crm/customers", json={"phone": "0529999999"}, headers=other_tenant.headers)
    assert other.status_code == 201


def test_roles(app, client, db, tenant, other_tenant):
    seeded = seed_business(db, tenant.business_id)
    agent = add_user(db, tenant.business_id, "agent")

    def status(who, method, url, body=None):
        return client.open(url, method=method, json=body or {}, headers=who.headers).status_code

    for url in (
        "/api/crm/calls",
        f"/api/crm/calls/{seeded.call_sid}",
        "/api/crm/threads",
        f"/api/crm/threads/{seeded.whatsapp_thread_id}",
        "/api/crm/customers",
        f"/api/crm/customers/{seeded.customer_id}",
        "/api/crm/deals",
        f"/api/crm/invoices/{seeded.invoice_id}",
        "/api/crm/contracts",
        "/api/openapi.json",
    ):
        assert status(agent, "GET", url) == 200, url
    thread = f"/api/crm/threads/{seeded.whatsapp_thread_id}"
    assert status(agent, "PATCH", thread, {"status": "pending", "assignee": agent.user_id}) == 200
    assert status(agent, "POST", f"{thread}/read") == 200
    assert status(agent, "POST", f"{thread}/messages", {"text": "hi"}) == 501  # allowed; no provider configured
    assert status(agent, "POST", "/api/crm/customers", {"phone": "0507654321"}) == 201
    assert status(agent, "PATCH", f"/api/crm/customers/{seeded.customer_id}", {"name": "Dana"}) == 200
    for method, url, body in (
        ("POST", "/api/crm/deals", {}),
        ("PATCH", f"/api/crm/deals/{seeded.deal_id}", {}),
        ("POST", f"/api/crm/invoices/{seeded.invoice_id}/status", {"status": "paid"}),
        ("POST", "/api/crm/contracts", {}),
        ("GET", "/api/crm/users", None),
        ("POST", "/api/crm/users", {}),
        ("GET", "/api/crm/tokens", None),
        ("POST", "/api/crm/tokens", None),
        ("DELETE", f"/api/crm/tokens/{seeded.token_id}", None),
        ("GET", "/api/crm/audit", None),
    ):
        response = client.open(url, method=method, json=body or {}, headers=agent.headers)
        assert response.status_code == 403 and response.get_json()["error"] == "forbidden", (method, url)
    assert status(tenant, "POST", f"/api/crm/invoices/{seeded.invoice_id}/status", {"status": "paid"}) == 200
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        assert client.get("/api/crm/calls", headers=headers).status_code == 401
    # admin: support for any business, chosen with X-Business-Id
    admin = create_tenant(db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")
    as_admin = {**admin.headers, "X-Business-Id": str(tenant.business_id)}
    customers = client.get("/api/crm/customers", headers=as_admin).get_json()["items"]
    assert seeded.customer_id in [c["id"] for c in customers]
    assert client.post("/api/crm/deals", json={"title": "by support"}, headers=as_admin).status_code == 201
    assert (
        client.get("/api/crm/audit", headers=as_admin, query_string={"actor": f"user:{admin.user_id}"}).get_json()[
            "items"
        ][0]["action"]
        == "deal.created"
    )
    assert client.get("/api/crm/customers", headers=admin.headers).get_json()["items"] == []  # its own business
    assert client.get("/api/crm/customers", headers={**admin.headers, "X-Business-Id": "999999"}).status_code == 404
    owner_tries = client.get(
        "/api/crm/customers", headers={**other_tenant.headers, "X-Business-Id": str(tenant.business_id)}
    )
    assert owner_tries.get_json()["items"] == []  # the header means nothing below admin


def test_users_and_tokens(app, client, db, tenant):
    created = client.post(
        "/api/crm/users",
        json={"email": "Agent@Example.test", "password": "long enough", "role": "agent"},
        headers=tenant.headers,
    )
    user = created.get_json()
    assert created.status_code == 201 and (user["email"], user["role"]) == ("agent@example.test", "agent")
    login = client.post("/api/auth/login", json={"email": "agent@example.test", "password": "long enough"})
    assert (
        login.status_code == 200
        and client.get("/api/crm/calls", headers={"Authorization": f"Bearer {login.get_json()['token']}"}).status_code
        == 200
    )
    for body, code, field in (
        ({"email": "agent@example.test", "password": "long enough", "role": "agent"}, 409, "email"),
        ({"email": "x@example.test", "password": "short", "role": "agent"}, 400, "password"),
        ({"email": "nope", "password": "long enough", "role": "agent"}, 400, "email"),
        ({"email": "y@example.test", "password": "long enough", "role": "boss"}, 400, "role"),
        ({"email": "z@example.test", "password": "long enough", "role": "admin"}, 403, "role"),
        ({"email": "z@example.test", "password": "long enough"}, 400, "role"),
    ):
        response = client.post("/api/crm/users", json=body, headers=tenant.headers)
        assert response.status_code == code and response.get_json()["field"] == field, body
    assert [u["email"] for u in client.get("/api/crm/users", headers=tenant.headers).get_json()["items"]][1:] == [
        "agent@example.test"
    ]

    made = client.post("/api/crm/tokens", json={"name": "zapier", "user_id": user["id"]}, headers=tenant.headers)
    token = made.get_json()
    assert made.status_code == 201 and token["token"].startswith("al_") and token["user_id"] == user["id"]
    bearer = {"Authorization": f"Bearer {token['token']}"}
    assert client.get("/api/crm/threads", headers=bearer).status_code == 200
    mine = client.post("/api/crm/tokens", headers=tenant.headers)  # no body: a token for the caller
    assert mine.status_code == 201 and mine.get_json()["user_id"] == tenant.user_id
    listed = client.get("/api/crm/tokens", headers=tenant.headers).get_json()["items"]
    assert {t["id"] for t in listed} >= {token["id"], mine.get_json()["id"]}
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert client.delete(f"/api/crm/tokens/{token['id']}", headers=tenant.headers).status_code == 204
    assert client.get("/api/crm/threads", headers=bearer).status_code == 401
    assert client.delete(f"/api/crm/tokens/{token['id']}", headers=tenant.headers).status_code == 204  # again: fine
    revoked = [
        t for t in client.get("/api/crm/tokens", headers=tenant.headers).get_json()["items"] if t["id"] == token["id"]
    ]
    assert revoked[0]["revoked_at"] is not None
    assert client.delete("/api/crm/tokens/99999", headers=tenant.headers).status_code == 404
    admin = add_user(db, tenant.business_id, "admin")
    admin_token = client.post("/api/crm/tokens", json={"user_id": admin.user_id}, headers=tenant.headers)
    assert admin_token.status_code == 403 and admin_token.get_json()["field"] == "user_id"
    admin_tokens = [
        t["id"]
        for t in client.get("/api/crm/tokens", headers=tenant.headers).get_json()["items"]
        if t["user_id"] == admin.user_id
    ]
    assert client.delete(f"/api/crm/tokens/{admin_tokens[0]}", headers=tenant.headers).status_code == 403
    with db.scope() as session:
        actions = session.scalars(
            sa.select(AuditLog.action).where(AuditLog.business_id == tenant.business_id).order_by(AuditLog.id)
        ).all()
    assert actions == ["user.created", "token.created", "token.created", "token.revoked"]


def test_audit_log_lists_every_change_with_filters_and_pages(client, db, tenant):
    customer = client.post("/api/crm/customers", json={"phone": "0501234567"}, headers=tenant.headers).get_json()
    deal = client.post("/api/crm/deals", json={"customer_id": customer["id"]}, headers=tenant.headers).get_json()
    client.patch(f"/api/crm/deals/{deal['id']}", json={"title": "Bigger"}, headers=tenant.headers)
    client.post(f"/api/crm/deals/{deal['id']}/status", json={"status": "won"}, headers=tenant.headers)
    client.patch(f"/api/crm/customers/{customer['id']}", json={"name": "Dana"}, headers=tenant.headers)

    def audit(**params):
        response = client.get("/api/crm/audit", headers=tenant.headers, query_string=params)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    everything = audit()["items"]
    assert [e["action"] for e in everything] == [
        "customer.updated",
        "deal.status_changed",
        "deal.updated",
        "deal.created",
        "customer.created",
    ]
    assert {e["actor"] for e in everything} == {f"user:{tenant.user_id}"}
    assert everything[1]["details"] == {"from": "open", "to": "won"}
    assert everything[2]["details"] == {"fields": ["title"]}
    deal_rows = audit(entity_type="deal", entity_id=str(deal["id"]))["items"]
    assert [e["action"] for e in deal_rows] == ["deal.status_changed", "deal.updated", "deal.created"]
    assert [e["action"] for e in audit(action="customer.created")["items"]] == ["customer.created"]
    first = audit(limit=2)
    second = audit(limit=2, cursor=first["next_cursor"])
    third = audit(limit=2, cursor=second["next_cursor"])
    assert [e["id"] for e in first["items"] + second["items"] + third["items"]] == [e["id"] for e in everything]
    assert third["next_cursor"] is None
    assert (
        client.get("/api/crm/audit", headers=tenant.headers, query_string={"entity_type": "x" * 33}).get_json()["field"]
        == "entity_type"
    )


def test_odd_ids_are_404_not_500(client, tenant):
    for method, url in (
        ("GET", "/api/crm/threads/abc"),
        ("GET", "/api/crm/threads/-1"),
        ("GET", "/api/crm/threads/99999999999"),
        ("GET", "/api/crm/calls/a%00b"),
        ("GET", "/api/crm/calls/" + "C" * 65),
        ("GET", "/api/crm/invoices/0"),
        ("PATCH", "/api/crm/customers/99999999999999999999"),
        ("DELETE", "/api/crm/tokens/99999999999"),
        ("GET", "/api/crm/refunds"),
    ):
        response = client.open(url, method=method, headers=tenant.headers)
        assert response.status_code == 404 and response.get_json()["error"] == "not_found", url

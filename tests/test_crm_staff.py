"""`GET /api/crm/staff`: the staff directory every role reads, of the caller's business only
(docs/api.md, "Authentication")."""

from __future__ import annotations

from tests.conftest import add_user, create_tenant

STAFF = "/api/crm/staff"


def test_an_agent_reads_the_staff_directory_of_its_own_business(client, tenant, other_tenant, db):
    agent = add_user(db, tenant.business_id, "agent")
    colleague = add_user(db, tenant.business_id, "agent")
    add_user(db, other_tenant.business_id, "agent")
    assert (
        client.patch(f"/api/crm/users/{colleague.user_id}", json={"disabled": True}, headers=tenant.headers).status_code
        == 200
    )

    response = client.get(STAFF, headers=agent.headers)
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert [u["id"] for u in items] == [tenant.user_id, agent.user_id, colleague.user_id]
    users = {u["id"]: u for u in client.get("/api/crm/users", headers=tenant.headers).get_json()["items"]}
    for item in items:
        # Who they are, nothing about their account beyond that.
        assert set(item) == {"id", "name", "email", "role", "disabled"}
        assert (item["email"], item["role"], item["disabled"]) == (
            users[item["id"]]["email"],
            users[item["id"]]["role"],
            users[item["id"]]["disabled"],
        )
        assert item["name"] is None
    assert [u["role"] for u in items] == ["owner", "agent", "agent"]
    assert [u["disabled"] for u in items] == [False, False, True]  # still named on what they did
    # The owner reads the same directory.
    assert client.get(STAFF, headers=tenant.headers).get_json()["items"] == items


def test_another_business_s_staff_never_appear(client, tenant, other_tenant, db):
    theirs = {other_tenant.user_id, add_user(db, other_tenant.business_id, "agent").user_id}
    agent = add_user(db, tenant.business_id, "agent")
    ours = {u["id"] for u in client.get(STAFF, headers=agent.headers).get_json()["items"]}
    assert ours == {tenant.user_id, agent.user_id} and not ours & theirs
    # Their agent sees theirs only; the X-Business-Id header means nothing below admin.
    their_agent = add_user(db, other_tenant.business_id, "agent")
    seen = client.get(STAFF, headers={**their_agent.headers, "X-Business-Id": str(tenant.business_id)})
    assert {u["id"] for u in seen.get_json()["items"]} == theirs | {their_agent.user_id}
    # An admin reads the business it acts for.
    admin = create_tenant(db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")
    as_admin = client.get(STAFF, headers={**admin.headers, "X-Business-Id": str(tenant.business_id)})
    assert {u["id"] for u in as_admin.get_json()["items"]} == ours


def test_the_staff_directory_needs_a_signed_in_user(client, tenant):
    assert client.get(STAFF).status_code == 401
    assert client.get(STAFF, headers={"Authorization": "Bearer nope"}).status_code == 401

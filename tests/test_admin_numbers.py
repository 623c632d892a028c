"""Phone numbers are assigned by admins (`PUT /api/admin/businesses/<id>/numbers`, the
`assign-number` CLI); an owner sees them read-only and learns nothing about other businesses'."""

from __future__ import annotations

import json

import pytest

from tests.conftest import add_user, create_tenant

URL = "/api/crm/business"


def admin_url(business_id) -> str:
    return f"/api/admin/businesses/{business_id}/numbers"


@pytest.fixture
def admin(db):
    return create_tenant(
        db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin", email="support@example.test"
    )


def numbers(client, who):
    body = client.get(URL, headers=who.headers).get_json()
    return body["voice_numbers"], body["whatsapp_numbers"]


# ---- owners: read-only ---------------------------------------------------------------------------


def test_an_owner_can_not_claim_a_free_number(client, tenant):
    response = client.patch(URL, json={"voice_numbers": [tenant.phone, "+97235550077"]}, headers=tenant.headers)
    assert response.status_code == 403 and response.get_json()["error"] == "forbidden"
    assert response.get_json()["field"] == "voice_numbers"
    assert numbers(client, tenant) == ([tenant.phone], [tenant.whatsapp])


def test_the_refusal_is_the_same_whoever_holds_the_number(client, tenant, other_tenant):
    """Nothing in the answer tells a free number from another business's (once a 409 named it)."""
    answers = []
    for field, number in (
        ("voice_numbers", "+97235550077"),
        ("voice_numbers", other_tenant.phone),
        ("whatsapp_numbers", "+97235550078"),
        ("whatsapp_numbers", other_tenant.whatsapp),
        ("whatsapp_numbers", "not a phone"),
    ):
        response = client.patch(URL, json={"name": "Renamed", field: [number]}, headers=tenant.headers)
        answers.append((response.status_code, response.get_json()["error"], response.get_json()["message"]))
        assert other_tenant.phone not in response.get_data(as_text=True)
        assert other_tenant.whatsapp not in response.get_data(as_text=True)
    assert {status for status, _, _ in answers} == {403}
    assert len({(error, message) for _, error, message in answers}) == 1
    assert client.get(URL, headers=tenant.headers).get_json()["name"] == "Salon Dana"  # nothing of it applied


def test_owners_still_change_everything_else(client, tenant):
    response = client.patch(URL, json={"name": "Salon Dana 2", "opening_line": "שלום"}, headers=tenant.headers)
    assert response.status_code == 200 and response.get_json()["voice_numbers"] == [tenant.phone]


# ---- the admin API -------------------------------------------------------------------------------


def test_an_admin_assigns_numbers_to_any_business(client, tenant, admin):
    response = client.put(
        admin_url(tenant.business_id), headers=admin.headers, json={"voice_numbers": ["03-555-0001", "+972 3 555 0003"]}
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "id": tenant.business_id,
        "voice_numbers": ["+97235550001", "+97235550003"],
        "whatsapp_numbers": [tenant.whatsapp],
    }  # the kind not sent is kept
    assert numbers(client, tenant) == (["+97235550001", "+97235550003"], [tenant.whatsapp])
    assert numbers(client, admin) == ([admin.phone], [admin.whatsapp])  # its own business is untouched
    cleared = client.put(admin_url(tenant.business_id), headers=admin.headers, json={"whatsapp_numbers": []})
    assert cleared.status_code == 200 and cleared.get_json()["whatsapp_numbers"] == []
    entries = client.get(
        "/api/crm/audit", headers=tenant.headers, query_string={"action": "business.numbers_assigned"}
    ).get_json()["items"]
    assert [(e["actor"], e["details"]) for e in entries] == [
        (f"user:{admin.user_id}", {"whatsapp_numbers": []}),
        (f"user:{admin.user_id}", {"voice_numbers": ["+97235550001", "+97235550003"]}),
    ]


def test_a_number_another_business_has_is_a_409_naming_it_for_the_admin(client, tenant, other_tenant, admin):
    response = client.put(
        admin_url(tenant.business_id),
        headers=admin.headers,
        json={"voice_numbers": ["+97235550077", other_tenant.phone]},
    )
    assert response.status_code == 409
    body = response.get_json()
    assert (body["error"], body["field"], body["business_id"]) == (
        "number_taken",
        "voice_numbers",
        other_tenant.business_id,
    )
    assert numbers(client, tenant) == ([tenant.phone], [tenant.whatsapp])
    # the same number as WhatsApp in one business and voice in another is allowed
    moved = client.put(
        admin_url(tenant.business_id), headers=admin.headers, json={"whatsapp_numbers": [other_tenant.phone]}
    )
    assert moved.status_code == 200


def test_only_admins_may_assign(client, db, tenant, other_tenant):
    agent = add_user(db, tenant.business_id, "agent")
    for who in (tenant, agent):
        response = client.put(
            admin_url(tenant.business_id), headers=who.headers, json={"voice_numbers": ["+97235550077"]}
        )
        assert response.status_code == 403 and response.get_json()["error"] == "forbidden"
    assert (
        client.put(
            admin_url(other_tenant.business_id), headers=tenant.headers, json={"voice_numbers": ["+97235550077"]}
        ).status_code
        == 403
    )
    assert client.put(admin_url(tenant.business_id), json={"voice_numbers": []}).status_code == 401
    assert numbers(client, tenant) == ([tenant.phone], [tenant.whatsapp])


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "voice_numbers"),
        ({"voice_numbers": ["not a phone"]}, "voice_numbers"),
        ({"voice_numbers": "+97235550001"}, "voice_numbers"),
        ({"whatsapp_numbers": ["+972501112233", 972501112234]}, "whatsapp_numbers"),
        ({"whatsapp_numbers": ["05011122%02d" % i for i in range(21)]}, "whatsapp_numbers"),
        ({"voice_numbers": [], "name": "x"}, "name"),
    ],
)
def test_bad_assignments_are_a_400_naming_the_field(client, tenant, admin, body, field):
    response = client.put(admin_url(tenant.business_id), headers=admin.headers, json=body)
    assert response.status_code == 400, response.get_json()
    assert (response.get_json()["error"], response.get_json()["field"]) == ("invalid_field", field)
    assert numbers(client, tenant) == ([tenant.phone], [tenant.whatsapp])


def test_an_unknown_business_is_a_404(client, admin):
    for business_id in (999999, 2**31, 2**63):
        response = client.put(admin_url(business_id), headers=admin.headers, json={"voice_numbers": []})
        assert response.status_code == 404 and response.get_json()["error"] == "not_found", business_id


# ---- the CLI -------------------------------------------------------------------------------------


def _cli(app, *args):
    return app.test_cli_runner().invoke(args=["assign-number", *args])


def test_the_cli_adds_numbers_or_replaces_them(app, client, tenant, other_tenant):
    added = _cli(app, "--business-id", str(tenant.business_id), "--voice", "03-555-0005", "--whatsapp", "0501112233")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output) == {
        "id": tenant.business_id,
        "voice_numbers": [tenant.phone, "+97235550005"],
        "whatsapp_numbers": [tenant.whatsapp, "+972501112233"],
    }
    replaced = _cli(app, "--business-id", str(tenant.business_id), "--voice", "+97235550006", "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert numbers(client, tenant) == (["+97235550006"], [tenant.whatsapp, "+972501112233"])
    taken = _cli(app, "--business-id", str(tenant.business_id), "--voice", other_tenant.phone)
    assert taken.exit_code != 0 and f"business {other_tenant.business_id}" in taken.output
    assert numbers(client, tenant)[0] == ["+97235550006"]
    for args, text in (
        (("--business-id", "999999", "--voice", "+97235550009"), "no such business"),
        (("--business-id", str(tenant.business_id)), "--voice or --whatsapp"),
        (("--business-id", str(tenant.business_id), "--voice", "abc"), "voice_numbers"),
    ):
        result = _cli(app, *args)
        assert result.exit_code != 0 and text in result.output, result.output

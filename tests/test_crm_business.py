"""`/api/crm/business`: a business's own settings, read by its staff and changed by its owner (the
phone numbers by admins only: tests/test_admin_numbers.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.crm.business import feature_on
from server.db.models import Business, Call
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from tests.conftest import TEST_BASE_URL, add_user, create_tenant

URL = "/api/crm/business"


def patch(client, who, body):
    return client.patch(URL, json=body, headers=who.headers)


def business_row(db, business_id: int) -> Business:
    with db.scope() as session:
        business = session.get(Business, business_id)
        session.expunge(business)
        return business


def test_get_answers_the_callers_own_business(client, tenant, other_tenant):
    for who, name, voice, whatsapp in (
        (tenant, "Salon Dana", "+97235550001", "+97235550002"),
        (other_tenant, "Garage Moshe", "+97235550101", "+97235550102"),
    ):
        response = client.get(URL, headers=who.headers)
        assert response.status_code == 200
        assert response.get_json() == {
            "id": who.business_id,
            "name": name,
            "ai_instructions": "",
            "opening_line": "",
            "greeting_enabled": False,
            "timezone": "Asia/Jerusalem",
            "features": {"wa_auto_reply": False, "preemptive_generation": True},
            "voice_numbers": [voice],
            "whatsapp_numbers": [whatsapp],
            "transfer_number": None,
            "transfer_announcement": "",
        }
    assert client.get(URL).status_code == 401


def test_agents_read_but_only_owners_and_admins_change(client, db, tenant):
    agent = add_user(db, tenant.business_id, "agent")
    assert client.get(URL, headers=agent.headers).status_code == 200
    refused = patch(client, agent, {"name": "Mine now"})
    assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    admin = create_tenant(db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")
    as_admin = {**admin.headers, "X-Business-Id": str(tenant.business_id)}
    response = client.patch(URL, json={"opening_line": "Support speaking"}, headers=as_admin)
    assert response.status_code == 200 and response.get_json()["id"] == tenant.business_id
    assert business_row(db, tenant.business_id).opening_line == "Support speaking"
    assert business_row(db, admin.business_id).opening_line == ""


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", "Salon Dana Ramat Gan"),
        ("ai_instructions", "ענה בעברית, בקצרה. " * 200),
        ("opening_line", "שלום, הגעתם לסלון דנה"),
        ("greeting_enabled", True),
        ("timezone", "Europe/London"),
        ("features", {"wa_auto_reply": True, "preemptive_generation": True}),
        ("features", {"wa_auto_reply": False, "preemptive_generation": False}),  # on by default: off is stored
        ("voice_numbers", ["+97235550001", "+97235550003"]),
        ("whatsapp_numbers", ["+972501112233"]),
    ],
)
def test_each_field_changes(client, db, tenant, field, value):
    if field.endswith("_numbers"):  # an admin's, acting for the business
        admin = create_tenant(db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")
        tenant = SimpleNamespace(
            headers={**admin.headers, "X-Business-Id": str(tenant.business_id)}, business_id=tenant.business_id
        )
    response = patch(client, tenant, {field: value})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()[field] == value
    assert client.get(URL, headers=tenant.headers).get_json()[field] == value
    stored = business_row(db, tenant.business_id)
    if field.endswith("_numbers"):
        assert sorted(stored.numbers_of(field.removesuffix("_numbers"))) == value
    elif field == "features":
        assert {name: feature_on(stored, name) for name in value} == value
    else:
        assert getattr(stored, field) == value


def test_numbers_in_any_format_replace_the_set(client, db, tenant):
    admin = create_tenant(db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")
    tenant = SimpleNamespace(headers={**admin.headers, "X-Business-Id": str(tenant.business_id)})
    body = {"voice_numbers": ["03-555-0009", "+972 3 555 0009", "972501234567"], "whatsapp_numbers": []}
    response = patch(client, tenant, body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["voice_numbers"] == ["+97235550009", "+972501234567"]
    assert response.get_json()["whatsapp_numbers"] == []
    # the freed number is free for anyone
    assert patch(client, tenant, {"whatsapp_numbers": ["+97235550001"]}).status_code == 200


def test_unchanged_values_change_nothing(client, tenant):
    current = client.get(URL, headers=tenant.headers).get_json()
    unchanged = {key: value for key, value in current.items() if key != "id" and not key.endswith("_numbers")}
    assert patch(client, tenant, unchanged).get_json() == current
    assert patch(client, tenant, {}).get_json() == current
    assert client.get("/api/crm/audit", headers=tenant.headers).get_json()["items"] == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"payments_enabled": True}, "payments_enabled"),
        ({"id": 7}, "id"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": None}, "name"),
        ({"ai_instructions": "x" * 8001}, "ai_instructions"),
        ({"opening_line": "x" * 501}, "opening_line"),
        ({"opening_line": "a\x00b"}, "opening_line"),
        ({"greeting_enabled": "yes"}, "greeting_enabled"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "America"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "zone.tab"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"features": {"wa_auto_reply": True, "telepathy": True}}, "features.telepathy"),
        ({"features": {"wa_auto_reply": "on"}}, "features.wa_auto_reply"),
        ({"features": ["wa_auto_reply"]}, "features"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(client, db, tenant, body, field):
    before = client.get(URL, headers=tenant.headers).get_json()
    response = patch(client, tenant, {"opening_line": "kept only if all is valid", **body})
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_field" and response.get_json()["field"] == field
    assert client.get(URL, headers=tenant.headers).get_json() == before


def test_a_body_that_is_not_an_object_is_a_400(client, tenant):
    for data in ("", "[]", "{"):
        response = client.patch(URL, data=data, headers={**tenant.headers, "Content-Type": "application/json"})
        assert response.status_code == 400 and response.get_json()["error"] == "invalid_json", data


def test_another_business_number_is_a_409_for_an_admin(client, db, tenant, other_tenant):
    admin = create_tenant(db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")
    support = SimpleNamespace(headers={**admin.headers, "X-Business-Id": str(tenant.business_id)})
    for field, theirs in (("voice_numbers", other_tenant.phone), ("whatsapp_numbers", other_tenant.whatsapp)):
        response = patch(client, support, {"name": "Renamed", field: ["+97235550077", theirs]})
        assert response.status_code == 409 and response.get_json()["field"] == field
        assert response.get_json()["error"] == "number_taken"
    mine = client.get(URL, headers=tenant.headers).get_json()
    assert (mine["name"], mine["voice_numbers"], mine["whatsapp_numbers"]) == (
        "Salon Dana",
        [tenant.phone],
        [tenant.whatsapp],
    )
    assert client.get(URL, headers=other_tenant.headers).get_json()["voice_numbers"] == [other_tenant.phone]
    # the same number as voice in one business and WhatsApp in another is allowed
    assert patch(client, support, {"whatsapp_numbers": [other_tenant.phone]}).status_code == 200


def test_changes_stay_in_the_callers_business(client, db, tenant, other_tenant):
    before = client.get(URL, headers=other_tenant.headers).get_json()
    patch(client, tenant, {"name": "Dana 2", "timezone": "UTC", "features": {"wa_auto_reply": True}})
    assert client.get(URL, headers=other_tenant.headers).get_json() == before
    # X-Business-Id means nothing below admin
    response = client.patch(
        URL, json={"name": "Hijacked"}, headers={**tenant.headers, "X-Business-Id": str(other_tenant.business_id)}
    )
    assert response.status_code == 200 and response.get_json()["id"] == tenant.business_id
    assert business_row(db, other_tenant.business_id).name == "Garage Moshe"


def test_every_change_is_audited_by_field_name(client, tenant, other_tenant):
    instructions = "סודי: " + "x" * 2000
    patch(
        client,
        tenant,
        {"name": "Dana 2", "ai_instructions": instructions, "opening_line": "", "greeting_enabled": False},
    )
    entries = client.get(
        "/api/crm/audit", headers=tenant.headers, query_string={"action": "business.updated"}
    ).get_json()["items"]
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["actor"], entry["entity_type"], entry["entity_id"]) == (
        f"user:{tenant.user_id}",
        "business",
        str(tenant.business_id),
    )
    assert entry["details"] == {"fields": ["ai_instructions", "name"]}
    assert client.get("/api/crm/audit", headers=other_tenant.headers).get_json()["items"] == []


def test_settings_take_effect_for_auto_reply_and_call_routing(client, db, tenant, other_tenant):
    new_number = "+97237770001"
    response = patch(client, tenant, {"features": {"wa_auto_reply": True}})
    assert response.status_code == 200, response.get_json()
    admin = create_tenant(db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")
    assigned = client.put(
        f"/api/admin/businesses/{tenant.business_id}/numbers",
        headers=admin.headers,
        json={"voice_numbers": [tenant.phone, "03-777-0001"]},
    )
    assert assigned.status_code == 200, assigned.get_json()
    assert business_row(db, tenant.business_id).feature("wa_auto_reply") is True
    assert business_row(db, other_tenant.business_id).feature("wa_auto_reply") is False

    call_sid = new_call_sid()
    params = voice_params(call_sid, to=new_number)
    answer = client.post(
        "/webhook/incoming_call",
        data=params,
        headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", params),
    )
    assert answer.status_code == 200 and answer.mimetype in ("text/xml", "application/xml")
    with db.scope() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one()
        assert (call.business_id, call.to_number) == (tenant.business_id, new_number)


def test_flags_set_elsewhere_are_kept_and_not_shown(client, db):
    owner = create_tenant(
        db, name="Flags", phone="+97235550201", whatsapp="+97235550202", features={"beta_calendar": True}
    )
    shown = client.get(URL, headers=owner.headers).get_json()["features"]
    assert shown == {"wa_auto_reply": False, "preemptive_generation": True}
    assert patch(client, owner, {"features": {"wa_auto_reply": True}}).status_code == 200
    assert business_row(db, owner.business_id).features == {"beta_calendar": True, "wa_auto_reply": True}

"""Deals, invoices and contracts: exact money, state machines, locking, filters and the audit trail."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from server.db.models import AuditLog, Invoice


def _post(client, tenant, url, body):
    return client.post(url, json=body, headers=tenant.headers)


def test_money_through_the_api(client, tenant):
    for body, minor in (
        ({"amount": "49.90"}, 4990),
        ({"amount": "0.1"}, 10),
        ({"amount": 7}, 700),
        ({"amount_minor": 4990}, 4990),
        ({}, 0),
        ({"amount": None}, 0),
        ({"amount": "0"}, 0),
        ({"amount_minor": 0}, 0),
        ({"amount": "1000000000"}, 100_000_000_000),
        ({"amount": "12", "currency": "USD"}, 1200),
    ):
        response = _post(client, tenant, "/api/crm/deals", body)
        assert response.status_code == 201, (body, response.get_json())
        assert response.get_json()["amount_minor"] == minor, body
    created = _post(client, tenant, "/api/crm/deals", {"amount": "12", "currency": "EUR"}).get_json()
    assert (created["amount"], created["currency"]) == ("12.00", "EUR")
    for body, field in (
        ({"amount": "10.005"}, "amount"),
        ({"amount": "-1"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "1e12"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 0.1}, "amount"),
        ({"amount": "1000000000.01"}, "amount"),
        ({"amount_minor": 100_000_000_001}, "amount_minor"),
        ({"amount_minor": 1.5}, "amount_minor"),
        ({"amount_minor": -1}, "amount_minor"),
        ({"amount_minor": "100"}, "amount_minor"),
        ({"amount_minor": 10**15}, "amount_minor"),
        ({"amount": "1", "amount_minor": 100}, "amount"),
        ({"currency": "NIS"}, "currency"),
        ({"currency": "ils"}, "currency"),
        ({"currency": 376}, "currency"),
    ):
        response = _post(client, tenant, "/api/crm/invoices", body)
        assert response.status_code == 400, body
        assert response.get_json() | {"message": ""} == {"error": "invalid_field", "message": "", "field": field}


MACHINES = {
    "deals": ("open", [("won", 200), ("won", 200), ("lost", 409), ("open", 200), ("lost", 200), ("open", 200)]),
    "invoices": (
        "draft",
        [("paid", 409), ("issued", 200), ("draft", 409), ("paid", 200), ("void", 409), ("issued", 409)],
    ),
    "contracts": ("draft", [("signed", 409), ("sent", 200), ("signed", 200), ("cancelled", 409), ("draft", 409)]),
}


@pytest.mark.parametrize("kind", list(MACHINES))
def test_state_machines_allow_their_moves_only_and_audit_each(client, tenant, db, kind):
    initial, steps = MACHINES[kind]
    document = _post(client, tenant, f"/api/crm/{kind}", {"title": "t"}).get_json()
    assert document["status"] == initial
    url = f"/api/crm/{kind}/{document['id']}/status"
    status, expected_audit = initial, []
    for target, code in steps:
        response = _post(client, tenant, url, {"status": target})
        assert response.status_code == code, (status, target, response.get_json())
        if code == 409:
            body = response.get_json()
            assert body["error"] == "illegal_transition" and body["field"] == "status" and target not in body["allowed"]
        elif target != status:
            expected_audit.append({"from": status, "to": target})
            status = target
        assert client.get(f"/api/crm/{kind}/{document['id']}", headers=tenant.headers).get_json()["status"] == status
    for body in ({"status": "archived"}, {}, {"status": None}, {"status": "won", "note": "x"}):
        assert _post(client, tenant, url, body).status_code == 400, body
    with db.scope() as session:
        rows = session.scalars(
            sa.select(AuditLog)
            .where(AuditLog.entity_id == str(document["id"]), AuditLog.entity_type == kind[:-1])
            .order_by(AuditLog.id)
        ).all()
    assert [r.action for r in rows] == [f"{kind[:-1]}.created"] + [f"{kind[:-1]}.status_changed"] * len(expected_audit)
    assert [r.details for r in rows[1:]] == expected_audit
    assert {r.actor for r in rows} == {f"user:{tenant.user_id}"}


def test_invoice_fields_edits_and_locking(client, tenant, db, caplog):
    caplog.set_level("INFO", logger="agentlocator.crm")
    customer = _post(client, tenant, "/api/crm/customers", {"phone": "0501234567"}).get_json()
    deal = _post(client, tenant, "/api/crm/deals", {"customer_id": customer["id"], "amount": "300"}).get_json()
    response = _post(
        client,
        tenant,
        "/api/crm/invoices",
        {
            "customer_id": customer["id"],
            "deal_id": deal["id"],
            "title": "Haircut",
            "amount": "300",
            "number": "2025-0001",
            "due_date": "2025-04-01",
            "notes": "first visit",
        },
    )
    invoice = response.get_json()
    assert response.status_code == 201, invoice
    assert (
        invoice["customer_id"],
        invoice["deal_id"],
        invoice["number"],
        invoice["due_date"],
        invoice["payment_id"],
    ) == (customer["id"], deal["id"], "2025-0001", "2025-04-01", None)
    url = f"/api/crm/invoices/{invoice['id']}"
    edited = client.patch(url, json={"amount": "350.50", "title": "Haircut + color"}, headers=tenant.headers)
    assert edited.status_code == 200 and edited.get_json()["amount_minor"] == 35050
    for body, field in (
        ({"due_date": "2025-02-30"}, "due_date"),
        ({"due_date": "tomorrow"}, "due_date"),
        ({"customer_id": 99999}, "customer_id"),
        ({"deal_id": 0}, "deal_id"),
        ({"status": "paid"}, "status"),
        ({"number": "n" * 41}, "number"),
        ({"title": 5}, "title"),
        ({"notes": "a\x00b"}, "notes"),
    ):
        response = client.patch(url, json=body, headers=tenant.headers)
        assert response.status_code == 400 and response.get_json()["field"] == field, body
    assert _post(client, tenant, f"{url}/status", {"status": "issued"}).status_code == 200
    locked = client.patch(url, json={"amount": "1"}, headers=tenant.headers)
    assert locked.status_code == 409 and locked.get_json()["error"] == "document_locked"
    assert client.patch(url, json={"notes": "paid in cash"}, headers=tenant.headers).status_code == 200
    assert client.patch(url, json={"amount": "350.50"}, headers=tenant.headers).status_code == 200  # unchanged: fine
    with db.scope() as session:  # what the payments area does when a payment for the invoice is made and paid
        stored = session.get(Invoice, invoice["id"])
        stored.payment_id, stored.status = 77, "paid"
    paid = client.get(url, headers=tenant.headers).get_json()
    assert (paid["payment_id"], paid["status"], paid["notes"]) == (77, "paid", "paid in cash")
    with db.scope() as session:
        actions = session.scalars(
            sa.select(AuditLog.action).where(AuditLog.entity_type == "invoice").order_by(AuditLog.id)
        ).all()
    assert actions == ["invoice.created", "invoice.updated", "invoice.status_changed", "invoice.updated"]
    logged = [r for r in caplog.records if getattr(r, "event", None) == "audit" and r.entity_type == "invoice"]
    assert [(r.levelname, r.action, r.actor) for r in logged] == [
        ("INFO", action, f"user:{tenant.user_id}") for action in actions
    ]


def test_contract_body_and_listing_filters(client, tenant):
    customers = [
        _post(client, tenant, "/api/crm/customers", {"phone": p}).get_json()["id"] for p in ("0501111111", "0502222222")
    ]
    ids = [
        _post(client, tenant, "/api/crm/contracts", {"customer_id": customers[i % 2], "body": f"terms {i}"}).get_json()[
            "id"
        ]
        for i in range(5)
    ]
    _post(client, tenant, f"/api/crm/contracts/{ids[0]}/status", {"status": "sent"})

    def listed(**params):
        return [
            c["id"]
            for c in client.get("/api/crm/contracts", headers=tenant.headers, query_string=params).get_json()["items"]
        ]

    assert listed() == list(reversed(ids))
    assert listed(status="sent") == [ids[0]]
    assert listed(customer_id=customers[1]) == [ids[3], ids[1]]
    assert listed(status="draft", customer_id=customers[0]) == [ids[4], ids[2]]
    page = client.get("/api/crm/contracts", headers=tenant.headers, query_string={"limit": 2}).get_json()
    rest = client.get(
        "/api/crm/contracts", headers=tenant.headers, query_string={"limit": 5, "cursor": page["next_cursor"]}
    ).get_json()
    assert [c["id"] for c in page["items"] + rest["items"]] == list(reversed(ids))
    for params, field in (
        ({"status": "won"}, "status"),
        ({"customer_id": "x"}, "customer_id"),
        ({"customer_id": "0"}, "customer_id"),
    ):
        response = client.get("/api/crm/contracts", headers=tenant.headers, query_string=params)
        assert response.status_code == 400 and response.get_json()["field"] == field
    assert client.get(f"/api/crm/contracts/{ids[2]}", headers=tenant.headers).get_json()["body"] == "terms 2"
    for body, field in (({"body": 5}, "body"), ({"kind": "nda"}, "kind")):
        response = _post(client, tenant, "/api/crm/contracts", body)
        assert response.status_code == 400 and response.get_json()["field"] == field
    assert client.get("/api/crm/contracts/99999", headers=tenant.headers).status_code == 404
    assert client.post("/api/crm/contracts", data="{oops", headers=tenant.headers).status_code == 400


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite has no row locks
def test_a_status_move_waits_for_a_concurrent_one_and_sees_its_result(app, client, tenant, db):
    invoice = _post(client, tenant, "/api/crm/invoices", {"amount": "10"}).get_json()
    url = f"/api/crm/invoices/{invoice['id']}/status"
    assert _post(client, tenant, url, {"status": "issued"}).status_code == 200
    answers = []
    with db.scope() as session:  # another worker, paying the invoice, holds the row
        held = session.execute(sa.select(Invoice).where(Invoice.id == invoice["id"]).with_for_update()).scalar_one()
        held.status = "paid"
        voiding = threading.Thread(
            target=lambda: answers.append(_post(app.test_client(), tenant, url, {"status": "void"}))
        )
        voiding.start()
        voiding.join(0.5)
        assert voiding.is_alive()  # waiting for the lock
    voiding.join(10)
    assert answers[0].status_code == 409 and answers[0].get_json()["allowed"] == []
    assert client.get(f"/api/crm/invoices/{invoice['id']}", headers=tenant.headers).get_json()["status"] == "paid"

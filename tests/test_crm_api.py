"""CRM API: calls, threads and messages, customers (both databases, through the HTTP API)."""

from __future__ import annotations

import base64
import itertools
from datetime import timedelta

import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.models import AuditLog, Thread
from testkit.fakes.bridge import FakeBridge
from testkit.fakes.twilio_webhooks import ACCOUNT_SID, signature_header
from tests.conftest import TEST_BASE_URL, add_user
from tests.crm_seed import T0, minutes, seed_call, seed_message

CALLS = "/api/crm/calls"
THREADS = "/api/crm/threads"
CUSTOMERS = "/api/crm/customers"


def get(client, tenant, url, expect=200, **params):
    response = client.get(url, headers=tenant.headers, query_string=params)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def pages_while_inserting(client, tenant, url, limit, insert) -> list[dict]:
    """Every item of every page, calling `insert()` (new rows) between page fetches."""
    items, cursor = [], None
    while True:
        page = get(client, tenant, url, limit=limit, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        insert()
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# ---- calls --------------------------------------------------------------------------------------


@pytest.fixture
def calls(db, tenant):
    seed_call(
        db,
        tenant.business_id,
        sid="CA-old",
        caller="+972501111111",
        at=T0,
        status="completed",
        transcript="לקוח: אני רוצה לקבוע תור למחר\nסוכן: בשמחה",
    )
    seed_call(
        db,
        tenant.business_id,
        sid="CA-mid",
        caller="+972502222222",
        at=T0 + timedelta(days=1),
        status="no-answer",
        transcript="",
    )
    seed_call(
        db,
        tenant.business_id,
        sid="CA-new",
        caller="+972501111111",
        at=T0 + timedelta(days=2),
        status="completed",
        transcript="caller: what are your opening hours?",
        turns=(("what are your opening hours?", "We open at nine."), ("thanks", "Bye")),
    )
    return ["CA-new", "CA-mid", "CA-old"]


def sids(page) -> list[str]:
    return [item["call_sid"] for item in page["items"]]


CALL_FILTER_CASES = [
    ({"status": "completed"}, ["CA-new", "CA-old"]),
    ({"from": "2025-03-02"}, ["CA-new", "CA-mid"]),
    ({"to": "2025-03-02"}, ["CA-mid", "CA-old"]),  # a date alone includes that whole day
    ({"from": "2025-03-01T09:00:01Z", "to": "2025-03-03T08:00:00+02:00"}, ["CA-mid"]),
    ({"from": "2025-03-02T09:00:00"}, ["CA-new", "CA-mid"]),  # no offset: UTC
    ({"phone": "050-111-1111"}, ["CA-new", "CA-old"]),
    ({"phone": "+972 50 222 2222"}, ["CA-mid"]),
    ({"phone": "972501111111"}, ["CA-new", "CA-old"]),
    ({"q": "תור"}, ["CA-old"]),
    ({"q": "opening HOURS"}, ["CA-new"]),
    ({"q": "hours tomorrow"}, []),  # every word must match
    ({"q": "!!!"}, []),
    ({"status": "completed", "phone": "0501111111", "from": "2025-03-02"}, ["CA-new"]),
    ({"limit": "2"}, ["CA-new", "CA-mid"]),
]


def test_call_list_and_filters(client, tenant, calls):
    page = get(client, tenant, CALLS)
    assert sids(page) == calls and page["next_cursor"] is None
    first = page["items"][0]
    assert first["from_number"] == "+972501111111" and first["duration_seconds"] == 42
    assert first["transcript_preview"].startswith("caller: what are")
    assert "transcript" not in first and "turns" not in first
    for params, expected in CALL_FILTER_CASES:
        assert sids(get(client, tenant, CALLS, **params)) == expected, params


BAD_CALL_FILTERS = [
    ({"from": "yesterday"}, "from"),
    ({"to": "2025-13-01"}, "to"),
    ({"from": "2025-03-01T25:00"}, "from"),
    ({"from": ""}, "from"),
    ({"from": "2025-03-05", "to": "2025-03-01"}, "to"),
    ({"limit": "0"}, "limit"),
    ({"limit": "201"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "-5"}, "limit"),
    ({"limit": ""}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'["x", 1]').decode()}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, "cursor"),
    ({"phone": "abc"}, "phone"),
    ({"q": "a\x00b"}, "q"),
    ({"status": "x" * 25}, "status"),
]


def test_bad_call_filters_answer_400_naming_the_field(client, tenant):
    for params, field in BAD_CALL_FILTERS:
        body = get(client, tenant, CALLS, expect=400, **params)
        assert body["error"] == "invalid_field" and body["field"] == field and body["message"], params


def test_call_detail_has_transcript_turns_metrics_and_voicemail(client, tenant, db, calls):
    detail = get(client, tenant, f"{CALLS}/CA-new")
    assert detail["call_sid"] == "CA-new" and detail["transcript"] == "caller: what are your opening hours?"
    assert [t["user_text"] for t in detail["turns"]] == ["what are your opening hours?", "thanks"]
    assert detail["turns"][1]["metrics"] == {
        "t_audio_ms": 120,
        "t_nlp_ms": 401,
        "t_tts_ms": 90,
        "t_total_ms": 611,
        "t_first_audio_ms": 700,
        "preemptive": "none",  # a turn stored before preemptive generation, or without it
        "preemptive_dropped": 0,
        "preemptive_dropped_chars": 0,
    }
    assert detail["voicemail"] is None
    with db.scope() as session:
        call_id = session.execute(sa.text("SELECT id, thread_id FROM calls WHERE call_sid = 'CA-mid'")).one()
        thread = session.get(Thread, call_id.thread_id)
        from server.db.dao_crm import insert_message

        insert_message(
            session,
            thread,
            direction="in",
            kind="voicemail",
            call_id=call_id.id,
            provider="twilio",
            provider_message_id="RE1",
            media=[{"url": "https://api.twilio.com/r.wav"}],
        )
    voicemail = get(client, tenant, f"{CALLS}/CA-mid")["voicemail"]
    assert voicemail["kind"] == "voicemail" and voicemail["media"][0]["url"].endswith("r.wav")
    get(client, tenant, f"{CALLS}/CA-unknown", expect=404)


def test_call_pages_are_stable_while_calls_arrive(client, tenant, db):
    """Keyset paging: new calls between page fetches cause no duplicate and no skip."""
    original = [f"CA-{i:02d}" for i in range(23)]
    for i, sid in enumerate(original):  # pairs share a timestamp: the id breaks the tie
        seed_call(db, tenant.business_id, sid=sid, at=T0 + minutes(i // 2))
    arrivals = iter(range(1000))

    def three_new_calls():
        for n in itertools.islice(arrivals, 3):
            seed_call(db, tenant.business_id, sid=f"CA-late-{n}", at=T0 + timedelta(days=1, minutes=n))

    seen = pages_while_inserting(client, tenant, CALLS, 5, three_new_calls)
    assert [call["call_sid"] for call in seen] == list(reversed(original))


# ---- threads and messages -----------------------------------------------------------------------


@pytest.fixture
def threads(db, tenant):
    dana, _ = seed_message(
        db, tenant.business_id, phone="+972501234567", name="Dana Levi", body="אני רוצה לקבוע תור", at=T0
    )
    moshe, _ = seed_message(
        db, tenant.business_id, phone="+972529876543", name="Moshe", body="What's the price?", at=T0 + minutes(5)
    )
    voice, _ = seed_message(
        db, tenant.business_id, phone="+972541112222", body="", kind="voicemail", channel="voice", at=T0 + minutes(10)
    )
    return {"dana": dana, "moshe": moshe, "voice": voice}


def thread_ids(page) -> list[int]:
    return [item["id"] for item in page["items"]]


def test_threads_are_listed_by_latest_activity_with_customer_and_last_message(client, tenant, threads):
    page = get(client, tenant, THREADS)
    assert thread_ids(page) == [threads["voice"], threads["moshe"], threads["dana"]]
    moshe = page["items"][1]
    assert moshe["customer"] == {"id": moshe["customer"]["id"], "phone": "+972529876543", "name": "Moshe"}
    assert moshe["last_message"]["body"] == "What's the price?" and moshe["unread_count"] == 1
    assert moshe["channel"] == "whatsapp" and moshe["status"] == "open" and moshe["labels"] == []


def test_thread_filters(client, tenant, db, threads):
    def ids(**params):
        return set(thread_ids(get(client, tenant, THREADS, **params)))

    assert ids(channel="voice") == {threads["voice"]}
    assert ids(channel="whatsapp") == {threads["dana"], threads["moshe"]}
    assert ids(q="dana") == {threads["dana"]}
    assert ids(q="052-987") == {threads["moshe"]}
    assert ids(q="+972 54 111") == {threads["voice"]}
    assert ids(q="price") == {threads["moshe"]}
    assert ids(q="תור") == {threads["dana"]}
    client.post(f"{THREADS}/{threads['moshe']}/read", headers=tenant.headers)
    assert ids(unread="true") == {threads["dana"], threads["voice"]}
    assert ids(unread="false") == {threads["moshe"]}
    client.patch(
        f"{THREADS}/{threads['dana']}", json={"status": "pending", "assignee": tenant.user_id}, headers=tenant.headers
    )
    assert ids(status="pending") == {threads["dana"]}
    assert ids(status="open") == {threads["moshe"], threads["voice"]}
    assert ids(assignee="me") == ids(assignee=str(tenant.user_id)) == {threads["dana"]}
    assert ids(assignee="none") == {threads["moshe"], threads["voice"]}
    for params, field in (
        ({"channel": "sms"}, "channel"),
        ({"status": "closed"}, "status"),
        ({"unread": "maybe"}, "unread"),
        ({"assignee": "someone"}, "assignee"),
    ):
        assert get(client, tenant, THREADS, expect=400, **params)["field"] == field


def test_thread_pages_are_stable_while_threads_arrive(client, tenant, db):
    original = [
        seed_message(db, tenant.business_id, phone=f"+97250000{i:04d}", at=T0 + minutes(i // 3))[0] for i in range(17)
    ]
    arrivals = iter(range(1000))

    def a_new_thread():
        n = next(arrivals)
        seed_message(db, tenant.business_id, phone=f"+97252000{n:04d}", at=T0 + timedelta(days=1, minutes=n))

    seen = pages_while_inserting(client, tenant, THREADS, 4, a_new_thread)
    assert [thread["id"] for thread in seen] == list(reversed(original))


def test_thread_detail_pages_messages_newest_first(client, tenant, db):
    seeded = [
        seed_message(db, tenant.business_id, phone="+972501234567", body=f"m{i}", at=T0 + minutes(i)) for i in range(8)
    ]
    thread_id, message_ids = seeded[0][0], [message_id for _, message_id in seeded]
    detail = get(client, tenant, f"{THREADS}/{thread_id}", limit=3)
    assert detail["id"] == thread_id and detail["customer"]["phone"] == "+972501234567"
    assert "email" in detail["customer"]  # the full customer, not the summary of the list
    assert [m["body"] for m in detail["messages"]["items"]] == ["m7", "m6", "m5"]
    url = f"{THREADS}/{thread_id}/messages"
    rest = get(client, tenant, url, limit=10, cursor=detail["messages"]["next_cursor"])
    assert [m["body"] for m in rest["items"]] == ["m4", "m3", "m2", "m1", "m0"] and rest["next_cursor"] is None
    before = get(client, tenant, url, before=message_ids[4], limit=2)
    assert [m["body"] for m in before["items"]] == ["m3", "m2"]
    assert get(client, tenant, f"{THREADS}/{thread_id}", expect=400, before=999999)["field"] == "before"
    both = get(client, tenant, url, expect=400, before=message_ids[1], cursor=before["next_cursor"])
    assert both["field"] == "before"


def test_reading_a_thread_does_not_mark_it_read_but_post_read_does(client, tenant, threads):
    url = f"{THREADS}/{threads['dana']}"
    assert get(client, tenant, url)["unread_count"] == 1
    assert get(client, tenant, url)["unread_count"] == 1
    response = client.post(f"{url}/read", headers=tenant.headers)
    assert response.status_code == 200 and response.get_json()["unread_count"] == 0
    assert get(client, tenant, url)["unread_count"] == 0


def test_patch_thread_status_assignee_labels_and_audit(client, tenant, db, threads):
    url = f"{THREADS}/{threads['dana']}"
    agent = add_user(db, tenant.business_id, "agent")
    response = client.patch(
        url,
        json={"status": "resolved", "assignee": agent.user_id, "labels": ["vip", "booking", "vip"]},
        headers=agent.headers,
    )
    body = response.get_json()
    assert response.status_code == 200, body
    assert (body["status"], body["assignee"], body["labels"]) == ("resolved", agent.user_id, ["vip", "booking"])
    assert client.patch(url, json={"assignee": None}, headers=tenant.headers).get_json()["assignee"] is None
    with db.scope() as session:
        rows = session.scalars(sa.select(AuditLog).where(AuditLog.entity_type == "thread").order_by(AuditLog.id)).all()
        assert [(r.actor, r.action) for r in rows] == [
            (f"user:{agent.user_id}", "thread.updated"),
            (f"user:{tenant.user_id}", "thread.updated"),
        ]
        assert rows[0].details["after"]["status"] == "resolved"
    for bad, field in (
        ({"status": "closed"}, "status"),
        ({"assignee": 99999}, "assignee"),
        ({"assignee": "me"}, "assignee"),
        ({"labels": "vip"}, "labels"),
        ({"labels": ["x" * 33]}, "labels"),
        ({"labels": [""]}, "labels"),
        ({"labels": ["l"] * 21}, "labels"),
        ({"color": "red"}, "color"),
    ):
        response = client.patch(url, json=bad, headers=tenant.headers)
        assert response.status_code == 400 and response.get_json()["field"] == field, bad
    assert client.patch(url, data="[1]", headers=tenant.headers).status_code == 400


def test_a_new_inbound_message_reopens_a_resolved_thread(client, tenant, threads):
    url = f"{THREADS}/{threads['dana']}"
    assert client.patch(url, json={"status": "resolved"}, headers=tenant.headers).status_code == 200
    params = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": "SM" + "1" * 32,
        "From": "whatsapp:+972501234567",
        "To": f"whatsapp:{tenant.whatsapp}",
        "Body": "עוד שאלה",
        "NumMedia": "0",
        "ProfileName": "Dana",
    }
    webhook = "/webhook/whatsapp/twilio"
    response = client.post(webhook, data=params, headers=signature_header(TEST_BASE_URL + webhook, params))
    assert response.status_code == 204
    thread = get(client, tenant, url)
    assert thread["status"] == "open" and thread["unread_count"] == 2
    assert thread["messages"]["items"][0]["body"] == "עוד שאלה"


# ---- the staff reply ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bridge_server():
    with FakeBridge("bridge-secret") as fake:
        yield fake


@pytest.fixture
def bridge(bridge_server):
    """The module's bridge fake, as new (a server per test would cost more than the test)."""
    return bridge_server.reset()


@pytest.fixture
def wa_app(make_app, bridge):
    return make_app(ENABLE_WA_BAILEYS="true", WA_BAILEYS_URL=bridge.url, WA_SHARED_SECRET="bridge-secret")


def test_staff_reply_goes_out_through_the_send_service(wa_app, bridge, tenant, threads):
    client = wa_app.test_client()
    agent = add_user(services(wa_app).database, tenant.business_id, "agent")
    response = client.post(
        f"{THREADS}/{threads['dana']}/messages",
        json={"text": "נתראה מחר ב-10"},
        headers={**agent.headers, "Idempotency-Key": "reply-1"},
    )
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["success"] is True and body["provider"] == "baileys" and body["thread_id"] == threads["dana"]
    stored = body["stored_message"]
    assert (stored["direction"], stored["status"], stored["sender_user_id"]) == ("out", "sent", agent.user_id)
    assert [s.body["text"] for s in bridge.accepted] == ["נתראה מחר ב-10"]
    assert bridge.accepted[0].body["to"] == "+972501234567"
    again = client.post(
        f"{THREADS}/{threads['dana']}/messages",
        json={"text": "נתראה מחר ב-10"},
        headers={**agent.headers, "Idempotency-Key": "reply-1"},
    )
    assert again.get_json()["message_id"] == body["message_id"] and len(bridge.accepted) == 1
    with services(wa_app).database.scope() as session:
        audit = session.scalar(
            sa.select(AuditLog).where(AuditLog.entity_type == "message", AuditLog.entity_id == str(body["message_id"]))
        )
        assert audit.action == "message.created" and audit.actor == f"user:{agent.user_id}"


def test_a_reply_on_a_voice_thread_goes_to_the_callers_whatsapp_thread(wa_app, bridge, tenant, threads):
    client = wa_app.test_client()
    response = client.post(
        f"{THREADS}/{threads['voice']}/messages", json={"text": "חזרנו אליך"}, headers=tenant.headers
    )
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["thread_id"] != threads["voice"]
    whatsapp = get(client, tenant, f"{THREADS}/{body['thread_id']}")
    assert whatsapp["channel"] == "whatsapp" and whatsapp["customer"]["phone"] == "+972541112222"
    assert bridge.accepted[0].body["to"] == "+972541112222"


def test_reply_failures_answer_like_the_send_endpoint(wa_app, bridge, client, tenant, threads):
    url = f"{THREADS}/{threads['dana']}/messages"
    unconfigured = client.post(url, json={"text": "hi"}, headers=tenant.headers)  # the default app: no provider
    assert unconfigured.status_code == 501 and unconfigured.get_json()["error"] == "whatsapp_not_configured"
    client = wa_app.test_client()
    for bad, field in (
        ({}, "text"),
        ({"text": "   "}, "text"),
        ({"text": 5}, "text"),
        ({"text": "x" * 4097}, "text"),
        ({"text": "hi", "provider": "sms"}, "provider"),
        ({"text": "hi", "to": "+1"}, "to"),
        ({"text": "hi", "content_variables": 5}, "content_variables"),
    ):
        response = client.post(url, json=bad, headers=tenant.headers)
        assert response.status_code == 400 and response.get_json()["field"] == field, bad
        assert response.get_json()["error"] == "invalid_field", bad  # the same code as anywhere else
    bridge.mode = "error"
    failed = client.post(url, json={"text": "hi"}, headers=tenant.headers)
    body = failed.get_json()
    assert failed.status_code == 502 and body["success"] is False and body["error"] == "outcome_unknown"
    assert body["stored_message"]["status"] == "failed"


# ---- customers ----------------------------------------------------------------------------------


def test_create_customer_normalises_the_phone_and_refuses_duplicates(client, tenant, db):
    response = client.post(
        CUSTOMERS, json={"phone": "050-123-4567", "name": "Dana", "email": "Dana@Example.test"}, headers=tenant.headers
    )
    created = response.get_json()
    assert response.status_code == 201, created
    assert (created["phone"], created["name"], created["email"]) == ("+972501234567", "Dana", "dana@example.test")
    for same in ("+972501234567", "972501234567", "0501234567", "+972 (50) 123-4567"):
        duplicate = client.post(CUSTOMERS, json={"phone": same}, headers=tenant.headers)
        assert duplicate.status_code == 409, same
        assert duplicate.get_json()["customer_id"] == created["id"] and duplicate.get_json()["field"] == "phone"
    for bad, field in (
        ({"phone": "abc"}, "phone"),
        ({"phone": "12"}, "phone"),
        ({}, "phone"),
        ({"phone": None}, "phone"),
        ({"phone": "0521111111", "email": "nope"}, "email"),
        ({"phone": "0521111111", "age": 3}, "age"),
        ({"phone": "0521111111", "name": "x" * 201}, "name"),
        ({"phone": 521111111}, "phone"),
    ):
        response = client.post(CUSTOMERS, json=bad, headers=tenant.headers)
        assert response.status_code == 400 and response.get_json()["field"] == field, bad
    with db.scope() as session:
        actions = session.scalars(sa.select(AuditLog.action).where(AuditLog.entity_type == "customer")).all()
    assert actions == ["customer.created"]


def test_update_customer(client, tenant):
    ids = [
        client.post(CUSTOMERS, json={"phone": phone}, headers=tenant.headers).get_json()["id"]
        for phone in ("0501111111", "0502222222")
    ]
    url = f"{CUSTOMERS}/{ids[0]}"
    response = client.patch(
        url, json={"name": "Noa", "notes": "prefers mornings", "phone": "+972 50 333 3333"}, headers=tenant.headers
    )
    assert response.status_code == 200
    assert (response.get_json()["name"], response.get_json()["phone"]) == ("Noa", "+972503333333")
    taken = client.patch(url, json={"phone": "0502222222"}, headers=tenant.headers)
    assert taken.status_code == 409 and taken.get_json()["customer_id"] == ids[1]
    assert client.patch(url, json={"phone": "0503333333"}, headers=tenant.headers).status_code == 200  # its own
    assert client.patch(url, json={"phone": None}, headers=tenant.headers).get_json()["field"] == "phone"
    assert client.patch(f"{CUSTOMERS}/999999", json={"name": "x"}, headers=tenant.headers).status_code == 404


def test_customer_search_by_name_email_or_phone_in_any_format(client, tenant):
    client.post(
        CUSTOMERS,
        json={"phone": "+972501234567", "name": "Dana Levi", "email": "levi@example.test"},
        headers=tenant.headers,
    )
    client.post(CUSTOMERS, json={"phone": "+972529999999", "name": "Moshe"}, headers=tenant.headers)
    for typed in (
        "0501234567",
        "050-1234567",
        "+972501234567",
        "972501234567",
        "+972 50-123-4567",
        "1234567",
        "dana",
        "DANA",
        "levi@example",
    ):
        assert [c["name"] for c in get(client, tenant, CUSTOMERS, q=typed)["items"]] == ["Dana Levi"], typed
    assert get(client, tenant, CUSTOMERS, q="0531234567")["items"] == []


def test_customer_page_has_threads_calls_documents_and_payments(client, tenant, db):
    from tests.crm_seed import seed_business

    seeded = seed_business(db, tenant.business_id)
    page = get(client, tenant, f"{CUSTOMERS}/{seeded.customer_id}")
    assert {t["channel"] for t in page["threads"]} == {"whatsapp", "voice"}
    assert [c["call_sid"] for c in page["calls"]] == [seeded.call_sid]
    assert [d["id"] for d in page["deals"]] == [seeded.deal_id]
    assert [i["id"] for i in page["invoices"]] == [seeded.invoice_id]
    assert [c["id"] for c in page["contracts"]] == [seeded.contract_id]
    assert [(p["id"], p["invoice_id"], p["amount"]) for p in page["payments"]] == [
        (seeded.payment_id, seeded.invoice_id, "300.00")
    ]


def test_customer_list_pages(client, tenant):
    for i in range(7):
        client.post(CUSTOMERS, json={"phone": f"050000000{i}"}, headers=tenant.headers)
    phones = [c["phone"] for c in pages_while_inserting(client, tenant, CUSTOMERS, 3, lambda: None)]
    assert phones == [f"+97250000000{i}" for i in reversed(range(7))]

"""Requests the app makes to the Baileys bridge are signed over their method, path, query and body
(`v2`, server/security/bridge_hmac.py), so a captured signed request is good for that request only:
one business's QR request can't be replayed for another, a GET can't be replayed as a DELETE.
Events the bridge posts to the app keep `v1` (timestamp and body), and neither scheme stands in for
the other. The bridge's own side of this is tested in baileys-bridge/test/ against the same vectors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from server.app_state import services
from server.config import Settings
from server.providers import baileys_admin
from server.security import bridge_hmac
from tests.conftest import BASE_TEST_ENV, create_tenant
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    WA_SECRET,
    bridge,
    bridge_message,
    bridge_server,
    messages,
    post_bridge,
)

VECTOR = json.loads(
    (Path(__file__).resolve().parent.parent / "baileys-bridge" / "test" / "vectors" / "signature.json").read_text()
)
AT = VECTOR["timestamp"]
QR, LIST, SEND, LOGOUT, DELETE = VECTOR["requests"]


def check(header: str, request: dict, *, secrets: list[str] | None = None, now: float = AT) -> str | None:
    return bridge_hmac.verify_request(
        secrets or [VECTOR["secret"]],
        request["method"],
        request["target"],
        request["body"].encode("utf-8"),
        header,
        now=now,
    )


# ---- the scheme, against the vectors the bridge tests too ------------------------------------------


@pytest.mark.parametrize("request_", VECTOR["requests"], ids=lambda r: f"{r['method']} {r['target']}")
def test_each_request_vector_is_reproduced_and_verifies(request_):
    body = request_["body"].encode("utf-8")
    signed = bridge_hmac.sign_request(VECTOR["secret"], request_["method"], request_["target"], body, AT)
    assert signed == request_["header"]
    assert check(request_["header"], request_) is None


def test_rotation_signs_with_both_secrets_and_either_verifies():
    body = SEND["body"].encode("utf-8")
    both = bridge_hmac.sign_request([VECTOR["secret"], VECTOR["previous_secret"]], "POST", "/send", body, AT)
    assert both == SEND["rotation_header"]
    assert check(both, SEND, secrets=[VECTOR["previous_secret"]]) is None
    assert check(SEND["header"], SEND, secrets=["the-next-secret", VECTOR["secret"]]) is None
    assert check(SEND["header"], SEND, secrets=["the-next-secret"]) == "signature does not match"


@pytest.mark.parametrize(
    "target",
    [
        "/qr.json?business_id=8",
        "/qr.json?business_id=70",
        "/qr.json?business_id=07",
        "/qr.json?business_id=7&business_id=8",
        "/qr.json?business_id=8&business_id=7",
        "/qr.json",
        "/status?business_id=7",
    ],
)
def test_a_qr_signature_for_one_business_does_not_verify_for_another(target):
    assert check(QR["header"], {**QR, "target": target}) == "signature does not match"


def test_a_signature_for_one_method_does_not_verify_for_another():
    assert check(QR["header"], {**QR, "method": "DELETE"}) == "signature does not match"
    assert check(LIST["header"], {**DELETE, "target": "/instances"}) == "signature does not match"
    assert check(LOGOUT["header"], DELETE) == "signature does not match"
    assert check(DELETE["header"], {**DELETE, "target": "/instances/8"}) == "signature does not match"
    assert check(SEND["header"], {**SEND, "body": SEND["body"] + " "}) == "signature does not match"
    assert check(SEND["header"], {**SEND, "target": "/login"}) == "signature does not match"


def test_the_two_schemes_never_stand_in_for_each_other():
    event = VECTOR["body"].encode("utf-8")
    event_as_request = {"method": "POST", "target": "/send", "body": VECTOR["body"]}
    assert check(VECTOR["header"], event_as_request) == "wrong signature scheme (expected v2)"
    assert check(VECTOR["header"].replace("v1=", "v2="), event_as_request) == "signature does not match"
    send_body = SEND["body"].encode("utf-8")
    assert bridge_hmac.verify([VECTOR["secret"]], send_body, SEND["header"], now=AT) == (
        "wrong signature scheme (expected v1)"
    )
    relabelled = SEND["header"].replace("v2=", "v1=")
    assert bridge_hmac.verify([VECTOR["secret"]], send_body, relabelled, now=AT) == "signature does not match"
    # Not even for a body made to look like the request's message: a v1 message has "." after the
    # timestamp, a v2 message a line feed.
    lookalike = f"POST\n/send\n{SEND['body']}".encode()
    assert bridge_hmac.verify([VECTOR["secret"]], lookalike, relabelled, now=AT) == "signature does not match"
    assert bridge_hmac.verify([VECTOR["secret"]], event, VECTOR["header"], now=AT) is None


def test_bad_request_signatures_and_requests_are_refused():
    assert check("", QR) == "missing signature"
    assert check(f"t={AT}", QR) == "malformed signature header"
    assert check(f"t={AT},v2=", QR) == "malformed signature header"
    assert check(QR["header"], QR, now=AT + 301) == "stale timestamp"
    assert check(QR["header"], QR, now=AT - 301) == "stale timestamp"
    assert check(QR["header"].replace(f"t={AT}", f"t={AT + 1}"), QR) == "signature does not match"
    assert check(QR["header"], {**QR, "target": "/qr.json?business_id=7\nx"}) == "malformed request"
    assert check(QR["header"], {**QR, "target": "/qr.json?business_id=٧"}) == "malformed request"
    assert check(QR["header"], {**QR, "target": ""}) == "malformed request"
    assert bridge_hmac.verify_request([], "GET", "/instances", b"", LIST["header"], now=AT) == (
        "no shared secret configured"
    )
    with pytest.raises(ValueError):
        bridge_hmac.sign_request(VECTOR["secret"], "GET", "/a b")
    with pytest.raises(ValueError):
        bridge_hmac.sign_request(["", ""], "GET", "/instances")


# ---- the app's requests, as a bridge receives them -------------------------------------------------


def bridge_settings(bridge, **env: str) -> Settings:  # noqa: F811
    """The production settings that point the app at a bridge (here the fake, which checks `v2`)."""
    pointed = {"ENABLE_WA_BAILEYS": "true", "WA_SHARED_SECRET": WA_SECRET, "WA_BAILEYS_URL": bridge.url}
    return Settings.from_env({**BASE_TEST_ENV, **pointed, **env}, dotenv=False)


def test_the_apps_qr_request_replayed_for_another_business_is_refused(bridge):  # noqa: F811
    settings = bridge_settings(bridge)
    bridge.strict = True
    bridge.add_instance(7, "connecting", qr="2@seven,n=,i=,a=")
    bridge.add_instance(8, "connecting", qr="2@eight,n=,i=,a=")
    assert baileys_admin.bridge_qr(settings, 7) == "2@seven,n=,i=,a="
    [asked] = bridge.qr_requests
    assert asked.signature_ok
    captured = asked.headers[bridge_hmac.HEADER]
    assert "v2=" in captured and "v1=" not in captured

    replayed = requests.get(f"{bridge.url}/qr.json?business_id=8", headers={bridge_hmac.HEADER: captured}, timeout=5)
    assert replayed.status_code == 401 and replayed.json()["error"] == "unauthorized"
    assert "2@eight" not in replayed.text
    as_delete = requests.delete(f"{bridge.url}/instances/7", headers={bridge_hmac.HEADER: captured}, timeout=5)
    assert as_delete.status_code == 401
    again = requests.get(f"{bridge.url}/qr.json?business_id=7", headers={bridge_hmac.HEADER: captured}, timeout=5)
    assert again.status_code == 200, "the same request, within the window, is what the signature was for"
    assert set(bridge.instances) == {7, 8}


def test_the_apps_admin_requests_replayed_elsewhere_are_refused(bridge):  # noqa: F811
    settings = bridge_settings(bridge)
    bridge.strict = True
    bridge.add_instance(7, "open", me="+972500000107")
    bridge.add_instance(8, "open", me="+972500000108")
    assert {i["business_id"] for i in baileys_admin.list_instances(settings)} == {7, 8}
    baileys_admin.logout_instance(settings, 7)
    assert [(method, path, ok) for method, path, ok in bridge.admin_requests] == [
        ("GET", "/instances", True),
        ("POST", "/instances/7/logout", True),
    ]
    list_signature = bridge_hmac.sign_request(WA_SECRET, "GET", "/instances")
    logout_signature = bridge_hmac.sign_request(WA_SECRET, "POST", "/instances/7/logout")
    for method, path, header in (
        ("DELETE", "/instances/7", list_signature),
        ("DELETE", "/instances/7", logout_signature),
        ("POST", "/instances/8/logout", logout_signature),
    ):
        answer = requests.request(method, bridge.url + path, headers={bridge_hmac.HEADER: header}, timeout=5)
        assert answer.status_code == 401, (method, path)
    assert set(bridge.instances) == {7, 8}


def test_admin_requests_carry_both_secrets_while_one_is_rotated(bridge):  # noqa: F811
    # The app already runs the next secret; the bridge still runs the old one.
    settings = bridge_settings(bridge, WA_SHARED_SECRET="the-next-secret", WA_SHARED_SECRET_PREVIOUS=WA_SECRET)
    bridge.qr = "2@rotating,n=,i=,a="
    assert baileys_admin.bridge_qr(settings, 7) == "2@rotating,n=,i=,a="
    assert baileys_admin.list_instances(settings) == []
    assert bridge.qr_requests[0].headers[bridge_hmac.HEADER].count("v2=") == 2
    assert [ok for _, _, ok in bridge.admin_requests] == [True]


# ---- events to the app keep v1 ---------------------------------------------------------------------


def test_the_webhook_refuses_a_request_style_signature(make_app):
    app = make_app(WA_SHARED_SECRET=WA_SECRET)
    tenant = create_tenant(services(app).database)
    raw = json.dumps(bridge_message(tenant.whatsapp), ensure_ascii=False).encode("utf-8")
    header = bridge_hmac.sign_request(WA_SECRET, "POST", "/webhook/whatsapp/baileys", raw, int(time.time()))
    response = post_bridge(app.test_client(), raw, header=header)
    assert response.status_code == 401 and response.json["error"] == "invalid_signature"
    assert "scheme" in response.json["message"]
    assert messages(services(app).database) == []
    assert post_bridge(app.test_client(), raw).status_code == 204  # the event's own v1 signature

"""The deep vendor check (server/providers/vendor_check.py) against the wire fakes of every vendor:
GO when all answer, NO-GO naming the vendor whose credentials are wrong (never echoing a secret),
skipped when unconfigured; `flask --app main check-providers`, the admin endpoint and `/readyz`."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest

from server.db.models import ServiceState, utcnow
from server.providers import vendor_check
from testkit.fakes.bridge import FakeBridge
from testkit.fakes.google_speech import FakeSpeech
from testkit.fakes.google_tts import FakeTextToSpeech
from testkit.fakes.openai_server import FakeOpenAI
from testkit.fakes.paypal_server import FakePayPal
from testkit.fakes.twilio_rest import FakeTwilioRest
from tests.conftest import add_user, make_settings

ACCOUNT_SID = "AC" + "7" * 32
TWILIO_TOKEN = "vendor-check-twilio-token"
OPENAI_KEY = "sk-vendor-check-key"
PAYPAL_SECRET = "vendor-check-paypal-secret"
BRIDGE_SECRET = "vendor-check-bridge-secret"
SECRETS = (TWILIO_TOKEN, OPENAI_KEY, PAYPAL_SECRET, BRIDGE_SECRET)


@pytest.fixture(scope="module")
def fakes():
    with (
        FakeSpeech() as stt,
        FakeTextToSpeech() as tts,
        FakeOpenAI(api_key=OPENAI_KEY) as llm,
        FakeTwilioRest(account_sid=ACCOUNT_SID, auth_token=TWILIO_TOKEN) as twilio,
        FakePayPal(client_secret=PAYPAL_SECRET) as paypal,
        FakeBridge(BRIDGE_SECRET) as bridge,
    ):
        yield {"stt": stt, "tts": tts, "llm": llm, "twilio": twilio, "paypal": paypal, "bridge": bridge}


@pytest.fixture(autouse=True)
def healthy(fakes):
    """Every vendor as it should be, before and after each test."""

    def reset():
        fakes["stt"].required_token = fakes["tts"].required_token = None
        fakes["twilio"].account_status = "active"
        fakes["bridge"].reset()
        fakes["bridge"].add_instance(1, "open", me="+972500000000")  # one business's account, linked

    reset()
    yield
    reset()


def vendor_env(fakes, **overrides: str) -> dict[str, str]:
    return {
        "GOOGLE_SPEECH_EMULATOR_HOST": fakes["stt"].address,
        "GOOGLE_TTS_EMULATOR_HOST": fakes["tts"].address,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": fakes["llm"].base_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_API_BASE_URL": fakes["twilio"].url,
        "PAYPAL_CLIENT_ID": fakes["paypal"].client_id,
        "PAYPAL_CLIENT_SECRET": PAYPAL_SECRET,
        "PAYPAL_API_BASE_URL": fakes["paypal"].url,
        "ENABLE_WA_BAILEYS": "true",
        "WA_SHARED_SECRET": BRIDGE_SECRET,
        "WA_BAILEYS_URL": fakes["bridge"].url,
        **overrides,
    }


def by_vendor(report: dict) -> dict[str, dict]:
    return {result["vendor"]: result for result in report["results"]}


def test_every_vendor_answers_go(fakes):
    report = vendor_check.check_vendors(make_settings(**vendor_env(fakes)))
    results = by_vendor(report)
    assert report["go"] is True and report["failed"] == []
    assert list(results) == ["google_stt", "google_tts", "openai", "twilio", "paypal", "bridge"]
    for result in results.values():
        assert result["status"] == "ok", result
        assert isinstance(result["latency_ms"], int) and 0 <= result["latency_ms"] < 5000
    # Each tiny request really reached its vendor.
    assert any(r["text"] == "שלום" for r in fakes["tts"].requests)
    assert any(r["body"].get("max_completion_tokens") == 1 for r in fakes["llm"].requests if r["body"])
    assert any(r.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}.json" for r in fakes["twilio"].requests)
    assert fakes["bridge"].admin_requests and fakes["bridge"].admin_requests[-1][2]  # signed: the secret matches
    assert "WhatsApp connected" in results["bridge"]["detail"]


WRONG = {
    "openai": ({"OPENAI_API_KEY": "sk-wrong-key-123"}, "wrong credentials (HTTP 401)"),
    "twilio": ({"TWILIO_AUTH_TOKEN": "wrong-twilio-token"}, "wrong credentials (HTTP 401)"),
    "paypal": ({"PAYPAL_CLIENT_SECRET": "wrong-paypal-secret"}, "wrong credentials (HTTP 401)"),
    "bridge": ({"WA_SHARED_SECRET": "wrong-bridge-secret"}, "wrong shared secret (HTTP 401)"),
}


@pytest.mark.parametrize("vendor", sorted(WRONG))
def test_wrong_credentials_are_no_go_naming_the_vendor_and_no_secret(fakes, vendor):
    overrides, reason = WRONG[vendor]
    report = vendor_check.check_vendors(make_settings(**vendor_env(fakes, **overrides)))
    assert report["go"] is False and report["failed"] == [vendor]
    assert by_vendor(report)[vendor]["detail"].startswith(reason)
    shown = json.dumps(report, ensure_ascii=False) + vendor_check.render_report(report)
    for secret in (*SECRETS, *overrides.values()):
        assert secret not in shown
    assert f"NO-GO: {vendor} failed" in vendor_check.render_report(report)


@pytest.mark.parametrize("vendor, fake", [("google_stt", "stt"), ("google_tts", "tts")])
def test_google_refusing_the_credentials_is_no_go(fakes, vendor, fake):
    fakes[fake].required_token = "a-token-the-app-does-not-have"
    report = vendor_check.check_vendors(make_settings(**vendor_env(fakes)))
    assert report["failed"] == [vendor]
    assert by_vendor(report)[vendor]["detail"].startswith("wrong credentials (UNAUTHENTICATED)")


def test_unconfigured_vendors_are_skipped_and_the_run_is_go(fakes):
    report = vendor_check.check_vendors(make_settings(TWILIO_ACCOUNT_SID="", TWILIO_AUTH_TOKEN="", OPENAI_API_KEY=""))
    assert report["go"] is True
    assert {r["status"] for r in report["results"]} == {"skipped"}
    assert all(r["latency_ms"] is None and r["detail"] == "not configured" for r in report["results"])


def test_an_unreachable_vendor_a_suspended_account_and_an_unlinked_phone_fail_with_their_reason(fakes):
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    fakes["twilio"].account_status = "suspended"
    fakes["bridge"].add_instance(7, "close")
    report = vendor_check.check_vendors(make_settings(**vendor_env(fakes, PAYPAL_API_BASE_URL=dead)))
    results = by_vendor(report)
    assert report["failed"] == ["twilio", "paypal", "bridge"]
    assert results["twilio"]["detail"] == "the account is suspended, not active"
    assert results["paypal"]["detail"].startswith("unreachable (")
    assert results["bridge"]["detail"].startswith("WhatsApp is not connected (business 7: close)")


def test_an_unknown_model_is_named(fakes):
    fakes["llm"].fail_next(404, message="The model `gpt-nope` does not exist")
    report = vendor_check.check_vendors(make_settings(**vendor_env(fakes, OPENAI_MODEL="gpt-nope")))
    assert by_vendor(report)["openai"]["detail"] == "model gpt-nope not found for this key (HTTP 404)"


def test_the_cli_prints_the_report_and_exits_non_zero_on_no_go(make_app, fakes):
    app = make_app(**vendor_env(fakes, OPENAI_API_KEY="sk-wrong-key-123"))
    runner = app.test_cli_runner()
    text = runner.invoke(args=["check-providers"])
    assert text.exit_code == 1, text.output
    lines = text.output.splitlines()
    assert lines[-1] == "NO-GO: openai failed"
    assert any(line.startswith("FAIL  openai") and "wrong credentials (HTTP 401)" in line for line in lines)
    assert any(line.startswith("OK    twilio") and " ms  account active" in line for line in lines)
    as_json = runner.invoke(args=["check-providers", "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.output)
    assert report["go"] is False and report["failed"] == ["openai"]
    assert "sk-wrong-key-123" not in text.output + as_json.output


def test_the_cli_exits_zero_on_go(make_app, fakes):
    result = make_app(**vendor_env(fakes)).test_cli_runner().invoke(args=["check-providers", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["go"] is True


def test_readyz_shows_the_last_report_and_its_age_without_calling_a_vendor(make_app, fakes, db):
    app = make_app(**vendor_env(fakes, PAYPAL_CLIENT_SECRET="wrong-paypal-secret"))
    client = app.test_client()
    assert client.get("/readyz").get_json()["vendor_check"] is None  # no check ran yet
    assert app.test_cli_runner().invoke(args=["check-providers"]).exit_code == 1
    with db.scope() as session:  # the check ran two minutes ago
        session.get(ServiceState, vendor_check.STATE_KEY).updated_at = utcnow() - timedelta(minutes=2)
    requests_before = len(fakes["paypal"].requests)
    body = client.get("/readyz").get_json()
    assert len(fakes["paypal"].requests) == requests_before  # /readyz asked no vendor
    shown = body["vendor_check"]
    assert shown["go"] is False and shown["failed"] == ["paypal"]
    assert 118 <= shown["age_seconds"] <= 140
    assert [w for w in body["warnings"] if w["code"] == "vendor_check_failed"][0]["message"].startswith(
        "the last vendor check failed for paypal"
    )
    assert "wrong-paypal-secret" not in json.dumps(body)


def test_the_admin_endpoint_runs_the_check_for_admins_only(make_app, fakes, db, tenant):
    client = make_app(**vendor_env(fakes, TWILIO_AUTH_TOKEN="wrong-twilio-token")).test_client()
    assert client.post("/api/admin/vendor-check", headers=tenant.headers).status_code == 403  # an owner
    assert client.post("/api/admin/vendor-check").status_code == 401
    admin = add_user(db, tenant.business_id, "admin")
    answer = client.post("/api/admin/vendor-check", headers=admin.headers)
    assert answer.status_code == 200
    report = answer.get_json()
    assert report["go"] is False and report["failed"] == ["twilio"]
    assert client.get("/readyz").get_json()["vendor_check"]["failed"] == ["twilio"]

"""`smoke.sh` against the app under real gunicorn (gevent): all PASS when configured, NO-GO when not."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import requests

from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.fakes.twilio_webhooks import ACCOUNT_SID, signature_header
from testkit.servers import PROJECT_ROOT, GunicornServer, flask_cli
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN

# smoke.sh as a subprocess, against the app under real gunicorn
pytestmark = pytest.mark.slow

VOICE_NUMBER = "+97235550001"
WHATSAPP_NUMBER = "+97235550002"
CUSTOMER = "+972501234567"


def _smoke(base_url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMOKE_", "TWILIO_", "PUBLIC_BASE_URL"))}
    return subprocess.run(
        [str(PROJECT_ROOT / "smoke.sh"), base_url, *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def twilio():
    with FakeTwilioRest(account_sid=ACCOUNT_SID, auth_token=TEST_TWILIO_TOKEN) as fake:
        yield fake


def test_smoke_passes_against_a_configured_deployment(tmp_path, twilio):
    # A Tranzila terminal without API keys works (its payments wait for an owner's confirmation):
    # smoke shows it as a WARN line, and the run stays GO.
    env = {
        **BASE_TEST_ENV,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'smoke.db'}",
        "GIT_COMMIT": "0123456789ab",
        "OPENAI_API_KEY": "sk-smoke",
        "GOOGLE_SPEECH_EMULATOR_HOST": "127.0.0.1:9",
        "GOOGLE_TTS_EMULATOR_HOST": "127.0.0.1:9",
        "ENABLE_WA_TWILIO": "true",
        "TWILIO_WA_FROM": WHATSAPP_NUMBER,
        "TWILIO_API_BASE_URL": twilio.url,
        "WATCHDOG_SECONDS": "30",
        "TRANZILA_TERMINAL": "smoke-terminal",
    }
    server = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
    env["PUBLIC_BASE_URL"] = server.env["PUBLIC_BASE_URL"] = server.url
    business = flask_cli(
        env, "create-business", "--name", "Smoke Salon", "--phone", VOICE_NUMBER, "--whatsapp", WHATSAPP_NUMBER
    )
    user = flask_cli(
        env,
        "create-user",
        "--business-id",
        str(business["id"]),
        "--email",
        "smoke@salon.example",
        "--password",
        "smoke-pass",
        "--role",
        "owner",
    )
    with server:
        # The customer wrote first, so a free-form reply is inside WhatsApp's 24-hour window.
        inbound = {
            "From": f"whatsapp:{CUSTOMER}",
            "To": f"whatsapp:{WHATSAPP_NUMBER}",
            "Body": "שלום",
            "MessageSid": "SM" + "1" * 32,
            "AccountSid": ACCOUNT_SID,
            "NumMedia": "0",
        }
        assert (
            requests.post(
                server.url + "/webhook/whatsapp/twilio",
                data=inbound,
                timeout=10,
                headers=signature_header(server.url + "/webhook/whatsapp/twilio", inbound),
            ).status_code
            == 204
        )

        smoke_env = {
            "TWILIO_AUTH_TOKEN": TEST_TWILIO_TOKEN,
            "PUBLIC_BASE_URL": server.url,
            "SMOKE_TO": VOICE_NUMBER,
            "SMOKE_WA_TO": CUSTOMER,
            "SMOKE_API_TOKEN": user["token"],
        }
        result = _smoke(server.url, smoke_env)
        lines = [line for line in result.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(lines) == 12 and all(line.startswith("PASS") for line in lines), result.stdout
        [warning] = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
        assert "tranzila_without_api_keys" in warning and "awaiting_confirm" in warning
        assert "GO" in result.stdout.splitlines()[-1] and "NO-GO" not in result.stdout
        assert len(twilio.requests_for("Messages")) == 1

        machine = _smoke(server.url, smoke_env, "--json")
        report = json.loads(machine.stdout)
        assert machine.returncode == 0 and report["go"] is True
        assert report["summary"] == {"PASS": 12, "FAIL": 0, "SKIP": 0, "WARN": 1}
        assert {r["name"] for r in report["results"]} >= {"websocket handshake", "twiml preview", "stream_ended"}


def test_smoke_fails_against_a_misconfigured_deployment(tmp_path):
    # No speech or language credentials (voice degraded), no GIT_COMMIT, and the operator's Twilio
    # token differs from the app's: each must show as a FAIL line, and the run as NO-GO.
    env = {**BASE_TEST_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'smoke.db'}"}
    server = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
    env["PUBLIC_BASE_URL"] = server.env["PUBLIC_BASE_URL"] = server.url
    flask_cli(env, "create-business", "--name", "Smoke Salon", "--phone", VOICE_NUMBER)
    with server:
        result = _smoke(
            server.url,
            {"TWILIO_AUTH_TOKEN": "not-the-apps-token", "PUBLIC_BASE_URL": server.url, "SMOKE_TO": VOICE_NUMBER},
        )
    failed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAIL")}
    assert result.returncode != 0
    assert {"version", "twiml", "stream_ended"} <= failed, result.stdout
    assert "NO-GO" in result.stdout.splitlines()[-1]
    assert any(line.startswith("SKIP") and "whatsapp" in line for line in result.stdout.splitlines())


def test_smoke_reports_an_unreachable_deployment_without_crashing():
    result = _smoke("http://127.0.0.1:9", {})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout.count("FAIL") >= 10

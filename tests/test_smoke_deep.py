"""`smoke.sh --deep` against the app under real gunicorn (gevent), every vendor a wire fake: one line per
vendor, GO when all answer, NO-GO naming the vendor whose credentials are wrong; and the same check
from the operator's shell (`flask --app main check-providers`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.servers import PROJECT_ROOT, GunicornServer, flask_cli
from tests.conftest import BASE_TEST_ENV
from tests.test_smoke import _smoke
from tests.test_vendor_check import OPENAI_KEY, fakes, healthy, vendor_env  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def _deployment(tmp_path, env: dict[str, str]) -> tuple[GunicornServer, dict[str, str], str]:
    """A gunicorn server over `env`, with an admin whose token smoke's --deep uses."""
    env = {**BASE_TEST_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'deep.db'}", "GIT_COMMIT": "0123456789ab", **env}
    server = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
    env["PUBLIC_BASE_URL"] = server.env["PUBLIC_BASE_URL"] = server.url
    business = flask_cli(env, "create-business", "--name", "Deep Salon", "--phone", "+97235550011")
    admin = flask_cli(
        env, "create-user", "--business-id", str(business["id"]), "--email", "ops@deep.example",
        "--password", "deep-pass", "--role", "admin",
    )  # fmt: skip
    return server, env, admin["token"]


def _vendor_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line[6:].startswith("vendor")]


def test_smoke_deep_is_go_when_every_vendor_answers_and_no_go_naming_the_one_with_wrong_credentials(tmp_path, fakes):  # noqa: F811
    server, env, token = _deployment(tmp_path, vendor_env(fakes))
    with server:
        good = _smoke(server.url, {"PUBLIC_BASE_URL": server.url, "SMOKE_ADMIN_TOKEN": token}, "--deep")
        vendors = _vendor_lines(good.stdout)
        assert [line.split()[2] for line in vendors] == [
            "google_stt",
            "google_tts",
            "openai",
            "twilio",
            "paypal",
            "bridge",
        ]
        assert all(line.startswith("PASS") and line.endswith(" ms)") for line in vendors), good.stdout
        # The deployment's OpenAI key is revoked: the deep run is NO-GO and says which vendor and why.
        fakes["llm"].api_key = "sk-rotated-elsewhere"
        try:
            bad = _smoke(server.url, {"PUBLIC_BASE_URL": server.url, "SMOKE_ADMIN_TOKEN": token}, "--deep")
        finally:
            fakes["llm"].api_key = OPENAI_KEY
    print(bad.stdout)
    [failed] = [line for line in _vendor_lines(bad.stdout) if line.startswith("FAIL")]
    assert failed.split()[2] == "openai" and "wrong credentials (HTTP 401)" in failed
    assert bad.returncode == 1 and "NO-GO" in bad.stdout.splitlines()[-1]
    assert OPENAI_KEY not in bad.stdout


def test_smoke_deep_without_an_admin_token_fails_clearly(tmp_path, fakes):  # noqa: F811
    server, env, _token = _deployment(tmp_path, vendor_env(fakes))
    with server:
        result = _smoke(server.url, {"PUBLIC_BASE_URL": server.url}, "--deep")
        wrong = _smoke(server.url, {"PUBLIC_BASE_URL": server.url, "SMOKE_ADMIN_TOKEN": "al_not-a-token"}, "--deep")
    assert result.returncode == 1 and "--deep needs SMOKE_ADMIN_TOKEN" in result.stdout
    assert wrong.returncode == 1 and "POST /api/admin/vendor-check → 401" in wrong.stdout


def test_check_providers_from_the_shell_with_wrong_twilio_credentials(tmp_path, fakes):  # noqa: F811
    env = {
        **BASE_TEST_ENV,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        **vendor_env(fakes, TWILIO_AUTH_TOKEN="not-the-account-token"),
    }
    flask = str(Path(sys.executable).with_name("flask"))
    result = subprocess.run(
        [flask, "--app", "main", "check-providers"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(result.stdout)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "NO-GO: twilio failed"
    assert "not-the-account-token" not in result.stdout + result.stderr

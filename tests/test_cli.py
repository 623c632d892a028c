import json

import pytest


def _run(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_admin_cli_prints_json_exactly_as_documented(app, client):
    business = _run(
        app, "create-business", "--name", "Salon Dana", "--phone", "03-555-0001", "--whatsapp", "+972 50 555 0002"
    )
    assert set(business) == {"id"}
    user = _run(
        app,
        "create-user",
        "--business-id",
        str(business["id"]),
        "--email",
        "owner@salon.example",
        "--password",
        "s3cret-pass",
        "--role",
        "owner",
    )
    assert set(user) == {"id", "token"}
    login = client.post("/api/auth/login", json={"email": "owner@salon.example", "password": "s3cret-pass"})
    assert login.status_code == 200
    assert _run(app, "migrate") == {"applied": []}


def test_create_user_for_an_unknown_business_fails(app):
    result = app.test_cli_runner().invoke(
        args=["create-user", "--business-id", "999", "--email", "a@b.c", "--password", "x", "--role", "owner"]
    )
    assert result.exit_code != 0 and "no business with id 999" in result.output
    result = app.test_cli_runner().invoke(args=["create-business", "--name", "X", "--phone", "abc"])
    assert result.exit_code != 0


@pytest.mark.slow  # the admin CLI as a subprocess
def test_cli_stdout_is_exactly_one_json_object(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    flask = str(Path(sys.executable).with_name("flask"))
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    result = subprocess.run(
        [flask, "--app", "main", "create-business", "--name", "Salon", "--phone", "+97235550009"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"id": 1}
    assert "Applied migration: 0001_initial" in result.stderr  # the logs still reach the operator

import json


def _run(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_admin_cli_prints_json_exactly_as_documented(app, client):
    business = _run(app, "create-business", "--name", "Salon Dana", "--phone", "03-555-0001",
                    "--whatsapp", "+972 50 555 0002")
    assert set(business) == {"id"}
    user = _run(app, "create-user", "--business-id", str(business["id"]), "--email", "owner@salon.example",
                "--password", "s3cret-pass", "--role", "owner")
    assert set(user) == {"id", "token"}
    login = client.post("/api/auth/login", json={"email": "owner@salon.example", "password": "s3cret-pass"})
    assert login.status_code == 200
    assert _run(app, "migrate") == {"applied": []}


def test_create_user_for_an_unknown_business_fails(app):
    result = app.test_cli_runner().invoke(args=["create-user", "--business-id", "999", "--email", "a@b.c",
                                                "--password", "x", "--role", "owner"])
    assert result.exit_code != 0 and "no business with id 999" in result.output
    result = app.test_cli_runner().invoke(args=["create-business", "--name", "X", "--phone", "abc"])
    assert result.exit_code != 0

import json
import logging

import pytest
from flask import Blueprint

from server.app_state import services


def test_root_health_version(client):
    assert client.get("/").data == b"ok"
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/version").json == {"git_commit": None, "build_time": None, "deploy_id": None}


def test_version_comes_from_the_environment(make_app):
    client = make_app(GIT_COMMIT="abc123", BUILD_TIME="2026-11-21T10:00:00Z", DEPLOY_ID="d-42").test_client()
    assert client.get("/version").json == {
        "git_commit": "abc123",
        "build_time": "2026-11-21T10:00:00Z",
        "deploy_id": "d-42",
    }


def test_readyz_lists_providers_and_voice_mode(client, make_app):
    body = client.get("/readyz").json
    assert body["status"] == "ready" and body["voice"] == "degraded"
    assert set(body["providers"]) == {
        "twilio",
        "google_stt",
        "google_tts",
        "openai",
        "whatsapp_twilio",
        "whatsapp_baileys",
        "paypal",
        "tranzila",
    }
    assert body["providers"]["twilio"] is True and body["providers"]["openai"] is False
    ready = (
        make_app(
            OPENAI_API_KEY="sk-x", GOOGLE_SPEECH_EMULATOR_HOST="127.0.0.1:1", GOOGLE_TTS_EMULATOR_HOST="127.0.0.1:2"
        )
        .test_client()
        .get("/readyz")
        .json
    )
    assert ready["voice"] == "ai"


def test_readyz_is_503_when_the_database_is_unreachable(app, client):
    services(app).database.engine.dispose()
    original = services(app).database.ping
    services(app).database.ping = lambda: (_ for _ in ()).throw(ConnectionError("db down"))
    try:
        response = client.get("/readyz")
    finally:
        services(app).database.ping = original
    assert response.status_code == 503 and response.json["reason"] == "database_unreachable"
    assert "db down" not in response.get_data(as_text=True)


def test_readyz_is_503_while_draining(app, client):
    services(app).lifecycle.start_draining()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["reason"] == "draining"


@pytest.mark.parametrize("name", ["greeting_he.mp3", "fallback_he.mp3"])
def test_static_prompts_answer_head_as_audio(client, name):
    response = client.head(f"/static/tts/{name}")
    assert response.status_code == 200 and response.mimetype == "audio/mpeg"
    assert int(response.headers["Content-Length"]) > 5000


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/webhook/stripe"),
        ("get", "/api/webhook/stripe"),
        ("post", "/api/payments/stripe"),
        ("post", "/api/payments/stripe/checkout"),
        ("get", "/api/payments/stripe-session/abc"),
        ("delete", "/api/payments/stripe/refund/1"),
    ],
)
def test_legacy_stripe_routes_are_gone(client, method, path):
    response = getattr(client, method)(path, data=b"{}")
    assert response.status_code == 410 and response.json["error"] == "gone"


def test_no_module_imports_stripe():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "server"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import stripe" not in text and "from stripe" not in text, path


def test_unknown_route_wrong_method_oversized_body(make_app):
    client = make_app(MAX_CONTENT_LENGTH="1000").test_client()
    unknown = client.get("/api/does-not-exist")
    assert unknown.status_code == 404 and unknown.json["error"] == "not_found"
    assert client.get("/webhook/nothing-here").json["error"] == "not_found"
    wrong = client.get("/api/auth/login")
    assert wrong.status_code == 405 and wrong.json["error"] == "method_not_allowed" and "POST" in wrong.headers["Allow"]
    big = client.post("/api/auth/login", data=b"x" * 5000, content_type="application/json")
    assert big.status_code == 413 and big.json["error"] == "payload_too_large"


def test_an_unexpected_exception_is_a_500_that_leaks_nothing(make_app, caplog):
    app = make_app()
    bp = Blueprint("boom", __name__)

    @bp.get("/api/test/boom")
    def boom():
        raise RuntimeError("password=hunter2 in a stack trace")

    app.register_blueprint(bp)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    caplog.set_level(logging.ERROR)
    response = app.test_client().get("/api/test/boom", headers={"X-Request-Id": "req-abc"})
    assert response.status_code == 500
    assert response.json == {
        "error": "internal_error",
        "message": "an internal error occurred; quote the request id",
        "request_id": "req-abc",
    }
    assert "hunter2" not in response.get_data(as_text=True)
    # The operator finds the failure in the logs by the id the client quotes: the record itself carries it.
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "unhandled_error"]
    assert record.levelno == logging.ERROR and record.request_id == "req-abc"
    from server.logs import JsonFormatter

    assert json.loads(JsonFormatter().format(record))["request_id"] == "req-abc"


def test_logs_are_json_lines_with_a_request_id(app, capsys):
    from server.logs import JsonFormatter, request_id_var

    token = request_id_var.set("rid-1")
    try:
        record = logging.LogRecord("agentlocator.test", logging.INFO, __file__, 1, "hello %s", ("שלום",), None)
        record.event = "greeting"
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["msg"] == "hello שלום" and entry["request_id"] == "rid-1" and entry["event"] == "greeting"
    assert entry["level"] == "INFO" and entry["ts"].endswith("Z")


def test_log_level_is_honoured(make_app):
    make_app(LOG_LEVEL="WARNING")
    assert logging.getLogger().level == logging.WARNING
    make_app(LOG_LEVEL="INFO")
    assert logging.getLogger().level == logging.INFO

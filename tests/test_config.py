import logging

import pytest

from server.config import ConfigError, Settings


def test_defaults_without_any_environment():
    settings = Settings.from_env({})
    assert settings.port == 5000
    assert settings.wa_baileys_port == 8000
    assert settings.sqlalchemy_url.startswith("sqlite:///")
    assert settings.wa_provider_priority == ("baileys", "twilio")
    assert settings.twilio_api_base_url == "https://api.twilio.com"
    assert settings.paypal_base_url == "https://api-m.sandbox.paypal.com"
    assert settings.bridge_url == "http://127.0.0.1:8000"
    assert settings.watchdog_seconds == 6.0


@pytest.mark.parametrize(
    "name, value",
    [
        ("WA_BAILEYS_PORT", "abc"),
        ("WA_BAILEYS_PORT", "70000"),
        ("PORT", "-1"),
        ("ENABLE_WA_TWILIO", "maybe"),
        ("LOG_LEVEL", "LOUD"),
        ("PUBLIC_BASE_URL", "ftp://x"),
        ("PUBLIC_BASE_URL", "agent.example.com"),
        ("WATCHDOG_SECONDS", "0"),
        ("WA_PROVIDER_PRIORITY", "baileys,carrier-pigeon"),
        ("PAYPAL_MODE", "prod"),
        ("GOOGLE_SPEECH_EMULATOR_HOST", "localhost"),
        ("MAX_CONTENT_LENGTH", "lots"),
        ("STT_CHANNELS", "0"),
        ("STT_CHANNELS", "33"),
    ],
)
def test_a_wrong_value_names_the_variable_in_one_line(name, value):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({name: value})
    message = str(exc.value)
    assert name in message and "\n" not in message


def test_secret_values_never_appear_in_errors_or_repr():
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"ENABLE_WA_BAILEYS": "true"})
    assert "WA_SHARED_SECRET" in str(exc.value)
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": "tok-very-secret",
            "OPENAI_API_KEY": "sk-very-secret",
            "WA_SHARED_SECRET": "bridge-very-secret",
            "PAYPAL_CLIENT_SECRET": "pp-very-secret",
        }
    )
    shown = repr(settings)
    for secret in ("tok-very-secret", "sk-very-secret", "bridge-very-secret", "pp-very-secret"):
        assert secret not in shown


def test_postgres_urls_use_the_shipped_driver():
    assert Settings.from_env({"DATABASE_URL": "postgres://u@h/db"}).sqlalchemy_url == "postgresql+psycopg2://u@h/db"
    assert Settings.from_env({"DATABASE_URL": "postgresql://u@h/db"}).sqlalchemy_url == "postgresql+psycopg2://u@h/db"


def test_dotenv_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    import server.config as config

    (tmp_path / ".env").write_text("WA_BAILEYS_PORT=8123\nLOG_LEVEL=debug\n")
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.delenv("WA_BAILEYS_PORT", raising=False)
    settings = Settings.from_env()
    assert settings.wa_baileys_port == 8123
    assert settings.log_level == "WARNING"


@pytest.mark.fresh_app  # what building an app logs
def test_start_up_logs_do_not_contain_secrets(make_app, caplog):
    caplog.set_level(logging.DEBUG)
    make_app(OPENAI_API_KEY="sk-should-not-leak", WA_SHARED_SECRET="never-log-me")
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "sk-should-not-leak" not in text and "never-log-me" not in text


@pytest.mark.slow  # flask migrate as a subprocess
def test_bad_configuration_stops_gunicorn_start_with_one_line(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [str(Path(sys.executable).with_name("flask")), "--app", "main", "migrate"],
        cwd=root,
        env={**os.environ, "WA_BAILEYS_PORT": "abc", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip().splitlines()[-1]
        == "configuration error: Invalid WA_BAILEYS_PORT='abc': expected a number"
    )


def test_the_operations_guide_documents_every_setting():
    import dataclasses
    from pathlib import Path

    guide = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    reference = guide.split("\n## Configuration reference\n", 1)[1].split("\n## ", 1)[0]
    missing = [f.metadata["env"] for f in dataclasses.fields(Settings) if f"`{f.metadata['env']}`" not in reference]
    assert not missing, f"the configuration reference in docs/operations.md lacks {missing}"

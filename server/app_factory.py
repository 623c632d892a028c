"""`create_app()`: configuration → logging → services (database + migrations, jobs) → blueprints → errors → CLI.

Each step is one named function, so this file reads as the table of contents of the service.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
from pathlib import Path

from flask import Flask

from server.agent_tools import register_all as register_all_agent_tools
from server.app_state import AppServices, install_services
from server.config import PROJECT_ROOT, Settings
from server.cooperative import make_io_cooperative
from server.db import Database
from server.db.migrate import MigrationEnv, run_migrations
from server.jobs import JobContext, JobQueue
from server.lifecycle import Lifecycle
from server.logs import configure_logging
from server.providers.transcribers import voice_note_transcriber, voicemail_transcriber
from server.security.secrets_box import SecretsBox

log = logging.getLogger("agentlocator.app")

BLUEPRINT_MODULES = (
    "health",
    "legacy_stripe",
    "auth_api",
    "twilio_voice",
    "media_ws",
    "whatsapp_webhooks",
    "whatsapp_api",
    "media_api",
    "crm_api",
    "payments_api",
    "console",
    "events_api",
    "console_api",
    "admin_api",
    "appointments_api",
    "agent_api",
)


def create_app(settings: Settings | None = None) -> Flask:
    make_io_cooperative()
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__, static_folder=str(PROJECT_ROOT / "static"), static_url_path="/static")
    register_config(app, settings)
    app_services = register_services(app, settings)
    register_blueprints(app)
    register_errors(app)
    register_cli_commands(app)
    log.info(
        "app ready",
        extra={
            "event": "app_ready",
            "database": app_services.database.engine.dialect.name,
            "providers": settings.providers_configured(),
        },
    )
    return app


def register_config(app: Flask, settings: Settings) -> None:
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        APP_SECRET=settings.app_secret or _local_app_secret(),
        JSON_SORT_KEYS=False,
    )
    # Flask types `app.json` as the JSONProvider base; the DefaultJSONProvider it is has ensure_ascii.
    app.json.ensure_ascii = False  # type: ignore[attr-defined]


def _local_app_secret() -> str:
    """A per-install secret kept in `instance/` when APP_SECRET is unset (one host; set it for several)."""
    path = PROJECT_ROOT / "instance" / "app_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Path(path).read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def register_services(app: Flask, settings: Settings) -> AppServices:
    """The services every request and job shares: secrets at rest, the database (migrated), the
    voicemail transcriber and the job queue."""
    box = SecretsBox.from_config(settings.secrets_key, settings.secrets_key_previous, app.config["APP_SECRET"])
    app_services = AppServices(
        lifecycle=Lifecycle(),
        secrets_box=box,
        database=open_database(settings, box),
        voicemail_transcriber=voicemail_transcriber(settings),
        voice_note_transcriber=voice_note_transcriber(settings),
    )
    app_services.jobs = job_queue(settings, app_services)
    register_all_agent_tools()
    install_services(app, app_services)
    return app_services


def open_database(settings: Settings, box: SecretsBox) -> Database:
    database = Database(
        settings.sqlalchemy_url,
        sqlite_busy_timeout=settings.sqlite_busy_timeout_seconds,
        secrets_box=box,
        connect_timeout=settings.database_connect_timeout_seconds,
        pool_size=settings.database_pool_size,
        pool_timeout=settings.database_pool_timeout_seconds,
    )
    run_migrations(database.engine, env=MigrationEnv(secrets_box=box))
    return database


# Modules that register background job kinds (`@job`); the consumer process runs them.
JOB_MODULES = (
    "server.whatsapp.auto_reply",
    "server.whatsapp.intake",
    "server.whatsapp.media_download",
    "server.voice.voicemail",
    "server.voice.watchdog",
    "server.voice.call_events",
    "server.whatsapp.voice_notes",
    "server.appointments.notices",
)


def job_queue(settings: Settings, app_services: AppServices) -> JobQueue:
    for name in JOB_MODULES:
        importlib.import_module(name)
    return JobQueue(settings, JobContext(database=app_services.database, settings=settings, services=app_services))


def register_blueprints(app: Flask) -> None:
    from server.routes import register_session_lifecycle

    register_session_lifecycle(app)
    for name in BLUEPRINT_MODULES:
        app.register_blueprint(importlib.import_module(f"server.routes.{name}").bp)


def register_errors(app: Flask) -> None:
    from server.web import register_error_handlers

    register_error_handlers(app)


def register_cli_commands(app: Flask) -> None:
    from server.cli import register_cli

    register_cli(app)

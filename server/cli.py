"""Admin CLI (`flask --app main …`); each command prints one JSON object on stdout, except
`jobs-worker`, which runs background jobs until it is stopped and only logs."""

from __future__ import annotations

import json

import click
import sqlalchemy as sa
from flask import Flask, current_app

from server.app_state import services
from server.crm import business as business_settings
from server.db.dao_crm import audit
from server.db.migrate import MigrationEnv, run_migrations
from server.db.models import ApiToken, Business, BusinessNumber, User
from server.errors import DomainError
from server.phones import InvalidPhone, to_e164
from server.security.auth import ROLES, issue_token
from server.security.passwords import hash_password


def _print(obj: dict) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


def _e164(value: str) -> str:
    try:
        return to_e164(value)
    except InvalidPhone as exc:
        raise click.BadParameter(str(exc)) from None


def register_cli(app: Flask) -> None:
    @app.cli.command("migrate")
    def migrate() -> None:
        """Apply pending migrations."""
        applied = run_migrations(
            services(current_app).database.engine, env=MigrationEnv(secrets_box=services(current_app).secrets_box)
        )
        _print({"applied": applied})

    @app.cli.command("jobs")
    def jobs() -> None:
        """Background jobs: how many are queued, scheduled, taken, running, retrying and failed."""
        queue = services(current_app).jobs
        _print({**queue.counts(), "kinds": queue.kinds, "recent_failures": queue.recent_failures()})

    @app.cli.command("jobs-worker")
    @click.option("--workers", type=int, default=None, help="job threads (default: JOBS_WORKERS)")
    def jobs_worker(workers: int | None) -> None:
        """Run background jobs until SIGTERM/SIGINT (running jobs finish first)."""
        settings = current_app.config["SETTINGS"]
        queue = services(current_app).jobs
        consumer = queue.consumer(workers or settings.jobs_workers, shutdown_timeout=settings.shutdown_grace_seconds)
        queue.start_lease_keeper()  # renews this worker's leases, requeues what killed workers left
        consumer.run()

    @app.cli.command("media-purge")
    def media_purge() -> None:
        """Delete media files older than MEDIA_RETENTION_DAYS (their rows stay, marked expired)."""
        from server.media import purge_expired

        settings = current_app.config["SETTINGS"]
        expired = 0
        while True:  # in batches, each its own transaction
            with services(current_app).database.scope() as session:
                batch = purge_expired(session, settings)
            expired += batch
            if batch == 0:
                break
        _print({"expired": expired, "retention_days": settings.media_retention_days})

    @app.cli.command("rotate-secrets")
    def rotate_secrets() -> None:
        """Re-seal every stored secret under SECRETS_KEY (after a key change; plain values get sealed)."""
        from server.payments.gateway_secrets import reseal_all

        with services(current_app).database.scope() as session:
            _print({"payment_gateways": reseal_all(session, services(current_app).secrets_box)})

    @app.cli.command("check-providers")
    @click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
    def check_providers(as_json: bool) -> None:
        """One tiny real request to each configured vendor; exits 1 (NO-GO) when any failed."""
        from server.providers import vendor_check

        report = vendor_check.check_vendors(current_app.config["SETTINGS"])
        with services(current_app).database.scope() as session:
            vendor_check.store_report(session, report)  # /readyz shows it, with its age
        if as_json:
            _print(report)
        else:
            click.echo(vendor_check.render_report(report))
        if not report["go"]:
            raise SystemExit(1)

    @app.cli.command("create-business")
    @click.option("--name", required=True)
    @click.option("--phone", "phones", multiple=True, help="a Twilio voice number, E.164")
    @click.option("--whatsapp", "whatsapp_numbers", multiple=True, help="a WhatsApp number, E.164")
    def create_business(name: str, phones: tuple[str, ...], whatsapp_numbers: tuple[str, ...]) -> None:
        """Create a business with its numbers."""
        with services(current_app).database.scope() as session:
            business = Business(name=name)
            session.add(business)
            session.flush()
            for kind, numbers in (("voice", phones), ("whatsapp", whatsapp_numbers)):
                for number in numbers:
                    session.add(BusinessNumber(business_id=business.id, number=_e164(number), kind=kind))
            session.flush()
            _print({"id": business.id})

    @app.cli.command("create-user")
    @click.option("--business-id", required=True, type=int)
    @click.option("--email", required=True)
    @click.option("--password", required=True)
    @click.option("--role", required=True, type=click.Choice(ROLES))
    def create_user(business_id: int, email: str, password: str, role: str) -> None:
        """Create a user and print a bearer token for it."""
        with services(current_app).database.scope() as session:
            if session.get(Business, business_id) is None:
                raise click.BadParameter(f"no business with id {business_id}", param_hint="--business-id")
            user = User(
                business_id=business_id, email=email.strip().lower(), password_hash=hash_password(password), role=role
            )
            session.add(user)
            session.flush()
            token = issue_token(session, user, name="cli")
            token_id = session.scalar(sa.select(ApiToken.id).where(ApiToken.user_id == user.id))
            audit(session, business_id, "cli", "token.created", "token", token_id, user_id=user.id, name="cli")
            _print({"id": user.id, "token": token})

    @app.cli.command("assign-number")
    @click.option("--business-id", required=True, type=int)
    @click.option("--voice", "voice_numbers", multiple=True, help="a voice number the business answers calls on")
    @click.option("--whatsapp", "whatsapp_numbers", multiple=True, help="a WhatsApp number of the business")
    @click.option(
        "--replace",
        is_flag=True,
        help="make the numbers given the business's only ones of their kind (default: add them)",
    )
    def assign_number(
        business_id: int, voice_numbers: tuple[str, ...], whatsapp_numbers: tuple[str, ...], replace: bool
    ) -> None:
        """Give a business voice and/or WhatsApp numbers; prints its numbers afterwards."""
        body = {
            field: list(numbers)
            for field, numbers in (("voice_numbers", voice_numbers), ("whatsapp_numbers", whatsapp_numbers))
            if numbers
        }
        if not body:
            raise click.UsageError("give at least one --voice or --whatsapp number")
        try:
            with services(current_app).database.scope() as session:
                assigned = business_settings.assign_numbers(session, business_id, "cli", body, keep_current=not replace)
        except DomainError as exc:
            holder = f" (business {exc.details['business_id']})" if "business_id" in exc.details else ""
            raise click.ClickException(f"{exc.message}{holder}") from None
        _print(assigned)

    @app.cli.command("whatsapp-instance")
    @click.argument("action", type=click.Choice(["list", "add", "logout", "remove"]))
    @click.option("--business-id", type=int, help="the business (not needed for list)")
    def whatsapp_instance(action: str, business_id: int | None) -> None:
        """The businesses' WhatsApp instances on the Baileys bridge: list, add (then the owner scans the
        QR code on the console's WhatsApp screen), logout (a new QR code follows) or remove."""
        from server.whatsapp import bridge_instances

        settings = current_app.config["SETTINGS"]
        try:
            if action == "list":
                _print({"items": bridge_instances.list_instances(settings)})
                return
            if business_id is None:
                raise click.UsageError(f"{action} needs --business-id")
            with services(current_app).database.scope() as session:
                act = {
                    "add": bridge_instances.add_instance,
                    "logout": bridge_instances.logout_instance,
                    "remove": bridge_instances.remove_instance,
                }[action]
                result = act(session, settings, business_id, "cli")
        except DomainError as exc:
            raise click.ClickException(f"{exc.code}: {exc.message}") from None
        _print(result)

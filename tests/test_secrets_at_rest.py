"""Gateway secrets are stored sealed (Fernet), keys rotate, old plain values get sealed by a migration,
and no statement parameter (a secret among them) reaches a log line or an error text."""

from __future__ import annotations

import io
import json
import logging
import shutil

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from server.app_state import services
from server.config import ConfigError
from server.db.engine import Database, make_engine
from server.db.migrate import MIGRATIONS_DIR, MigrationEnv, migration_files, run_migrations
from server.db.models import Business, PaymentGateway, User
from server.errors import DomainError
from server.logs import JsonFormatter
from server.payments.accounts import provider_account
from server.security.secrets_box import PREFIX, SecretsBox, key_from_app_secret
from testkit.servers import flask_cli
from tests.conftest import make_settings, throwaway_pg_database
from tests.payments_support import (  # noqa: F401  (fixtures: used by name)
    pay_app,
    pay_client,
    paypal,
    paypal_server,
    shop,
    tranzila,
    tranzila_server,
)

SEALING_MIGRATION = "0751_seal_gateway_secrets"


def test_a_sealed_value_opens_only_with_its_key():
    box = SecretsBox([Fernet.generate_key()])
    sealed = box.seal("client-secret-1")
    assert sealed.startswith(PREFIX) and "client-secret-1" not in sealed
    assert box.open(sealed) == "client-secret-1"
    assert box.seal("client-secret-1") != sealed  # a fresh IV each time
    with pytest.raises(DomainError) as refused:
        SecretsBox([Fernet.generate_key()]).open(sealed)
    assert refused.value.code == "secret_unreadable" and "client-secret-1" not in str(refused.value)
    assert box.open("legacy-plain") == "legacy-plain" and box.open(None) is None


def test_the_key_comes_from_secrets_key_or_is_derived_from_the_app_secret():
    assert key_from_app_secret("app-secret") == key_from_app_secret("app-secret")
    assert key_from_app_secret("app-secret") != key_from_app_secret("other-secret")
    derived_only = SecretsBox.from_config("", (), "app-secret")
    sealed = derived_only.seal("s")
    assert SecretsBox([key_from_app_secret("app-secret")]).open(sealed) == "s"
    # a dedicated key seals from now on; the derived one still opens what it sealed before
    dedicated = Fernet.generate_key().decode()
    with_key = SecretsBox.from_config(dedicated, (), "app-secret")
    assert with_key.open(sealed) == "s"
    assert SecretsBox([dedicated]).open(with_key.seal("t")) == "t"


def test_rotation_reseals_under_the_new_key():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_old = SecretsBox([old]).seal("rotate-me")
    during = SecretsBox.from_config(new, (old,), "")
    assert during.open(sealed_old) == "rotate-me"
    resealed = during.reseal(sealed_old)
    assert SecretsBox([new]).open(resealed) == "rotate-me"
    assert SecretsBox([new]).open(during.reseal("still-plain")) == "still-plain"


def test_a_malformed_secrets_key_stops_start_up_without_showing_it():
    with pytest.raises(ConfigError) as bad:
        make_settings(SECRETS_KEY="not-a-fernet-key")
    assert "SECRETS_KEY=(hidden)" in str(bad.value) and "not-a-fernet-key" not in str(bad.value)
    with pytest.raises(ConfigError, match="SECRETS_KEY_PREVIOUS"):
        make_settings(SECRETS_KEY_PREVIOUS=f"{Fernet.generate_key().decode()},nope")
    key = Fernet.generate_key().decode()
    assert key not in repr(make_settings(SECRETS_KEY=key))


def test_the_api_stores_sealed_secrets_and_payments_use_them(pay_app, pay_client, shop):
    response = pay_client.put(
        "/api/crm/payments/gateways/tranzila",
        headers=shop.headers,
        json={"terminal": "shopterm", "app_key": "key-1", "secret": "tz-secret-77", "mode": "payment_request"},
    )
    assert response.status_code == 200
    box = services(pay_app).secrets_box
    with services(pay_app).database.scope() as session:
        stored = session.scalar(
            sa.select(PaymentGateway.settings).where(PaymentGateway.business_id == shop.business_id)
        )
        assert stored["secret"].startswith(PREFIX) and "tz-secret-77" not in json.dumps(stored)
        assert stored["app_key"] == "key-1"  # only secrets are sealed
        account = provider_account(session, pay_app.config["SETTINGS"], shop.business_id, "tranzila")
        assert (account.source, account.secret) == ("business", "tz-secret-77")
    # sending the same secret again changes nothing the audit would call a change
    again = pay_client.put("/api/crm/payments/gateways/tranzila", json={"secret": "tz-secret-77"}, headers=shop.headers)
    assert again.status_code == 200
    assert box.open(_stored_secret(pay_app, shop.business_id)) == "tz-secret-77"


def _stored_secret(app, business_id: int) -> str:
    with services(app).database.scope() as session:
        return session.scalar(sa.select(PaymentGateway.settings).where(PaymentGateway.business_id == business_id))[
            "secret"
        ]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgrade.db'}"
    else:
        with throwaway_pg_database("agentlocator_seal") as url:
            yield url


def test_the_migration_seals_plain_secrets_stored_before(empty_database, tmp_path):
    before = tmp_path / "before"
    before.mkdir()
    for path in migration_files():
        if path.stem < SEALING_MIGRATION:
            shutil.copy(path, before / path.name)
    engine = make_engine(empty_database)
    run_migrations(engine, before)
    # the rows as the code before sealing wrote them (only the columns the schema had then)
    businesses = sa.table(
        "businesses",
        sa.column("id", sa.Integer),
        sa.column("name"),
        sa.column("ai_instructions"),
        sa.column("opening_line"),
        sa.column("greeting_enabled"),
        sa.column("payments_enabled"),
        sa.column("timezone"),
        sa.column("features", sa.JSON),
        sa.column("created_at"),
    )
    gateways = sa.table(
        "payment_gateways",
        sa.column("business_id"),
        sa.column("provider"),
        sa.column("enabled"),
        sa.column("settings", sa.JSON),
        sa.column("created_at"),
    )
    with engine.begin() as conn:
        business_id = conn.execute(
            businesses.insert()
            .values(
                name="Old shop",
                ai_instructions="",
                opening_line="",
                greeting_enabled=False,
                payments_enabled=True,
                timezone="Asia/Jerusalem",
                features={},
                created_at=sa.func.now(),
            )
            .returning(businesses.c.id)
        ).scalar_one()
        for provider, values in (
            ("paypal", {"client_id": "cid", "client_secret": "pp-plain-secret"}),
            ("tranzila", {"terminal": "t1", "secret": "tz-plain-secret"}),
        ):
            conn.execute(
                gateways.insert().values(
                    business_id=business_id, provider=provider, enabled=True, settings=values, created_at=sa.func.now()
                )
            )

    with pytest.raises(RuntimeError, match="secrets key"):  # plain secrets and no key: refuse, don't skip
        run_migrations(engine)
    box = SecretsBox([Fernet.generate_key()])
    assert run_migrations(engine, env=MigrationEnv(secrets_box=box)) == [
        p.stem for p in migration_files() if p.stem >= SEALING_MIGRATION
    ]
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.select(PaymentGateway.provider, PaymentGateway.settings)).all())
    assert "plain-secret" not in json.dumps(rows)
    assert box.open(rows["paypal"]["client_secret"]) == "pp-plain-secret" and rows["paypal"]["client_id"] == "cid"
    assert box.open(rows["tranzila"]["secret"]) == "tz-plain-secret" and rows["tranzila"]["terminal"] == "t1"
    engine.dispose()
    assert MIGRATIONS_DIR.joinpath(SEALING_MIGRATION + ".py").is_file()


@pytest.mark.slow
def test_rotate_secrets_reseals_every_stored_secret(database_url, tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {"DATABASE_URL": database_url, "APP_SECRET": "test-app-secret", "JOBS_URL": f"sqlite:///{tmp_path / 'j.db'}"}
    database = Database(
        make_settings(DATABASE_URL=database_url).sqlalchemy_url,
        secrets_box=SecretsBox.from_config(old, (), "test-app-secret"),
    )
    with database.scope() as session:
        business = Business(name="Rotating shop")
        session.add(business)
        session.flush()
        session.add(
            PaymentGateway(
                business_id=business.id,
                provider="paypal",
                enabled=True,
                settings={"client_id": "c", "client_secret": SecretsBox([old]).seal("pp-rotate")},
            )
        )
    assert flask_cli({**env, "SECRETS_KEY": new, "SECRETS_KEY_PREVIOUS": old}, "rotate-secrets") == {
        "payment_gateways": 1
    }
    with database.scope() as session:
        sealed = session.scalar(sa.select(PaymentGateway.settings))["client_secret"]
    assert SecretsBox([new]).open(sealed) == "pp-rotate"
    database.engine.dispose()


def test_a_failed_write_never_logs_its_parameters(db, caplog):
    """A constraint violation whose statement carries a secret: the error text and every log line,
    SQLAlchemy's own statement log included, name the SQL only."""
    secret = "pw-hash-that-must-not-leak-93f1"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    engine_log = logging.getLogger("sqlalchemy.engine")
    engine_level = engine_log.level
    engine_log.setLevel(logging.INFO)  # the statement log an operator might turn on
    try:
        with db.scope() as session:
            business = Business(name="Leak test")
            session.add(business)
            session.flush()
            session.add(User(business_id=business.id, email="dup@example.test", password_hash="h", role="owner"))
        with pytest.raises(sa.exc.IntegrityError) as failed:
            with db.scope() as session:
                session.add(User(business_id=business.id, email="dup@example.test", password_hash=secret, role="owner"))
        logging.getLogger("agentlocator.test").exception("write failed", exc_info=failed.value)
    finally:
        logging.getLogger().removeHandler(handler)
        engine_log.setLevel(engine_level)
    logged = stream.getvalue()
    assert "INSERT INTO users" in logged and "write failed" in logged  # the log did capture the failure
    assert "SQL parameters hidden" in str(failed.value)
    assert secret not in logged and secret not in str(failed.value)
    assert all(secret not in record.getMessage() for record in caplog.records)

import ast
import logging
import os
import threading
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from server.db.engine import make_engine
from server.db.migrate import MIGRATIONS_DIR, migration_files, pending_migrations, run_migrations
from server.db.models import Base
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, throwaway_pg_database

FORBIDDEN_OPS = {
    "drop_table",
    "drop_column",
    "drop_index",
    "drop_constraint",
    "rename_table",
    "execute",
    "batch_alter_table",
    "bulk_insert",
}


def _operations(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "op"
        ):
            yield node.func.attr, node


@pytest.mark.parametrize("path", migration_files(), ids=lambda p: p.stem)
def test_migrations_only_add(path):
    """A migration may add tables, columns and indexes; a drop or a type change fails this test."""
    for name, call in _operations(path):
        assert name not in FORBIDDEN_OPS, f"{path.name}: op.{name} is not additive"
        if name == "alter_column":
            changed = {kw.arg for kw in call.keywords}
            assert not changed & {"type_", "new_column_name", "existing_type"}, f"{path.name}: type/name change"
            nullable = [kw.value for kw in call.keywords if kw.arg == "nullable"]
            assert all(isinstance(v, ast.Constant) and v.value is True for v in nullable), (
                f"{path.name}: making a column NOT NULL can fail on existing rows"
            )
    text = path.read_text().upper()
    assert "DROP " not in text and "ALTER COLUMN" not in text and "TRUNCATE" not in text


def test_the_additive_check_catches_a_drop(tmp_path):
    bad = tmp_path / "9999_bad.py"
    bad.write_text("def upgrade(op):\n    op.drop_column('calls', 'transcript')\n")
    assert [name for name, _ in _operations(bad)] == ["drop_column"]
    with pytest.raises(AssertionError):
        test_migrations_only_add(bad)


def test_migrations_apply_once_and_match_the_models(database_url):
    engine = make_engine(database_url)
    run_migrations(engine)
    assert run_migrations(engine) == []
    assert pending_migrations(engine) == []
    tables = set(sa.inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    engine.dispose()


def test_first_start_logs_each_applied_migration(tmp_path, caplog):
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    caplog.set_level(logging.INFO, logger="agentlocator.migrate")
    applied = run_migrations(engine)
    assert applied == [p.stem for p in migration_files()]
    assert [r.getMessage() for r in caplog.records if r.name == "agentlocator.migrate"] == [
        f"Applied migration: {name}" for name in applied
    ]
    assert run_migrations(engine) == []


@pytest.mark.slow  # two real gunicorn processes
def test_two_gunicorn_processes_start_together_on_one_postgresql(tmp_path):
    with throwaway_pg_database("agentlocator_race") as url:
        env = {**BASE_TEST_ENV, "DATABASE_URL": url}
        servers = [GunicornServer(env, workers=2, log_path=tmp_path / f"g{i}.log") for i in range(2)]
        try:
            errors = []
            threads = [threading.Thread(target=_start, args=(s, errors)) for s in servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            for server in servers:
                assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
            logs = "".join(s.logs() for s in servers)
            for stem in (p.stem for p in migration_files()):
                assert logs.count(f"Applied migration: {stem}") == 1, logs[-2000:]
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                applied = conn.execute(sa.text("SELECT count(*) FROM schema_migrations")).scalar()
            engine.dispose()
            assert applied == len(migration_files())
        finally:
            for server in servers:
                server.stop()


def _start(server, errors):
    try:
        server.start(timeout=60)
    except Exception as exc:  # reported by the main thread
        errors.append(str(exc))


def test_readyz_reports_pending_migrations(app, client, tmp_path, monkeypatch):
    import server.routes.health as health

    extra = tmp_path / "migrations"
    extra.mkdir()
    for path in migration_files():
        (extra / path.name).write_text(path.read_text())
    (extra / "9999_future.py").write_text("def upgrade(op):\n    pass\n")
    monkeypatch.setattr(health, "pending_migrations", lambda engine: pending_migrations(engine, extra))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["reason"] == "migrations_pending" and response.json["pending"] == ["9999_future"]
    assert MIGRATIONS_DIR.is_dir() and os.path.isdir(extra)

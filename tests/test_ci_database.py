"""A PostgreSQL that can't be reached must not let the database tests pass as skipped under CI.

Each case runs pytest in a subprocess on a one-test module that needs the PostgreSQL fixture,
pointed (through `TEST_PG_ADMIN_URL`) at a local port where nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testkit.servers import PROJECT_ROOT, free_port

pytestmark = pytest.mark.slow

NEEDS_POSTGRESQL = """
from tests.conftest import pg_database  # noqa: F401  (the fixture, used by name)


def test_needs_postgresql(pg_database):
    assert pg_database
"""


def run_pytest_without_postgresql(tmp_path, *, ci: bool) -> tuple[int, str, str]:
    (tmp_path / "test_needs_postgresql.py").write_text(NEEDS_POSTGRESQL)
    url = f"postgresql+psycopg2://127.0.0.1:{free_port()}/test"
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["TEST_PG_ADMIN_URL"] = url
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(PROJECT_ROOT),
            "-c",
            str(PROJECT_ROOT / "pyproject.toml"),
            str(tmp_path / "test_needs_postgresql.py"),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr, url


def test_under_ci_an_unreachable_postgresql_fails_the_run_with_the_connection_error(tmp_path):
    code, output, url = run_pytest_without_postgresql(tmp_path, ci=True)
    assert code == 1, output
    assert "1 error" in output and "skipped" not in output, output
    assert f"PostgreSQL at {url} can't be reached" in output, output
    assert "Connection refused" in output, output


def test_locally_an_unreachable_postgresql_skips_with_the_connection_error_as_reason(tmp_path):
    code, output, url = run_pytest_without_postgresql(tmp_path, ci=False)
    assert code == 0, output
    assert "1 skipped" in output, output
    assert f"PostgreSQL at {url} can't be reached" in output and "Connection refused" in output, output

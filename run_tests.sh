#!/usr/bin/env bash
# Run every check, in this order: ruff (lint), ruff (format), mypy, import-linter, the Python suite
# (SQLite and PostgreSQL), then the Baileys bridge's node tests. Every step runs; any failure fails the
# run, and the summary names the steps that failed.
# Arguments go to pytest, and then only the Python suite runs, e.g. ./run_tests.sh tests/test_urls.py
# or ./run_tests.sh -m "not slow" (the quick tests: no gunicorn, bridge or other subprocess).
# pytest runs on one process more than there are CPUs (pytest-xdist; the extra one overlaps the tests
# that wait on timeouts and servers), each test module on one of them so its module fixtures start
# once; PYTEST_WORKERS=N sets how many, 0 runs everything in this one.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup_env.sh
ensure_venv requirements-test.txt

# The bridge's packages come first: the Python suite also starts the real bridge process.
ensure_bridge_packages dev

# Keep compiled bytecode, and pytest's rewritten test modules, from one run to the next (outside the
# work tree): otherwise every pytest worker and every gunicorn a test starts compiles the tree again.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-${TMPDIR:-/tmp}/agentlocator-pycache}"

failed=()
step() {
  local name="$1"
  shift
  echo
  echo "==> $name: $*"
  if "$@"; then
    echo "==> $name: ok"
  else
    echo "==> $name: FAILED (exit $?)"
    failed+=("$name")
  fi
}

pytest=(.venv/bin/python -m pytest -q --durations=40 -n "${PYTEST_WORKERS:-$(($(nproc) + 1))}" --dist loadscope)

if [ $# -gt 0 ]; then
  step pytest "${pytest[@]}" "$@"
else
  step "ruff check" .venv/bin/ruff check .
  step "ruff format" .venv/bin/ruff format --check --output-format concise .
  step mypy .venv/bin/mypy server
  step "import contracts" .venv/bin/lint-imports
  step pytest "${pytest[@]}"
  step "bridge tests" bash -c "cd baileys-bridge && npm test --silent"
fi

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
echo "all steps passed"

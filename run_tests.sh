#!/usr/bin/env bash
# Run every test: the Python suite (SQLite and PostgreSQL) and the Baileys bridge's node tests.
# Arguments go to pytest (and then only the Python suite runs), e.g. ./run_tests.sh tests/test_urls.py
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup_env.sh
ensure_venv requirements-test.txt

# The bridge's packages come first: the Python suite also starts the real bridge process.
ensure_bridge_packages dev

status=0
.venv/bin/python -m pytest -q "$@" || status=$?
if [ $# -eq 0 ]; then
  (cd baileys-bridge && npm test --silent) || status=$?
fi
exit $status

#!/usr/bin/env bash
# Run every test: the Python suite (SQLite and PostgreSQL) and the Baileys bridge's node tests.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/venv.sh
ensure_venv requirements-test.txt

status=0
.venv/bin/python -m pytest -q "$@" || status=$?

if [ -f baileys-bridge/package.json ] && [ $# -eq 0 ]; then
  (cd baileys-bridge && { [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund; } \
    && npm test --silent) || status=$?
fi
exit $status

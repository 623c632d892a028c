#!/usr/bin/env bash
# Set up and run AgentLocator: .venv, requirements, migrations, the Baileys bridge (when enabled)
# and gunicorn with the gevent worker. Works on a fresh clone; with no DATABASE_URL it uses SQLite.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/venv.sh
ensure_venv requirements.txt

# /version reads these; fall back to git when the platform didn't set them.
if [ -z "${GIT_COMMIT:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
  GIT_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || true)
  export GIT_COMMIT
fi
if [ -z "${BUILD_TIME:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
  BUILD_TIME=$(git log -1 --format=%cI 2>/dev/null || true)
  export BUILD_TIME
fi

# Validates the configuration (one line naming a bad variable) and applies migrations once.
.venv/bin/flask --app main migrate >/dev/null

PORT="${PORT:-5000}"
exec .venv/bin/gunicorn -k gevent -w "${WEB_CONCURRENCY:-1}" --no-control-socket \
  -b "0.0.0.0:${PORT}" main:app

#!/usr/bin/env bash
# Set up and run AgentLocator: .venv, requirements, migrations, the Baileys bridge (when enabled)
# and gunicorn with the gevent worker. Works on a fresh clone; with no DATABASE_URL it uses SQLite.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup_env.sh
ensure_venv requirements.txt

# /version reads these; fall back to git when the platform didn't set them.
if git rev-parse --git-dir >/dev/null 2>&1; then
  : "${GIT_COMMIT:=$(git rev-parse --short=12 HEAD 2>/dev/null || true)}"
  : "${BUILD_TIME:=$(git log -1 --format=%cI 2>/dev/null || true)}"
  export GIT_COMMIT BUILD_TIME
fi

# Validates the configuration (one line naming a bad variable) and applies migrations once.
.venv/bin/flask --app main migrate >/dev/null

PORT="${PORT:-5000}"
export PORT
web=(.venv/bin/gunicorn -k gevent -w "${WEB_CONCURRENCY:-1}" --no-control-socket -b "0.0.0.0:${PORT}" main:app)

bridge_env=$(.venv/bin/python -m server.bridge_env)
if [ -z "$bridge_env" ]; then
  exec "${web[@]}"
fi

# The Baileys bridge runs beside the web server. If either dies, stop both and exit non-zero so
# the platform restarts the pair; SIGTERM/SIGINT are forwarded to both for a clean shutdown.
ensure_bridge_packages prod
eval "$bridge_env"
(cd baileys-bridge && exec node index.js) &
bridge_pid=$!
"${web[@]}" &
web_pid=$!

stop_both() { kill -TERM "$bridge_pid" "$web_pid" 2>/dev/null || true; }
trap 'stop_both' TERM INT
status=0
wait -n "$bridge_pid" "$web_pid" || status=$?
stop_both
wait "$bridge_pid" "$web_pid" 2>/dev/null || true
if [ "$status" -eq 0 ]; then status=1; fi  # one of the pair stopped by itself: that's a failure
echo "start_all.sh: a process exited (status $status); stopped the other" >&2
exit "$status"

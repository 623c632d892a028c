#!/usr/bin/env bash
# Set up and run AgentLocator: .venv, requirements, migrations, then gunicorn with the gevent worker,
# the background jobs worker beside it and the Baileys bridge (when enabled). Works on a fresh clone;
# with no DATABASE_URL it uses SQLite. `./start_all.sh worker` runs only the jobs worker. This is the
# one-command local start; platforms run the Procfile's lines instead, on what the build step installed.
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

jobs_worker=(.venv/bin/flask --app main jobs-worker)
if [ "${1:-web}" = worker ]; then
  exec "${jobs_worker[@]}"
fi

PORT="${PORT:-5000}"
export PORT
web=(.venv/bin/gunicorn -k gevent -w "${WEB_CONCURRENCY:-1}" --no-control-socket -b "0.0.0.0:${PORT}" main:app)

# The jobs worker (and the Baileys bridge, when enabled) run beside the web server. If any of them
# dies, stop the rest and exit non-zero so the platform restarts the set; SIGTERM/SIGINT are
# forwarded to all of them for a clean shutdown.
pids=()
bridge_env=$(.venv/bin/python -m server.bridge_env)
if [ -n "$bridge_env" ]; then
  ensure_bridge_packages prod
  eval "$bridge_env"
  (cd baileys-bridge && exec node index.js) &
  pids+=($!)
fi
"${jobs_worker[@]}" &
pids+=($!)
"${web[@]}" &
pids+=($!)

stop_all() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap 'stop_all' TERM INT
status=0
wait -n "${pids[@]}" || status=$?
stop_all
wait "${pids[@]}" 2>/dev/null || true
if [ "$status" -eq 0 ]; then status=1; fi  # one of them stopped by itself: that's a failure
echo "start_all.sh: a process exited (status $status); stopped the others" >&2
exit "$status"

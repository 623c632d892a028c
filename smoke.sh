#!/usr/bin/env bash
# GO/NO-GO checks against a running deployment: ./smoke.sh [BASE_URL] [--json] [--deep]
# Needs only Python 3 and its standard library; uses the project's .venv when present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="python3"
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
exec "$python" "$here/scripts/smoke.py" "$@"

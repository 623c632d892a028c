#!/usr/bin/env bash
# The build step for platforms that run the Procfile: install everything once, so no process
# installs at boot, and record what was built for /version.
#   - the Python requirements into the interpreter the platform runs ($PYTHON, else python3; or the
#     active virtualenv);
#   - the Baileys bridge's packages (`npm ci --omit=dev`), when Node is there;
#   - GIT_COMMIT and BUILD_TIME into .env (which the app reads; the environment still wins), from
#     the environment, the platform's SOURCE_VERSION, or git.
set -euo pipefail
cd "$(dirname "$0")/.."

"${PYTHON:-python3}" -m pip install --disable-pip-version-check -r requirements.txt
if command -v npm >/dev/null; then
  (cd baileys-bridge && npm ci --omit=dev --no-audit --no-fund)
fi

commit="${GIT_COMMIT:-${SOURCE_VERSION:-$(git rev-parse --short=12 HEAD 2>/dev/null || true)}}"
built="${BUILD_TIME:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}"
touch .env
grep -v -E '^(GIT_COMMIT|BUILD_TIME)=' .env > .env.build || true
printf 'GIT_COMMIT=%s\nBUILD_TIME=%s\n' "${commit:0:12}" "$built" >> .env.build
mv .env.build .env

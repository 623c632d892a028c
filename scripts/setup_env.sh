# Sourced by start_all.sh and run_tests.sh: install what the project needs, only when it changed.

# ensure_venv REQUIREMENTS_FILE: make .venv exist and hold the pinned requirements. A stamp of the
# requirements files' hash skips pip when nothing changed.
ensure_venv() {
  local requirements="$1"
  if [ ! -x .venv/bin/python ]; then
    echo "creating .venv" >&2
    python3 -m venv .venv
  fi
  local stamp=".venv/.requirements-$(basename "$requirements").sha"
  local want
  want=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing $requirements into .venv" >&2
    # --no-compile: pip would compile every installed module (a third of the install's time);
    # Python compiles what is imported, once, on first use.
    .venv/bin/pip install --disable-pip-version-check --no-compile -q -r "$requirements"
    echo "$want" > "$stamp"
  fi
}

# ensure_bridge_packages [prod|dev]: `npm ci` in baileys-bridge/ unless node_modules already matches
# the lockfile for that mode (prod leaves out the test-only packages).
ensure_bridge_packages() {
  local mode="${1:-dev}"
  (
    cd baileys-bridge
    local lock have
    lock=$(sha256sum package-lock.json | cut -d' ' -f1)
    have=$(cat node_modules/.lockfile-stamp 2>/dev/null || true)
    # A dev install holds everything a prod install does.
    if [ "$have" != "$lock dev" ] && [ "$have" != "$lock $mode" ]; then
      echo "installing the Baileys bridge's packages (npm ci, $mode)" >&2
      if [ "$mode" = prod ]; then
        npm ci --omit=dev --no-audit --no-fund >&2
      else
        npm ci --no-audit --no-fund >&2
      fi
      echo "$lock $mode" > node_modules/.lockfile-stamp
    fi
  )
}

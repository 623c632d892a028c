# Sourced by start_all.sh and run_tests.sh: make .venv exist and hold the pinned requirements.
# A stamp of the requirements files' hash skips pip when nothing changed.
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
    .venv/bin/pip install --disable-pip-version-check -q -r "$requirements"
    echo "$want" > "$stamp"
  fi
}

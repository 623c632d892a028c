"""Print the Baileys bridge's environment as shell `export` lines, from the app's own settings.

`start_all.sh` evals this, so `.env` files and validation work the same for both processes.
Prints nothing when the bridge is disabled.
"""

from __future__ import annotations

import shlex
import sys

from server.config import PROJECT_ROOT, ConfigError, Settings


def bridge_environment(settings: Settings) -> dict[str, str]:
    if not settings.enable_wa_baileys:
        return {}
    env = {
        "WA_BAILEYS_PORT": str(settings.wa_baileys_port),
        "WA_SHARED_SECRET": settings.wa_shared_secret,
        "APP_URL": f"http://127.0.0.1:{settings.port}",
        "LOG_LEVEL": settings.log_level.lower(),
        # The bridge refuses larger media itself (the event says too_large) instead of sending what the app won't keep.
        "WA_MEDIA_MAX_BYTES": str(settings.media_max_bytes),
    }
    if settings.wa_shared_secret_previous:
        env["WA_SHARED_SECRET_PREVIOUS"] = settings.wa_shared_secret_previous
    if settings.wa_session_dir:
        # The root of the businesses' sessions (business-<id>/ each). The bridge runs from
        # baileys-bridge/; a relative path means relative to the project root.
        env["WA_AUTH_DIR"] = str((PROJECT_ROOT / settings.wa_session_dir).resolve())
    return env


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 4
    for key, value in bridge_environment(settings).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

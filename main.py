"""WSGI entry point: `gunicorn main:app` (run from the project root)."""

import sys

from server.app_factory import create_app
from server.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One line naming the variable, not a traceback: this is an operator's typo.
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(4)

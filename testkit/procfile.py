"""The `Procfile`'s process types, read as platforms read them (`name: command`, one per line), and
run as they run them: each command through `bash -c`, from the project root."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import IO

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def procfile(path: Path = PROJECT_ROOT / "Procfile") -> dict[str, str]:
    """Process type → command."""
    return {m.group(1): m.group(2) for m in map(_LINE.match, path.read_text().splitlines()) if m}


def start_process(name: str, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen:
    """Start the `name` line in a session of its own, so its whole process tree can be signalled."""
    return subprocess.Popen(
        ["bash", "-c", procfile()[name]],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

"""py-spy profiles of the benchmark's worker: record one while calls run, and summarise it.

`record(pid, path, seconds)` runs `py-spy record --format raw` (folded stacks: one line per stack,
`frame;frame;… count`) in non-blocking mode, so the worker is sampled without being paused.
`summarise(path)` reads such a file into the functions that took the most samples: by self time
(the frame on top of the stack) and inclusive (anywhere in it), each as a share of all samples.
Kept apart from `bench_calls` (which patches the process for gevent on import) so it can be
tested on its own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# "send (gevent/_socketcommon.py:722)" → "send (gevent/_socketcommon.py)": lines of one function
# add up; site-packages and project prefixes are cut so the names read the same on any machine.
_LINE = re.compile(r":\d+\)$")
_PREFIX = re.compile(r"\((?:[^()]*/site-packages/|[^()]*/lib/python3\.\d+/|[^()]*?/(?=(?:server|bench|testkit)/))")
# Frames every stack of the worker shares (gunicorn and gevent plumbing): left out of the top lists.
_PLUMBING = re.compile(r"^(?:<module> \(gunicorn\)|.*\((?:gunicorn|gevent/(?:baseserver|greenlet))[^)]*\))$")


def record(pid: int, path: Path, seconds: float, rate: int = 50) -> subprocess.Popen:
    """Start sampling `pid` for `seconds`; the caller waits for the returned process."""
    beside_python = Path(sys.executable).with_name("py-spy")  # installed in the same virtualenv
    py_spy = str(beside_python) if beside_python.exists() else shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", str(rate)]
        + ["--nonblocking", "--format", "raw", "--output", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def frame_name(frame: str) -> str:
    return _PREFIX.sub("(", _LINE.sub(")", frame.strip()))


def summarise(path: Path, top: int = 15) -> dict:
    """{"samples": N, "self": [[percent, function], …], "inclusive": [[percent, function], …]}."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += samples
        for name in set(frames):
            if not _PLUMBING.match(name):
                anywhere[name] += samples

    def share(counter: Counter[str]) -> list[list]:
        return [[round(100 * n / total, 1), name] for name, n in counter.most_common(top)] if total else []

    return {"samples": total, "self": share(own), "inclusive": share(anywhere)}

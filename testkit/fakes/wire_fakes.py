"""The Google Speech, Google TTS and OpenAI fakes as child processes, for load runs.

In their own processes the fakes don't compete for the GIL with a load client, so a benchmark
measures the app. The app reaches them through the production settings, which `wire_fakes()`
returns as environment variables:

    with wire_fakes() as env:
        GunicornServer({**env, ...})
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from testkit.fakes.openai_server import DEFAULT_API_KEY

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
FAKE_MODULES = ("testkit.fakes.google_speech", "testkit.fakes.google_tts", "testkit.fakes.openai_server")


@contextlib.contextmanager
def wire_fakes(
    options: dict[str, list[str]] | None = None, modules: tuple[str, ...] = FAKE_MODULES
) -> Iterator[dict[str, str]]:
    """Start the fakes (all three, or those of `modules`) on free ports, each with its command-line
    `options` (keyed by module); yields the settings that point the app at them."""
    env = {"OPENAI_API_KEY": DEFAULT_API_KEY}
    processes: list[subprocess.Popen] = []
    try:
        for module in modules:
            command = [sys.executable, "-m", module, "--port", "0", *(options or {}).get(module, [])]
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
            processes.append(process)
            announced = process.stdout.readline().strip()  # e.g. "GOOGLE_TTS_EMULATOR_HOST=127.0.0.1:40123"
            name, sep, value = announced.partition("=")
            if not sep:
                raise RuntimeError(f"{module} did not start (exit code {process.poll()})")
            env[name] = value
        yield env
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

"""Run the app as production does: real gunicorn with the gevent worker, on a free local port, and
(`jobs_worker=True`, or `JobsWorker`) the background jobs worker process beside it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from testkit.env import BASE_TEST_ENV

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def flask_cli(env: dict[str, str], *args: str) -> dict:
    """Run an admin CLI command (`flask --app main …`) as an operator would; return its JSON."""
    flask = str(Path(sys.executable).with_name("flask"))
    result = subprocess.run(
        [flask, "--app", "main", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornServer:
    """`with GunicornServer(env) as server:` serves the app at `server.url`; logs go to `server.log_path`.

    Its job queue is a file of its own next to the log (unless `env` names one), so servers of
    different tests never share jobs; so is its folder of prompts made in the agent's voice (unless
    `env` names one other than the test process's), since another test's fake TTS may speak the same
    text differently. `jobs_worker=True` also runs the jobs worker on it (`server.jobs_worker`)."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int = 1,
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
        jobs_worker: bool = False,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or Path(f"/tmp/agentlocator-gunicorn-{self.port}.log")
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "JOBS_URL": f"sqlite:///{self.log_path.with_name(self.log_path.stem + '-jobs.db')}",
            **env,
        }
        if env.get("PROMPT_AUDIO_DIR") in (None, BASE_TEST_ENV["PROMPT_AUDIO_DIR"]):
            self.env["PROMPT_AUDIO_DIR"] = str(self.log_path.with_name(self.log_path.stem + "-prompts"))
        self.workers = workers
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None
        self.jobs_worker = (
            JobsWorker(self.env, log_path=self.log_path.with_name(self.log_path.stem + "-jobs.log"))
            if jobs_worker
            else None
        )

    def start(self, timeout: float = 30.0) -> "GunicornServer":
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                gunicorn,
                "-k",
                "gevent",
                "-w",
                str(self.workers),
                "--no-control-socket",
                "-b",
                f"127.0.0.1:{self.port}",
                *self.extra_args,
                "main:app",
            ],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    if self.jobs_worker is not None:
                        self.jobs_worker.start()
                    return self
            except requests.RequestException:  # not listening yet, or the worker is still loading
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not become healthy:\n{self.logs()[-3000:]}")

    def stop(self, *, graceful: bool = False) -> None:
        """Gunicorn's quick shutdown (SIGINT) by default: the test is done with the server, and a
        graceful stop (SIGTERM) waits a second or more for each worker to notice it. `graceful=True`
        is for a test that needs what only a drain does (open requests finishing, their access
        lines written)."""
        if self.jobs_worker is not None:
            self.jobs_worker.stop()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if graceful else signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "GunicornServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class JobsWorker:
    """`flask --app main jobs-worker`, the consumer process production runs beside gunicorn.

    `with JobsWorker(env) as worker:` runs it (give it the server's env, so both use one queue);
    `stop()` sends SIGTERM, as the platform does, and waits for running jobs to finish."""

    STARTED = "Huey consumer started"

    def __init__(self, env: dict[str, str], *, log_path: Path | None = None, workers: int = 2):
        self.env = {**os.environ, **env}
        self.log_path = log_path or Path(f"/tmp/agentlocator-jobs-{os.getpid()}-{free_port()}.log")
        self.workers = workers
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "JobsWorker":
        flask = str(Path(sys.executable).with_name("flask"))
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [flask, "--app", "main", "jobs-worker", "--workers", str(self.workers)],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the jobs worker exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
            if self.STARTED in self.logs():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the jobs worker did not start:\n{self.logs()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait; the exit status (None if it was not running)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return self.process.returncode

    def kill(self) -> int | None:
        """SIGKILL, as a lost machine or the out-of-memory killer would: nothing of the worker's runs."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return self.process.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "JobsWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""Run an app's background jobs inside the test process, as the jobs worker process does.

`with InProcessJobs(app):` runs the app's queue in threads of this process through huey's public
API (`read_schedule`, `enqueue`, `dequeue`, `execute`): the loop of huey's consumer, without its
signal handlers (which belong to the test runner here). Tests that want the real process use
`testkit.servers.JobsWorker`. `run_due()` runs, in the calling thread, whatever is due (or would be
due at `at`): for tests that step through retries without waiting for their backoff.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Optional

from flask import Flask

from server.app_state import services
from server.jobs import JobQueue


class InProcessJobs:
    def __init__(self, app_or_queue: Flask | JobQueue, *, threads: int = 2, poll_seconds: float = 0.02):
        queue = services(app_or_queue).jobs if isinstance(app_or_queue, Flask) else app_or_queue
        self.huey = queue.huey
        self.threads = threads
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._busy = 0
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    # ---- background threads ----------------------------------------------------------------
    def start(self) -> "InProcessJobs":
        self._workers = [threading.Thread(target=self._schedule_loop, name="jobs-scheduler", daemon=True)]
        self._workers += [
            threading.Thread(target=self._work_loop, name=f"jobs-worker-{i}", daemon=True) for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def __enter__(self) -> "InProcessJobs":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once nothing is queued or running (scheduled jobs may still wait for their time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = self._busy
            if not busy and self.huey.pending_count() == 0:
                return True
            time.sleep(self.poll_seconds)
        return False

    def _schedule_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for task in self.huey.read_schedule(_now()):
                self.huey.enqueue(task)

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            task = None
            with self._lock:
                self._busy += 1
            try:
                task = self.huey.dequeue()
                if task is not None:
                    self.huey.execute(task)
            finally:
                with self._lock:
                    self._busy -= 1
            if task is None:
                self._stop.wait(self.poll_seconds)

    # ---- stepping by hand --------------------------------------------------------------------
    def run_due(self, at: Optional[datetime] = None) -> int:
        """Run every queued job, and every scheduled one due by `at` (default now); how many ran."""
        at = at or _now()
        for task in self.huey.read_schedule(at):
            self.huey.enqueue(task)
        ran = 0
        while (task := self.huey.dequeue()) is not None:
            self.huey.execute(task, at)
            ran += 1
        return ran


def _now() -> datetime:
    """huey's clock: naive UTC (its `utc=True` default)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)

"""Process lifecycle shared by the routes and the live-call engine: draining on shutdown.

On SIGTERM the worker starts draining (gunicorn.conf.py): `/readyz` answers 503, new calls go to
voicemail, and what registered with `on_drain` (the live-call engine) is told, once.
"""

from __future__ import annotations

from typing import Callable


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False
        self._on_drain: list[Callable[[], None]] = []

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call `callback` when draining starts (at once if it has); it must return quickly: it may
        run inside the signal handler."""
        self._on_drain.append(callback)
        if self.draining:
            callback()

    def start_draining(self) -> None:
        if self.draining:
            return
        self.draining = True
        for callback in self._on_drain:
            callback()

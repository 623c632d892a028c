"""The worker hooks in gunicorn.conf.py: a SIGTERM that comes while a worker is still importing the
app stops it like any other (it used to import the half-imported app and fail the worker's boot,
which made gunicorn's arbiter halt with status 1)."""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
from types import SimpleNamespace

from server.config import PROJECT_ROOT


def _config():
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", PROJECT_ROOT / "gunicorn.conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker(stopped: list[int]) -> SimpleNamespace:
    """What the hook uses of gunicorn's worker: its SIGTERM handler, log, config, and loaded app."""
    return SimpleNamespace(
        handle_exit=lambda sig, frame: stopped.append(sig),
        log=logging.getLogger("gunicorn.error"),
        cfg=SimpleNamespace(graceful_timeout=3),
        wsgi=None,
    )


def test_a_sigterm_before_the_app_is_imported_stops_the_worker_without_importing_it(monkeypatch):
    stopped: list[int] = []
    worker = _worker(stopped)
    _config()._drain_on_exit(worker)
    monkeypatch.setitem(sys.modules, "server.app_state", None)  # importing it now would raise
    worker.handle_exit(signal.SIGTERM, None)
    assert stopped == [signal.SIGTERM]


def test_a_sigterm_once_the_app_is_loaded_marks_it_draining_then_stops(make_app):
    from server.app_state import services

    app = make_app()
    stopped: list[int] = []
    worker = _worker(stopped)
    worker.wsgi = app
    _config()._drain_on_exit(worker)
    assert not services(app).lifecycle.draining
    worker.handle_exit(signal.SIGTERM, None)
    assert services(app).lifecycle.draining and stopped == [signal.SIGTERM]

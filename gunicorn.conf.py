"""Gunicorn settings read automatically from the project root (`start_all.sh` passes the rest).

The gevent worker serves WebSockets. It monkey-patches the process before loading the app, and
`create_app()` then makes psycopg2 cooperative before any database connection exists
(server/cooperative.py); gRPC follows just before the first Google channel.

Shutdown: on SIGTERM gunicorn stops accepting connections and gives open requests, including live
calls' WebSockets, `graceful_timeout` (SHUTDOWN_GRACE_SECONDS) to finish. The worker also marks the
app as draining, so `/readyz` answers 503 and new calls on kept-alive connections go to voicemail.
"""

from server.config import ConfigError, Settings

try:
    graceful_timeout = int(Settings.from_env().shutdown_grace_seconds)
except ConfigError:
    pass  # the app itself reports the bad variable in one line when it loads

timeout = 60
accesslog = None


def post_fork(server, worker):
    _drain_on_exit(worker)


def post_worker_init(worker):
    """Load the agent's providers before the first call or message: importing the vendor SDKs takes
    a worker a second or two of CPU, which would otherwise delay the first caller's opening line
    (and every other call on the worker at that moment). Clients and channels are still made on
    first use."""
    import time

    from server.providers.base import ProviderError
    from server.providers.plugin import load_providers

    settings = worker.wsgi.config["SETTINGS"]
    if not (settings.voice_ai_ready or settings.llm_configured):
        return  # no agent to answer (calls go to voicemail): nothing to load
    started = time.monotonic()
    try:
        load_providers(settings)
    except ProviderError as exc:  # the calls report it as they would have; the worker serves the rest
        worker.log.warning("agent providers not loaded at start: %s", exc)
        return
    worker.log.info("agent providers %s loaded in %.1f s", settings.voice_providers, time.monotonic() - started)


def _drain_on_exit(worker):
    """Wrap the worker's SIGTERM handler so the app knows it is draining."""
    stop = worker.handle_exit

    def handle_exit(sig, frame):
        app = getattr(worker, "wsgi", None)  # None until the worker has loaded the app
        if app is not None:
            # Imported only now: a SIGTERM that comes while the worker is still importing the app
            # would find this module half-initialised (and fail the worker's boot). With no app
            # yet there is nothing to drain.
            from server.app_state import services

            services(app).lifecycle.start_draining()
        worker.log.info("draining: live calls may finish within %ss", worker.cfg.graceful_timeout)
        stop(sig, frame)

    worker.handle_exit = handle_exit

"""Gunicorn settings read automatically from the project root (`start_all.sh` passes the rest).

The gevent worker serves WebSockets; after fork it makes psycopg2 and gRPC cooperative, before
any database connection or gRPC channel exists (DESIGN.md: clients are created lazily after fork).
"""
from server.config import ConfigError, Settings

try:
    _settings = Settings.from_env()
    graceful_timeout = int(_settings.shutdown_grace_seconds)
except ConfigError:
    pass  # the app itself reports the bad variable in one line when it loads

timeout = 60
accesslog = None


def post_fork(server, worker):
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()


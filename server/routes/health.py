"""Liveness, readiness and version: what load balancers and `smoke.sh` ask first."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from server.db.migrate import pending_migrations
from server.routes import app_services, settings

bp = Blueprint("health", __name__)
log = logging.getLogger("agentlocator.health")

HEARTBEAT_KEY = "readyz_heartbeat"
# A probe answers within a load balancer's timeout: a write that waits longer for a lock is a "no".
WRITE_PROBE_TIMEOUT_SECONDS = 1.0


@bp.get("/")
def index() -> Response:
    return Response("ok", mimetype="text/plain")


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    cfg = settings()
    body: dict = {
        "status": "ready",
        "providers": cfg.providers_configured(),
        "voice": "ai" if cfg.voice_ai_ready else "degraded",
    }
    state = app_services()
    lifecycle = state.lifecycle
    try:
        database = state.database
        database.ping()
        pending = pending_migrations(database.engine)
    except Exception as exc:  # the reason goes to the log, not to the caller
        log.warning("readiness: database unreachable: %s", type(exc).__name__, extra={"event": "readyz_db_error"})
        return _not_ready(body, "database_unreachable")
    if pending:
        return _not_ready(body, "migrations_pending", pending=pending)
    try:
        database.probe_write(HEARTBEAT_KEY, WRITE_PROBE_TIMEOUT_SECONDS)
    except Exception as exc:  # a held lock, a full disk, a read-only database
        log.warning(
            "readiness: database refuses writes: %s", type(exc).__name__, extra={"event": "readyz_db_not_writable"}
        )
        return _not_ready(body, "database_not_writable")
    body["jobs"] = _job_counts()
    if lifecycle.draining:
        return _not_ready(body, "draining")
    warnings: list = []  # what an operator should know although the instance is ready
    for probe in state.readiness_probes:
        found = probe()
        warnings += found.pop("warnings", [])
        body.update(found)
    body["warnings"] = warnings
    return jsonify(body)


def _job_counts() -> dict:
    """Queued and failed background jobs, for the operator; an unreachable queue doesn't make the
    instance unready (calls don't need it), it shows here and in the log."""
    try:
        return app_services().jobs.counts()
    except Exception as exc:
        log.warning("readiness: job queue unreachable: %s", type(exc).__name__, extra={"event": "readyz_jobs_error"})
        return {"error": "unreachable"}


def _not_ready(body: dict, reason: str, **extra) -> Response:
    response = jsonify({**body, "status": "not_ready", "reason": reason, **extra})
    response.status_code = 503
    return response


@bp.get("/version")
def version() -> Response:
    cfg = settings()
    return jsonify(
        git_commit=cfg.git_commit or None, build_time=cfg.build_time or None, deploy_id=cfg.deploy_id or None
    )

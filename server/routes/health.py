"""Liveness, readiness and version: what load balancers and `smoke.sh` ask first."""

from __future__ import annotations

import logging
from typing import Optional

from flask import Blueprint, Response, jsonify

from server.db.migrate import pending_migrations
from server.openapi import document, json_response, obj, operation
from server.providers import vendor_check
from server.routes import app_services, db_session, settings
from server.routes.auth_api import require_auth

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
    body["vendor_check"] = _vendor_check()
    if lifecycle.draining:
        return _not_ready(body, "draining")
    warnings: list = []  # what an operator should know although the instance is ready
    for probe in state.readiness_probes:
        found = probe()
        warnings += found.pop("warnings", [])
        body.update(found)
    vendors = body["vendor_check"]
    if vendors and vendors.get("go") is False:
        warnings.append(
            {
                "code": "vendor_check_failed",
                "message": f"the last vendor check failed for {', '.join(vendors.get('failed', []))} "
                f"({vendors.get('age_seconds')} s ago): run flask --app main check-providers",
            }
        )
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


def _vendor_check() -> Optional[dict]:
    """The last deep vendor check (`check-providers`) and its age, from the database: /readyz never
    calls a vendor itself. None when no check has run."""
    try:
        with app_services().database.scope() as session:
            return vendor_check.last_report(session)
    except Exception as exc:
        log.warning(
            "readiness: vendor check unreadable: %s", type(exc).__name__, extra={"event": "readyz_vendor_error"}
        )
        return {"error": "unreadable"}


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


@bp.post("/api/admin/vendor-check")
@require_auth("admin")
def run_vendor_check() -> Response:
    """The deep vendor check, run now (what `flask --app main check-providers` does; `smoke.sh --deep`
    asks for it here, as it may run far from the deployment's settings)."""
    report = vendor_check.check_vendors(settings())
    vendor_check.store_report(db_session(), report)
    return jsonify(report)


_VENDOR_RESULT = obj(
    {
        "vendor": {"type": "string", "enum": list(vendor_check.VENDORS)},
        "status": {"type": "string", "enum": [vendor_check.OK, vendor_check.FAILED, vendor_check.SKIPPED]},
        "latency_ms": {"type": ["integer", "null"]},
        "detail": {"type": "string", "description": "what was seen, or why it failed (never a secret)"},
    },
    ["vendor", "status", "latency_ms", "detail"],
)

document(
    bp,
    {
        "/api/admin/vendor-check": {
            "post": operation(
                "Check every configured vendor with one tiny real request",
                tags=["admin"],
                role="admin",
                description="Google STT and TTS, OpenAI, Twilio, PayPal and the Baileys bridge, side by side, each "
                "with its latency; an unconfigured vendor is skipped. go is false when any failed. The report "
                "is kept and shown on /readyz (vendor_check) with its age.",
                responses={
                    "200": json_response(
                        obj(
                            {
                                "go": {"type": "boolean"},
                                "checked_at": {"type": "string", "format": "date-time"},
                                "failed": {"type": "array", "items": {"type": "string"}},
                                "results": {"type": "array", "items": _VENDOR_RESULT},
                            },
                            ["go", "checked_at", "failed", "results"],
                        )
                    )
                },
            )
        }
    },
)

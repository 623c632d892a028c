"""WhatsApp webhooks: Twilio (inbound + delivery status, `X-Twilio-Signature`) and the Baileys bridge
(`X-Bridge-Signature` over the raw body). Each checks its signature first, hands the body to
`server.whatsapp.intake` (which stores it idempotently, or queues it while the database is down)
and answers 204 with no body. An AI reply the service asks for starts only after the response has
been sent.
"""

from __future__ import annotations

import logging
from typing import Optional

from flask import Blueprint, Response, request

from server.app_state import services
from server.errors import DomainError, Problem
from server.logs import log_event
from server.routes import app_services, db_session, settings
from server.security import bridge_hmac
from server.security.twilio_signature import require_twilio_signature
from server.whatsapp.auto_reply import schedule_auto_reply
from server.whatsapp.bridge_state import bridge_readiness
from server.whatsapp.intake import accept_webhook

bp = Blueprint("whatsapp_webhooks", __name__)
BRIDGE_EVENT_HEADROOM = 1024 * 1024
log = logging.getLogger("agentlocator.whatsapp")


@bp.record_once
def _register_probe(state) -> None:
    app_settings, app_state = state.app.config["SETTINGS"], services(state.app)
    app_state.readiness_probes.append(lambda: bridge_readiness(app_settings, app_state.database))


@bp.post("/webhook/whatsapp/twilio")
@require_twilio_signature
def twilio_inbound_webhook() -> Response:
    return _no_content(reply_to=_accept("twilio", request.form.to_dict()))


@bp.post("/webhook/whatsapp/twilio/status")
@require_twilio_signature
def twilio_status_webhook() -> Response:
    _accept("twilio_status", request.form.to_dict())
    return _no_content()


@bp.post("/webhook/whatsapp/baileys")
def baileys_webhook() -> Response:
    cfg = settings()
    # A message event carries its media base64 (up to MEDIA_MAX_BYTES, the bridge's limit too): this
    # webhook takes that much more than MAX_CONTENT_LENGTH. Refusing it would lose the message, since
    # the bridge drops an event the app answers 4xx.
    request.max_content_length = bridge_event_limit(cfg)
    if not cfg.wa_shared_secret:
        raise DomainError(Problem.NOT_CONFIGURED, "not_configured", "WA_SHARED_SECRET is not configured")
    # An event may carry one media item as base64 (4/3 of MEDIA_MAX_BYTES) plus the message around it.
    request.max_content_length = max(cfg.max_content_length, cfg.media_max_bytes * 4 // 3 + BRIDGE_EVENT_HEADROOM)
    raw = request.get_data(cache=True)  # verified as received, before anything parses it
    reason = bridge_hmac.verify(
        [cfg.wa_shared_secret, cfg.wa_shared_secret_previous], raw, request.headers.get(bridge_hmac.HEADER)
    )
    if reason:
        log_event(log, "bridge_signature_rejected", logging.WARNING, reason=reason)
        raise DomainError(Problem.UNAUTHENTICATED, "invalid_signature", reason)
    return _no_content(reply_to=_accept("baileys", raw))


def _accept(webhook: str, payload) -> Optional[int]:
    return accept_webhook(db_session(), app_services().jobs, webhook, payload)


def _no_content(reply_to: Optional[int] = None) -> Response:
    response = Response(status=204)
    if reply_to is not None:
        # Runs once the response is out (and the message committed); never inside the request.
        jobs = app_services().jobs
        response.call_on_close(lambda: schedule_auto_reply(jobs, reply_to))
    return response


def bridge_event_limit(cfg) -> int:
    """The largest bridge event: the base64 of the largest media, plus MAX_CONTENT_LENGTH for the rest."""
    return -(-cfg.media_max_bytes // 3) * 4 + cfg.max_content_length

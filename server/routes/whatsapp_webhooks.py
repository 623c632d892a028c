"""WhatsApp webhooks: Twilio (inbound + delivery status, `X-Twilio-Signature`) and the Baileys bridge
(`X-Bridge-Signature` over the raw body). Each checks its signature first, stores idempotently and
answers 204 with no body. AI auto-replies start only after the response has been sent.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, request

from server.db.models import Message
from server.logs import log_event
from server.routes import db_session, settings
from server.security import bridge_hmac
from server.security.twilio_signature import require_twilio_signature
from server.web import ApiError
from server.whatsapp.auto_reply import schedule_auto_reply, wants_auto_reply
from server.whatsapp.bridge_state import record_bridge_state, register_readiness_probe
from server.whatsapp.inbound import (InvalidInbound, StoredInbound, baileys_inbound, bridge_event,
                                     is_twilio_status_callback, store_inbound, twilio_inbound)
from server.whatsapp.status import BAILEYS_STATUSES, TWILIO_STATUSES, advance_status

bp = Blueprint("whatsapp_webhooks", __name__)
log = logging.getLogger("agentlocator.whatsapp")


@bp.record_once
def _register_probe(state) -> None:
    register_readiness_probe(state.app)


@bp.post("/webhook/whatsapp/twilio")
@require_twilio_signature
def twilio_inbound_webhook() -> Response:
    form = request.form
    if is_twilio_status_callback(form):
        return _twilio_status(form)
    try:
        inbound = twilio_inbound(form)
    except InvalidInbound as exc:
        raise ApiError(400, "invalid_webhook", str(exc)) from None
    # An unknown number answers 204 too: Twilio would only retry, and there is nothing to store.
    return _stored(store_inbound(db_session(), inbound))


@bp.post("/webhook/whatsapp/twilio/status")
@require_twilio_signature
def twilio_status_webhook() -> Response:
    return _twilio_status(request.form)


@bp.post("/webhook/whatsapp/baileys")
def baileys_webhook() -> Response:
    cfg = settings()
    if not cfg.wa_shared_secret:
        raise ApiError(501, "not_configured", "WA_SHARED_SECRET is not configured")
    raw = request.get_data(cache=True)  # verified as received, before anything parses it
    reason = bridge_hmac.verify([cfg.wa_shared_secret, cfg.wa_shared_secret_previous], raw,
                                request.headers.get(bridge_hmac.HEADER))
    if reason:
        log_event(log, "bridge_signature_rejected", logging.WARNING, reason=reason)
        raise ApiError(401, "invalid_signature", reason)
    try:
        event = bridge_event(raw)
    except InvalidInbound as exc:
        raise ApiError(400, "invalid_event", str(exc)) from None
    session = db_session()
    if event["event"] == "connection":
        record_bridge_state(session, event["state"], event.get("qr", False))
        log_event(log, "baileys_connection", state=event["state"], qr=event.get("qr", False))
        return _no_content()
    if event["event"] == "status":
        _apply_status(session, "baileys", event["id"], BAILEYS_STATUSES.get(event["status"]), event["status"])
        return _no_content()
    return _stored(store_inbound(session, baileys_inbound(event)))


def _twilio_status(form: Mapping[str, str]) -> Response:
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    raw = (form.get("MessageStatus") or "").lower()
    _apply_status(db_session(), "twilio", sid, TWILIO_STATUSES.get(raw), raw,
                  error_code=form.get("ErrorCode") or None, error_message=form.get("ErrorMessage") or None)
    return _no_content()


def _apply_status(session, provider: str, provider_message_id: str, status: Optional[str], raw: str,
                  **error: Optional[str]) -> None:
    """Move the outgoing message forward; unknown statuses and unknown message ids are logged and ignored."""
    if status is None:
        log_event(log, "whatsapp_status_ignored", provider=provider, status=raw, reason="unknown status")
        return
    message_id = session.scalar(sa.select(Message.id).where(Message.provider == provider,
                                                            Message.provider_message_id == provider_message_id))
    if message_id is None:
        log_event(log, "whatsapp_status_ignored", provider=provider, status=raw, reason="unknown message")
        return
    changed = advance_status(session, message_id, status, **error)
    log_event(log, "whatsapp_status", provider=provider, message_id=message_id, status=status, applied=changed)


def _stored(stored: Optional[StoredInbound]) -> Response:
    response = _no_content()
    if stored is not None and stored.created and wants_auto_reply(stored.business, stored.message):
        # Runs once the response is out (and the message committed); never inside the request.
        app, message_id = current_app._get_current_object(), stored.message.id
        response.call_on_close(lambda: schedule_auto_reply(app.extensions["db"], app.config["SETTINGS"], message_id))
    return response


def _no_content() -> Response:
    return Response(status=204)

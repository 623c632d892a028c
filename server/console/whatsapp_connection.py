"""The owner's WhatsApp connection screen: which provider carries the business's WhatsApp, whether
it is connected, and — while the business's instance on the Baileys bridge waits for a phone to
link — the QR code to scan, drawn here as SVG (segno) from the bridge's QR string. Each business
sees its own instance only: the business id comes from the signed-in user, never from the request."""

from __future__ import annotations

import io
import logging
from typing import Any

import segno
from sqlalchemy.orm import Session

from server.config import Settings
from server.errors import DomainError, Problem
from server.logs import log_event
from server.providers.baileys_admin import BridgeUnavailable, UnknownInstance, bridge_qr, bridge_status
from server.whatsapp.bridge_state import bridge_state

log = logging.getLogger("agentlocator.console.whatsapp")

QR_SCALE = 6  # px per module: about 300 px for WhatsApp's code, scannable off a laptop screen
QR_BORDER = 4  # the quiet zone the QR standard asks for


def connection_status(session: Session, settings: Settings, business_id: int) -> dict[str, Any]:
    """`{provider, status, qr_available}`; status is connected | qr | connecting | logged_out |
    not_set_up (the bridge runs no instance for this business yet: an admin adds it) | disabled.

    With Baileys enabled the bridge is asked directly (its QR codes change every ~20 s); when it
    doesn't answer, the state it last reported through its webhook stands in, with no QR.
    """
    if not settings.enable_wa_baileys:
        if settings.enable_wa_twilio:  # Twilio's sender needs no linking: configured is connected
            return {"provider": "twilio", "status": "connected", "qr_available": False}
        return {"provider": None, "status": "disabled", "qr_available": False}
    try:
        status = bridge_status(settings, business_id)
        state, qr_available = status.state, status.qr_available
    except UnknownInstance:
        return {"provider": "baileys", "status": "not_set_up", "qr_available": False}
    except BridgeUnavailable as exc:
        log_event(log, "bridge_status_unavailable", logging.WARNING, reason=str(exc), business_id=business_id)
        state, qr_available = bridge_state(session, business_id) or "connecting", False
    if state == "open":
        return {"provider": "baileys", "status": "connected", "qr_available": False}
    if qr_available:
        return {"provider": "baileys", "status": "qr", "qr_available": True}
    return {
        "provider": "baileys",
        "status": "logged_out" if state == "logged_out" else "connecting",
        "qr_available": False,
    }


def qr_svg(settings: Settings, business_id: int) -> bytes:
    """The business's current QR code as an SVG image; 404 `no_qr` when it has none."""
    if not settings.enable_wa_baileys:
        raise DomainError(
            Problem.NOT_CONFIGURED,
            "baileys_disabled",
            "WhatsApp through the Baileys bridge is not enabled (ENABLE_WA_BAILEYS)",
        )
    try:
        qr = bridge_qr(settings, business_id)
    except UnknownInstance:
        qr = None
    except BridgeUnavailable as exc:
        log_event(log, "bridge_qr_unavailable", logging.WARNING, reason=str(exc), business_id=business_id)
        raise DomainError(
            Problem.UNAVAILABLE,
            "bridge_unavailable",
            "the WhatsApp bridge is not answering; try again in a few seconds",
        ) from None
    if qr is None:
        raise DomainError(Problem.NOT_FOUND, "no_qr", "there is no QR code to scan now (connected, or not ready yet)")
    out = io.BytesIO()
    segno.make_qr(qr, error="m").save(
        out, kind="svg", scale=QR_SCALE, border=QR_BORDER, xmldecl=False, title="WhatsApp QR", dark="#000", light="#fff"
    )
    return out.getvalue()

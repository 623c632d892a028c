"""Adding, logging out and removing a business's WhatsApp instance on the Baileys bridge: the
admin's side of "one linked WhatsApp account per business" (the admin API and the CLI use it).

Each action checks that the business exists here before asking the bridge, is audited in the
business, and turns the bridge's answers into `DomainError`s: no instance for that business is 404
`unknown_instance`, a bridge that does not answer is 503 `bridge_unavailable`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from sqlalchemy.orm import Session

from server.config import Settings
from server.db.dao_crm import audit
from server.db.models import Business
from server.errors import DomainError, Problem
from server.logs import log_event
from server.providers import baileys_admin
from server.providers.whatsapp_baileys import baileys_problem
from server.whatsapp.bridge_state import forget_bridge_state, record_bridge_state

log = logging.getLogger("agentlocator.whatsapp")
T = TypeVar("T")


def list_instances(settings: Settings) -> list[dict[str, Any]]:
    _require_bridge(settings)
    return _ask(lambda: baileys_admin.list_instances(settings), None)


def add_instance(session: Session, settings: Settings, business_id: int, actor: str) -> dict[str, Any]:
    """Starts the business's instance (idempotent); its QR code then waits on the owner's WhatsApp screen."""
    _require_bridge(settings)
    _business(session, business_id)
    instance = _ask(lambda: baileys_admin.add_instance(settings, business_id), business_id)
    if instance.get("created"):
        audit(session, business_id, actor, "whatsapp.instance_added", "business", business_id)
    log_event(log, "bridge_instance_added", business_id=business_id, new=bool(instance.get("created")))
    return _shown(instance, business_id)


def logout_instance(session: Session, settings: Settings, business_id: int, actor: str) -> dict[str, Any]:
    """Logs the business's WhatsApp account out (the phone's linked device goes away); a new QR code follows."""
    _require_bridge(settings)
    _business(session, business_id)
    instance = _ask(lambda: baileys_admin.logout_instance(settings, business_id), business_id)
    record_bridge_state(session, business_id, "logged_out", False)  # sends stop routing here at once
    audit(session, business_id, actor, "whatsapp.instance_logged_out", "business", business_id)
    log_event(log, "bridge_instance_logged_out", business_id=business_id)
    return _shown(instance, business_id)


def remove_instance(session: Session, settings: Settings, business_id: int, actor: str) -> dict[str, Any]:
    """Stops the instance and deletes its session on the bridge: the business no longer sends through it."""
    _require_bridge(settings)
    _business(session, business_id)
    _ask(lambda: baileys_admin.remove_instance(settings, business_id), business_id)
    forget_bridge_state(session, business_id)
    audit(session, business_id, actor, "whatsapp.instance_removed", "business", business_id)
    log_event(log, "bridge_instance_removed", business_id=business_id)
    return {"business_id": business_id, "removed": True}


def _shown(instance: dict[str, Any], business_id: int) -> dict[str, Any]:
    """The bridge's instance as the API shows it (its known fields only)."""
    return {
        "business_id": business_id,
        "state": instance.get("state") if isinstance(instance.get("state"), str) else "unknown",
        "me": instance.get("me") if isinstance(instance.get("me"), str) else None,
        "qr_available": instance.get("qr_available") is True,
    }


def _require_bridge(settings: Settings) -> None:
    problem = baileys_problem(settings)
    if problem:
        raise DomainError(Problem.NOT_CONFIGURED, "baileys_disabled", problem)


def _business(session: Session, business_id: int) -> Business:
    business = session.get(Business, business_id)
    if business is None:
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such business")
    return business


def _ask(call: Callable[[], T], business_id: int | None) -> T:
    try:
        return call()
    except baileys_admin.UnknownInstance:
        raise DomainError(
            Problem.NOT_FOUND, "unknown_instance", f"the bridge runs no WhatsApp instance for business {business_id}"
        ) from None
    except baileys_admin.BridgeUnavailable as exc:
        log_event(log, "bridge_admin_unavailable", logging.WARNING, reason=str(exc), business_id=business_id)
        raise DomainError(
            Problem.UNAVAILABLE, "bridge_unavailable", "the WhatsApp bridge is not answering; try again shortly"
        ) from None

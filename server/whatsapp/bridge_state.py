"""The Baileys bridge's WhatsApp connection state, as the bridge last reported it.

It lives in the database (`service_state`, key `baileys_bridge`) because the worker that receives
the bridge's `connection` event is rarely the one that later routes a send.
"""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.config import Settings
from server.db.engine import Database
from server.db.models import ServiceState, utcnow

STATE_KEY = "baileys_bridge"
CONNECTED = "open"


def record_bridge_state(session: Session, state: str, qr: bool) -> None:
    value = {"state": state, "qr": qr, "reported_at": utcnow().isoformat()}
    row = session.get(ServiceState, STATE_KEY)
    if row is None:
        try:
            with session.begin_nested():
                session.add(ServiceState(key=STATE_KEY, value=value))
            return
        except IntegrityError:  # another worker stored the first report at the same moment
            row = session.get_one(ServiceState, STATE_KEY)
    row.value = value
    row.updated_at = utcnow()
    session.flush()


def bridge_state(session: Session) -> Optional[str]:
    """The last reported state (`open`, `connecting`, `close`, `logged_out`…), or None if never reported."""
    value = session.scalar(sa.select(ServiceState.value).where(ServiceState.key == STATE_KEY))
    return (value or {}).get("state")


def bridge_readiness(settings: Settings, database: Database) -> dict[str, str]:
    """What `/readyz` shows: `whatsapp_baileys_state`, the bridge's state, `unknown`, or `disabled`."""
    if not settings.enable_wa_baileys:
        return {"whatsapp_baileys_state": "disabled"}
    with database.scope() as session:
        return {"whatsapp_baileys_state": bridge_state(session) or "unknown"}

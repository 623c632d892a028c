"""Each business's WhatsApp connection on the Baileys bridge, as the bridge last reported it.

The bridge runs one instance (one linked WhatsApp account) per business and reports each one's
connection changes with the business's id. The states live in the database (`service_state`, key
`baileys_bridge:<business id>`) because the worker that receives the bridge's `connection` event
is rarely the one that later routes a send. `baileys_bridge` (no id) is where a bridge from before
instances reported its one account.
"""

from __future__ import annotations

from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.config import Settings
from server.db.engine import Database
from server.db.models import ServiceState, utcnow

LEGACY_KEY = "baileys_bridge"
KEY_PREFIX = "baileys_bridge:"
CONNECTED = "open"


def state_key(business_id: Optional[int]) -> str:
    return LEGACY_KEY if business_id is None else f"{KEY_PREFIX}{business_id}"


def record_bridge_state(session: Session, business_id: Optional[int], state: str, qr: bool) -> None:
    key = state_key(business_id)
    value = {"state": state, "qr": qr, "reported_at": utcnow().isoformat()}
    row = session.get(ServiceState, key)
    if row is None:
        try:
            with session.begin_nested():
                session.add(ServiceState(key=key, value=value))
            return
        except IntegrityError:  # another worker stored the first report at the same moment
            row = session.get_one(ServiceState, key)
    row.value = value
    row.updated_at = utcnow()
    session.flush()


def bridge_state(session: Session, business_id: int) -> Optional[str]:
    """The business's last reported state (`open`, `connecting`, `close`, `logged_out`…), or None if
    never reported. Until its instance reports, what a bridge of before instances reported stands."""
    rows = session.execute(
        sa.select(ServiceState.key, ServiceState.value).where(
            ServiceState.key.in_([state_key(business_id), LEGACY_KEY])
        )
    )
    values = {key: value for key, value in rows}
    value = values.get(state_key(business_id), values.get(LEGACY_KEY))
    return (value or {}).get("state")


def forget_bridge_state(session: Session, business_id: int) -> None:
    """The business's instance was removed from the bridge: its last report no longer stands."""
    session.execute(sa.delete(ServiceState).where(ServiceState.key == state_key(business_id)))


def bridge_readiness(settings: Settings, database: Database) -> dict[str, str]:
    """What `/readyz` shows: `whatsapp_baileys_state`: `open` when every instance that reported is
    connected, else the first other state seen (`connecting`, `logged_out`…); `unknown` before any
    report; `disabled`. `whatsapp_baileys_open` counts the connected instances (`2/3`)."""
    if not settings.enable_wa_baileys:
        return {"whatsapp_baileys_state": "disabled"}
    with database.scope() as session:
        rows: list[tuple[str, Any]] = [
            (key, value)
            for key, value in session.execute(
                sa.select(ServiceState.key, ServiceState.value)
                .where(sa.or_(ServiceState.key == LEGACY_KEY, ServiceState.key.startswith(KEY_PREFIX, autoescape=True)))
                .order_by(ServiceState.key)
            )
        ]
    # Once instances report, a state left from a bridge of before instances no longer counts.
    if any(key != LEGACY_KEY for key, _ in rows):
        rows = [(key, value) for key, value in rows if key != LEGACY_KEY]
    states = [(value or {}).get("state") or "unknown" for _, value in rows]
    if not states:
        return {"whatsapp_baileys_state": "unknown"}
    not_open = [state for state in states if state != CONNECTED]
    return {
        "whatsapp_baileys_state": not_open[0] if not_open else CONNECTED,
        "whatsapp_baileys_open": f"{len(states) - len(not_open)}/{len(states)}",
    }

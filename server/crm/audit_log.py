"""The business's audit log as the owner reads it: newest first, filtered by entity, action or actor.
(Rows are written by `server.db.dao_crm.audit`, by every area.)"""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy.orm import Session

from server.crm import serializers as out
from server.crm.pagination import fetch_page, page_request
from server.crm.queries import AUDIT_KEYSET, audit_query


def list_audit(session: Session, business_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    return fetch_page(
        session,
        audit_query(business_id, args),
        AUDIT_KEYSET,
        page_request(args, AUDIT_KEYSET),
        lambda rows: [out.audit_json(r) for r in rows],
    )

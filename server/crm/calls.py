"""Calls as the CRM shows them: the filtered list, and one call with its turns and voicemail."""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy.orm import Session

from server.crm import serializers as out
from server.crm.agent import tool_calls_of_call
from server.crm.pagination import fetch_page, page_request
from server.crm.queries import CALLS_KEYSET, call_turns_and_voicemail, calls_query
from server.db.models import Call
from server.errors import DomainError, Problem
from server.security.auth import get_owned

CALL_SID_MAX = 64  # the column's length: a longer sid names no call


def list_calls(session: Session, business_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    stmt = calls_query(session, business_id, args)
    return fetch_page(
        session, stmt, CALLS_KEYSET, page_request(args, CALLS_KEYSET), lambda rows: [out.call_json(c) for c in rows]
    )


def call_detail(session: Session, business_id: int, call_sid: str) -> dict[str, Any]:
    if len(call_sid) > CALL_SID_MAX or "\x00" in call_sid:
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such call")
    call = get_owned(session, Call, business_id, call_sid, column="call_sid")
    return {
        **out.call_detail_json(call, *call_turns_and_voicemail(session, call)),
        "tool_calls": tool_calls_of_call(session, call),
    }

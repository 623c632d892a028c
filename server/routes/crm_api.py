"""`/api/crm/*`: calls, threads and messages, customers, deals, invoices, contracts, users, tokens,
audit, and `/api/openapi.json`. Thin: parse, authorise, call `server.crm`, answer.

Roles: `agent` reads everything, works threads (reply, read, status/assignee/labels) and edits
customers; `owner` also writes deals, invoices and contracts, manages users and tokens and reads
the audit log; `admin` does all of it for any business (`X-Business-Id`).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from server.crm import accounts, business, conversations, customers, documents
from server.crm import serializers as out
from server.crm.api_spec import OPENAPI_PATHS, OPENAPI_SCHEMAS  # noqa: F401  (read by server.openapi)
from server.crm.pagination import fetch_page, page_request
from server.crm.queries import (AUDIT_KEYSET, CALLS_KEYSET, CUSTOMERS_KEYSET, THREADS_KEYSET, audit_query,
                                call_turns_and_voicemail, calls_query, customers_query, documents_query, thread_rows,
                                threads_query)
from server.crm.validation import MAX_ID
from server.db.models import ApiToken, Call, Customer, Thread, User
from server.routes import db_session, settings
from server.security.auth import get_owned, require_auth, scoped
from server.web import ApiError, json_body

bp = Blueprint("crm_api", __name__)
CRM = "/api/crm"
DOCUMENT_KIND = f"<any({', '.join(documents.KINDS)}):kind>"


def _actor() -> str:
    return f"user:{g.user.id}"


def _owned(model: type, object_id: int) -> Any:
    if not 1 <= object_id <= MAX_ID:
        raise ApiError(404, "not_found", f"no such {model.__tablename__.rstrip('s')}")
    return get_owned(db_session(), model, object_id)


def _created(body: dict) -> tuple[Response, int]:
    return jsonify(body), 201


# ---- calls --------------------------------------------------------------------------------------

@bp.get(f"{CRM}/calls")
@require_auth()
def list_calls():
    session = db_session()
    stmt = calls_query(session, request.args)
    page = page_request(request.args, CALLS_KEYSET)
    return jsonify(fetch_page(session, stmt, CALLS_KEYSET, page, lambda rows: [out.call_json(c) for c in rows]))


@bp.get(f"{CRM}/calls/<call_sid>")
@require_auth()
def get_call(call_sid: str):
    session = db_session()
    if len(call_sid) > 64 or "\x00" in call_sid:
        raise ApiError(404, "not_found", "no such call")
    call = get_owned(session, Call, call_sid, column="call_sid")
    return jsonify(out.call_detail_json(call, *call_turns_and_voicemail(session, call)))


# ---- threads and messages -----------------------------------------------------------------------

def _thread_json(thread: Thread) -> dict:
    return out.thread_json(*db_session().execute(thread_rows().where(Thread.id == thread.id)).one())


@bp.get(f"{CRM}/threads")
@require_auth()
def list_threads():
    session = db_session()
    stmt = threads_query(session, request.args, g.user.id)
    page = page_request(request.args, THREADS_KEYSET)
    return jsonify(fetch_page(session, stmt, THREADS_KEYSET, page, lambda rows: [out.thread_json(*r) for r in rows]))


@bp.get(f"{CRM}/threads/<int:thread_id>")
@require_auth()
def get_thread(thread_id: int):
    session = db_session()
    thread = _owned(Thread, thread_id)
    customer = session.get(Customer, thread.customer_id)
    return jsonify({**out.thread_json(thread, customer), "customer": out.customer_json(customer),
                    "messages": conversations.messages_page(session, thread, request.args)})


@bp.get(f"{CRM}/threads/<int:thread_id>/messages")
@require_auth()
def list_thread_messages(thread_id: int):
    return jsonify(conversations.messages_page(db_session(), _owned(Thread, thread_id), request.args))


@bp.post(f"{CRM}/threads/<int:thread_id>/read")
@require_auth()
def mark_thread_read(thread_id: int):
    thread = _owned(Thread, thread_id)
    conversations.mark_read(thread)
    return jsonify(_thread_json(thread))


@bp.patch(f"{CRM}/threads/<int:thread_id>")
@require_auth()
def update_thread(thread_id: int):
    thread = _owned(Thread, thread_id)
    conversations.update_thread(db_session(), thread, _actor(), json_body())
    return jsonify(_thread_json(thread))


@bp.post(f"{CRM}/threads/<int:thread_id>/messages")
@require_auth()
def reply_to_thread(thread_id: int):
    thread = _owned(Thread, thread_id)
    status, body = conversations.reply(db_session(), settings(), thread, g.user, json_body(),
                                       request.headers.get("Idempotency-Key"))
    return jsonify(body), status


# ---- customers ----------------------------------------------------------------------------------

@bp.get(f"{CRM}/customers")
@require_auth()
def list_customers():
    page = page_request(request.args, CUSTOMERS_KEYSET)
    return jsonify(fetch_page(db_session(), customers_query(request.args), CUSTOMERS_KEYSET, page,
                              lambda rows: [out.customer_json(c) for c in rows]))


@bp.post(f"{CRM}/customers")
@require_auth()
def create_customer():
    customer = customers.create_customer(db_session(), g.business_id, _actor(), json_body())
    return _created(out.customer_json(customer))


@bp.get(f"{CRM}/customers/<int:customer_id>")
@require_auth()
def get_customer(customer_id: int):
    return jsonify(customers.customer_page(db_session(), _owned(Customer, customer_id)))


@bp.patch(f"{CRM}/customers/<int:customer_id>")
@require_auth()
def update_customer(customer_id: int):
    customer = customers.update_customer(db_session(), _owned(Customer, customer_id), _actor(), json_body())
    return jsonify(out.customer_json(customer))


# ---- deals, invoices, contracts -----------------------------------------------------------------

def _locked_document(kind: documents.DocumentKind, document_id: int) -> Any:
    """The document, row-locked until commit (and read once locked), so that of two concurrent
    changes the second sees the first's result: two status moves can't both win."""
    if 1 <= document_id <= MAX_ID:
        document = db_session().scalar(scoped(kind.model).where(kind.model.id == document_id).with_for_update())
        if document is not None:
            return document
    raise ApiError(404, "not_found", f"no such {kind.name}")


@bp.get(f"{CRM}/{DOCUMENT_KIND}")
@require_auth()
def list_documents(kind: str):
    spec = documents.KINDS[kind]
    stmt = documents_query(spec.model, request.args, spec.statuses)
    return jsonify(fetch_page(db_session(), stmt, spec.keyset, page_request(request.args, spec.keyset),
                              lambda rows: [out.document_json(d) for d in rows]))


@bp.post(f"{CRM}/{DOCUMENT_KIND}")
@require_auth("owner")
def create_document(kind: str):
    document = documents.create_document(db_session(), documents.KINDS[kind], g.business_id, _actor(), json_body())
    return _created(out.document_json(document))


@bp.get(f"{CRM}/{DOCUMENT_KIND}/<int:document_id>")
@require_auth()
def get_document(kind: str, document_id: int):
    return jsonify(out.document_json(_owned(documents.KINDS[kind].model, document_id)))


def _change_document(kind: str, document_id: int, change: Any) -> Response:
    spec = documents.KINDS[kind]
    document = change(db_session(), spec, _locked_document(spec, document_id), _actor(), json_body())
    return jsonify(out.document_json(document))


@bp.patch(f"{CRM}/{DOCUMENT_KIND}/<int:document_id>")
@require_auth("owner")
def update_document(kind: str, document_id: int):
    return _change_document(kind, document_id, documents.update_document)


@bp.post(f"{CRM}/{DOCUMENT_KIND}/<int:document_id>/status")
@require_auth("owner")
def change_document_status(kind: str, document_id: int):
    return _change_document(kind, document_id, documents.change_status)


# ---- users, tokens, audit -----------------------------------------------------------------------

@bp.get(f"{CRM}/users")
@require_auth("owner")
def list_users():
    users = db_session().scalars(scoped(User).order_by(User.id)).all()
    return jsonify({"items": [out.user_json(u) for u in users]})


@bp.post(f"{CRM}/users")
@require_auth("owner")
def create_user():
    return _created(out.user_json(accounts.create_user(db_session(), g.business_id, g.user, json_body())))


@bp.get(f"{CRM}/tokens")
@require_auth("owner")
def list_tokens():
    tokens = db_session().scalars(accounts.business_tokens(g.business_id).order_by(ApiToken.id)).all()
    return jsonify({"items": [out.token_json(t) for t in tokens]})


@bp.post(f"{CRM}/tokens")
@require_auth("owner")
def create_token():
    token, secret = accounts.create_token(db_session(), g.business_id, g.user, json_body(required=False))
    return _created({**out.token_json(token), "token": secret})


@bp.delete(f"{CRM}/tokens/<int:token_id>")
@require_auth("owner")
def revoke_token(token_id: int):
    accounts.revoke_token(db_session(), g.business_id, g.user, token_id)
    return "", 204


@bp.get(f"{CRM}/audit")
@require_auth("owner")
def list_audit():
    page = page_request(request.args, AUDIT_KEYSET)
    return jsonify(fetch_page(db_session(), audit_query(request.args), AUDIT_KEYSET, page,
                              lambda rows: [out.audit_json(r) for r in rows]))


@bp.get("/api/openapi.json")
@require_auth()
def openapi_document():
    from server.openapi import openapi_spec  # late: it imports every route module, this one included

    return jsonify(openapi_spec(current_app))


# ---- the business's own settings (payment settings: /api/crm/payments/settings) -----------------

@bp.get(f"{CRM}/business")
@require_auth()
def get_business():
    return jsonify(business.business_json(business.load_business(db_session(), g.business_id)))


@bp.patch(f"{CRM}/business")
@require_auth("owner")
def update_business():
    session = db_session()
    changed = business.update_business(session, business.load_business(session, g.business_id, for_update=True),
                                       _actor(), json_body())
    return jsonify(business.business_json(changed))

"""`/api/crm/*`: calls, threads and messages, customers, deals, invoices, contracts, users, tokens,
audit, and `/api/openapi.json`. Thin: parse, authorise, call `server.crm`, answer.

Roles: `agent` reads everything (users only as the staff directory), works threads (reply, read,
status/assignee/labels) and edits customers; `owner` also writes deals, invoices and contracts,
manages agents and tokens and reads the audit log; `admin` does all of it for any business
(`X-Business-Id`), manages owners and assigns phone numbers.

A write to an object named in the path fetches it (another business's, or none: 404) before the
body is read (400), so the two mistakes are told apart in that order.
"""

from __future__ import annotations

from types import SimpleNamespace

from flask import Blueprint, current_app, g, jsonify, request

from server.crm import accounts, audit_log, business, calls, conversations, customers, documents
from server.db.models import Customer, Thread
from server.openapi import document, openapi_spec
from server.routes import app_services, db_session, settings
from server.routes.auth_api import require_auth, token_policy
from server.routes.crm_openapi import OPENAPI_PATHS, OPENAPI_SCHEMAS
from server.routes.whatsapp_api import message_body
from server.security.auth import get_owned
from server.voice import prompt_audio
from server.web import json_body

bp = Blueprint("crm_api", __name__)
document(bp, OPENAPI_PATHS, OPENAPI_SCHEMAS)
CRM = "/api/crm"
DOCUMENT_KIND = f"<any({', '.join(documents.KINDS)}):kind>"


def _actor() -> str:
    return f"user:{g.user.id}"


# ---- calls --------------------------------------------------------------------------------------


@bp.get(f"{CRM}/calls")
@require_auth()
def list_calls():
    return jsonify(calls.list_calls(db_session(), g.business_id, request.args))


@bp.get(f"{CRM}/calls/<call_sid>")
@require_auth()
def get_call(call_sid: str):
    return jsonify(calls.call_detail(db_session(), g.business_id, call_sid))


# ---- threads and messages -----------------------------------------------------------------------


@bp.get(f"{CRM}/threads")
@require_auth()
def list_threads():
    return jsonify(conversations.list_threads(db_session(), g.business_id, g.user.id, request.args))


@bp.get(f"{CRM}/threads/<int:thread_id>")
@require_auth()
def get_thread(thread_id: int):
    return jsonify(conversations.thread_detail(db_session(), g.business_id, thread_id, request.args))


@bp.get(f"{CRM}/threads/<int:thread_id>/messages")
@require_auth()
def list_thread_messages(thread_id: int):
    return jsonify(conversations.thread_messages(db_session(), g.business_id, thread_id, request.args))


@bp.post(f"{CRM}/threads/<int:thread_id>/read")
@require_auth()
def mark_thread_read(thread_id: int):
    return jsonify(conversations.mark_read(db_session(), g.business_id, thread_id))


@bp.patch(f"{CRM}/threads/<int:thread_id>")
@require_auth()
def update_thread(thread_id: int):
    thread = get_owned(db_session(), Thread, g.business_id, thread_id)
    return jsonify(conversations.update_thread(db_session(), thread, _actor(), json_body()))


@bp.post(f"{CRM}/threads/<int:thread_id>/messages")
@require_auth()
def reply_to_thread(thread_id: int):
    thread = get_owned(db_session(), Thread, g.business_id, thread_id)
    body, upload = message_body()  # JSON, or a form with the file to send
    return jsonify(
        conversations.reply(
            db_session(),
            settings(),
            thread,
            g.user,
            body,
            request.headers.get("Idempotency-Key"),
            app_secret=current_app.config["APP_SECRET"],
            upload=upload,
        )
    )


# ---- customers ----------------------------------------------------------------------------------


@bp.get(f"{CRM}/customers")
@require_auth()
def list_customers():
    return jsonify(customers.list_customers(db_session(), g.business_id, request.args))


@bp.post(f"{CRM}/customers")
@require_auth()
def create_customer():
    return jsonify(customers.create_customer(db_session(), g.business_id, _actor(), json_body())), 201


@bp.get(f"{CRM}/customers/<int:customer_id>")
@require_auth()
def get_customer(customer_id: int):
    return jsonify(customers.customer_page(db_session(), g.business_id, customer_id))


@bp.patch(f"{CRM}/customers/<int:customer_id>")
@require_auth()
def update_customer(customer_id: int):
    customer = get_owned(db_session(), Customer, g.business_id, customer_id)
    return jsonify(customers.update_customer(db_session(), customer, _actor(), json_body()))


# ---- deals, invoices, contracts -----------------------------------------------------------------


@bp.get(f"{CRM}/{DOCUMENT_KIND}")
@require_auth()
def list_documents(kind: str):
    return jsonify(documents.list_documents(db_session(), documents.KINDS[kind], g.business_id, request.args))


@bp.post(f"{CRM}/{DOCUMENT_KIND}")
@require_auth("owner")
def create_document(kind: str):
    created = documents.create_document(db_session(), documents.KINDS[kind], g.business_id, _actor(), json_body())
    return jsonify(created), 201


@bp.get(f"{CRM}/{DOCUMENT_KIND}/<int:document_id>")
@require_auth()
def get_document(kind: str, document_id: int):
    return jsonify(documents.get_document(db_session(), documents.KINDS[kind], g.business_id, document_id))


@bp.patch(f"{CRM}/{DOCUMENT_KIND}/<int:document_id>")
@require_auth("owner")
def update_document(kind: str, document_id: int):
    spec = documents.KINDS[kind]
    document = documents.locked(db_session(), spec, g.business_id, document_id)
    return jsonify(documents.update_document(db_session(), spec, document, _actor(), json_body()))


@bp.post(f"{CRM}/{DOCUMENT_KIND}/<int:document_id>/status")
@require_auth("owner")
def change_document_status(kind: str, document_id: int):
    spec = documents.KINDS[kind]
    document = documents.locked(db_session(), spec, g.business_id, document_id)
    return jsonify(documents.change_status(db_session(), spec, document, _actor(), json_body()))


# ---- users, tokens, audit -----------------------------------------------------------------------


@bp.get(f"{CRM}/users")
@require_auth("owner")
def list_users():
    return jsonify(accounts.list_users(db_session(), g.business_id))


@bp.get(f"{CRM}/staff")
@require_auth()
def list_staff():
    return jsonify(accounts.staff_directory(db_session(), g.business_id))


@bp.post(f"{CRM}/users")
@require_auth("owner")
def create_user():
    return jsonify(accounts.create_user(db_session(), g.business_id, g.user, json_body())), 201


@bp.get(f"{CRM}/tokens")
@require_auth("owner")
def list_tokens():
    return jsonify(accounts.list_tokens(db_session(), g.business_id, token_policy()))


@bp.post(f"{CRM}/tokens")
@require_auth("owner")
def create_token():
    created = accounts.create_token(db_session(), g.business_id, g.user, json_body(required=False), token_policy())
    return jsonify(created), 201


@bp.delete(f"{CRM}/tokens/<int:token_id>")
@require_auth("owner")
def revoke_token(token_id: int):
    accounts.revoke_token(db_session(), g.business_id, g.user, token_id)
    return "", 204


@bp.get(f"{CRM}/audit")
@require_auth("owner")
def list_audit():
    return jsonify(audit_log.list_audit(db_session(), g.business_id, request.args))


@bp.get("/api/openapi.json")
@require_auth()
def openapi_document():
    return jsonify(openapi_spec(current_app))


# ---- the business's own settings (payment settings: /api/crm/payments/settings) -----------------


@bp.get(f"{CRM}/business")
@require_auth()
def get_business():
    return jsonify(business.get_business(db_session(), g.business_id))


# The settings that change the prompts a caller hears first (the default opening line names the business).
PROMPT_FIELDS = {"opening_line", "greeting_enabled", "name"}


@bp.patch(f"{CRM}/business")
@require_auth("owner")
def update_business():
    body = json_body()
    updated = business.update_business(
        db_session(), g.business_id, _actor(), body, numbers_allowed=g.user.role == "admin"
    )
    if PROMPT_FIELDS & set(body):  # what callers hear first changed: make it in the agent's voice now
        prompt_audio.queue_business_prompts(app_services().jobs, settings(), SimpleNamespace(**updated))
    return jsonify(updated)

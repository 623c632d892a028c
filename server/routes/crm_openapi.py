"""OpenAPI path items and schemas of the CRM routes (`server/routes/crm_api.py` documents its blueprint
with them). HTTP documentation, so it lives with the routes; the limits come from the services.

Request schemas state exactly what the handlers accept (unknown fields are refused, limits match
`server.crm.validation`), so the schemathesis run can hold the API to them in both directions.
"""

from __future__ import annotations

from typing import Any

from server import money
from server.crm import business
from server.crm.conversations import PROVIDERS, REPLY_TEXT_MAX
from server.crm.customers import NAME_MAX
from server.crm.customers import NOTES_MAX as CUSTOMER_NOTES_MAX
from server.crm.documents import BODY_MAX, KINDS, NOTES_MAX, NUMBER_MAX, TITLE_MAX
from server.crm.pagination import MAX_LIMIT
from server.crm.queries import CHANNELS, THREAD_STATUSES
from server.crm.validation import DATE_PATTERN, INSTANT_PATTERN, MAX_ID
from server.openapi import error_responses, json_response, nullable, obj, operation, path_param, query_param, ref
from server.security.auth import ROLES

STR = {"type": "string"}
STR_N = {"type": ["string", "null"]}
INT = {"type": "integer"}
INT_N = {"type": ["integer", "null"]}
DT = {"type": "string", "format": "date-time"}
DT_N = {"type": ["string", "null"], "format": "date-time"}
ID_IN = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def _text(max_length: int, *, null: bool = True, min_length: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"] if null else "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    return schema


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _page(name: str) -> dict[str, Any]:
    return obj(
        {
            "items": _array(ref(name)),
            "next_cursor": {**STR_N, "description": "pass as `cursor` for the next page; null on the last"},
        },
        ["items", "next_cursor"],
    )


def _all(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": list(parts)}


_CUSTOMER_SUMMARY = obj({"id": INT, "phone": STR_N, "name": STR}, ["id", "phone", "name"])
_CUSTOMER = obj(
    {
        "id": INT,
        "phone": {**STR_N, "description": "E.164"},
        "name": STR,
        "email": STR_N,
        "wa_lid": STR_N,
        "notes": STR,
        "merged_into_id": INT_N,
        "created_at": DT,
        "updated_at": DT,
    },
    ["id", "phone", "name", "email", "wa_lid", "notes", "merged_into_id", "created_at", "updated_at"],
)
_CALL_FIELDS = {
    "id": INT,
    "call_sid": STR,
    "customer_id": INT_N,
    "thread_id": INT_N,
    "from_number": STR,
    "to_number": STR,
    "status": STR,
    "stream_status": STR_N,
    "outcome": STR_N,
    "started_at": DT,
    "ended_at": DT_N,
    "duration_seconds": INT_N,
    "recording_url": STR_N,
    "transcript_preview": STR,
    "created_at": DT,
}
_CALL = obj(_CALL_FIELDS, list(_CALL_FIELDS))
_TURN = obj(
    {
        "turn_index": INT,
        "user_text": STR,
        "agent_text": STR,
        "interrupted": {"type": "boolean"},
        "created_at": DT,
        "metrics": obj(
            {
                **{name: INT_N for name in ("t_audio_ms", "t_nlp_ms", "t_tts_ms", "t_total_ms", "t_first_audio_ms")},
                "preemptive": {
                    "enum": ["used", "dropped", "none"],
                    "description": "used: the reply was written before the final transcript and kept; dropped: "
                    "a reply written ahead was thrown away (the caller heard none of it)",
                },
                "preemptive_dropped": {**INT, "description": "replies written ahead and thrown away for this turn"},
                "preemptive_dropped_chars": {**INT, "description": "characters of reply text they had written"},
            }
        ),
    },
    ["turn_index", "user_text", "agent_text", "interrupted", "metrics"],
)
_MESSAGE_FIELDS = {
    "id": INT,
    "thread_id": INT,
    "direction": {"enum": ["in", "out"]},
    "kind": STR,
    "body": STR,
    "provider": STR_N,
    "provider_message_id": STR_N,
    "status": STR,
    "error_code": STR_N,
    "error_message": STR_N,
    "media": {
        "type": "array",
        "description": "what the provider said about the message (a voicemail's recording, a location)",
    },
    "attachments": {"type": "array", "items": ref("Media"), "description": "the message's media items"},
    "transcript": {**STR_N, "description": "a voice note's words, once transcribed"},
    "transcript_status": {"type": ["string", "null"], "enum": ["pending", "done", "failed", None]},
    "transcript_error": STR_N,
    "sender_user_id": INT_N,
    "call_id": INT_N,
    "created_at": DT,
    "updated_at": DT,
}
_MESSAGE = obj(_MESSAGE_FIELDS, list(_MESSAGE_FIELDS))
_MEDIA_FIELDS = {
    "id": INT,
    "kind": {"enum": ["audio", "image", "video", "document", "sticker"]},
    "mime_type": {**STR, "description": "sniffed from the bytes (declared, while pending or when refused unseen)"},
    "size": INT,
    "sha256": STR_N,
    "file_name": {**STR_N, "description": "the sender's name for it, cleaned; display only"},
    "caption": STR_N,
    "duration_seconds": INT_N,
    "voice_note": {"type": "boolean"},
    "status": {
        "enum": ["pending", "stored", "rejected", "expired"],
        "description": "pending: still being downloaded; rejected: not kept (error_code, error_message say why); "
        "expired: deleted after MEDIA_RETENTION_DAYS",
    },
    "error_code": {
        "type": ["string", "null"],
        "description": "too_large, too_many, not_allowed, empty, download_failed, expired",
    },
    "error_message": STR_N,
    "url": {**STR_N, "description": "GET it (Range requests answered 206); null unless stored"},
    "download_url": {**STR_N, "description": "the same file as an attachment"},
}
_MEDIA = obj(_MEDIA_FIELDS, list(_MEDIA_FIELDS))
_CALL_DETAIL = _all(
    ref("Call"),
    obj(
        {
            "stream_sid": STR_N,
            "stream_error": STR_N,
            "stream_started_at": DT_N,
            "recording_sid": STR_N,
            "transcript": STR,
            "turns": _array(ref("CallTurn")),
            "voicemail": {**nullable(ref("Message")), "description": "the caller's recorded message, if any"},
            "updated_at": DT,
            "tool_calls": {**_array(ref("ToolCall")), "description": "the agent's tool calls, by turn_index"},
        },
        ["transcript", "turns", "voicemail"],
    ),
)
_MESSAGE_PREVIEW = obj(
    {"id": INT, "direction": STR, "kind": STR, "body": STR, "status": STR, "created_at": DT},
    ["id", "direction", "body", "created_at"],
)
_THREAD_FIELDS = {
    "id": INT,
    "channel": {**STR, "description": "whatsapp or voice"},
    "status": {**STR, "description": "open, pending or resolved"},
    "assignee": {**INT_N, "description": "a user id of this business"},
    "labels": _array(STR),
    "unread_count": INT,
    "ai_paused": {
        "type": "boolean",
        "description": "staff took the conversation over: no WhatsApp AI auto-reply in it",
    },
    "last_activity_at": DT,
    "last_inbound_at": DT_N,
    "created_at": DT,
    "customer": nullable(ref("CustomerSummary")),
    "last_message": nullable(ref("MessagePreview")),
}
_THREAD = obj(_THREAD_FIELDS, list(_THREAD_FIELDS))
_THREAD_DETAIL = _all(
    ref("Thread"), obj({"customer": ref("Customer"), "messages": _page("Message")}, ["customer", "messages"])
)
_DOCUMENT_FIELDS = {
    "id": INT,
    "customer_id": INT_N,
    "title": STR,
    "amount_minor": INT,
    "amount": {**STR, "description": 'amount_minor as a decimal string, e.g. "49.90"'},
    "currency": {"enum": list(money.CURRENCIES)},
    "status": STR,
    "notes": STR,
    "created_at": DT,
    "updated_at": DT,
}
_KIND_FIELDS = {
    "deals": {},
    "invoices": {
        "deal_id": INT_N,
        "number": STR_N,
        "due_date": STR_N,
        "payment_id": {**INT_N, "description": "the payment made for this invoice"},
    },
    "contracts": {"deal_id": INT_N, "body": STR},
}
_SCHEMA_NAMES = {"deals": "Deal", "invoices": "Invoice", "contracts": "Contract"}
_PAYMENT = obj(
    {
        "id": INT,
        "invoice_id": INT_N,
        "amount_minor": INT,
        "amount": STR,
        "currency": STR,
        "description": STR,
        "provider": STR,
        "status": STR,
        "created_at": DT,
        "paid_at": DT_N,
    },
    ["id", "amount_minor", "currency", "status", "created_at"],
)
_CUSTOMER_DETAIL = _all(
    ref("Customer"),
    obj(
        {
            "threads": _array(ref("Thread")),
            "calls": _array(ref("Call")),
            "deals": _array(ref("Deal")),
            "invoices": _array(ref("Invoice")),
            "contracts": _array(ref("Contract")),
            "payments": _array(ref("PaymentSummary")),
        },
        ["threads", "calls", "deals", "invoices", "contracts", "payments"],
    ),
)
_USER = obj(
    {
        "id": INT,
        "email": STR,
        "role": {"enum": list(ROLES)},
        "created_at": DT,
        "disabled": {"type": "boolean", "description": "an owner disabled the account: no sign-in"},
    },
    ["id", "email", "role", "created_at", "disabled"],
)
_STAFF = obj(
    {
        "id": INT,
        "name": {**STR_N, "description": "a display name; null while users have none (show the email)"},
        "email": STR,
        "role": {"enum": list(ROLES)},
        "disabled": {"type": "boolean", "description": "no longer signs in; still named on their messages"},
    },
    ["id", "name", "email", "role", "disabled"],
)
_TOKEN = obj(
    {
        "id": INT,
        "user_id": INT,
        "name": STR,
        "created_at": DT,
        "last_used_at": DT_N,
        "revoked_at": DT_N,
        "created_by_user_id": {
            **INT_N,
            "description": "who made it: the user signing in, the owner or admin "
            "who minted it, or null for the admin CLI",
        },
        "expires_at": {
            **DT_N,
            "description": "created_at + TOKEN_TTL_DAYS (null: no expiry); a console "
            "session also ends after SESSION_IDLE_MINUTES unused",
        },
    },
    ["id", "user_id", "name", "created_at", "last_used_at", "revoked_at", "created_by_user_id", "expires_at"],
)
_AUDIT = obj(
    {
        "id": INT,
        "actor": {**STR, "description": "user:<id> or system"},
        "action": {**STR, "description": "e.g. invoice.status_changed"},
        "entity_type": STR,
        "entity_id": STR_N,
        "details": {"type": "object"},
        "created_at": DT,
    },
    ["id", "actor", "action", "entity_type", "entity_id", "details", "created_at"],
)
_BUSINESS = obj(
    {
        "id": INT,
        "name": STR,
        "ai_instructions": STR,
        "opening_line": STR,
        "greeting_enabled": {"type": "boolean", "description": "callers first hear opening_line"},
        "timezone": {**STR, "description": "IANA, e.g. Asia/Jerusalem"},
        "features": obj({name: {"type": "boolean"} for name in business.FEATURES}, business.FEATURES),
        **{
            field: {**_array(STR), "description": f"E.164; the {kind} numbers the business answers on"}
            for field, kind in business.NUMBER_FIELDS.items()
        },
        "transfer_number": {**STR_N, "description": "E.164; where the AI transfers a call to a person (null: never)"},
        "transfer_announcement": {**STR, "description": "what the person who answers a transferred call hears first"},
    },
    [
        "id",
        "name",
        "ai_instructions",
        "opening_line",
        "greeting_enabled",
        "timezone",
        "features",
        *business.NUMBER_FIELDS,
        *business.TRANSFER_FIELDS,
    ],
)
_REPLY = obj(
    {
        "success": {"const": True},
        "provider": STR,
        "message_id": INT,
        "provider_message_id": STR_N,
        "thread_id": {**INT, "description": "where the reply is stored: the customer's WhatsApp thread"},
        "stored_message": ref("Message"),
    },
    ["success", "provider", "message_id", "provider_message_id", "thread_id", "stored_message"],
)

OPENAPI_SCHEMAS: dict[str, Any] = {
    "CustomerSummary": _CUSTOMER_SUMMARY,
    "Customer": _CUSTOMER,
    "CustomerDetail": _CUSTOMER_DETAIL,
    "Call": _CALL,
    "CallTurn": _TURN,
    "CallDetail": _CALL_DETAIL,
    "Message": _MESSAGE,
    "Media": _MEDIA,
    "MessagePreview": _MESSAGE_PREVIEW,
    "Thread": _THREAD,
    "ThreadDetail": _THREAD_DETAIL,
    "PaymentSummary": _PAYMENT,
    "User": _USER,
    "StaffMember": _STAFF,
    "Token": _TOKEN,
    "TokenCreated": _all(ref("Token"), obj({"token": {**STR, "description": "shown once"}}, ["token"])),
    "AuditEntry": _AUDIT,
    "ReplyResult": _REPLY,
    "Business": _BUSINESS,
    **{
        _SCHEMA_NAMES[kind]: obj(
            {**_DOCUMENT_FIELDS, "status": {"enum": list(spec.statuses)}, **_KIND_FIELDS[kind]},
            [*_DOCUMENT_FIELDS, *_KIND_FIELDS[kind]],
        )
        for kind, spec in KINDS.items()
    },
}

# ---- parameters ---------------------------------------------------------------------------------

_PAGING = [
    query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}, "page size"),
    query_param("cursor", STR, "`next_cursor` of the previous page"),
]
_Q = query_param("q", {**STR, "maxLength": 200}, "search text: every word must match")
_CALL_FILTERS = [
    query_param("status", {**STR, "maxLength": 24}, "the call's status, e.g. completed"),
    query_param(
        "from",
        {**STR, "pattern": INSTANT_PATTERN},
        "calls created at or after this date or date-time (UTC unless an offset is given)",
    ),
    query_param(
        "to",
        {**STR, "pattern": INSTANT_PATTERN},
        "calls created before this date-time; a date alone includes that whole day",
    ),
    query_param("phone", {**STR, "maxLength": 40}, "the caller's number in any format (05…, +9725…, 9725…)"),
    query_param("q", {**STR, "maxLength": 200}, "words in the transcript"),
]
_THREAD_FILTERS = [
    query_param("channel", {"enum": list(CHANNELS)}),
    query_param("status", {"enum": list(THREAD_STATUSES)}),
    query_param("unread", {"enum": ["true", "false"]}, "true: only threads with unread messages"),
    query_param("assignee", {**STR, "pattern": "^(me|none|[0-9]+)$"}, "me, none, or a user id"),
    query_param("q", {**STR, "maxLength": 200}, "the customer's name or phone, or words in a message"),
]
_MESSAGE_PAGING = [*_PAGING, query_param("before", ID_IN, "start below this message id (instead of cursor)")]
_AUDIT_FILTERS = [
    query_param(name, {**STR, "maxLength": length})
    for name, length in (("entity_type", 32), ("entity_id", 64), ("action", 64), ("actor", 64))
]


def _id(name: str) -> list[dict[str, Any]]:
    return [path_param(name, ID_IN)]


# ---- request bodies -----------------------------------------------------------------------------

_CUSTOMER_FIELDS = {
    "phone": {**_text(40, null=False, min_length=1), "description": "any format; stored E.164"},
    "name": _text(NAME_MAX),
    "email": _text(254),
    "notes": _text(CUSTOMER_NOTES_MAX),
}
_AMOUNT_INPUT = {
    "amount": {
        "type": ["string", "integer", "null"],
        "description": 'major units: a decimal string, converted exactly ("49.90" → 4990; at most two '
        'decimals), or a whole number; not a JSON fraction (send "49.9", not 49.9)',
    },
    "amount_minor": {
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": money.MAX_AMOUNT_MINOR,
        "description": "integer minor units (agorot); send amount or amount_minor",
    },
}
_DOCUMENT_INPUT = {
    "customer_id": {**ID_IN, "type": ["integer", "null"]},
    "title": _text(TITLE_MAX),
    **_AMOUNT_INPUT,
    "currency": {"type": ["string", "null"], "enum": [*money.CURRENCIES, None], "description": "default ILS"},
    "notes": _text(NOTES_MAX),
}
_KIND_INPUT = {
    "deals": {},
    "invoices": {
        "deal_id": {**ID_IN, "type": ["integer", "null"]},
        "number": _text(NUMBER_MAX),
        "due_date": {
            "type": ["string", "null"],
            "maxLength": 10,
            "pattern": DATE_PATTERN.replace("^", "^(").replace("$", ")?$"),
        },
    },
    "contracts": {"deal_id": {**ID_IN, "type": ["integer", "null"]}, "body": _text(BODY_MAX)},
}
_THREAD_UPDATE = obj(
    {
        "status": {"enum": list(THREAD_STATUSES)},
        "assignee": {**ID_IN, "type": ["integer", "null"], "description": "a user id, or null"},
        "labels": {"type": "array", "maxItems": 20, "items": {"type": "string", "minLength": 1, "maxLength": 32}},
        "ai_paused": {
            "type": "boolean",
            "description": "true: staff take the conversation over and the AI stops "
            "answering in it; false: hand it back to the AI",
        },
    },
    closed=True,
)
_REPLY_INPUT = obj(
    {
        "text": _text(REPLY_TEXT_MAX),
        "provider": {"enum": list(PROVIDERS)},
        "content_sid": {**_text(64), "description": "a WhatsApp template (outside the 24-hour window)"},
        "content_variables": {"type": ["object", "string", "null"]},
        "idempotency_key": _text(128, min_length=1),
        "media_id": {**INT_N, "description": "send this stored media item of the business (text is its caption)"},
    },
    closed=True,
)
# A message with a file uploaded with it: the same fields as a form, the file in `file`.
UPLOAD_INPUT = obj(
    {
        "file": {"type": "string", "format": "binary", "description": "up to MEDIA_MAX_BYTES; the type is sniffed"},
        "text": {**STR, "maxLength": REPLY_TEXT_MAX, "description": "the caption"},
        "provider": {"enum": list(PROVIDERS)},
        "idempotency_key": {**STR, "minLength": 1, "maxLength": 128},
    },
    ["file"],
)
_BUSINESS_INPUT = obj(
    {
        "name": _text(business.NAME_MAX, null=False, min_length=1),
        "ai_instructions": _text(business.INSTRUCTIONS_MAX, null=False),
        "opening_line": _text(business.OPENING_LINE_MAX, null=False),
        "greeting_enabled": {"type": "boolean"},
        "timezone": {
            **_text(business.TIMEZONE_MAX, null=False, min_length=1),
            "description": "IANA, e.g. Asia/Jerusalem",
        },
        "features": obj({name: {"type": "boolean"} for name in business.FEATURES}, closed=True),
        **{
            field: {
                "type": "array",
                "maxItems": business.NUMBERS_MAX,
                "items": {"type": "string", "minLength": 1, "maxLength": business.PHONE_MAX},
                "description": f"admins only (an owner gets 403): the {kind} numbers in any format (stored "
                "E.164); replaces the current set",
            }
            for field, kind in business.NUMBER_FIELDS.items()
        },
        "transfer_number": {
            **_text(business.PHONE_MAX),
            "description": "where the AI transfers a call to a person, in any format (stored E.164); null or "
            "empty: the AI never transfers",
        },
        "transfer_announcement": _text(business.TRANSFER_ANNOUNCEMENT_MAX),
    },
    closed=True,
)
_USER_INPUT = obj(
    {
        "email": {**STR, "maxLength": 254},
        "password": {**STR, "minLength": 8, "maxLength": 200},
        "role": {"enum": list(ROLES)},
    },
    ["email", "password", "role"],
    closed=True,
)
_TOKEN_INPUT = obj(
    {"name": _text(100), "user_id": {**ID_IN, "type": ["integer", "null"], "description": "default: the caller"}},
    closed=True,
)

# ---- operations ---------------------------------------------------------------------------------

_CRM = "/api/crm"


def _document_paths(kind: str) -> dict[str, Any]:
    spec, name = KINDS[kind], _SCHEMA_NAMES[kind]
    fields = {**_DOCUMENT_INPUT, **_KIND_INPUT[kind]}
    moves = "; ".join(f"{state} → {' | '.join(targets) or '(final)'}" for state, targets in spec.transitions.items())
    filters = [query_param("status", {"enum": list(spec.statuses)}), query_param("customer_id", ID_IN), *_PAGING]
    tags = [kind]
    return {
        f"{_CRM}/{kind}": {
            "get": operation(
                f"List {kind}, newest first",
                tags=tags,
                parameters=filters,
                responses={"200": json_response(_page(name)), **error_responses(400)},
            ),
            "post": operation(
                f"Create a {spec.name} (status {spec.initial})",
                tags=tags,
                role="owner",
                body=obj(fields, closed=True),
                responses={"201": json_response(ref(name), "Created"), **error_responses(400)},
            ),
        },
        f"{_CRM}/{kind}/{{document_id}}": {
            "get": operation(
                f"One {spec.name}",
                tags=tags,
                parameters=_id("document_id"),
                responses={"200": json_response(ref(name))},
            ),
            "patch": operation(
                f"Edit a {spec.name}",
                tags=tags,
                role="owner",
                parameters=_id("document_id"),
                description=f"Content changes only in status {spec.initial}; notes always (else 409).",
                body=obj(fields, closed=True),
                responses={"200": json_response(ref(name)), **error_responses(400, 409)},
            ),
        },
        f"{_CRM}/{kind}/{{document_id}}/status": {
            "post": operation(
                f"Move a {spec.name} to another status",
                tags=tags,
                role="owner",
                parameters=_id("document_id"),
                description=f"Allowed: {moves}. Other moves: 409.",
                body=obj({"status": {"enum": list(spec.statuses)}}, ["status"], closed=True),
                responses={"200": json_response(ref(name)), **error_responses(400, 409)},
            ),
        },
    }


OPENAPI_PATHS: dict[str, Any] = {
    f"{_CRM}/calls": {
        "get": operation(
            "List calls, newest first",
            tags=["calls"],
            parameters=[*_CALL_FILTERS, *_PAGING],
            responses={"200": json_response(_page("Call")), **error_responses(400)},
        )
    },
    f"{_CRM}/calls/{{call_sid}}": {
        "get": operation(
            "A call with its transcript, turns (with latency metrics), recording and voicemail",
            tags=["calls"],
            parameters=[path_param("call_sid", {**STR, "minLength": 1, "maxLength": 64})],
            responses={"200": json_response(ref("CallDetail"))},
        )
    },
    f"{_CRM}/threads": {
        "get": operation(
            "List threads by latest activity",
            tags=["threads"],
            parameters=[*_THREAD_FILTERS, *_PAGING],
            responses={"200": json_response(_page("Thread")), **error_responses(400)},
        )
    },
    f"{_CRM}/threads/{{thread_id}}": {
        "get": operation(
            "A thread with its customer and its newest messages",
            tags=["threads"],
            description="Reading does not mark the thread read: POST …/read does.",
            parameters=[*_id("thread_id"), *_MESSAGE_PAGING],
            responses={"200": json_response(ref("ThreadDetail")), **error_responses(400)},
        ),
        "patch": operation(
            "Change a thread's status, assignee, labels or AI pause",
            tags=["threads"],
            description="Only the fields sent change; a change is audited (thread.updated) and "
            "told to consoles as a thread event. With ai_paused true no AI reply "
            "is sent in the thread, also for a message that arrived before.",
            parameters=_id("thread_id"),
            body=_THREAD_UPDATE,
            responses={"200": json_response(ref("Thread")), **error_responses(400)},
        ),
    },
    f"{_CRM}/threads/{{thread_id}}/messages": {
        "get": operation(
            "A thread's messages, newest first",
            tags=["threads"],
            parameters=[*_id("thread_id"), *_MESSAGE_PAGING],
            responses={"200": json_response(_page("Message")), **error_responses(400)},
        ),
        "post": operation(
            "Reply to the customer on WhatsApp",
            tags=["threads"],
            body=_REPLY_INPUT,
            description="Sent through the WhatsApp send service, answering as POST /api/whatsapp/send does "
            "(provider routing, 24-hour rule, Idempotency-Key). On a voice thread the reply goes to "
            "the caller on WhatsApp and is stored in their WhatsApp thread. A failed send answers "
            "the error with the stored (failed) message's id.",
            parameters=[
                *_id("thread_id"),
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {**STR, "minLength": 1, "maxLength": 128},
                },
            ],
            responses={
                "200": json_response(ref("ReplyResult"), "Sent"),
                **error_responses(400, 409, 422, 429, 501, 502, 503),
            },
        ),
    },
    f"{_CRM}/threads/{{thread_id}}/read": {
        "post": operation(
            "Mark a thread read (unread_count = 0)",
            tags=["threads"],
            parameters=_id("thread_id"),
            responses={"200": json_response(ref("Thread"))},
        )
    },
    f"{_CRM}/customers": {
        "get": operation(
            "List customers, newest first",
            tags=["customers"],
            parameters=[
                query_param("q", {**STR, "maxLength": 200}, "name, email, or phone digits in any format"),
                *_PAGING,
            ],
            responses={"200": json_response(_page("Customer")), **error_responses(400)},
        ),
        "post": operation(
            "Create a customer (phone unique per business)",
            tags=["customers"],
            body=obj(_CUSTOMER_FIELDS, ["phone"], closed=True),
            responses={"201": json_response(ref("Customer"), "Created"), **error_responses(400, 409)},
        ),
    },
    f"{_CRM}/customers/{{customer_id}}": {
        "get": operation(
            "A customer with threads, calls, deals, invoices, contracts and payments",
            tags=["customers"],
            parameters=_id("customer_id"),
            responses={"200": json_response(ref("CustomerDetail"))},
        ),
        "patch": operation(
            "Edit a customer",
            tags=["customers"],
            parameters=_id("customer_id"),
            body=obj(_CUSTOMER_FIELDS, closed=True),
            responses={"200": json_response(ref("Customer")), **error_responses(400, 409)},
        ),
    },
    **{path: item for kind in KINDS for path, item in _document_paths(kind).items()},
    f"{_CRM}/users": {
        "get": operation(
            "The business's users",
            tags=["users"],
            role="owner",
            responses={"200": json_response(obj({"items": _array(ref("User"))}, ["items"]))},
        ),
        "post": operation(
            "Create a user (owners create agents; admins any role)",
            tags=["users"],
            role="owner",
            body=_USER_INPUT,
            responses={"201": json_response(ref("User"), "Created"), **error_responses(400, 409)},
        ),
    },
    f"{_CRM}/staff": {
        "get": operation(
            "The business's staff directory, for every role",
            tags=["users"],
            description="Who each user id is (assignees, the senders of staff replies): id, name, "
            "email, role and whether disabled. Only the caller's business; managing "
            "users is GET/POST /api/crm/users, for owners.",
            responses={"200": json_response(obj({"items": _array(ref("StaffMember"))}, ["items"]))},
        ),
    },
    f"{_CRM}/tokens": {
        "get": operation(
            "The business's API tokens (never the secret)",
            tags=["users"],
            role="owner",
            responses={"200": json_response(obj({"items": _array(ref("Token"))}, ["items"]))},
        ),
        "post": operation(
            "Create an API token; the secret is shown once",
            tags=["users"],
            role="owner",
            description="For the caller, or for a user the caller manages (owners: agents; "
            "admins: anyone), else 403. The token records who made it, and "
            "token.created is audited under the maker's name.",
            body=_TOKEN_INPUT,
            body_required=False,
            responses={"201": json_response(ref("TokenCreated"), "Created"), **error_responses(400)},
        ),
    },
    f"{_CRM}/tokens/{{token_id}}": {
        "delete": operation(
            "Revoke a token",
            tags=["users"],
            role="owner",
            parameters=_id("token_id"),
            description="One's own, or one of a user the caller manages (owners: agents' tokens), else 403.",
            responses={"204": {"description": "Revoked"}},
        )
    },
    f"{_CRM}/business": {
        "get": operation(
            "The caller's business and its settings",
            tags=["business"],
            responses={"200": json_response(ref("Business"))},
        ),
        "patch": operation(
            "Change the business's settings",
            tags=["business"],
            role="owner",
            body=_BUSINESS_INPUT,
            description="Only the fields sent change. voice_numbers and whatsapp_numbers are for "
            "admins (owners: 403 forbidden, and nothing is changed; numbers are "
            "assigned with PUT /api/admin/businesses/{business_id}/numbers); for an "
            "admin a number another business answers on is 409. Payment settings: "
            "/api/crm/payments/settings.",
            responses={"200": json_response(ref("Business")), **error_responses(400, 409)},
        ),
    },
    f"{_CRM}/audit": {
        "get": operation(
            "The audit log, newest first",
            tags=["audit"],
            role="owner",
            parameters=[*_AUDIT_FILTERS, *_PAGING],
            responses={"200": json_response(_page("AuditEntry")), **error_responses(400)},
        )
    },
    "/api/openapi.json": {
        "get": operation("This document", tags=["meta"], responses={"200": json_response({"type": "object"})})
    },
}

# The reply may carry a file uploaded as multipart/form-data instead of a JSON body.
_REPLY_OPERATION = OPENAPI_PATHS[f"{_CRM}/threads/{{thread_id}}/messages"]["post"]
_REPLY_OPERATION["requestBody"]["content"]["multipart/form-data"] = {"schema": UPLOAD_INPUT}
_REPLY_OPERATION["responses"].update(error_responses(413, 415))

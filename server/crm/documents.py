"""Deals, invoices and contracts: one set of rules, a state machine per kind.

    deal:     open → won | lost;  won | lost → open (reopen)
    invoice:  draft → issued | void;  issued → paid | void          (paid, void: final)
    contract: draft → sent | cancelled;  sent → signed | cancelled  (signed, cancelled: final)

A document's content (customer, title, amount, currency and the kind's own fields) can change
only in its first state (deal `open`, invoice and contract `draft`): an issued invoice or a sent
contract is what the customer saw. `notes` are internal and can change at any time. Asking for
the current status again changes nothing and answers 200; any other move not listed is a 409.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import money
from server.crm import serializers as out
from server.crm import validation as v
from server.crm.pagination import Keyset, fetch_page, page_request
from server.crm.queries import documents_query
from server.db.dao_crm import audit
from server.db.models import Contract, Customer, Deal, Invoice, utcnow
from server.errors import DomainError, Problem
from server.payments.states import close_invoice_links
from server.security.auth import get_owned

TITLE_MAX, NOTES_MAX, BODY_MAX, NUMBER_MAX = 200, 20_000, 200_000, 40
# A field parser gets the session and the business (references must be the business's own rows).
Parser = Callable[[Session, int, Any], Any]


@dataclass(frozen=True)
class DocumentKind:
    name: str  # "deal": the entity type in audit rows and messages
    model: type[Deal] | type[Contract] | type[Invoice]
    initial: str
    transitions: Mapping[str, tuple[str, ...]]
    extra_fields: Mapping[str, Parser] = field(default_factory=dict)

    @property
    def statuses(self) -> tuple[str, ...]:
        return tuple(self.transitions)

    @property
    def keyset(self) -> Keyset:
        return Keyset((self.model.created_at, self.model.id))


def _deal_id(session: Session, business_id: int, value: Any) -> int | None:
    return None if value is None else _owned_reference(session, business_id, Deal, value, "deal_id")


def _customer_id(session: Session, business_id: int, value: Any) -> int | None:
    return None if value is None else _owned_reference(session, business_id, Customer, value, "customer_id")


def _owned_reference(
    session: Session, business_id: int, model: type[Deal] | type[Customer], value: Any, name: str
) -> int:
    object_id = v.object_id(value, name)
    if session.scalar(sa.select(model.id).where(model.id == object_id, model.business_id == business_id)) is None:
        raise v.invalid(name, f"{name} {object_id} does not exist in this business")
    return object_id


def _text(name: str, max_length: int, *, null_as: str | None = "") -> Parser:
    """A text field's parser; an empty or null value is stored as `null_as`."""

    def parse(_session: Session, _business_id: int, value: Any) -> str | None:
        return v.optional_text(value, name, max_length=max_length) or null_as

    return parse


KINDS = {
    "deals": DocumentKind("deal", Deal, "open", {"open": ("won", "lost"), "won": ("open",), "lost": ("open",)}),
    "invoices": DocumentKind(
        "invoice",
        Invoice,
        "draft",
        {"draft": ("issued", "void"), "issued": ("paid", "void"), "paid": (), "void": ()},
        {
            "deal_id": _deal_id,
            "number": _text("number", NUMBER_MAX, null_as=None),
            "due_date": lambda _s, _b, x: v.iso_date(x, "due_date"),
        },
    ),
    "contracts": DocumentKind(
        "contract",
        Contract,
        "draft",
        {"draft": ("sent", "cancelled"), "sent": ("signed", "cancelled"), "signed": (), "cancelled": ()},
        {"deal_id": _deal_id, "body": _text("body", BODY_MAX)},
    ),
}

_COMMON_PARSERS: dict[str, Parser] = {
    "customer_id": _customer_id,
    "notes": _text("notes", NOTES_MAX),
    "title": _text("title", TITLE_MAX),
    "currency": lambda _s, _b, x: money.currency(x) if x is not None else money.DEFAULT_CURRENCY,
}
_NOTES = "notes"  # the one field that stays editable after the first state
_AMOUNT_FIELDS = ("amount", "amount_minor")


def _parse_fields(session: Session, kind: DocumentKind, business_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
    parsers = {**_COMMON_PARSERS, **kind.extra_fields}
    v.reject_unknown(body, [*parsers, *_AMOUNT_FIELDS, "status"])
    if "status" in body:
        raise v.invalid("status", f"change the status with POST /api/crm/{kind.name}s/<id>/status")
    values = {name: parse(session, business_id, body[name]) for name, parse in parsers.items() if name in body}
    amount = _amount(body)
    if amount is not None:
        values["amount_minor"] = amount
    elif any(name in body for name in _AMOUNT_FIELDS):  # an explicit null
        values["amount_minor"] = 0
    return values


def _amount(body: Mapping[str, Any]) -> int | None:
    """The amount a body sets, from `amount` or `amount_minor` (not both); None when it sets neither.
    A document may be empty (see `server.money`), so 0 is allowed."""
    amount, amount_minor = body.get("amount"), body.get("amount_minor")
    if amount is not None and amount_minor is not None:
        raise v.invalid("amount", "send amount or amount_minor, not both")
    if amount is not None:
        return money.parse_amount(amount, "amount", allow_zero=True)
    if amount_minor is not None:
        return money.parse_minor(amount_minor, "amount_minor", allow_zero=True)
    return None


def list_documents(session: Session, kind: DocumentKind, business_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    stmt = documents_query(kind.model, business_id, args, kind.statuses)
    return fetch_page(
        session, stmt, kind.keyset, page_request(args, kind.keyset), lambda rows: [out.document_json(d) for d in rows]
    )


def get_document(session: Session, kind: DocumentKind, business_id: int, document_id: int) -> dict[str, Any]:
    return out.document_json(get_owned(session, kind.model, business_id, document_id))


def locked(session: Session, kind: DocumentKind, business_id: int, document_id: int) -> Any:
    """The document, row-locked until commit (and read once locked), so that of two concurrent
    changes the second sees the first's result: two status moves can't both win."""
    return get_owned(session, kind.model, business_id, document_id, for_update=True)


def create_document(
    session: Session, kind: DocumentKind, business_id: int, actor: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    values = _parse_fields(session, kind, business_id, body)
    values.setdefault("currency", money.DEFAULT_CURRENCY)
    document = kind.model(business_id=business_id, status=kind.initial, **values)
    session.add(document)
    session.flush()
    audit(
        session,
        business_id,
        actor,
        f"{kind.name}.created",
        kind.name,
        document.id,
        status=document.status,
        amount_minor=document.amount_minor,
        currency=document.currency,
    )
    return out.document_json(document)


def update_document(
    session: Session, kind: DocumentKind, document: Any, actor: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Edit a document fetched with `locked`."""
    values = _parse_fields(session, kind, document.business_id, body)
    changed = {name: value for name, value in values.items() if getattr(document, name) != value}
    locked = sorted(set(changed) - {_NOTES})
    if locked and document.status != kind.initial:
        raise DomainError(
            Problem.CONFLICT,
            "document_locked",
            f"this {kind.name} is {document.status!r}: only its notes can change, not {', '.join(locked)}",
            field=locked[0],
        )
    if changed:
        for name, value in changed.items():
            setattr(document, name, value)
        document.updated_at = utcnow()
        session.flush()
        audit(
            session, document.business_id, actor, f"{kind.name}.updated", kind.name, document.id, fields=sorted(changed)
        )
    return out.document_json(document)


def change_status(
    session: Session, kind: DocumentKind, document: Any, actor: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Move a document fetched with `locked` to another status."""
    v.reject_unknown(body, ["status"])
    target = v.choice(v.require(body, "status"), "status", kind.statuses)
    current = document.status
    if target == current:
        return out.document_json(document)
    allowed = kind.transitions.get(current, ())
    if target not in allowed:
        moves = " or ".join(allowed) if allowed else "nothing (final)"
        raise DomainError(
            Problem.CONFLICT,
            "illegal_transition",
            f"this {kind.name} is {current!r}: it can go to {moves}, not {target!r}",
            field="status",
            allowed=list(allowed),
        )
    document.status = target
    document.updated_at = utcnow()
    session.flush()
    audit(
        session,
        document.business_id,
        actor,
        f"{kind.name}.status_changed",
        kind.name,
        document.id,
        **{"from": current, "to": target},
    )
    if kind.model is Invoice and target in ("void", "paid"):  # its links must take no more money
        close_invoice_links(session, document.id, actor, f"invoice_{target}")
    return out.document_json(document)

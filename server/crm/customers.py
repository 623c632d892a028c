"""Customers: the list, create and edit by hand (one per phone number per business), and the
customer page."""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.crm import serializers as out
from server.crm import validation as v
from server.crm.pagination import fetch_page, page_request
from server.crm.queries import CUSTOMERS_KEYSET, customers_query
from server.db.dao_crm import audit
from server.db.models import Call, Contract, Customer, Deal, Invoice, Payment, Thread, utcnow
from server.errors import DomainError, Problem
from server.security.auth import get_owned

NAME_MAX, NOTES_MAX = 200, 20_000
RELATED_LIMIT = 50  # per kind on the customer page; the list endpoints page through the rest
_FIELDS = ("phone", "name", "email", "notes")


def _parse(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    v.reject_unknown(body, _FIELDS)
    values: dict[str, Any] = {}
    if creating or "phone" in body:
        values["phone"] = v.phone(v.require(body, "phone"))
    if "name" in body:
        values["name"] = v.optional_text(body["name"], "name", max_length=NAME_MAX)
    if "email" in body:
        values["email"] = v.email(body["email"])
    if "notes" in body:
        values["notes"] = v.optional_text(body["notes"], "notes", max_length=NOTES_MAX)
    return values


def _phone_taken(session: Session, business_id: int, phone: str, customer_id: int | None = None) -> DomainError | None:
    holder = session.scalar(
        sa.select(Customer.id).where(
            Customer.business_id == business_id, Customer.phone == phone, Customer.id != (customer_id or 0)
        )
    )
    if holder is None:
        return None
    return DomainError(
        Problem.CONFLICT,
        "duplicate_phone",
        f"customer {holder} already has the phone number {phone}",
        field="phone",
        customer_id=holder,
    )


def _flush_unique(session: Session, business_id: int, phone: str | None, customer_id: int | None = None) -> None:
    """Flush in a SAVEPOINT: a concurrent request that took the same phone number makes this a 409."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        conflict = _phone_taken(session, business_id, phone, customer_id) if phone else None
        if conflict is None:
            conflict = DomainError(Problem.CONFLICT, "conflict", "the customer changed meanwhile; try again")
        raise conflict from None


def list_customers(session: Session, business_id: int, args: Mapping[str, str]) -> dict[str, Any]:
    return fetch_page(
        session,
        customers_query(business_id, args),
        CUSTOMERS_KEYSET,
        page_request(args, CUSTOMERS_KEYSET),
        lambda rows: [out.customer_json(c) for c in rows],
    )


def create_customer(session: Session, business_id: int, actor: str, body: Mapping[str, Any]) -> dict[str, Any]:
    values = _parse(body, creating=True)
    conflict = _phone_taken(session, business_id, values["phone"])
    if conflict:
        raise conflict
    customer = Customer(business_id=business_id, **values)
    session.add(customer)
    _flush_unique(session, business_id, values["phone"])
    audit(session, business_id, actor, "customer.created", "customer", customer.id)
    return out.customer_json(customer)


def update_customer(session: Session, customer: Customer, actor: str, body: Mapping[str, Any]) -> dict[str, Any]:
    values = _parse(body, creating=False)
    changed = {name: value for name, value in values.items() if getattr(customer, name) != value}
    if "phone" in changed:
        conflict = _phone_taken(session, customer.business_id, changed["phone"], customer.id)
        if conflict:
            raise conflict
    if changed:
        for name, value in changed.items():
            setattr(customer, name, value)
        customer.updated_at = utcnow()
        _flush_unique(session, customer.business_id, changed.get("phone"), customer.id)
        audit(session, customer.business_id, actor, "customer.updated", "customer", customer.id, fields=sorted(changed))
    return out.customer_json(customer)


def customer_page(session: Session, business_id: int, customer_id: int) -> dict[str, Any]:
    """The customer with their threads, latest calls, deals, invoices, contracts and payments."""
    customer = get_owned(session, Customer, business_id, customer_id)

    def latest(model) -> list:
        return list(
            session.scalars(
                sa.select(model)
                .where(model.business_id == customer.business_id, model.customer_id == customer.id)
                .order_by(model.created_at.desc(), model.id.desc())
                .limit(RELATED_LIMIT)
            )
        )

    threads = session.scalars(
        sa.select(Thread)
        .where(Thread.business_id == customer.business_id, Thread.customer_id == customer.id)
        .order_by(Thread.last_activity_at.desc(), Thread.id.desc())
    ).all()
    return {
        **out.customer_json(customer),
        "threads": [out.thread_json(t, customer) for t in threads],
        "calls": [out.call_json(c) for c in latest(Call)],
        "deals": [out.document_json(d) for d in latest(Deal)],
        "invoices": [out.document_json(i) for i in latest(Invoice)],
        "contracts": [out.document_json(c) for c in latest(Contract)],
        "payments": [out.payment_summary(p) for p in latest(Payment)],
    }

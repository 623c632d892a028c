"""The business's own settings, set by its owner: name, what the AI is told, the call greeting, the
time zone, feature flags, and the phone numbers it answers on (voice and WhatsApp).

Payment settings have their own endpoint (`/api/crm/payments/settings`) and are left out here.

The numbers decide whose calls and messages a business receives, so assigning them is the
service's own work (admins: `PUT /api/admin/businesses/<id>/numbers`, the `assign-number` CLI);
an owner sees them read-only, and a PATCH that sends them is refused before they are even read,
so it tells nothing about other businesses' numbers. A number belongs to at most one business per
kind, so for an admin a number another business answers on is a 409 naming that business.
"""

from __future__ import annotations

from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.crm import validation as v
from server.db.dao_crm import audit
from server.db.models import Business, BusinessNumber
from server.errors import DomainError, Problem
from server.providers.whatsapp_twilio import MESSAGING_SERVICE_SID
from server.voice import preemptive
from server.whatsapp import auto_reply

NAME_MAX, INSTRUCTIONS_MAX, OPENING_LINE_MAX, TIMEZONE_MAX = 200, 8000, 500, 64
TRANSFER_ANNOUNCEMENT_MAX = 300  # read out to the person who answers a transferred call: keep it short
NUMBERS_MAX = 20  # per kind
PHONE_MAX = 40  # as typed, before normalising: the limit of validation.phone
# The flags a business may switch itself. Other keys in `Business.features` are kept as they are.
FEATURES = (auto_reply.FEATURE, preemptive.FEATURE)
# A flag the business never set is off, except these (on unless switched off).
FEATURE_DEFAULTS = {preemptive.FEATURE: preemptive.FEATURE_DEFAULT}
NUMBER_FIELDS = {"voice_numbers": "voice", "whatsapp_numbers": "whatsapp"}
_TEXT_LIMITS = {"name": NAME_MAX, "ai_instructions": INSTRUCTIONS_MAX, "opening_line": OPENING_LINE_MAX}
_FIELDS = (*_TEXT_LIMITS, "greeting_enabled", "timezone", "features", *NUMBER_FIELDS)
TRANSFER_FIELDS = ("transfer_number", "transfer_announcement")


def business_json(business: Business) -> dict[str, Any]:
    return {
        "id": business.id,
        "name": business.name,
        "ai_instructions": business.ai_instructions,
        "opening_line": business.opening_line,
        "greeting_enabled": business.greeting_enabled,
        "timezone": business.timezone,
        "features": {name: feature_on(business, name) for name in FEATURES},
        **{field: sorted(business.numbers_of(kind)) for field, kind in NUMBER_FIELDS.items()},
        "transfer_number": business.transfer_number,
        "transfer_announcement": business.transfer_announcement or "",
    }


def feature_on(business: Business, name: str) -> bool:
    return business.feature(name, FEATURE_DEFAULTS.get(name, False))


def get_business(session: Session, business_id: int) -> dict[str, Any]:
    return business_json(load_business(session, business_id))


def load_business(session: Session, business_id: int, *, for_update: bool = False) -> Business:
    """The caller's business; `for_update` locks its row until commit, so that two concurrent
    changes of `features` can't each drop the other's flag."""
    stmt = sa.select(Business).where(Business.id == business_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalars(stmt).one()


def update_business(
    session: Session, business_id: int, actor: str, body: Mapping[str, Any], *, numbers_allowed: bool = False
) -> dict[str, Any]:
    """Change the fields sent; the phone numbers only when `numbers_allowed` (an admin)."""
    if not numbers_allowed:
        sent = [field for field in NUMBER_FIELDS if field in body]
        if sent:
            raise DomainError(
                Problem.FORBIDDEN,
                "forbidden",
                "phone numbers are assigned by the service's administrators; ask them to change yours",
                field=sent[0],
            )
    business = load_business(session, business_id, for_update=True)
    values = _parse(body)
    flags = {name: flag for name, flag in values.pop("features", {}).items() if feature_on(business, name) != flag}
    if flags:
        values["features"] = {**(business.features or {}), **flags}
    numbers = {field: values.pop(field) for field in NUMBER_FIELDS if field in values}
    changed = [name for name, value in values.items() if getattr(business, name) != value]
    for name in changed:
        setattr(business, name, values[name])
    for field, wanted in numbers.items():
        if _replace_numbers(session, business, field, wanted):
            changed.append(field)
    if changed:
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # a concurrent request took one of the numbers since we looked
            conflict = _numbers_taken(session, business.id, numbers)
            if conflict is None:
                conflict = DomainError(Problem.CONFLICT, "conflict", "the business changed meanwhile; try again")
            raise conflict from None
        audit(session, business.id, actor, "business.updated", "business", business.id, fields=sorted(changed))
    return business_json(business)


def assign_numbers(
    session: Session, business_id: int, actor: str, body: Mapping[str, Any], *, keep_current: bool = False
) -> dict[str, Any]:
    """An admin's assignment: each of `voice_numbers` / `whatsapp_numbers` sent becomes the
    business's numbers of that kind (`keep_current`: is added to them); a kind not sent is kept."""
    business = None
    if 1 <= business_id <= v.MAX_ID:
        business = session.scalar(
            sa.select(Business)
            .where(Business.id == business_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    if business is None:  # before the body is read, as for every object named in a path
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such business")
    v.reject_unknown(body, NUMBER_FIELDS)
    if not any(field in body for field in NUMBER_FIELDS):
        raise v.invalid("voice_numbers", "send voice_numbers, whatsapp_numbers or both")
    wanted = {field: _phone_numbers(body[field], field) for field in NUMBER_FIELDS if field in body}
    if keep_current:
        wanted = {
            field: list(dict.fromkeys([*business.numbers_of(NUMBER_FIELDS[field]), *numbers]))
            for field, numbers in wanted.items()
        }
        for field, numbers in wanted.items():
            if len(numbers) > NUMBERS_MAX:
                raise v.invalid(field, f"a business has at most {NUMBERS_MAX} {NUMBER_FIELDS[field]} numbers")
    changed = [
        field
        for field, numbers in wanted.items()
        if _replace_numbers(session, business, field, numbers, name_holder=True)
    ]
    if changed:
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # a concurrent assignment took one of the numbers since we looked
            conflict = _numbers_taken(session, business.id, wanted, name_holder=True)
            raise (
                conflict or DomainError(Problem.CONFLICT, "conflict", "the numbers changed meanwhile; try again")
            ) from None
        audit(
            session,
            business.id,
            actor,
            "business.numbers_assigned",
            "business",
            business.id,
            **{field: sorted(business.numbers_of(NUMBER_FIELDS[field])) for field in changed},
        )
    return {"id": business.id, **{field: sorted(business.numbers_of(kind)) for field, kind in NUMBER_FIELDS.items()}}


def _parse(body: Mapping[str, Any]) -> dict[str, Any]:
    v.reject_unknown(body, (*_FIELDS, *TRANSFER_FIELDS))
    values: dict[str, Any] = {}
    for name, limit in _TEXT_LIMITS.items():
        if name in body:
            values[name] = v.clean_text(
                body[name], name, max_length=limit, allow_empty=name != "name"
            )  # instructions may be cleared; the name not
    if "greeting_enabled" in body:
        values["greeting_enabled"] = _boolean(body["greeting_enabled"], "greeting_enabled")
    if "timezone" in body:
        values["timezone"] = _timezone(body["timezone"])
    if "features" in body:
        values["features"] = _features(body["features"])
    if "transfer_number" in body:  # null or "" clears it: the AI then never transfers
        raw = body["transfer_number"]
        values["transfer_number"] = None if raw is None or raw == "" else v.phone(raw, "transfer_number")
    if "transfer_announcement" in body:
        values["transfer_announcement"] = v.optional_text(
            body["transfer_announcement"], "transfer_announcement", max_length=TRANSFER_ANNOUNCEMENT_MAX
        )
    for field in NUMBER_FIELDS:
        if field in body:
            values[field] = _phone_numbers(body[field], field)
    return values


def _boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise v.invalid(field, f"{field} must be true or false")
    return value


def _timezone(value: Any) -> str:
    name = v.clean_text(value, "timezone", max_length=TIMEZONE_MAX, allow_empty=False)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # unknown key; a path or a file that isn't a zone
        raise v.invalid("timezone", "timezone must be an IANA time zone such as Asia/Jerusalem") from None
    return name


def _features(value: Any) -> dict[str, bool]:
    if not isinstance(value, dict):
        raise v.invalid("features", "features must be an object of flags")
    flags = {f"features.{name}": flag for name, flag in value.items()}
    v.reject_unknown(flags, [f"features.{name}" for name in FEATURES])
    return {name: _boolean(flag, f"features.{name}") for name, flag in value.items()}


def _phone_numbers(value: Any, field: str) -> list[str]:
    """Any format in, E.164 out; the same number twice counts once."""
    if not isinstance(value, list) or len(value) > NUMBERS_MAX:
        raise v.invalid(field, f"{field} must be a list of at most {NUMBERS_MAX} phone numbers")
    return list(dict.fromkeys(v.phone(item, field) for item in value))


def _numbers_taken(
    session: Session, business_id: int, numbers: Mapping[str, list[str]], *, name_holder: bool = False
) -> DomainError | None:
    """A 409 for the first number another business holds; `name_holder` (for admins) says which."""
    for field, wanted in numbers.items():
        kind = NUMBER_FIELDS[field]
        taken = session.execute(
            sa.select(BusinessNumber.number, BusinessNumber.business_id)
            .where(
                BusinessNumber.kind == kind,
                BusinessNumber.number.in_(wanted),
                BusinessNumber.business_id != business_id,
            )
            .limit(1)
        ).first()
        if taken is not None:
            holder = {"business_id": taken.business_id} if name_holder else {}
            return DomainError(
                Problem.CONFLICT,
                "number_taken",
                f"{taken.number} is already a {kind} number of another business",
                field=field,
                **holder,
            )
    return None


def _replace_numbers(
    session: Session, business: Business, field: str, wanted: list[str], *, name_holder: bool = False
) -> bool:
    """Make `wanted` the business's numbers of the field's kind; False when they already are."""
    kind = NUMBER_FIELDS[field]
    current = {row.number: row for row in business.numbers if row.kind == kind}
    if set(current) == set(wanted):
        return False
    conflict = _numbers_taken(session, business.id, {field: wanted}, name_holder=name_holder)
    if conflict:
        raise conflict
    for number, row in current.items():
        if number not in wanted:
            business.numbers.remove(row)
            session.delete(row)
    business.numbers.extend(BusinessNumber(number=number, kind=kind) for number in wanted if number not in current)
    return True


def set_twilio_sender(session: Session, business_id: int, actor: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An admin's choice of the business's Twilio WhatsApp sender (`twilio_sender`): a Messaging
    Service SID (MG…), one of its WhatsApp numbers, or null (its first WhatsApp number, else the
    deployment's `TWILIO_WA_FROM`). A number must be the business's own: customers answer to it."""
    business = _business_for_admin(session, business_id)
    v.reject_unknown(body, ("twilio_sender",))
    if "twilio_sender" not in body:
        raise v.invalid("twilio_sender", "twilio_sender is required (null clears it)")
    raw = body["twilio_sender"]
    sender: str | None
    if raw is None or raw == "":
        sender = None
    elif isinstance(raw, str) and MESSAGING_SERVICE_SID.match(raw.strip()):
        sender = raw.strip()
    else:
        sender = v.phone(raw, "twilio_sender")
        if sender not in business.numbers_of("whatsapp"):
            raise DomainError(
                Problem.UNPROCESSABLE,
                "not_a_business_number",
                f"{sender} is not a WhatsApp number of this business; assign it first",
                field="twilio_sender",
            )
    if business.twilio_sender != sender:
        business.twilio_sender = sender
        audit(session, business.id, actor, "business.twilio_sender_set", "business", business.id, twilio_sender=sender)
    return {"id": business.id, "twilio_sender": business.twilio_sender}


def _business_for_admin(session: Session, business_id: int) -> Business:
    business = session.get(Business, business_id) if 1 <= business_id <= v.MAX_ID else None
    if business is None:  # before the body is read, as for every object named in a path
        raise DomainError(Problem.NOT_FOUND, "not_found", "no such business")
    return business

"""The one way to send a WhatsApp message: `send_whatsapp()`. The API route, staff replies from the
CRM and AI auto-replies all call it. It picks the provider, stores the outgoing message and answers
a `SendResult`, or raises `DomainError`: a refusal (nothing stored or sent), or a failed send (the
message is stored as failed; `provider` and `message_id` are in the error's details).

Routing (`provider="auto"`) walks `WA_PROVIDER_PRIORITY` over the enabled providers and skips
- Baileys when the bridge last reported that WhatsApp is not connected, or for a template;
- Twilio for free-form text outside the 24-hour window (only a template, `content_sid`, may go
  out then), and for a customer known only by a WhatsApp LID.
It moves on to the next provider only when the previous one certainly did not send (`NotSent`):
never after a timeout, or the customer could get the message twice.

Each business sends from its own Twilio sender (`business_twilio_sender`): the one set for it
(`businesses.twilio_sender`, a Messaging Service SID or one of its WhatsApp numbers), else its first
WhatsApp number; `TWILIO_WA_FROM` only when it has neither. The bridge sends through the business's
own WhatsApp account (`Outgoing.business_id`).

An `idempotency_key` is claimed in `idempotency_records` (scope `whatsapp_send`, per business)
before anything is sent; the unique key settles concurrent duplicates. The same key answers the
stored result and sends nothing; a request still in flight with that key answers 409.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from server import safe_json
from server.config import Settings
from server.db.dao_crm import insert_message, upsert_customer, upsert_thread
from server.db.models import Business, BusinessNumber, Customer, IdempotencyRecord, Message, Thread, utcnow
from server.errors import DomainError, Problem
from server.logs import log_event
from server.media import attach_sent_media
from server.phones import InvalidPhone, to_e164
from server.providers.whatsapp import (
    NotSent,
    OutcomeUnknown,
    Outgoing,
    OutgoingMedia,
    WhatsAppProvider,
    WhatsAppSendError,
)
from server.providers.whatsapp_baileys import BaileysBridge, baileys_problem
from server.providers.whatsapp_twilio import MESSAGING_SERVICE_SID, TwilioWhatsApp, twilio_whatsapp_problem
from server.text import clean_text
from server.whatsapp.bridge_state import CONNECTED, bridge_state
from server.whatsapp.status import settle_pending

log = logging.getLogger("agentlocator.whatsapp")

IDEMPOTENCY_SCOPE = "whatsapp_send"
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
MAX_TEXT_LENGTH = 4096  # WhatsApp's limit for one text message
MAX_IDEMPOTENCY_KEY_LENGTH = 128
PROVIDERS: dict[str, tuple[Callable[[Settings], Optional[str]], Callable[[Settings], WhatsAppProvider]]] = {
    "twilio": (twilio_whatsapp_problem, TwilioWhatsApp),
    "baileys": (baileys_problem, BaileysBridge),
}
_LID = re.compile(r"^\d{1,20}@lid$")


# The idempotency table keeps the HTTP status of the first answer; a key with none is still in flight.
_ANSWERED_SENT, _ANSWERED_FAILED = 200, 502


@dataclass(frozen=True)
class SendResult:
    """A message the provider took."""

    provider: str
    message_id: int
    provider_message_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "success": True,
            "provider": self.provider,
            "message_id": self.message_id,
            "provider_message_id": self.provider_message_id,
        }


def _send_failed(code: str, message: str, provider: Optional[str], message_id: Optional[int]) -> DomainError:
    """The message is stored (as failed) but no provider took it: `send_failed`, or `outcome_unknown`
    when it may have gone out all the same."""
    return DomainError(Problem.UPSTREAM_FAILED, code, message, provider=provider, message_id=message_id)


def _invalid_field(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)


def send_whatsapp(
    session: Session,
    settings: Settings,
    business_id: int,
    *,
    to: str,
    text: str | None = None,
    provider: str = "auto",
    content_sid: str | None = None,
    content_variables: dict[str, Any] | str | None = None,
    idempotency_key: str | None = None,
    sender_user_id: int | None = None,
    media: OutgoingMedia | None = None,
    media_id: int | None = None,
) -> SendResult:
    """Send `text` (or the template `content_sid`) to `to` and store it as an outgoing message.
    With `media` (the stored item `media_id`, `server.whatsapp.outgoing_media`) the file goes out with
    `text` as its caption, and the item is attached to the stored message.

    `to` may be `whatsapp:+9725…`, `+9725…`, `05…` or a `…@lid` address (Baileys only).
    Once it gets as far as storing the message it commits `session`, also when the send fails (the
    failed message stays in the thread). Raises `DomainError`: INVALID, CONFLICT or UNPROCESSABLE for
    the caller's mistakes, NOT_CONFIGURED for a provider that is not enabled, UNAVAILABLE when no
    provider can take the message now, UPSTREAM_FAILED when the send failed. Every error says `success: false` (the
    send API's error body always has).
    """
    try:
        return _send(
            session,
            settings,
            business_id,
            to=to,
            text=text,
            provider=provider,
            content_sid=content_sid,
            content_variables=content_variables,
            idempotency_key=idempotency_key,
            sender_user_id=sender_user_id,
            media=media,
            media_id=media_id,
        )
    except DomainError as exc:
        exc.details.setdefault("success", False)
        raise


def _send(
    session: Session,
    settings: Settings,
    business_id: int,
    *,
    to: Any,
    text: Any,
    provider: Any,
    content_sid: Any,
    content_variables: Any,
    idempotency_key: str | None,
    sender_user_id: int | None,
    media: OutgoingMedia | None = None,
    media_id: int | None = None,
) -> SendResult:
    if not isinstance(provider, str):
        raise _invalid_field("provider", "provider must be auto, twilio or baileys")
    outgoing = _outgoing(to, text, content_sid, content_variables, media)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise DomainError(
            Problem.INVALID,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters",
        )
    fingerprint = _fingerprint(outgoing, provider)
    if idempotency_key:
        earlier = _earlier_result(session, business_id, idempotency_key, fingerprint)
        if earlier:
            return earlier
    providers = _route(session, settings, business_id, provider, outgoing)
    claim = _claim(session, business_id, idempotency_key, fingerprint) if idempotency_key else None
    if isinstance(claim, SendResult):
        return claim  # a concurrent request with the same key finished first
    outcome = _deliver(session, business_id, outgoing, providers, sender_user_id, media_id)
    if claim is not None:
        claim.status_code = _ANSWERED_SENT if isinstance(outcome, SendResult) else _ANSWERED_FAILED
        claim.response = {"fingerprint": fingerprint, "result": _stored_outcome(outcome)}
    session.commit()
    if isinstance(outcome, DomainError):
        raise outcome
    _settle_early_reports(session, outcome)
    return outcome


def _outgoing(
    to: Any, text: Any, content_sid: Any, content_variables: Any, media: OutgoingMedia | None = None
) -> Outgoing:
    if not isinstance(to, str) or not to.strip():
        raise _invalid_field("to", "to is required: a phone number or a WhatsApp LID (…@lid)")
    if text is not None and not isinstance(text, str):
        raise _invalid_field("text", "text must be a string")
    text = (text or "").strip() or None
    if content_sid is not None and (not isinstance(content_sid, str) or not content_sid.strip()):
        raise _invalid_field("content_sid", "content_sid must be a template SID (HX…)")
    if not (text or content_sid or media):
        raise _invalid_field("text", "text (or a template content_sid, or a file) is required")
    if media is not None and content_sid:
        raise _invalid_field("content_sid", "a template can't carry a file; send the file with text")
    if text:
        if len(text) > MAX_TEXT_LENGTH:
            raise DomainError(
                Problem.INVALID, "text_too_long", f"text is longer than {MAX_TEXT_LENGTH} characters", field="text"
            )
        clean_text(text, "text", max_length=MAX_TEXT_LENGTH)  # what the database can't store is refused
    if content_sid:
        content_sid = clean_text(content_sid.strip(), "content_sid", max_length=MAX_TEXT_LENGTH)
    recipient = to.strip().removeprefix("whatsapp:")
    if not _LID.match(recipient):
        try:
            recipient = to_e164(recipient)
        except InvalidPhone:
            raise DomainError(Problem.INVALID, "invalid_to", f"not a phone number: {to!r}", field="to") from None
    return Outgoing(
        to=recipient,
        text=text,
        content_sid=content_sid,
        content_variables=_content_variables(content_variables),
        media=media,
    )


def _content_variables(raw: Any) -> Optional[str]:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, (dict, str)):
        raise _invalid_field("content_variables", "content_variables must be an object or a JSON string")
    if isinstance(raw, str):
        try:
            raw = safe_json.loads(raw)  # nesting-limited: a string of `[[[…` is a 400, not a RecursionError
        except ValueError:
            raw = None
    if not isinstance(raw, dict):
        raise DomainError(
            Problem.INVALID,
            "invalid_content_variables",
            'content_variables must be a JSON object like {"1": "Dana"}',
            field="content_variables",
        )
    return json.dumps(raw, ensure_ascii=False)


def _fingerprint(outgoing: Outgoing, provider: str) -> str:
    request = [outgoing.to, outgoing.text, outgoing.content_sid, outgoing.content_variables, provider]
    if outgoing.media is not None:
        request.append(outgoing.media.sha256)
    return hashlib.sha256(json.dumps(request, ensure_ascii=False).encode("utf-8")).hexdigest()


# ---- routing ------------------------------------------------------------------------------
def _route(
    session: Session, settings: Settings, business_id: int, requested: str, outgoing: Outgoing
) -> list[WhatsAppProvider]:
    if requested != "auto" and requested not in PROVIDERS:
        raise DomainError(
            Problem.INVALID, "invalid_provider", "provider must be auto, twilio or baileys", field="provider"
        )
    if requested != "auto":
        problem = PROVIDERS[requested][0](settings)
        if problem:
            raise DomainError(Problem.NOT_CONFIGURED, "provider_disabled", problem)
        reason = _unsuitable(requested, outgoing)
        if reason:
            raise DomainError(Problem.INVALID, "unsupported_by_provider", reason, field="provider")
        return [PROVIDERS[requested][1](settings)]

    enabled = [name for name in settings.wa_provider_priority if PROVIDERS[name][0](settings) is None]
    if not enabled:
        raise DomainError(
            Problem.NOT_CONFIGURED,
            "whatsapp_not_configured",
            "no WhatsApp provider is enabled (ENABLE_WA_TWILIO / ENABLE_WA_BAILEYS)",
        )
    chosen, skipped = [], {}
    for name in enabled:
        reason = _unsuitable(name, outgoing) or _unavailable(session, business_id, name, outgoing)
        if reason:
            skipped[name] = reason
        else:
            chosen.append(PROVIDERS[name][1](settings))
    if not chosen:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        if any("24-hour" in reason for reason in skipped.values()):
            raise DomainError(
                Problem.UNPROCESSABLE, "template_required", f"no provider can send free-form text now ({why})"
            )
        raise DomainError(Problem.UNAVAILABLE, "no_provider_available", f"no WhatsApp provider can send now ({why})")
    return chosen


def _unsuitable(name: str, outgoing: Outgoing) -> Optional[str]:
    """Why provider `name` can never send this message."""
    if name == "baileys" and not (outgoing.text or outgoing.media):
        return "the Baileys bridge sends text only, not Twilio templates (content_sid)"
    if name == "twilio" and _LID.match(outgoing.to):
        return "Twilio needs a phone number; this customer is known only by a WhatsApp LID"
    return None


def _unavailable(session: Session, business_id: int, name: str, outgoing: Outgoing) -> Optional[str]:
    """Why `auto` routing passes provider `name` over right now."""
    if name == "baileys":
        state = bridge_state(session, business_id)  # the business's own instance on the bridge
        if state is not None and state != CONNECTED:
            return f"the bridge reports WhatsApp {state!r}, not connected"
    if name == "twilio" and not outgoing.content_sid and not twilio_window_open(session, business_id, outgoing.to):
        return "outside the 24-hour window since the customer's last message; send a template (content_sid)"
    return None


def business_twilio_sender(session: Session, business_id: int) -> Optional[str]:
    """The business's Twilio sender: the one set for it, else its first WhatsApp number; None when it
    has neither (then `TWILIO_WA_FROM`)."""
    chosen = session.scalar(sa.select(Business.twilio_sender).where(Business.id == business_id))
    numbers = list(
        session.scalars(
            sa.select(BusinessNumber.number)
            .where(BusinessNumber.business_id == business_id, BusinessNumber.kind == "whatsapp")
            .order_by(BusinessNumber.id)
        )
    )
    # A chosen number the business no longer has is passed over: customers' answers to it would
    # reach no business.
    if chosen and (MESSAGING_SERVICE_SID.match(chosen) or chosen in numbers):
        return chosen
    return numbers[0] if numbers else None


def twilio_window_open(session: Session, business_id: int, phone: str, now: datetime | None = None) -> bool:
    """Whether the customer wrote to the Twilio sender within the last 24 hours.

    Only messages received through Twilio open its window: the Baileys bridge is another WhatsApp
    number, and a message to that number doesn't let the Twilio number answer free-form.
    """
    last = session.scalar(
        sa.select(Message.created_at)
        .join(Thread, Message.thread_id == Thread.id)
        .join(Customer, Thread.customer_id == Customer.id)
        .where(
            Customer.business_id == business_id,
            Customer.phone == phone,
            Thread.channel == "whatsapp",
            Message.direction == "in",
            Message.provider == "twilio",
        )
        .order_by(Message.id.desc())
        .limit(1)
    )
    if last is None:
        return False
    return (now or utcnow()) - last < CUSTOMER_SERVICE_WINDOW


# ---- idempotency --------------------------------------------------------------------------
def _idempotency_record(session: Session, business_id: int, key: str) -> Optional[IdempotencyRecord]:
    return session.scalar(
        sa.select(IdempotencyRecord)
        .where(
            IdempotencyRecord.business_id == business_id,
            IdempotencyRecord.scope == IDEMPOTENCY_SCOPE,
            IdempotencyRecord.key == key,
        )
        .execution_options(populate_existing=True)
    )


def _earlier_result(session: Session, business_id: int, key: str, fingerprint: str) -> Optional[SendResult]:
    record = _idempotency_record(session, business_id, key)
    if record is None:
        return None
    response = record.response or {}
    if response.get("fingerprint") != fingerprint:
        raise DomainError(
            Problem.UNPROCESSABLE, "idempotency_key_reused", "this Idempotency-Key was used for a different message"
        )
    if record.status_code is None:
        raise DomainError(
            Problem.CONFLICT, "idempotency_key_in_use", "a request with this Idempotency-Key is still being sent"
        )
    log_event(log, "whatsapp_send_replayed", business_id=business_id, status_code=record.status_code)
    return _replayed(response["result"])


def _claim(session: Session, business_id: int, key: str, fingerprint: str) -> IdempotencyRecord | SendResult:
    """Claim `key` for this request (committed, so every worker sees it) or answer the winner's result."""
    record = IdempotencyRecord(
        business_id=business_id, scope=IDEMPOTENCY_SCOPE, key=key, response={"fingerprint": fingerprint}
    )
    try:
        with session.begin_nested():
            session.add(record)
    except IntegrityError:  # a concurrent request with the same key claimed it first
        session.commit()  # end this transaction so the next read sees the winner's row
        earlier = _earlier_result(session, business_id, key, fingerprint)
        if earlier is None:  # the winner rolled back: treat like any in-flight duplicate
            raise DomainError(
                Problem.CONFLICT, "idempotency_key_in_use", "a request with this Idempotency-Key is being sent"
            ) from None
        return earlier
    session.commit()
    return record


# ---- delivery -----------------------------------------------------------------------------
def _deliver(
    session: Session,
    business_id: int,
    outgoing: Outgoing,
    providers: list[WhatsAppProvider],
    sender_user_id: int | None,
    media_id: int | None = None,
) -> SendResult | DomainError:
    """Store the message, then send it; a failure is answered (to be raised once the outcome is stored)."""
    is_lid = bool(_LID.match(outgoing.to))
    customer = upsert_customer(
        session, business_id, phone=None if is_lid else outgoing.to, lid=outgoing.to if is_lid else None
    )
    thread = upsert_thread(session, business_id, customer.id, "whatsapp")
    message, _ = insert_message(
        session,
        thread,
        direction="out",
        provider=providers[0].name,
        status="queued",
        body=outgoing.text or ("" if outgoing.media else f"[template {outgoing.content_sid}]"),
        kind=_message_kind(outgoing),
        sender_user_id=sender_user_id,
    )
    if media_id is not None:
        attach_sent_media(session, business_id, message.id, media_id)
    # Stored and committed before the network call: no transaction stays open while we wait on a
    # provider, and the message exists even if this process dies mid-send.
    session.commit()
    outgoing = dataclasses.replace(
        outgoing,
        idempotency_key=f"wa-message-{message.id}",
        business_id=business_id,
        sender=business_twilio_sender(session, business_id),
    )
    failure: WhatsAppSendError | None = None
    for provider in providers:
        message.provider = provider.name
        try:
            provider_message_id = provider.send(outgoing)
        except NotSent as exc:
            failure = exc
            log_event(
                log,
                "whatsapp_send_not_sent",
                logging.WARNING,
                provider=provider.name,
                code=exc.code,
                detail=exc.detail,
                message_id=message.id,
            )
            continue
        except OutcomeUnknown as exc:
            failure = exc
            break
        except Exception as exc:  # an unexpected answer: nobody knows whether it went out
            log.exception("whatsapp send raised", extra={"event": "whatsapp_send_error", "provider": provider.name})
            failure = OutcomeUnknown("provider_error", f"{provider.name} failed unexpectedly ({type(exc).__name__})")
            break
        message.provider_message_id = provider_message_id
        message.status = "sent"
        log_event(log, "whatsapp_sent", provider=provider.name, message_id=message.id, business_id=business_id)
        return SendResult(provider.name, message.id, provider_message_id)

    # Every pass of the loop (one at least: providers[0] is stored above) returned or set it.
    assert failure is not None
    message.status = "failed"
    message.error_code, message.error_message = failure.code, failure.detail
    uncertain = isinstance(failure, OutcomeUnknown)
    log_event(
        log,
        "whatsapp_send_failed",
        logging.WARNING,
        provider=message.provider,
        code=failure.code,
        outcome_unknown=uncertain,
        message_id=message.id,
        business_id=business_id,
    )
    return _send_failed("outcome_unknown" if uncertain else "send_failed", failure.detail, message.provider, message.id)


def _message_kind(outgoing: Outgoing) -> str:
    if outgoing.media is not None:
        return outgoing.media.kind
    return "text" if outgoing.text and not outgoing.content_sid else "template"


def _settle_early_reports(session: Session, sent: SendResult) -> None:
    """Apply the delivery reports that reached us before the provider's id was committed.

    Only after that commit: a callback that missed the message kept its report and committed it
    before looking again, so one of the two sides always sees both (`status.keep_for_later`). The
    message has gone out whatever happens here, so a database error is logged and not raised: an
    error answer would invite a second send, and the next report for the message settles them too.
    """
    try:
        settle_pending(session, sent.provider, sent.provider_message_id)
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        log_event(
            log,
            "whatsapp_status_settle_failed",
            logging.WARNING,
            provider=sent.provider,
            message_id=sent.message_id,
            error=type(exc).__name__,
        )


def _stored_outcome(outcome: SendResult | DomainError) -> dict[str, Any]:
    """The outcome as the idempotency record keeps it (the same fields for every stored answer)."""
    if isinstance(outcome, SendResult):
        return {"success": True, **dataclasses.asdict(outcome), "error": None, "message": ""}
    return {
        "success": False,
        "provider": outcome.details.get("provider"),
        "message_id": outcome.details.get("message_id"),
        "provider_message_id": None,
        "error": outcome.code,
        "message": outcome.message,
    }


def _replayed(stored: dict[str, Any]) -> SendResult:
    """The first answer again: its result, or its failure raised."""
    if stored.get("success"):
        return SendResult(stored["provider"], stored["message_id"], stored["provider_message_id"])
    raise _send_failed(
        stored.get("error") or "send_failed",
        stored.get("message") or "",
        stored.get("provider"),
        stored.get("message_id"),
    )

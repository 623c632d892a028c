"""Handing a live AI call to a person: the `transfer_to_person` tool, the whisper and the dial's end.

1. `transfer_to_person` (the model's tool, run inside the call's session): checks the call is this
   business's and still live, that the business has a forwarding number and is open now, marks the
   call `outcome = "transferred"` and replaces the call's TwiML through Twilio's REST API with a
   short Hebrew line for the caller and a `<Dial>` to the forwarding number. Twilio then stops our
   media stream (`stop`, then the socket closes): the session ends as usual, and because of the
   outcome the call is not recorded as over (`CallStore`) and no voicemail redirect is sent after
   it (`VoiceEngine`). When the business is closed, or has no forwarding number, nothing is
   transferred and the result tells the model to take a message instead; when Twilio refuses the
   update the outcome is put back and the call goes on with the AI.
2. `whisper_twiml` (`POST /twilio/voice/transfer-whisper?token=…`, Twilio-signed): what the person
   who answers hears before the caller is put through: the business's announcement, the caller's
   number and the reason the model gave. The reason travels in the URL inside a signed token
   (`server.security.call_token.transfer_token`).
3. `dial_result` (`POST /twilio/voice/dial-result`, the `<Dial action>`): a dial that was answered
   ends the call (`<Hangup/>`); one that rang out, was busy, failed or was cancelled becomes
   `transfer_no_answer` / `transfer_busy` / `transfer_failed` / `transfer_canceled` and the caller
   can leave a message (today's voicemail TwiML, whose recording lands in the CRM as usual).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Optional, TypeVar, Union
from urllib.parse import urlencode

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session
from twilio.twiml.voice_response import Dial, VoiceResponse

from server.config import Settings
from server.db.dao_crm import audit, call_by_sid
from server.db.engine import Database
from server.db.models import AuditLog, Business, Call, utcnow
from server.errors import DomainError, Problem
from server.jobs import JobQueue
from server.logs import log_event
from server.phones import try_e164
from server.providers.twilio_rest import TwilioException, TwilioNotConfigured, TwilioRestException, twilio_client
from server.security.call_token import read_transfer_token, transfer_token
from server.text import storable_text
from server.urls import abs_url
from server.voice import prompt_audio
from server.voice.store import TRANSFERRED
from server.voice.twiml import hangup_twiml, voicemail_twiml
from server.voice.watchdog import FINAL_CALL_STATUSES

log = logging.getLogger("agentlocator.voice.transfer")
T = TypeVar("T")

TOOL_NAME = "transfer_to_person"
TOOL_DESCRIPTION = (
    "Transfer this phone call to a person at the business (העברת השיחה לנציג אנושי). Use it only when "
    "the caller asks for a person or you cannot help. Before calling it, tell the caller in one short "
    "sentence that you are transferring them. The result says whether the transfer started; if the "
    "business is closed or the transfer failed, offer to take a message instead."
)
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "maxLength": 200,
            "description": "In Hebrew, one short sentence for the person who answers: who the caller is "
            "and what they need (נאמר לנציג לפני שהשיחה מחוברת)",
        }
    },
    "required": ["reason"],
    "additionalProperties": False,
}

OUTCOME = TRANSFERRED
# DialCallStatus → the call's outcome when nobody took the call (completed/answered keep OUTCOME)
UNANSWERED_OUTCOMES = {
    "no-answer": "transfer_no_answer",
    "busy": "transfer_busy",
    "failed": "transfer_failed",
    "canceled": "transfer_canceled",
}
ANSWERED = frozenset({"completed", "answered"})
TRANSFER_OUTCOMES = frozenset({OUTCOME, *UNANSWERED_OUTCOMES.values()})

DIAL_RESULT_PATH = "/twilio/voice/dial-result"
WHISPER_PATH = "/twilio/voice/transfer-whisper"
DIAL_TIMEOUT_SECONDS = 20
REASON_MAX = 200
CALLER_LINE_HE = "אני מעבירה אותך לאחד מאנשי הצוות. נא להישאר על הקו."
DEFAULT_ANNOUNCEMENT_HE = "שיחה מועברת מהמענה הדיגיטלי של {name}."
CALLER_NUMBER_HE = "המתקשר: {digits}."
REASON_HE = "הסיבה: {reason}"

# Whether the business is open at a moment (its opening hours, in its time zone); None when it has
# set no hours at all, which counts as open. Given by whoever builds the desk (the appointment
# book's hours), so this module needs nothing above the live engine.
OpenCheck = Callable[[Session, int, datetime], Optional[bool]]
# Runs `fn(session)` as one unit of work, committed on return: in a live call the tool context's
# `run` (off the gevent hub on SQLite, like CallStore), elsewhere `in_own_session(database)`.
UnitOfWork = Callable[[Callable[[Session], T]], T]


def in_own_session(database: Database) -> UnitOfWork:
    def run(unit_of_work: Callable[[Session], T]) -> T:
        with database.scope() as session:
            return unit_of_work(session)

    return run


def always_open(session: Session, business_id: int, at: datetime) -> Optional[bool]:
    return None


@dataclass(frozen=True)
class TransferDesk:
    """What a transfer uses of the worker."""

    settings: Settings
    app_secret: str  # signs the whisper's token; the webhook reads it with the app's APP_SECRET
    run: UnitOfWork
    is_open: OpenCheck = always_open
    clock: Callable[[], datetime] = utcnow


@dataclass(frozen=True)
class _Plan:
    call_id: int
    previous_outcome: Optional[str]
    to_number: str
    caller_id: str


# ---- the tool ---------------------------------------------------------------------------------
def transfer_to_person(desk: TransferDesk, *, business_id: int, call_sid: str, reason: str) -> dict[str, Any]:
    """Start the transfer of `call_sid` (a live call of `business_id`). Never raises: the result is
    what the model reads (`transferred`: true once Twilio took the new TwiML)."""
    reason = " ".join(storable_text(reason).split())[:REASON_MAX]
    try:
        plan = desk.run(lambda session: _claim_call(session, desk, business_id, call_sid))
    except Exception:  # the database: the call goes on with the AI
        log.exception("transfer not started", extra={"event": "call_transfer_error", "call_sid": call_sid})
        return _failed("the transfer could not be started")
    if isinstance(plan, dict):
        log_event(log, "call_transfer_refused", call_sid=call_sid, business_id=business_id, why=plan.get("why"))
        return plan
    twiml = transfer_twiml(desk.settings.base_url, desk.app_secret, call_sid, plan, reason)
    problem = _update_call(desk.settings, call_sid, twiml)
    if problem:
        try:
            desk.run(lambda session: _release_call(session, plan))
        except Exception:
            log.exception("transfer not released", extra={"event": "call_transfer_error", "call_sid": call_sid})
        log_event(log, "call_transfer_failed", logging.ERROR, call_sid=call_sid, business_id=business_id, **problem)
        return _failed("the phone system refused the transfer")
    try:
        desk.run(lambda session: _audit_transfer(session, business_id, call_sid, plan, reason))
    except Exception:  # the transfer itself went through
        log.exception("transfer not audited", extra={"event": "call_transfer_error", "call_sid": call_sid})
    log_event(log, "call_transferred", call_sid=call_sid, business_id=business_id)
    return {
        "transferred": True,
        "instruction": "The call is being put through to a person now; do not say anything more.",
    }


def _failed(what: str) -> dict[str, Any]:
    return {
        "transferred": False,
        "error": what,
        "instruction": "Tell the caller the transfer did not work, and offer to take a message "
        "(name, what they need, when to call back). The call goes on with you.",
    }


def _refusal(why: str, instruction: str) -> dict[str, Any]:
    return {"transferred": False, "why": why, "instruction": instruction}


def _claim_call(session: Session, desk: TransferDesk, business_id: int, call_sid: str) -> Union[_Plan, dict[str, Any]]:
    """Mark the call as being transferred, or say why it can't be (a result for the model)."""
    call = session.scalar(_locked(call_sid))
    if call is None or call.business_id != business_id:  # another business's call is no call at all
        return _refusal("unknown_call", "There is no live call to transfer; go on helping the caller.")
    if call.ended_at is not None or call.status in FINAL_CALL_STATUSES:
        return _refusal("call_over", "The call is over.")
    if call.outcome in TRANSFER_OUTCOMES:
        return _refusal("already_transferred", "This call was already transferred; do not try again.")
    business = session.get_one(Business, business_id)
    if not business.transfer_number:
        return _refusal(
            "no_transfer_number",
            "Nobody can take calls at the business by phone. Tell the caller, and offer to take a "
            "message (name, what they need, when to call back).",
        )
    if desk.is_open(session, business_id, desk.clock()) is False:
        return _refusal(
            "closed",
            "The business is closed now, so nobody can take the call. Tell the caller the business "
            "is closed and offer to take a message (name, what they need, when to call back) instead.",
        )
    plan = _Plan(
        call_id=call.id,
        previous_outcome=call.outcome,
        to_number=business.transfer_number,
        # Twilio lets a forwarded call show the caller's own number; else our number they called.
        caller_id=try_e164(call.from_number) or call.to_number,
    )
    call.outcome = OUTCOME  # before Twilio stops the stream: the session's end reads it
    return plan


def _locked(call_sid: str) -> Any:
    """The call's row, locked until commit (PostgreSQL), so two transfers of one call can't both start."""
    return sa.select(Call).where(Call.call_sid == call_sid).with_for_update().execution_options(populate_existing=True)


def _release_call(session: Session, plan: _Plan) -> None:
    """Twilio refused: the call goes on with the AI, as it was before."""
    call = session.get_one(Call, plan.call_id)
    if call.outcome == OUTCOME:
        call.outcome = plan.previous_outcome


def _audit_transfer(session: Session, business_id: int, call_sid: str, plan: _Plan, reason: str) -> None:
    audit(session, business_id, "agent", "call.transferred", "call", call_sid, to=plan.to_number, reason=reason)


def _update_call(settings: Settings, call_sid: str, twiml: str) -> dict[str, Any]:
    """Give the live call its new TwiML; {} when Twilio took it, else what went wrong (for the log)."""
    try:
        twilio_client(settings).calls(call_sid).update(twiml=twiml)
    except TwilioRestException as exc:
        return {"twilio_code": exc.code, "http_status": exc.status}
    except (TwilioNotConfigured, TwilioException, requests.RequestException) as exc:
        return {"error": type(exc).__name__, "detail": str(exc)[:200]}
    return {}


# ---- TwiML ------------------------------------------------------------------------------------
def transfer_twiml(base_url: str, token_secret: str, call_sid: str, plan: _Plan, reason: str) -> str:
    """The caller hears one line, then the forwarding number rings; the person who answers first
    hears the whisper (`<Number url>`), and how the dial ended goes to `dial_result`."""
    response = VoiceResponse()
    response.say(CALLER_LINE_HE, language="he-IL")
    dial = Dial(
        action=abs_url(base_url, DIAL_RESULT_PATH),
        method="POST",
        timeout=DIAL_TIMEOUT_SECONDS,
        answer_on_bridge=True,
        caller_id=plan.caller_id or None,
    )
    whisper = (
        abs_url(base_url, WHISPER_PATH) + "?" + urlencode({"token": transfer_token(token_secret, call_sid, reason)})
    )
    dial.number(plan.to_number, url=whisper, method="POST")
    response.append(dial)
    return response.to_xml()


def whisper_twiml(session: Session, app_secret: str, query: Mapping[str, str]) -> str:
    """What the person who answers hears before being connected to the caller."""
    details = read_transfer_token(app_secret, query.get("token"))
    if details is None:
        raise DomainError(Problem.NOT_FOUND, "unknown_transfer", "no such transfer (the token is wrong or expired)")
    call = call_by_sid(session, details["call"])
    if call is None:
        raise DomainError(Problem.NOT_FOUND, "unknown_call", "no such call")
    business = session.get_one(Business, call.business_id)
    lines = [(business.transfer_announcement or "").strip() or DEFAULT_ANNOUNCEMENT_HE.format(name=business.name)]
    if call.from_number:
        lines.append(CALLER_NUMBER_HE.format(digits=spoken_digits(call.from_number)))
    if details["reason"]:
        lines.append(REASON_HE.format(reason=details["reason"]))
    response = VoiceResponse()
    response.say(" ".join(lines), language="he-IL")
    log_event(log, "call_transfer_whisper", call_sid=call.call_sid, business_id=call.business_id)
    return response.to_xml()


def spoken_digits(number: str) -> str:
    """`+972501234567` as the caller would say it, digit by digit: `0 5 0 1 2 3 4 5 6 7`."""
    local = "0" + number[4:] if number.startswith("+972") else number.lstrip("+")
    return " ".join(ch for ch in local if ch.isdigit())


# ---- the end of the dial ----------------------------------------------------------------------
def dial_result(session: Session, settings: Settings, form: Mapping[str, str], jobs: Optional[JobQueue] = None) -> str:
    """The `<Dial action>`: hang up after a conversation with the person, else take a message (the
    voicemail prompt `stream_ended` plays, in the agent's voice when it has been made)."""
    call_sid, status = form.get("CallSid", ""), form.get("DialCallStatus", "")
    if not status:
        raise DomainError(Problem.INVALID, "missing_dial_status", "DialCallStatus is required", field="DialCallStatus")
    call = call_by_sid(session, call_sid) if call_sid else None
    if call is None:
        raise DomainError(Problem.NOT_FOUND, "unknown_call", "no such call")
    answered = status in ANSWERED
    outcome = OUTCOME if answered else UNANSWERED_OUTCOMES.get(status, "transfer_failed")
    action = "call.transfer_answered" if answered else "call.transfer_unanswered"
    # Twilio retries the action: the audit entry (what the console's log shows) tells a replay.
    replay = call.outcome == outcome and _audited(session, call, action)
    if not replay:
        call.outcome = outcome
        audit(
            session,
            call.business_id,
            "twilio",
            action,
            "call",
            call.call_sid,
            dial_status=status[:24],
            dial_seconds=_seconds(form.get("DialCallDuration")),
        )
    session.commit()
    log_event(log, "call_transfer_ended", call_sid=call_sid, dial_status=status[:24], outcome=outcome, replay=replay)
    if answered:
        return hangup_twiml()
    return voicemail_twiml(settings.base_url, prompt_audio.fallback_path(settings, jobs))


def _audited(session: Session, call: Call, action: str) -> bool:
    found = session.scalar(
        sa.select(AuditLog.id)
        .where(
            AuditLog.business_id == call.business_id,
            AuditLog.entity_type == "call",
            AuditLog.entity_id == call.call_sid,
            AuditLog.action == action,
        )
        .limit(1)
    )
    return found is not None


def _seconds(raw: Optional[str]) -> Optional[int]:
    return int(raw) if raw and raw.isascii() and raw.isdigit() and len(raw) <= 9 else None

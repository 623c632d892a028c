"""What the live engine reads from and writes to the database, each as one short unit of work.

The call row is the shared truth across workers: `stream_started_at` tells the watchdog (on any
worker) that the stream is up; turns and the transcript are written as the call goes, so a crash
mid-call loses at most the turn in progress, and a second stream for the same call (possibly on
another worker) picks the conversation up from here.

SQLite's driver is a blocking C library: on the gevent hub a commit (1–25 ms here, with its fsync)
would stall the audio of every call on the worker, so with SQLite each unit of work runs in one
background thread. One, not a pool: SQLite has one writer anyway, and SQLAlchemy's Python code in
several threads would take the GIL from the hub in 5 ms slices (measured: when 100 calls ended at
once, first audio of the calls still talking came up to 0.9 s late). psycopg2 is made cooperative
(psycogreen) and runs in the calling greenlet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import sqlalchemy as sa
from gevent.threadpool import ThreadPool

from server.db.dao_crm import add_call_turn, call_by_sid, create_call
from server.db.engine import Database
from server.db.models import Business, Call, CallTurn, utcnow
from server.voice import preemptive
from server.voice.conversation import Exchange

log = logging.getLogger("agentlocator.voice.store")
TRANSFERRED = "transferred"  # the outcome server.voice.transfer gives a call it hands to a person
T = TypeVar("T")


@dataclass(frozen=True)
class BusinessProfile:
    """The business fields the agent's prompt and opening line use (a snapshot, no session needed)."""

    id: int
    name: str
    ai_instructions: str
    opening_line: str
    timezone: str
    agent_tools: Optional[dict[str, Any]] = None  # the tools it switched on or off (server/agent/tools.py)
    preemptive_generation: bool = preemptive.FEATURE_DEFAULT  # its switch (server/voice/preemptive.py)


@dataclass(frozen=True)
class CallContext:
    call_id: int
    call_sid: str
    business: BusinessProfile
    history: tuple[Exchange, ...]
    next_turn_index: int
    # The caller, for the agent's tools (a booking, a message, a payment link on their WhatsApp).
    customer_id: Optional[int] = None
    caller_number: str = ""
    thread_id: Optional[int] = None


class CallStore:
    def __init__(self, database: Database):
        self._db = database
        # The one real OS thread of the voice engine (everything else is a greenlet): SQLite's blocking
        # C calls must run off the hub, or every call's audio on the worker stalls while they run.
        self._db_thread = ThreadPool(1) if database.engine.dialect.name == "sqlite" else None

    def _run(self, unit_of_work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._db_thread is not None:
            return self._db_thread.apply(unit_of_work, args, kwargs)
        return unit_of_work(*args, **kwargs)

    def open_stream(self, call_sid: str, stream_sid: str, business_id_param: str = "") -> Optional[CallContext]:
        return self._run(self._open_stream, call_sid, stream_sid, business_id_param)

    def record_turn(self, call_id: int, **details: Any) -> None:
        self._run(self._record_turn, call_id, **details)

    def set_outcome(self, call_id: int, outcome: str) -> None:
        self._run(self._set_outcome, call_id, outcome)

    def close_stream(self, call_id: int, **details: Any) -> None:
        self._run(self._close_stream, call_id, **details)

    @property
    def database(self) -> Database:
        return self._db

    def run(self, unit_of_work: Callable[..., T], *args: Any) -> T:
        """Any other unit of database work of a live call (a model tool's), where this store runs its own."""
        return self._run(unit_of_work, *args)

    def outcome(self, call_sid: str) -> Optional[str]:
        return self._run(self._outcome, call_sid)

    # ---- the units of work -----------------------------------------------------------------
    def _open_stream(self, call_sid: str, stream_sid: str, business_id_param: str) -> Optional[CallContext]:
        """Mark the call's stream as started and load what the agent needs; None for an unknown call.

        The call row normally exists (`incoming_call` wrote it); if that write was lost, the
        `business_id` stream parameter (covered by the call token's check) lets us create it.
        """
        with self._db.scope() as session:
            call = call_by_sid(session, call_sid)
            if call is None:
                known = business_id_param.isascii() and business_id_param.isdigit() and len(business_id_param) <= 9
                business = session.get(Business, int(business_id_param)) if known else None
                if business is None:
                    return None
                call, _ = create_call(
                    session, business.id, call_sid=call_sid, from_number="", to_number="", status="in-progress"
                )
            call.stream_sid = stream_sid
            if call.stream_started_at is None:
                call.stream_started_at = utcnow()
            business = session.get_one(Business, call.business_id)
            turns = session.scalars(
                sa.select(CallTurn).where(CallTurn.call_id == call.id).order_by(CallTurn.turn_index)
            ).all()
            profile = BusinessProfile(
                id=business.id,
                name=business.name,
                ai_instructions=business.ai_instructions,
                opening_line=business.opening_line,
                timezone=business.timezone,
                agent_tools=dict(business.agent_tools) if business.agent_tools else None,
                preemptive_generation=business.feature(preemptive.FEATURE, preemptive.FEATURE_DEFAULT),
            )
            return CallContext(
                call_id=call.id,
                call_sid=call_sid,
                business=profile,
                history=tuple(Exchange(t.user_text, t.agent_text) for t in turns),
                next_turn_index=(turns[-1].turn_index + 1) if turns else 0,
                customer_id=call.customer_id,
                caller_number=call.from_number,
                thread_id=call.thread_id,
            )

    def _record_turn(
        self,
        call_id: int,
        *,
        turn_index: int,
        exchange: Exchange,
        interrupted: bool,
        metrics: dict[str, Any],
        transcript: str,
    ) -> None:
        with self._db.scope() as session:
            call = session.get_one(Call, call_id)
            add_call_turn(
                session,
                call,
                turn_index=turn_index,
                user_text=exchange.user_text,
                agent_text=exchange.agent_text,
                interrupted=interrupted,
                **metrics,
            )
            call.transcript = transcript

    def _outcome(self, call_sid: str) -> Optional[str]:
        with self._db.scope() as session:
            call = call_by_sid(session, call_sid)
            return call.outcome if call is not None else None

    def _set_outcome(self, call_id: int, outcome: str) -> None:
        with self._db.scope() as session:
            session.get_one(Call, call_id).outcome = outcome

    def _close_stream(self, call_id: int, *, transcript: str, stream_ended: bool, call_ended: bool) -> None:
        """Keep the transcript; record when the stream ended and, if the call ended with it, the call's end.

        A stream replaced by a newer one for the same call ends neither.
        """
        with self._db.scope() as session:
            call = session.get_one(Call, call_id)
            call.transcript = transcript
            now = utcnow()
            if stream_ended and call.stream_ended_at is None:
                call.stream_ended_at = now
            # A transferred call goes on in Twilio's <Dial> after our stream: its end comes with
            # the call status callback.
            if call_ended and call.ended_at is None and call.outcome != TRANSFERRED:
                call.ended_at = now

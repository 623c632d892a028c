"""Reading the live-call benchmark's server log: each call's end record, the turn metrics, and which
calls were lost. Kept apart from `bench_calls` (which patches the process for gevent on import) so
that it can be tested on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

# The event the server logs when a media stream ends, with the frame counts. Both spellings are
# read: older servers log it as `WS_END`, newer ones as `ws_end` (all events in snake_case).
END_EVENTS = frozenset({"ws_end", "WS_END"})


def server_records(log_text: str) -> tuple[dict[str, dict], list[dict]]:
    """The JSON lines of a server log: the end record of each call (by call SID) and the turn metrics."""
    ends: dict[str, dict] = {}
    turns: list[dict] = []
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        event = record.get("event")
        if event in END_EVENTS and record.get("call_sid"):
            ends[record["call_sid"]] = record
        elif event == "turn_metrics":
            turns.append(record)
    return ends, turns


@dataclass
class Losses:
    inbound_frames: int = 0  # sent by callers, not counted by the server
    outbound_frames: int = 0  # sent by the server, not received by callers
    lost_calls: list[str] = field(default_factory=list)  # the server never ended them cleanly


def count_losses(calls: Iterable[tuple[str, int, int]], ends: dict[str, dict]) -> Losses:
    """`calls`: (call SID, frames the caller sent, frames it received). A call without an end record
    was dropped by the server (or its worker died): its frames can't be counted, so it is a lost
    call, never "0 frames lost"."""
    losses = Losses()
    for call_sid, frames_sent, frames_received in calls:
        end = ends.get(call_sid)
        if end is None:
            losses.lost_calls.append(call_sid)
            continue
        losses.inbound_frames += max(0, frames_sent - int(end.get("frames_in", 0)))
        losses.outbound_frames += max(0, int(end.get("frames_out", 0)) - frames_received)
    return losses

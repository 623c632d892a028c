"""The live-call benchmark's reading of the server log: a call the server never ended cleanly is a
lost call, not a call that lost 0 frames."""

from __future__ import annotations

import json

import pytest

from bench.call_logs import count_losses, server_records


def log_line(event: str, **fields) -> str:
    return json.dumps(
        {
            "ts": "2026-01-01T00:00:00.000Z",
            "level": "INFO",
            "logger": "agentlocator.voice",
            "msg": event,
            "event": event,
            **fields,
        }
    )


@pytest.mark.parametrize("end_event", ["ws_end", "WS_END"])
def test_a_call_without_an_end_record_is_a_lost_call(end_event):
    log = "\n".join(
        [
            "[2026-01-01 00:00:00 +0000] [1] [INFO] Starting gunicorn",
            log_line(end_event, call_sid="CA-clean", reason="socket closed", frames_in=480, frames_out=300),
            log_line("turn_metrics", call_sid="CA-clean", turn_id=1, t_first_audio_ms=900),
            log_line("ws_start", call_sid="CA-dropped"),
            "not json {",
        ]
    )
    ends, turns = server_records(log)
    assert set(ends) == {"CA-clean"} and [t["turn_id"] for t in turns] == [1]
    # CA-clean: the caller sent 500 frames (server counted 480) and received 290 of 300.
    losses = count_losses([("CA-clean", 500, 290), ("CA-dropped", 400, 100)], ends)
    assert losses.lost_calls == ["CA-dropped"]
    assert (losses.inbound_frames, losses.outbound_frames) == (20, 10)


def test_no_end_record_at_all_loses_every_call():
    losses = count_losses([("CA1", 10, 10), ("CA2", 10, 10)], {})
    assert losses.lost_calls == ["CA1", "CA2"] and losses.inbound_frames == losses.outbound_frames == 0

"""`bench/bench_multi_instance.py` in a tiny configuration, so it keeps working: two instances behind
HAProxy, one SIGKILLed mid-run. Needs haproxy, redis-server and PostgreSQL's server binaries
(`.ci/run` installs them); skipped without haproxy, like the browser tests without Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.postgres import postgres_bin
from testkit.servers import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _installed(tool: str) -> bool:
    return shutil.which(tool) is not None or Path(f"/usr/sbin/{tool}").exists()


@pytest.mark.skipif(
    not (_installed("haproxy") and _installed("redis-server") and postgres_bin()),
    reason="needs haproxy, redis-server and PostgreSQL's server binaries",
)
def test_two_instances_one_killed_lose_nothing_and_duplicate_nothing():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_multi_instance",
            *("--calls", "2", "--turns", "2", "--webhooks", "12", "--duplicate-every", "3"),
            *("--unstarted-calls", "1", "--kill-after", "4", "--checks", "1", "--web-workers", "1"),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])

    assert figures["migrations"]["ok"], figures["migrations"]
    for check in ("login_limit_across_instances", "idempotency_across_instances", "live_events_b_to_a"):
        assert figures[check]["ok"], (check, figures[check])
    survivors = figures["calls_on_surviving_instance"]
    assert survivors["errors"] == [] and survivors["hung_up_by_caller"] == survivors["calls"]
    assert survivors["frames_lost"] == {"inbound": 0, "outbound": 0}
    killed = figures["calls_on_killed_instance"]
    assert killed["completed_in_crm"] == killed["calls"], killed  # Twilio's callbacks reached the survivor
    webhooks = figures["webhooks"]
    assert (webhooks["stored"], webhooks["duplicates"], webhooks["lost"]) == (webhooks["sent"], 0, 0), webhooks
    replies = figures["ai_replies"]
    assert replies["answered_twice"] == 0, replies
    # A reply cut off mid-send by the kill is never sent again (at most once): the only way to stay
    # unanswered.
    assert replies["customers_left_unanswered"] <= replies["given_up_as_sent_by_a_killed_worker"], replies
    assert figures["calls_never_streamed"]["sent_to_voicemail_by_watchdog"] == 1

"""The benchmark's py-spy summary (bench/profiles.py): folded stacks → the functions that took the most
samples, by own time and anywhere in the stack, with line numbers and install paths cut."""

from __future__ import annotations

from bench.profiles import frame_name, summarise

WORKER = "<module> (gunicorn:8);run (/srv/.venv/lib/python3.11/site-packages/gevent/baseserver.py:34)"
SERVE = "serve (/srv/app/server/voice/engine.py:150)"
STACKS = "\n".join(
    [
        f"{WORKER};{SERVE};receive (/srv/app/server/voice/transport.py:97) 6",
        f"{WORKER};{SERVE};parse_message (/srv/app/server/voice/protocol.py:80) 3",
        "run (/usr/lib/python3.11/threading.py:975) 1",
        "not a stack line",
    ]
)


def test_frame_names_lose_line_numbers_and_install_paths():
    assert frame_name("send (/x/.venv/lib/python3.11/site-packages/gevent/_socketcommon.py:722)") == (
        "send (gevent/_socketcommon.py)"
    )
    assert frame_name("serve (/srv/app/server/voice/engine.py:150)") == "serve (server/voice/engine.py)"
    assert frame_name("run (/usr/lib/python3.11/threading.py:975)") == "run (threading.py)"


def test_the_top_functions_by_own_time_and_anywhere_in_the_stack(tmp_path):
    path = tmp_path / "level-100.txt"
    path.write_text(STACKS)
    summary = summarise(path, top=3)
    assert summary["samples"] == 10
    assert summary["self"] == [
        [60.0, "receive (server/voice/transport.py)"],
        [30.0, "parse_message (server/voice/protocol.py)"],
        [10.0, "run (threading.py)"],
    ]
    # gunicorn's and gevent's frames are in every stack of the worker: left out of the inclusive list
    assert summary["inclusive"][0] == [90.0, "serve (server/voice/engine.py)"]
    assert not any("gunicorn" in name or "gevent/" in name for _, name in summary["inclusive"])


def test_an_empty_profile_summarises_to_nothing(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    assert summarise(path) == {"samples": 0, "self": [], "inclusive": []}

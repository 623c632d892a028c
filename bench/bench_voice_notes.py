"""Benchmark WhatsApp voice notes: webhook arrival → transcript stored, through the whole app.

    python -m bench.bench_voice_notes [--notes 50] [--seconds 8] [--long 5] [--clients 8]
                                      [--workers 2] [--job-threads 4]
                                      [--admin-url postgresql://127.0.0.1:5432/test] [--max-seconds 180]

It creates a throwaway PostgreSQL database (dropped at the end), starts gunicorn (`-k gevent`) with
the jobs worker process beside it, the Google Speech gRPC fake (`GOOGLE_SPEECH_EMULATOR_HOST`) and a
local media directory, and posts `--notes` signed Baileys `message` events, each carrying a real
Ogg Opus voice note base64-encoded as the bridge sends it, from `--clients` threads, each from its
own customer. `--long` of them last 70 s (LongRunningRecognize, polled), the rest `--seconds`
(Recognize). The fake answers at once, so the figures are the app's own cost: the webhook storing
the note, the queue, the job reading the file and the gRPC round trips.

Latency per note is the job's own `t_transcript_ms` (from the message's `created_at`, when the
webhook stored it, to the transcript's commit), read from the worker's log; p50/p95/max are printed
per request kind and overall. Every note must end `done`: `lost` counts those that did not.
The last line is the whole result as JSON.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.bench_webhooks import throwaway_database
from server.db.migrate import run_migrations
from server.db.models import Business, BusinessNumber, Media, Message
from server.security import bridge_hmac
from testkit.fakes.google_speech import FakeSpeech
from testkit.servers import GunicornServer
from testkit.voice_notes import voice_note

SECRET = "bench-voice-notes-secret"
BUSINESS_NUMBER = "+97235550002"
TRANSCRIPT = "שלום, רציתי לקבוע תור למחר בבוקר"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of a short note")
    parser.add_argument("--long", type=int, default=5, help="how many of the notes last 70 s")
    parser.add_argument("--clients", type=int, default=8, help="concurrent webhook senders")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn gevent workers")
    parser.add_argument("--job-threads", type=int, default=4, help="the jobs worker's threads (JOBS_WORKERS)")
    parser.add_argument("--admin-url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="give up waiting after this long")
    args = parser.parse_args()

    short, long_note = voice_note(args.seconds), voice_note(70)
    with throwaway_database(args.admin_url) as database_url, FakeSpeech() as speech:
        speech.script(*([TRANSCRIPT] * args.notes))
        engine = sa.create_engine(database_url)
        run_migrations(engine)
        with Session(engine) as session, session.begin():
            business = Business(name="Bench")
            session.add(business)
            session.flush()
            session.add(BusinessNumber(business_id=business.id, number=BUSINESS_NUMBER, kind="whatsapp"))
            business_id = business.id
        workdir = Path(tempfile.mkdtemp(prefix="bench-voice-notes-"))
        env = {
            "DATABASE_URL": database_url,
            "PUBLIC_BASE_URL": "https://bench.example.test",
            "APP_SECRET": "bench",
            "LOG_LEVEL": "INFO",
            "ENABLE_WA_BAILEYS": "true",
            "WA_SHARED_SECRET": SECRET,
            "WA_BAILEYS_URL": "http://127.0.0.1:9",  # nothing is sent back: auto-replies are off
            "GOOGLE_SPEECH_EMULATOR_HOST": speech.address,
            "MEDIA_DIR": str(workdir / "media"),
            "JOBS_WORKERS": str(args.job_threads),
        }
        server = GunicornServer(
            env,
            workers=args.workers,
            log_path=workdir / f"gunicorn-{os.getpid()}.log",
            jobs_worker=True,
        )
        with server:
            events = [
                _event(business_id, index, long_note if index < args.long else short) for index in range(args.notes)
            ]
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                statuses = list(pool.map(lambda body: _post(server.url, body), events))
            sent_seconds = time.monotonic() - started
            done = _wait_for_transcripts(engine, args.notes, started + args.max_seconds)
            worker_log = server.jobs_worker.logs() if server.jobs_worker else ""
        with engine.connect() as conn:
            sizes = dict(conn.execute(sa.select(Media.message_id, Media.size)).all())
        engine.dispose()

    latencies = _latencies(worker_log)
    long_latencies = [ms for message_id, ms in latencies.items() if sizes.get(message_id) == len(long_note)]
    short_latencies = [ms for message_id, ms in latencies.items() if sizes.get(message_id) == len(short)]
    result = {
        "notes": args.notes,
        "long_notes": args.long,
        "short_seconds": args.seconds,
        "gunicorn_workers": args.workers,
        "job_threads": args.job_threads,
        "webhook_errors": sum(1 for status in statuses if status != 204),
        "posted_in_seconds": round(sent_seconds, 2),
        "done": done,
        "lost": args.notes - done,
        "recognize_calls": sum(1 for c in speech.recognize_calls if c["method"] == "Recognize"),
        "long_running_calls": sum(1 for c in speech.recognize_calls if c["method"] == "LongRunningRecognize"),
        "arrival_to_transcript_ms": _summary(list(latencies.values())),
        "short_notes_ms": _summary(short_latencies),
        "long_notes_ms": _summary(long_latencies),
    }
    for name, value in result.items():
        print(f"{name:>26}: {value}")
    print(json.dumps(result))


def _event(business_id: int, index: int, note: bytes) -> bytes:
    phone = f"+9725{index:08d}"
    event = {
        "event": "message",
        "business_id": business_id,
        "id": "3EB0" + secrets.token_hex(8).upper(),
        "chat": f"{phone.lstrip('+')}@s.whatsapp.net",
        "from": phone,
        "lid": None,
        "push_name": f"לקוח {index}",
        "text": "",
        "timestamp": int(time.time()),
        "to": BUSINESS_NUMBER,
        "media": {
            "kind": "audio",
            "mimetype": "audio/ogg; codecs=opus",
            "voice_note": True,
            "seconds": None,  # read from the file, as for a note whose sender didn't say
            "file_name": None,
            "caption": None,
            "size": len(note),
            "sha256": hashlib.sha256(note).hexdigest(),
            "data": base64.b64encode(note).decode(),
        },
    }
    return json.dumps(event, ensure_ascii=False).encode()


def _post(url: str, body: bytes) -> int:
    headers = {"Content-Type": "application/json", bridge_hmac.HEADER: bridge_hmac.sign(SECRET, body)}
    return requests.post(url + "/webhook/whatsapp/baileys", data=body, headers=headers, timeout=30).status_code


def _wait_for_transcripts(engine: sa.Engine, expected: int, deadline: float) -> int:
    done = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.scalar(
                sa.select(sa.func.count()).select_from(Message).where(Message.transcript_status == "done")
            )
        if done >= expected:
            break
        time.sleep(0.2)
    return done or 0


def _latencies(log: str) -> dict[int, int]:
    found = {}
    for line in log.splitlines():
        if '"voice_note_transcribed"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        found[record["message_id"]] = record["t_transcript_ms"]
    return found


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))],
        "max": ordered[-1],
    }


if __name__ == "__main__":
    main()

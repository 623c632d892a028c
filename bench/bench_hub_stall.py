"""Benchmark: live calls on one gevent worker while the same worker is hit by wrong-password logins
and its SQLite database's write lock is held by another process. Printed as JSON.

    python -m bench.bench_hub_stall [--calls 50] [--turns 4] [--login-rate 20] [--lock-hold-seconds 3]
                                    [--lock-every-seconds 8] [--login-limits off|default] [--no-pin]

Everything that runs on a gevent worker's loop (the hub) paces every call's audio, so anything that
blocks the hub shows up as outbound jitter and lost frames. Two things used to block it: a scrypt
password check (~120 ms of CPU each) and an SQLite write waiting for another connection's lock.
This bench starts the app under `gunicorn -k gevent -w 1` with the scripted providers of
`bench/bench_calls.py`, plays `--calls` callers, and meanwhile

* sends `--login-rate` wrong-password logins a second to the same worker. With `--login-limits off`
  (the default) the sign-in limits are raised out of reach, so every login is really hashed;
  `default` keeps the shipped limits (most tries are then refused with 429 before any hashing);
* (SQLite only) holds the database's write lock from another process for `--lock-hold-seconds`
  every `--lock-every-seconds` (`BEGIN IMMEDIATE` … `ROLLBACK`).

It prints bench_calls' figures (frames lost, outbound inter-arrival p50/p99, …) plus the logins'
answers, the lock holds, `/healthz` latency during the run, and whether the target holds:
outbound inter-arrival p99 ≤ 30 ms and no frame lost.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.bench_calls import (  # noqa: E402
    APP_SECRET,
    AUTH_TOKEN,
    BENCH_SCRIPT,
    ProcessMeter,
    report,
    run_call,
    scripted_providers,
    setup_database,
    spread,
    worker_pid,
)
from server.db.engine import Database  # noqa: E402
from server.db.models import Business, User  # noqa: E402
from server.security.passwords import hash_password  # noqa: E402
from testkit.servers import GunicornServer  # noqa: E402

TARGET_P99_MS = 30.0
ATTACKED_EMAIL = "owner@bench.test"
# Holds SQLite's write lock from its own process, as another writer (a migration, a backup, another
# instance on the same file) would.
LOCK_HOLDER = """
import sqlite3, sys, time
path, hold, every = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
conn = sqlite3.connect(path, timeout=60, isolation_level=None)
while True:
    time.sleep(max(0.0, every - hold))
    conn.execute("BEGIN IMMEDIATE")
    print("held", time.time(), flush=True)
    time.sleep(hold)
    conn.execute("ROLLBACK")
"""


def add_attacked_user(database_url: str, business_id: int) -> None:
    database = Database(database_url)
    with database.scope() as session:
        if session.scalar(sa.select(User.id).where(User.email == ATTACKED_EMAIL)) is None:
            session.add(
                User(
                    business_id=business_id,
                    email=ATTACKED_EMAIL,
                    password_hash=hash_password("the real one"),
                    role="owner",
                )
            )
        assert session.get(Business, business_id) is not None
    database.engine.dispose()


def login_attack(url: str, rate: float, answers: collections.Counter, latencies: list[float]) -> None:
    """`rate` wrong-password logins a second, each in its own greenlet (a slow answer doesn't slow the rate)."""
    pool = gevent.pool.Pool(400)

    def one() -> None:
        started = time.monotonic()
        try:
            status = requests.post(
                url + "/api/auth/login", json={"email": ATTACKED_EMAIL, "password": "wrong"}, timeout=30
            ).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        answers[status] += 1
        latencies.append((time.monotonic() - started) * 1000)

    due = time.monotonic()
    while True:
        due += 1 / rate
        pool.spawn(one)
        gevent.sleep(max(0.0, due - time.monotonic()))


def probe_healthz(url: str, latencies: list[float]) -> None:
    while True:
        started = time.monotonic()
        try:
            requests.get(url + "/healthz", timeout=30)
        except requests.RequestException:
            pass
        latencies.append((time.monotonic() - started) * 1000)
        gevent.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--login-rate", type=float, default=20.0, help="wrong logins a second (0: none)")
    parser.add_argument("--login-limits", choices=("off", "default"), default="off")
    parser.add_argument("--lock-hold-seconds", type=float, default=3.0, help="0: no lock holder")
    parser.add_argument("--lock-every-seconds", type=float, default=8.0)
    parser.add_argument("--ramp-seconds", type=float, default=2.0)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server (e.g. GEVENT_MONITOR_THREAD_ENABLE=true)",
    )
    args = parser.parse_args()
    args.providers = "scripted"

    workdir = Path(tempfile.mkdtemp(prefix="agentlocator-hub-stall-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    sqlite_path = sa.engine.make_url(database_url).database if database_url.startswith("sqlite") else None
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    limits = (
        {}
        if args.login_limits == "default"
        else {"LOGIN_LIMIT_PER_ADDRESS": "1000000/minute", "LOGIN_LIMIT_PER_ACCOUNT": "1000000/minute"}
    )
    with scripted_providers(BENCH_SCRIPT) as provider_env:
        server = GunicornServer(
            {
                "DATABASE_URL": database_url,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
                "APP_SECRET": APP_SECRET,
                "LOG_LEVEL": "INFO",
                **provider_env,
                **limits,
                **dict(item.split("=", 1) for item in args.server_env),
            },
            log_path=workdir / "server.log",
            extra_args=("--worker-connections", "2000"),
        )
        server.env["PUBLIC_BASE_URL"] = server.url
        with server:
            worker = worker_pid(server.process.pid)
            if pin:
                os.sched_setaffinity(server.process.pid, {0})
                os.sched_setaffinity(worker, {0})
                os.sched_setaffinity(0, {1})
            business_id, sids = setup_database(database_url, args.calls)
            add_attacked_user(database_url, business_id)
            meter = ProcessMeter(worker)
            idle_rss = meter.rss_kb()
            holder = None
            if sqlite_path and args.lock_hold_seconds > 0:
                holder = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        LOCK_HOLDER,
                        sqlite_path,
                        str(args.lock_hold_seconds),
                        str(args.lock_every_seconds),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            answers: collections.Counter = collections.Counter()
            login_ms: list[float] = []
            healthz_ms: list[float] = []
            background = [
                gevent.spawn(probe_healthz, server.url, healthz_ms),
                gevent.spawn(lambda: [(meter.rss_kb(), gevent.sleep(0.5)) for _ in iter(int, 1)]),
            ]
            if args.login_rate > 0:
                background.append(gevent.spawn(login_attack, server.url, args.login_rate, answers, login_ms))
            client_cpu_start = time.process_time()
            cpu_start, wall_start = meter.cpu_seconds(), time.monotonic()
            gc.disable()  # see bench_calls: a full collection would stall this client
            jobs = [
                gevent.spawn(
                    run_call, server.url, sid, business_id, args.turns, args.ramp_seconds * n / max(1, args.calls)
                )
                for n, sid in enumerate(sids)
            ]
            gevent.joinall(jobs)
            wall = time.monotonic() - wall_start
            cpu = meter.cpu_seconds() - cpu_start
            client_cpu = time.process_time() - client_cpu_start
            gevent.killall(background)
            holds = 0
            if holder is not None:
                holder.terminate()
                holds = sum(1 for line in holder.communicate(timeout=10)[0].splitlines() if line.startswith("held"))
            gevent.sleep(1.0)  # let the server log every ws_end
            log_text = server.logs()
    figures = report(
        SimpleNamespace(calls=args.calls, turns=args.turns, providers="scripted"),
        [job.value for job in jobs],
        log_text,
        cpu,
        wall,
        idle_rss,
        meter.peak_rss_kb,
        client_cpu,
        pin,
        database_url,
    )
    p99 = figures["outbound_interarrival_ms"]["p99"]
    lost = figures["frames_lost"]["inbound"] + figures["frames_lost"]["outbound"]
    figures["attack"] = {
        "login_rate_per_second": args.login_rate,
        "login_limits": args.login_limits,
        "login_answers": {str(status): count for status, count in sorted(answers.items(), key=str)},
        "login_latency_ms": spread(login_ms, 50, 99),
        "sqlite_lock": (
            {"hold_seconds": args.lock_hold_seconds, "every_seconds": args.lock_every_seconds, "holds": holds}
            if holder is not None
            else None
        ),
        "healthz_ms": spread(healthz_ms, 50, 99),
    }
    figures["target"] = {
        "outbound_interarrival_p99_ms": TARGET_P99_MS,
        "frames_lost": 0,
        "met": p99 is not None and p99 <= TARGET_P99_MS and lost == 0 and not figures["calls_lost"],
    }
    print(json.dumps(figures, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()

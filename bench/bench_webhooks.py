"""Benchmark the Twilio WhatsApp inbound webhook under real gunicorn (gevent workers) on PostgreSQL.

    python -m bench.bench_webhooks [--requests 2000] [--clients 16] [--workers 2] [--customers 200]
                                   [--admin-url postgresql://127.0.0.1:5432/test] [--max-seconds 120]

It creates a throwaway database from `--admin-url` (dropped at the end), starts
`gunicorn -k gevent -w N` on a loopback port, and sends signed `POST /webhook/whatsapp/twilio`
requests from `--clients` threads (keep-alive sessions; bodies and signatures are prepared before
the clock starts). Three passes, each printed with requests/s and p50/p99 latency:

1. baseline: a bare `GET /`, as many requests as pass 2;
2. unique: every webhook once;
3. doubled: every webhook twice, the two copies sent at the same moment from two clients (Twilio
   retries and manual replays).

After each webhook pass it counts the message rows against the unique MessageSids sent: `lost`
(sent, answered, not stored) and `duplicated` (stored more than once) must both be 0.
The last line is the whole result as JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from server.db.migrate import run_migrations
from server.db.models import Business, BusinessNumber, Message
from testkit.servers import GunicornServer

PUBLIC_BASE_URL = "https://bench.example.test"
AUTH_TOKEN = "bench-twilio-auth-token"
ACCOUNT_SID = "AC" + "b" * 32
BUSINESS_NUMBER = "+97235550002"
PATH = "/webhook/whatsapp/twilio"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="unique webhooks per pass")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn gevent workers")
    parser.add_argument("--customers", type=int, default=200, help="distinct senders (threads in the CRM)")
    parser.add_argument("--admin-url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending a pass after this long")
    args = parser.parse_args()

    with throwaway_database(args.admin_url) as database_url:
        engine = sa.create_engine(database_url)
        run_migrations(engine)
        with Session(engine) as session, session.begin():
            business = Business(name="Bench")
            session.add(business)
            session.flush()
            session.add(BusinessNumber(business_id=business.id, number=BUSINESS_NUMBER, kind="whatsapp"))
        env = {
            "DATABASE_URL": database_url,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "APP_SECRET": "bench",
            "LOG_LEVEL": "INFO",
        }
        log_path = Path(tempfile.gettempdir()) / f"bench-webhooks-{os.getpid()}.log"
        results = {"workers": args.workers, "clients": args.clients, "unique_requests": args.requests}
        with GunicornServer(env, workers=args.workers, log_path=log_path) as server:
            baseline = [("GET", server.url + "/", None, {})] * args.requests
            results["baseline_get_root"] = run_pass(baseline, args.clients, args.max_seconds)
            report("baseline GET /", results["baseline_get_root"])
            for name, copies in (("unique", 1), ("doubled", 2)):
                webhooks = signed_webhooks(server.url, args.requests, args.customers)
                jobs = [job for job in webhooks for _ in range(copies)]  # copies side by side: sent together
                outcome = run_pass(jobs, args.clients, args.max_seconds)
                sent_sids = [job[2]["MessageSid"] for job in webhooks[: outcome["sent"] // copies]]
                outcome.update(count_rows(engine, sent_sids))
                results[f"webhook_{name}"] = outcome
                report(f"webhook {name} (x{copies})", outcome)
        engine.dispose()
    print(json.dumps(results))


def signed_webhooks(server_url: str, count: int, customers: int) -> list[tuple]:
    """Inbound-message webhooks as Twilio sends them, signed over the public URL."""
    validator = RequestValidator(AUTH_TOKEN)
    jobs = []
    for n in range(count):
        sid = "SM" + secrets.token_hex(16)
        sender = f"+9725{n % customers:08d}"
        form = {
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ProfileName": f"לקוח {n % customers}",
            "MessageType": "text",
            "SmsSid": sid,
            "WaId": sender[1:],
            "SmsStatus": "received",
            "Body": f"הודעה מספר {n}",
            "To": f"whatsapp:{BUSINESS_NUMBER}",
            "NumSegments": "1",
            "ReferralNumMedia": "0",
            "MessageSid": sid,
            "AccountSid": ACCOUNT_SID,
            "From": f"whatsapp:{sender}",
            "ApiVersion": "2010-04-01",
        }
        headers = {
            "X-Twilio-Signature": validator.compute_signature(PUBLIC_BASE_URL + PATH, form),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        jobs.append(("POST", server_url + PATH, form, {"data": urlencode(form).encode(), "headers": headers}))
    return jobs


def run_pass(jobs: list[tuple], clients: int, max_seconds: float) -> dict:
    """Send `jobs` from `clients` threads pulling from one queue; time each request."""
    lock = threading.Lock()
    position = iter(range(len(jobs)))
    latencies: list[float] = []
    statuses: Counter = Counter()
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                index = next(position, None)
            if index is None:
                break
            method, url, _form, kwargs = jobs[index]
            started = time.perf_counter()
            try:
                status = session.request(method, url, timeout=30, **kwargs).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1
        session.close()

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "sent": len(latencies),
        "seconds": round(wall, 2),
        "requests_per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def count_rows(engine: sa.Engine, sids: list[str]) -> dict:
    """Rows stored for these MessageSids: every one exactly once."""
    with engine.connect() as conn:
        stored = Counter(
            conn.execute(
                sa.select(Message.provider_message_id).where(
                    Message.provider == "twilio", Message.provider_message_id.in_(sids)
                )
            ).scalars()
        )
    return {
        "unique_sent": len(sids),
        "rows": sum(stored.values()),
        "lost": sum(1 for sid in sids if sid not in stored),
        "duplicated": sum(count - 1 for count in stored.values() if count > 1),
    }


def report(name: str, outcome: dict) -> None:
    line = (
        f"{name:<22} {outcome['sent']:>6} req  {outcome['requests_per_second']:>8} req/s  "
        f"p50 {outcome['p50_ms']:>7} ms  p99 {outcome['p99_ms']:>7} ms  statuses {outcome['statuses']}"
    )
    if "rows" in outcome:
        line += (
            f"  rows {outcome['rows']}/{outcome['unique_sent']} lost {outcome['lost']}"
            f" duplicated {outcome['duplicated']}"
        )
    print(line, flush=True)


class throwaway_database:
    """A fresh PostgreSQL database next to `admin_url`, dropped on exit."""

    def __init__(self, admin_url: str):
        self.admin = sa.create_engine(
            admin_url.replace("postgresql://", "postgresql+psycopg2://", 1), isolation_level="AUTOCOMMIT"
        )
        self.name = f"agentlocator_bench_{uuid.uuid4().hex[:10]}"
        self.url = admin_url.rsplit("/", 1)[0] + "/" + self.name

    def __enter__(self) -> str:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return self.url.replace("postgresql://", "postgresql+psycopg2://", 1)

    def __exit__(self, *exc) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


if __name__ == "__main__":
    main()

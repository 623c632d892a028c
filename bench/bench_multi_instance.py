"""Two instances behind HAProxy, one of them SIGKILLed mid-run: what survives, what is lost.

    python -m bench.bench_multi_instance [--calls 20] [--turns 5] [--webhooks 200] [--kill-after 8]

It builds the production picture for several machines on this host:

    HAProxy (Debian's package: WebSockets, health checks on /readyz)
      → instance A and instance B, each the Procfile's `web` (gunicorn, `--web-workers` gevent workers) and
        `worker` (the jobs worker) lines, started together on a fresh database
      → one PostgreSQL (a private cluster, testkit/postgres.py) and one Redis (a private
        redis-server: the job queue and the sign-in limits, as REDIS_URL sets them up)

and the vendors at the network boundary: Twilio's REST API (testkit/fakes/twilio_rest.py) and the
scripted STT/LLM/TTS plug-in. Through HAProxy it places live calls the way Twilio does
(`incoming_call`, then the Media Stream from the TwiML, testkit/fakes/twilio_caller.py) and sends
signed WhatsApp webhooks, retried after a failed request as Twilio does; after `--kill-after`
seconds it SIGKILLs all of instance B (gunicorn master, workers and jobs worker). It prints:

* migrations: both instances started together apply each migration exactly once;
* calls on A (untouched: every turn answered, 0 frames lost, completed) and calls on B (cut by
  the kill: what the caller saw, what Twilio's `<Connect action>` got, what the CRM holds), and
  calls whose stream never opened (the watchdog job, run by whichever jobs worker, sends them to
  voicemail);
* webhooks: sent / stored / duplicates / lost, and AI replies: exactly one per message;
* idempotency keys, sign-in limits and the console's live events across instances;
* sizing: worker RSS at 0 calls and at the peak, database connections per process.

The last line is the whole result as JSON. Needs haproxy, redis-server and PostgreSQL's server
binaries (`apt-get install -y haproxy redis-server postgresql`).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterable, Iterator, Optional  # noqa: E402
from xml.etree import ElementTree  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from gevent.event import Event  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.bench_calls import ProcessMeter, spread  # noqa: E402
from bench.call_logs import count_losses, server_records  # noqa: E402
from server.db.migrate import migration_files  # noqa: E402
from server.db.models import Business, BusinessNumber, Call, CallTurn, Customer, Message, Thread, User  # noqa: E402
from server.security.auth import issue_token  # noqa: E402
from server.security.passwords import hash_password  # noqa: E402
from testkit.fakes.scripted_providers import speech  # noqa: E402
from testkit.fakes.twilio_caller import ReceivedMedia, TwilioCaller, new_sid, twilio_signature  # noqa: E402
from testkit.fakes.twilio_rest import FakeTwilioRest  # noqa: E402
from testkit.fakes.twilio_webhooks import signature_header, voice_params  # noqa: E402
from testkit.postgres import TemporaryPostgres  # noqa: E402
from testkit.procfile import start_process  # noqa: E402
from testkit.servers import free_port  # noqa: E402

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-multi-twilio-token"
APP_SECRET = "bench-multi-app-secret"
VOICE_NUMBER = "+97235550001"
AI_WA_NUMBER = "+97235550002"  # the business with AI replies
STAFF_WA_NUMBER = "+97235550003"  # a business without them, for staff replies
OWNER_EMAIL = "owner@multi.bench"
OWNER_PASSWORD = "correct horse battery"
LOGIN_LIMIT = 5  # sign-in tries per account per minute, for the shared-limit check
QUESTIONS = ("מה שעות הפתיחה שלכם מחר", "כמה עולה תספורת לילד", "אפשר לקבוע תור ליום שלישי", "איפה אתם נמצאים")
SCRIPT_ENV = {
    "VOICE_PROVIDERS": "testkit.fakes.scripted_providers:build",
    "SCRIPTED_STT_FINAL_MS": "300",
    "SCRIPTED_STT_INTERIM_MS": "200",
    "SCRIPTED_LLM_FIRST_TOKEN_MS": "400",
    "SCRIPTED_LLM_TOKEN_MS": "20",
    "SCRIPTED_TTS_MS": "150",
    "SCRIPTED_TTS_MS_PER_CHAR": "50",
    # what makes live AI "configured" (the scripted plug-in answers in their place)
    "OPENAI_API_KEY": "sk-bench",
    "GOOGLE_SPEECH_EMULATOR_HOST": "127.0.0.1:9",
    "GOOGLE_TTS_EMULATOR_HOST": "127.0.0.1:9",
}


# ---- the machines: Redis, the instances, the load balancer -------------------------------------
@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A redis-server of our own (no persistence), so no other user's keys share the queue."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=open(workdir / "redis.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _redis_ping(port), 10, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def _redis_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False


class Instance:
    """One machine's processes: the Procfile's `web` and `worker` lines, each in its own session."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "PORT": str(self.port)}
        self.web_log = workdir / f"{name}-web.log"
        self.worker_log = workdir / f"{name}-worker.log"
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        self.processes = [
            start_process("web", self.env, open(self.web_log, "wb")),
            start_process("worker", self.env, open(self.worker_log, "wb")),
        ]

    def wait_ready(self, timeout: float = 90) -> None:
        self.last_answer = ""
        try:
            wait_until(lambda: self._ready() and "Huey consumer started" in self.logs("worker"), timeout, self.name)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; /readyz answered {self.last_answer}") from None

    def _ready(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"instance {self.name} exited:\n{self.logs()[-3000:]}")
        try:
            response = requests.get(self.url + "/readyz", timeout=2)
        except requests.RequestException as exc:
            self.last_answer = type(exc).__name__
            return False
        self.last_answer = f"{response.status_code} {response.text[:300]}"
        return response.status_code == 200

    @property
    def web_worker_pids(self) -> list[int]:
        master = self.processes[0].pid  # bash execs the line's single command: this is gunicorn's master
        return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]

    @property
    def jobs_worker_pid(self) -> int:
        return self.processes[1].pid

    def kill(self) -> None:
        """SIGKILL every process of the instance at once, as a lost machine."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def logs(self, which: str = "web") -> str:
        path = self.web_log if which == "web" else self.worker_log
        return path.read_text(errors="replace") if path.exists() else ""


HAPROXY_CONFIG = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level admin

defaults
    mode http
    option forwardfor                  # the app reads the client from X-Forwarded-For (TRUSTED_PROXY_HOPS=1)
    option redispatch                  # a connection refused by a dead instance is retried on another
    retries 2
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout tunnel 1h                  # idle limit once upgraded: a call sends a frame every 20 ms
    timeout check 5s                   # a loaded instance may take over a second to answer /readyz

frontend public
    bind 127.0.0.1:{port}
    default_backend app

backend app
    balance leastconn                  # calls are long-lived connections: spread them by count
    option httpchk GET /readyz         # 503 while draining or without the database: no new work
    http-check expect status 200
    default-server inter 1s fastinter 250ms fall 3 rise 2
{servers}
"""


class HAProxy:
    def __init__(self, instances: list[Instance], workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = workdir / "haproxy.sock"
        self.config = workdir / "haproxy.cfg"
        servers = "\n".join(f"    server {i.name} 127.0.0.1:{i.port} check" for i in instances)
        self.config.write_text(HAPROXY_CONFIG.format(socket=self.socket, port=self.port, servers=servers))
        self.log = workdir / "haproxy.log"

    def __enter__(self) -> "HAProxy":
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        subprocess.run([haproxy, "-c", "-q", "-f", str(self.config)], check=True)
        self.process = subprocess.Popen(
            [haproxy, "-db", "-f", str(self.config)], stdout=open(self.log, "wb"), stderr=subprocess.STDOUT
        )
        wait_until(self.socket.exists, 10, "haproxy")
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(10)

    def server_states(self) -> dict[str, str]:
        """Each instance's state as HAProxy's health checks see it (UP, DOWN, DRAIN …)."""
        return {name: row["status"] for name, row in self._servers().items()}

    def check_durations_ms(self) -> dict[str, int]:
        """How long each instance took to answer its last health check."""
        return {name: int(row["check_duration"] or 0) for name, row in self._servers().items()}

    def _servers(self) -> dict[str, dict]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket))
            sock.sendall(b"show stat\n")
            raw = b"".join(iter(lambda: sock.recv(65536), b""))
        rows = csv.DictReader(io.StringIO(raw.decode().lstrip("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "app" and row["svname"] != "BACKEND"}

    def times_marked_down(self, since: int = 0) -> Counter:
        """How often each instance was taken out of rotation (from HAProxy's log, after byte `since`)."""
        text = self.log.read_bytes()[since:].decode(errors="replace")
        found = re.findall(r"Server app/(\w+) is DOWN, reason: ([^,]+)", text)
        return Counter(f"{name}: {reason}" for name, reason in found)


@contextlib.contextmanager
def stopped_at_exit(*instances: Instance) -> Iterator[None]:
    try:
        yield
    finally:
        for instance in instances:
            instance.stop()


def wait_until(check, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        gevent.sleep(every)
    raise RuntimeError(f"{what}: not ready within {timeout:g} s")


# ---- Twilio's side: webhooks and calls ----------------------------------------------------------
def post_signed(
    base_url: str, public_url: str, path: str, form: dict[str, str], timeout: float = 10
) -> requests.Response:
    """POST a form as Twilio does: signed over the public URL it was configured with."""
    return requests.post(
        base_url + path, data=form, headers=signature_header(public_url + path, form, AUTH_TOKEN), timeout=timeout
    )


def whatsapp_form(sid: str, sender: str, to: str, body: str) -> dict[str, str]:
    return {
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ProfileName": "לקוח",
        "MessageType": "text",
        "SmsSid": sid,
        "WaId": sender[1:],
        "SmsStatus": "received",
        "Body": body,
        "To": f"whatsapp:{to}",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": f"whatsapp:{sender}",
        "ApiVersion": "2010-04-01",
    }


@dataclass
class Delivery:
    """One WhatsApp message as the sender (Twilio) delivered it, retries included."""

    sid: str
    sender: str
    body: str
    copies: int = 1  # sent this many times at once at first (a duplicate delivery)
    attempts: int = 0
    statuses: list = field(default_factory=list)
    delivered: bool = False


def deliver(base_url: str, public_url: str, delivery: Delivery, attempts: int = 6) -> Delivery:
    """Send until a 2xx, backing off after a failed request (an error status, a cut connection) as Twilio
    does; the first try goes `delivery.copies` times at once."""
    form = whatsapp_form(delivery.sid, delivery.sender, AI_WA_NUMBER, delivery.body)
    for attempt in range(attempts):
        copies = delivery.copies if attempt == 0 else 1
        tries = [gevent.spawn(_try_post, base_url, public_url, "/webhook/whatsapp/twilio", form) for _ in range(copies)]
        gevent.joinall(tries)
        delivery.attempts += len(tries)
        delivery.statuses += [t.value for t in tries]
        if any(isinstance(t.value, int) and 200 <= t.value < 300 for t in tries):
            delivery.delivered = True
            return delivery
        gevent.sleep(0.5 * 2**attempt)
    return delivery


def _try_post(base_url: str, public_url: str, path: str, form: dict[str, str]) -> int | str:
    """The answer's status, or the kind of failure (a cut connection, a timeout)."""
    try:
        return post_signed(base_url, public_url, path, form).status_code
    except requests.RequestException as exc:
        return type(exc).__name__


@dataclass
class CallRun:
    call_sid: str
    caller: Optional[TwilioCaller] = None
    turns_answered: int = 0
    hung_up: bool = False  # the caller ended it (not cut off)
    action_twiml: str = ""  # what `<Connect action>` answered after the stream was cut
    action_status: int | str = ""  # and its status (or the kind of failure)
    error: str = ""


def place_call(lb_url: str, call_sid: str, caller_number: str, turns: int, start_delay: float) -> CallRun:
    """A call as Twilio places it: `incoming_call`, the `<Stream>` of its TwiML through the load
    balancer, a few turns, then hang-up and the final status callback. When the stream is cut,
    Twilio asks the `<Connect action>` URL what to do next."""
    run = CallRun(call_sid)
    gevent.sleep(start_delay)
    try:
        twiml = post_signed(
            lb_url, lb_url, "/webhook/incoming_call", voice_params(call_sid, to=VOICE_NUMBER, from_=caller_number)
        ).text
        connect = ElementTree.fromstring(twiml).find("Connect")
        stream = connect.find("Stream")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        caller = run.caller = TwilioCaller(
            stream.get("url"),
            call_sid=call_sid,
            signature=twilio_signature(AUTH_TOKEN, stream.get("url")),
            custom_parameters=parameters,
            account_sid=ACCOUNT_SID,
        )
        caller.start()
        if not caller.wait_for(lambda c: c.marks_echoed >= 1 or c.closed.is_set(), 20):
            raise RuntimeError("no opening line")
        caller.wait_until_quiet(0.3, 20)
        for turn in range(turns):
            if caller.closed.is_set():
                break
            spoken = caller.play(speech(QUESTIONS[turn % len(QUESTIONS)], 900))
            replied = caller.wait_for(_replied_or_closed(spoken.last_sent_at), 10)
            if caller.closed.is_set():
                break
            if not replied:
                raise RuntimeError(f"no reply to turn {turn + 1}")
            run.turns_answered += 1
            caller.wait_until_quiet(0.4, 30)
        if caller.closed.is_set():
            action = connect.get("action")
            form = voice_params(call_sid, to=VOICE_NUMBER, from_=caller_number, status="in-progress")
            try:
                answer = post_signed(lb_url, lb_url, action[len(lb_url) :], form)
                run.action_status, run.action_twiml = answer.status_code, answer.text
            except requests.RequestException as exc:
                run.action_status = type(exc).__name__
        else:
            caller.hang_up()
            run.hung_up = True
        final = voice_params(call_sid, to=VOICE_NUMBER, from_=caller_number, status="completed", CallDuration="30")
        post_signed(lb_url, lb_url, "/webhook/call_status", final)
    except Exception as exc:  # one broken call must not hide the others' figures
        run.error = f"{type(exc).__name__}: {exc}"
        if run.caller is not None:
            run.caller.close()
    return run


def _replied_or_closed(spoke_until: Optional[float]):
    return lambda caller: caller.closed.is_set() or _media_after(caller, spoke_until)


def _media_after(caller: TwilioCaller, after: Optional[float]) -> bool:
    return after is not None and any(
        isinstance(e, ReceivedMedia) and e.at > after for e in reversed(caller.events[-50:])
    )


# ---- checks across instances --------------------------------------------------------------------
def check_migrations(engine: sa.Engine, instances: list[Instance]) -> dict:
    expected = sorted(p.stem for p in migration_files())
    with engine.connect() as conn:
        recorded = sorted(conn.execute(sa.text("SELECT name FROM schema_migrations")).scalars())
    applied = Counter()
    for instance in instances:
        for text in (instance.logs("web"), instance.logs("worker")):
            for record in json_lines(text):
                if record.get("event") == "migration_applied":
                    applied[record["migration"]] += 1
    return {
        "files": len(expected),
        "recorded": len(recorded),
        "applied_once": sum(1 for name in expected if applied[name] == 1),
        "applied_twice_or_more": sorted(name for name, n in applied.items() if n > 1),
        # every web worker and every jobs worker migrates at start (gunicorn's master doesn't)
        "migrating_processes": sum(len(i.web_worker_pids) + 1 for i in instances),
        "ok": recorded == expected and all(applied[name] == 1 for name in expected),
    }


def check_login_limit(instances: list[Instance]) -> dict:
    """Wrong passwords for one account, alternately on each instance: the limit counts them together."""
    statuses = []
    for n in range(LOGIN_LIMIT + 3):
        url = instances[n % len(instances)].url + "/api/auth/login"
        statuses.append(
            requests.post(url, json={"email": OWNER_EMAIL, "password": f"wrong {n}"}, timeout=10).status_code
        )
    return {"limit": LOGIN_LIMIT, "statuses": statuses, "ok": statuses == [401] * LOGIN_LIMIT + [429] * 3}


def check_idempotency(instances: list[Instance], token: str, thread_id: int, twilio: FakeTwilioRest, keys: int) -> dict:
    """The same Idempotency-Key sent to both instances at the same moment, then again to each: one
    message goes out per key, and the repeats answer the first result."""
    headers = {"Authorization": f"Bearer {token}"}
    sent_before = len(twilio.requests_for("Messages"))
    outcomes = Counter()
    consistent = 0

    def send(instance: Instance, key: str, text: str) -> tuple[int, dict]:
        response = requests.post(
            f"{instance.url}/api/crm/threads/{thread_id}/messages",
            json={"text": text},
            headers={**headers, "Idempotency-Key": key},
            timeout=15,
        )
        return response.status_code, response.json()

    for n in range(keys):
        key, text = f"bench-key-{n}", f"תשובה {n}"
        racing = [gevent.spawn(send, instance, key, text) for instance in instances]
        gevent.joinall(racing)
        outcomes.update(str(r.value[0]) for r in racing)
        repeats = [send(instance, key, text) for instance in instances]
        ids = {body.get("message_id") for status, body in repeats}
        consistent += len(ids) == 1 and all(status == 200 for status, _ in repeats)
    went_out = len(twilio.requests_for("Messages")) - sent_before
    return {
        "keys": keys,
        "racing_answers": dict(outcomes),
        "messages_sent": went_out,
        "repeats_answer_the_first_result": consistent,
        "ok": went_out == keys and consistent == keys,
    }


def check_live_events(a: Instance, b: Instance, public_url: str, token: str, engine: sa.Engine, count: int) -> dict:
    """A console's event stream held by A sees each message that arrives through B."""
    seen: dict[int, float] = {}
    ready = Event()

    def listen() -> None:
        with requests.get(
            a.url + "/api/crm/events", headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=60
        ) as response:
            kind = None
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    kind = line[7:]
                    if kind == "ready":
                        ready.set()
                elif line.startswith("data: ") and kind == "message":
                    seen.setdefault(json.loads(line[6:])["message_id"], time.monotonic())

    listener = gevent.spawn(listen)
    ready.wait(10)
    latencies, missing = [], 0
    for n in range(count):
        sid = new_sid("SM")
        sent_at = time.monotonic()
        post_signed(
            b.url, public_url, "/webhook/whatsapp/twilio", whatsapp_form(sid, f"+97254{n:07d}", AI_WA_NUMBER, f"חי {n}")
        )
        with engine.connect() as conn:
            message_id = conn.execute(sa.select(Message.id).where(Message.provider_message_id == sid)).scalar_one()
        deadline = time.monotonic() + 5
        while message_id not in seen and time.monotonic() < deadline:
            gevent.sleep(0.02)
        if message_id in seen:
            latencies.append((seen[message_id] - sent_at) * 1000)
        else:
            missing += 1
    listener.kill()
    return {
        "messages": count,
        "seen_on_a": len(latencies),
        "missing": missing,
        "latency_ms": spread(latencies, 50, 95),
        "ok": missing == 0,
    }


# ---- what the CRM holds afterwards --------------------------------------------------------------
def webhook_outcome(engine: sa.Engine, deliveries: list[Delivery]) -> dict:
    sids = [d.sid for d in deliveries]
    with engine.connect() as conn:
        stored = Counter(
            conn.execute(sa.select(Message.provider_message_id).where(Message.provider_message_id.in_(sids))).scalars()
        )
    return {
        "sent": len(deliveries),
        "requests": sum(d.attempts for d in deliveries),
        "delivered_twice_at_once": sum(1 for d in deliveries if d.copies > 1),
        "retried_after_a_failed_request": sum(1 for d in deliveries if d.attempts > d.copies),
        "failed_requests": Counter(
            str(s) for d in deliveries for s in d.statuses if not (isinstance(s, int) and s < 300)
        ),
        "answered_2xx": sum(d.delivered for d in deliveries),
        "stored": len(stored),
        "duplicates": sum(n - 1 for n in stored.values()),
        "lost": sum(1 for sid in sids if sid not in stored),
        "lost_sids": [sid for sid in sids if sid not in stored][:5],
    }


def ai_reply_outcome(engine: sa.Engine, deliveries: list[Delivery]) -> dict:
    """Each customer's messages, and the AI's replies in their thread. The scripted model answers the
    newest message in its context ("שמעתי: <text>. …"), so a reply names the message it answered;
    earlier ones are answered with it (coalesced). Exactly once: every customer's newest message is
    answered, and no message twice."""
    bodies = {d.body for d in deliveries}
    senders = sorted({d.sender for d in deliveries})
    answered = Counter()
    unanswered: list[int] = []  # the ids of the newest messages nobody answered, to look up in the logs
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Message.id, Message.thread_id, Message.direction, Message.body, Message.sender_user_id)
            .join(Thread, Thread.id == Message.thread_id)
            .where(Message.business_id == _business_id(conn, AI_WA_NUMBER))
            .order_by(Message.thread_id, Message.id)
        ).all()
    by_thread: dict[int, list] = {}
    for row in rows:
        by_thread.setdefault(row.thread_id, []).append(row)
    for messages in by_thread.values():
        inbound = [m for m in messages if m.direction == "in" and m.body in bodies]
        if not inbound:
            continue
        replies = [m.body for m in messages if m.direction == "out" and m.sender_user_id is None]
        for reply in replies:
            match = re.match(r"שמעתי: (.*?)\. ", reply)
            if match:
                answered[match.group(1)] += 1
        if answered[inbound[-1].body] == 0:
            unanswered.append(inbound[-1].id)
    return {
        "customers": len(senders),
        "messages": len(bodies),
        "replies": sum(answered.values()),
        "answered_twice": sum(1 for n in answered.values() if n > 1),
        "customers_left_unanswered": len(unanswered),
        "unanswered_message_ids": unanswered,
        "ok": not unanswered and all(n == 1 for n in answered.values()),
    }


def _business_id(conn: sa.Connection, whatsapp_number: str) -> int:
    return conn.execute(
        sa.select(BusinessNumber.business_id).where(BusinessNumber.number == whatsapp_number)
    ).scalar_one()


def call_outcome(engine: sa.Engine, runs: list[CallRun], instance: Instance) -> dict:
    ends, _ = server_records(instance.logs("web"))
    losses = count_losses(
        [(r.call_sid, r.caller.frames_sent if r.caller else 0, len(r.caller.media) if r.caller else 0) for r in runs],
        ends,
    )
    sids = [r.call_sid for r in runs]
    with engine.connect() as conn:
        calls = {c.call_sid: c for c in conn.execute(sa.select(Call).where(Call.call_sid.in_(sids))).all()}
        turns = conn.execute(
            sa.select(sa.func.count())
            .select_from(CallTurn)
            .join(Call, Call.id == CallTurn.call_id)
            .where(Call.call_sid.in_(sids))
        ).scalar_one()
    cut = [r for r in runs if r.caller is not None and not r.hung_up]
    return {
        "calls": len(runs),
        "errors": [f"{r.call_sid}: {r.error}" for r in runs if r.error][:5],
        "hung_up_by_caller": sum(r.hung_up for r in runs),
        "cut_off": len(cut),
        "cut_off_close_codes": dict(Counter(str(r.caller.close_code) for r in cut)),
        "turns_answered": sum(r.turns_answered for r in runs),
        "stream_ended_cleanly": sum(1 for sid in sids if sid in ends),
        # over the calls the server ended cleanly (a killed worker leaves no count to compare with)
        "frames_lost": {"inbound": losses.inbound_frames, "outbound": losses.outbound_frames},
        "no_server_end_record": len(losses.lost_calls),
        "action_answered_voicemail": sum(1 for r in runs if "<Record" in r.action_twiml),
        "action_answers": dict(Counter(str(r.action_status) for r in cut)),
        "completed_in_crm": sum(
            1 for sid in sids if sid in calls and calls[sid].status == "completed" and calls[sid].ended_at is not None
        ),
        "stream_ended_recorded": sum(1 for sid in sids if sid in calls and calls[sid].stream_ended_at is not None),
        "turns_stored": turns,
    }


# ---- sizing -------------------------------------------------------------------------------------
def rss_mb(pids: list[int]) -> list[float]:
    return [round(ProcessMeter(pid).rss_kb() / 1024, 1) for pid in pids]


def database_connections(engine: sa.Engine, pg_port: int, processes: dict[str, list[int]]) -> dict[str, int]:
    """Open connections to the database per process kind, matched by socket: the client port of each
    `pg_stat_activity` row is a socket that one of the processes holds."""
    with engine.connect() as conn:
        ports = set(
            conn.execute(
                sa.text(
                    "SELECT client_port FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
        )
    port_of_inode = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local_port, remote_port = int(parts[1].split(":")[1], 16), int(parts[2].split(":")[1], 16)
        if remote_port == pg_port:
            port_of_inode[parts[9]] = local_port
    counts = {}
    for kind, pids in processes.items():
        counts[kind] = sum(len(ports & _socket_ports(pid, port_of_inode)) for pid in pids)
    counts["total"] = len(ports)
    return counts


def _socket_ports(pid: int, port_of_inode: dict[str, int]) -> set[int]:
    found = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inode = target[8:-1]
                    if inode in port_of_inode:
                        found.add(port_of_inode[inode])
    return found


# ---- the run ------------------------------------------------------------------------------------
def seed(engine: sa.Engine) -> dict:
    with Session(engine) as session, session.begin():
        ai = Business(name="מספרת הבנץ'", ai_instructions="מספרה לכל המשפחה.", features={"wa_auto_reply": True})
        staff = Business(name="סטודיו יוגה", features={})
        session.add_all([ai, staff])
        session.flush()
        session.add_all(
            [
                BusinessNumber(business_id=ai.id, number=VOICE_NUMBER, kind="voice"),
                BusinessNumber(business_id=ai.id, number=AI_WA_NUMBER, kind="whatsapp"),
                BusinessNumber(business_id=staff.id, number=STAFF_WA_NUMBER, kind="whatsapp"),
            ]
        )
        owner = User(business_id=ai.id, email=OWNER_EMAIL, password_hash=hash_password(OWNER_PASSWORD), role="owner")
        staff_owner = User(business_id=staff.id, email="owner@yoga.bench", password_hash="-", role="owner")
        session.add_all([owner, staff_owner])
        session.flush()
        return {"owner_token": issue_token(session, owner), "staff_token": issue_token(session, staff_owner)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="live calls through the load balancer")
    parser.add_argument("--turns", type=int, default=5, help="caller turns per call")
    parser.add_argument("--webhooks", type=int, default=200, help="WhatsApp messages (two per customer)")
    parser.add_argument("--duplicate-every", type=int, default=10, help="every Nth message is delivered twice at once")
    parser.add_argument("--unstarted-calls", type=int, default=4, help="calls whose media stream never opens")
    parser.add_argument("--kill-after", type=float, default=8.0, help="seconds into the load before B is killed")
    parser.add_argument("--checks", type=int, default=5, help="idempotency keys and live-event messages to try")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers per instance (WEB_CONCURRENCY)")
    args = parser.parse_args()
    for tool in ("haproxy", "redis-server"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (apt-get install -y {tool})")

    workdir = Path(tempfile.mkdtemp(prefix="agentlocator-multi-"))
    # The machine's other load shows in every figure: a busy host makes a slow instance.
    results: dict = {"config": vars(args), "workdir": str(workdir), "load_average_at_start": os.getloadavg()}
    with (
        TemporaryPostgres() as pg,
        private_redis(workdir) as redis_url,
        FakeTwilioRest(ACCOUNT_SID, AUTH_TOKEN) as twilio,
    ):
        engine = sa.create_engine(pg.url)
        env = {
            **os.environ,
            **SCRIPT_ENV,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # what the build step installed
            "DATABASE_URL": pg.url,
            "REDIS_URL": redis_url,
            "WEB_CONCURRENCY": str(args.web_workers),
            "APP_SECRET": APP_SECRET,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": twilio.url,
            "ENABLE_WA_TWILIO": "true",
            "TWILIO_WA_FROM": f"whatsapp:{AI_WA_NUMBER}",
            "TRUSTED_PROXY_HOPS": "1",
            "LOGIN_LIMIT_PER_ACCOUNT": f"{LOGIN_LIMIT}/minute",
            "JOBS_LEASE_SECONDS": "5",  # a killed jobs worker's jobs run again within ~15 s
            "WATCHDOG_SECONDS": "4",
            "SHUTDOWN_GRACE_SECONDS": "5",
            "LOG_LEVEL": "INFO",
        }
        a, b = Instance("a", env, workdir), Instance("b", env, workdir)
        with HAProxy([a, b], workdir) as lb, stopped_at_exit(a, b):
            for instance in (a, b):
                instance.env["PUBLIC_BASE_URL"] = lb.url
            started = time.monotonic()
            for instance in (a, b):  # together, on the empty database
                instance.start()
            for instance in (a, b):
                instance.wait_ready()
            results["startup_seconds"] = round(time.monotonic() - started, 1)
            wait_until(lambda: set(lb.server_states().values()) == {"UP"}, 15, "haproxy health checks")
            results["migrations"] = check_migrations(engine, [a, b])
            tokens = seed(engine)
            print(f"up: {results['startup_seconds']} s; migrations {results['migrations']}", flush=True)

            results["login_limit_across_instances"] = check_login_limit([a, b])
            staff_customer = "+972521111111"
            post_signed(
                lb.url,
                lb.url,
                "/webhook/whatsapp/twilio",
                whatsapp_form(new_sid("SM"), staff_customer, STAFF_WA_NUMBER, "שלום"),
            )
            with engine.connect() as conn:
                staff_thread = conn.execute(
                    sa.select(Message.thread_id).where(
                        Message.body == "שלום", Message.business_id == _business_id(conn, STAFF_WA_NUMBER)
                    )
                ).scalar_one()
            results["idempotency_across_instances"] = check_idempotency(
                [a, b], tokens["staff_token"], staff_thread, twilio, args.checks
            )
            results["live_events_b_to_a"] = check_live_events(a, b, lb.url, tokens["owner_token"], engine, args.checks)
            for name in ("login_limit_across_instances", "idempotency_across_instances", "live_events_b_to_a"):
                print(f"{name}: {results[name]}", flush=True)

            processes = {
                "web_worker": a.web_worker_pids + b.web_worker_pids,
                "jobs_worker": [a.jobs_worker_pid, b.jobs_worker_pid],
            }
            idle = {
                "web_worker_rss_mb": rss_mb(processes["web_worker"]),
                "db_connections": database_connections(engine, pg.port, processes),
            }

            # ---- the load, and the kill -------------------------------------------------------
            kill_at = time.monotonic() + args.kill_after
            runs = [
                gevent.spawn(
                    place_call, lb.url, new_sid("CA"), f"+97250{n:07d}", args.turns, 2.0 * n / max(1, args.calls)
                )
                for n in range(args.calls)
            ]
            deliveries = [
                Delivery(
                    new_sid("SM"),
                    f"+97253{n // 2:07d}",
                    f"הודעה {n} מהלקוח {n // 2}",
                    copies=2 if n % args.duplicate_every == 0 else 1,
                )
                for n in range(args.webhooks)
            ]
            spacing = (args.kill_after * 2) / max(1, args.webhooks)  # spread over the kill, before and after
            senders = [gevent.spawn_later(n * spacing, deliver, lb.url, lb.url, d) for n, d in enumerate(deliveries)]
            peak = {"web_worker_rss_mb": idle["web_worker_rss_mb"], "db_connections": idle["db_connections"]}
            check_ms: list[float] = []
            lb_log_mark = lb.log.stat().st_size
            while time.monotonic() < kill_at - 1.5:
                gevent.sleep(0.5)
                rss = rss_mb(processes["web_worker"])
                if sum(rss) > sum(peak["web_worker_rss_mb"]):
                    peak["web_worker_rss_mb"] = rss
                connections = database_connections(engine, pg.port, processes)
                if connections["total"] > peak["db_connections"]["total"]:
                    peak["db_connections"] = connections
                check_ms += list(lb.check_durations_ms().values())
            live_at_kill = sum(1 for r in runs if not r.ready())
            unstarted = [new_sid("CA") for _ in range(args.unstarted_calls)]
            unstarted_answers = Counter(  # TwiML served, but Twilio never opens the stream
                _try_post(lb.url, lb.url, "/webhook/incoming_call", voice_params(sid, to=VOICE_NUMBER))
                for sid in unstarted
            )
            gevent.sleep(max(0.0, kill_at - time.monotonic()))
            b.kill()
            killed_at = time.monotonic()
            print(f"killed instance b ({live_at_kill} calls live)", flush=True)
            wait_until(lambda: lb.server_states().get("b") == "DOWN", 15, "haproxy marking b down", 0.05)
            results["seconds_until_lb_marked_b_down"] = round(time.monotonic() - killed_at, 2)
            gevent.joinall(runs + senders)
            call_runs = [r.value for r in runs]

            # Jobs the killed worker held run again once their lease is over; give them time.
            # So do webhooks an instance queued because the database was slow to answer. A reply
            # whose sender was killed mid-send is given up when its job runs again (see below): the
            # wait is over once every unanswered customer is one of those.
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (
                ai_reply_outcome(engine, deliveries)["customers_left_unanswered"] <= replies_given_up((a, b))
                and webhook_outcome(engine, deliveries)["lost"] == 0
            ):
                gevent.sleep(1)
            results["seconds_from_kill_to_everything_answered"] = round(time.monotonic() - killed_at, 1)
            redirected = {r.sid for r in twilio.requests_for("Calls") if "Twiml" in r.form}

            on_a = streams_started(a)
            results["calls_on_surviving_instance"] = call_outcome(
                engine, [r for r in call_runs if r.call_sid in on_a], a
            )
            results["calls_on_killed_instance"] = call_outcome(
                engine, [r for r in call_runs if r.call_sid not in on_a], b
            )
            results["calls_never_streamed"] = {
                "calls": len(unstarted),
                "incoming_call_answers": dict(unstarted_answers),
                "sent_to_voicemail_by_watchdog": len(redirected & set(unstarted)),
            }
            results["load_balancer"] = {
                "readyz_check_ms_under_load": spread(check_ms, 50, 95),
                "taken_out_of_rotation": dict(lb.times_marked_down(lb_log_mark)),
            }
            results["webhooks"] = webhook_outcome(engine, deliveries)
            results["webhooks"]["queued_while_the_database_was_slow"] = sum(
                i.logs("web").count('"event": "whatsapp_webhook_queued"') for i in (a, b)
            )
            results["ai_replies"] = ai_reply_outcome(engine, deliveries)
            # A reply whose sender was killed mid-send keeps its idempotency key "in use": it is never
            # sent again (at most once), so it either reached the customer unrecorded or not at all.
            sent_to = {r.form.get("To", "") for r in twilio.requests_for("Messages")}
            with engine.connect() as conn:
                unanswered_senders = conn.execute(
                    sa.select(Customer.phone)
                    .join(Thread, Thread.customer_id == Customer.id)
                    .join(Message, Message.thread_id == Thread.id)
                    .where(Message.id.in_(results["ai_replies"]["unanswered_message_ids"]))
                ).scalars()
                results["ai_replies"]["unanswered_but_a_reply_reached_twilio"] = sum(
                    1 for number in unanswered_senders if f"whatsapp:{number}" in sent_to
                )
            results["ai_replies"]["given_up_as_sent_by_a_killed_worker"] = replies_given_up((a, b))
            results["sizing"] = {
                "calls": args.calls,
                "web_workers": len(processes["web_worker"]),
                "idle": idle,
                "peak_before_kill": peak,
                "rss_kb_per_call": round(
                    (sum(peak["web_worker_rss_mb"]) - sum(idle["web_worker_rss_mb"])) * 1024 / max(1, args.calls), 1
                ),
                "jobs_worker_rss_mb": rss_mb([a.jobs_worker_pid]),
            }
        engine.dispose()
    results["load_average_at_end"] = os.getloadavg()
    report(results)
    print(json.dumps(results, ensure_ascii=False, default=str))


def replies_given_up(instances: Iterable[Instance]) -> int:
    """AI replies the jobs workers gave up because a killed worker had begun sending them."""
    return sum(
        1
        for instance in instances
        for record in json_lines(instance.logs("worker"))
        if record.get("event") == "wa_auto_reply" and record.get("error") == "idempotency_key_in_use"
    )


def streams_started(instance: Instance) -> set[str]:
    """The calls whose media stream this instance served."""
    return {r["call_sid"] for r in json_lines(instance.logs("web")) if r.get("event") == "ws_start"}


def json_lines(text: str) -> Iterator[dict]:
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def report(results: dict) -> None:
    for name in (
        "load_average_at_start",
        "migrations",
        "calls_on_surviving_instance",
        "calls_on_killed_instance",
        "calls_never_streamed",
        "load_balancer",
        "seconds_from_kill_to_everything_answered",
        "webhooks",
        "ai_replies",
        "sizing",
    ):
        print(f"{name}: {json.dumps(results.get(name), ensure_ascii=False, default=str)}", flush=True)


if __name__ == "__main__":
    main()

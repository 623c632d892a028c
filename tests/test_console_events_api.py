"""`GET /api/crm/events` over HTTP: authentication (cookie or bearer), a bad Last-Event-ID, and the
cross-worker promise on real gunicorn: two gevent workers (plus a second instance) on one database,
signed inbound WhatsApp webhooks posted to whichever worker the kernel picks, and every event
arriving on one SSE connection within 2 s. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
import requests
from twilio.request_validator import RequestValidator

from server.app_state import services
from server.security import bridge_hmac
from server.security.sessions import COOKIE_NAME
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN, create_tenant
from tests.test_whatsapp_support import (  # noqa: F401
    BAILEYS,
    TWILIO_INBOUND,
    WA_SECRET,
    bridge,
    bridge_message,
    bridge_server,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_env,
)

DELIVERY_DEADLINE = 2.0


def first_chunk(response) -> str:
    chunk = next(iter(response.response))
    response.close()
    return chunk.decode() if isinstance(chunk, bytes) else chunk


def test_the_stream_needs_a_session_or_token_and_starts_with_ready(client, tenant):
    assert client.get("/api/crm/events").status_code == 401
    response = client.get("/api/crm/events", headers=tenant.headers, buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store" and response.headers["X-Accel-Buffering"] == "no"
    chunk = first_chunk(response)
    assert chunk.startswith("retry: ") and "\nevent: ready\n" in chunk
    client.post("/api/auth/session", json={"email": _email(client, tenant), "password": "correct horse"})
    with_cookie = client.get("/api/crm/events", buffered=False)
    assert with_cookie.status_code == 200 and "event: ready" in first_chunk(with_cookie)


def test_a_head_request_holds_no_stream_open(client, app, tenant):
    response = client.head("/api/crm/events", headers=tenant.headers)
    assert response.status_code == 200 and response.mimetype == "text/event-stream" and response.data == b""
    hub = services(app).event_hub
    assert hub is None or hub.subscriber_count == 0


def test_a_malformed_last_event_id_is_400(client, tenant):
    for bad in ("abc", "-1", "1.5", "9" * 19, ""):
        response = client.get("/api/crm/events", headers={**tenant.headers, "Last-Event-ID": bad})
        assert response.status_code == 400 and response.json["field"] == "Last-Event-ID", bad


def _email(client, tenant) -> str:
    return client.get("/api/crm/users", headers=tenant.headers).json["items"][0]["email"]


class EventListener:
    """One browser's EventSource: a streamed GET read line by line in a thread."""

    def __init__(self, url: str, headers: dict[str, str]):
        self.response = requests.get(url + "/api/crm/events", headers=headers, stream=True, timeout=(5, 60))
        assert self.response.status_code == 200, self.response.text
        self.events: list[tuple[float, str, dict]] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.ready.wait(5)

    def _read(self) -> None:
        kind = None
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: ") and kind:
                    self.events.append((time.monotonic(), kind, json.loads(line[len("data: ") :])))
                    if kind == "ready":
                        self.ready.set()
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test

    def message_arrival(self, message_count_before: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = [at for at, kind, _ in self.events if kind == "message"]
            if len(messages) > message_count_before:
                return messages[message_count_before]
            time.sleep(0.01)
        return None

    def close(self) -> None:
        # Shut the socket down first: closing the response alone waits for the reader thread's
        # blocked read, which only the server's next heartbeat (15 s) would end.
        self.response.raw.connection.sock.shutdown(socket.SHUT_RDWR)
        self.response.close()


def _post_twilio(url: str, to: str, text: str) -> None:
    form = twilio_form(to, body=text)
    signature = RequestValidator(TEST_TWILIO_TOKEN).compute_signature(TEST_BASE_URL + TWILIO_INBOUND, form)
    response = requests.post(url + TWILIO_INBOUND, data=form, headers={"X-Twilio-Signature": signature}, timeout=5)
    assert response.status_code == 204, response.text


def _post_bridge(url: str, to: str, text: str) -> None:
    raw = json.dumps(bridge_message(to, text=text), ensure_ascii=False).encode("utf-8")
    response = requests.post(
        url + BAILEYS,
        data=raw,
        timeout=5,
        headers={"Content-Type": "application/json", bridge_hmac.HEADER: bridge_hmac.sign(WA_SECRET, raw)},
    )
    assert response.status_code == 204, response.text


@pytest.mark.slow  # the app under real gunicorn, two instances
def test_webhooks_on_any_worker_or_instance_reach_one_sse_connection_within_2_seconds(
    database_url, db, tmp_path, wa_env
):
    tenant = create_tenant(db)
    env = {**BASE_TEST_ENV, **wa_env(), "DATABASE_URL": database_url}
    # `%(p)s` in the access log names the worker process that served each request.
    access_log = ("--access-logfile", "-", "--access-logformat", "ACCESS pid=%(p)s %(m)s %(U)s %(s)s")
    with (
        GunicornServer(env, workers=2, log_path=tmp_path / "two-workers.log", extra_args=access_log) as server,
        GunicornServer(env, workers=1, log_path=tmp_path / "other-instance.log", extra_args=access_log) as other,
    ):
        login = requests.post(
            server.url + "/api/auth/session",
            timeout=5,
            headers={"Origin": server.url},
            json={"email": _owner_email(db, tenant), "password": "correct horse"},
        )
        assert login.status_code == 200, login.text
        # The cookie is Secure (the public URL is https); this local http test hands it over itself.
        listener = EventListener(server.url, {"Cookie": f"{COOKIE_NAME}={login.cookies[COOKIE_NAME]}"})
        latencies = []
        posts = [(server.url, _post_twilio if n % 2 else _post_bridge) for n in range(10)]
        posts += [(other.url, _post_twilio), (other.url, _post_bridge)]
        for n, (url, post) in enumerate(posts):
            post(url, tenant.whatsapp, f"הודעה מספר {n}")
            posted = time.monotonic()
            arrived = listener.message_arrival(n, timeout=5)
            assert arrived is not None, f"message {n} never reached the stream"
            latencies.append(arrived - posted)
        listener.close()
        server.stop(graceful=True)
    # Read once stopped: the stream's access line is written when it ends (the worker's drain ends it).
    logs = server.logs()
    assert "Traceback" not in logs and "Traceback" not in other.logs()
    assert max(latencies) < DELIVERY_DEADLINE, latencies
    kinds = {kind for _, kind, _ in listener.events}
    assert {"ready", "message", "thread"} <= kinds
    # Which worker served what: the stream's worker, and the webhooks each worker took.
    [stream_pid] = re.findall(r"ACCESS pid=<(\d+)> GET /api/crm/events 200", logs)
    webhook_pids = re.findall(r"ACCESS pid=<(\d+)> POST /webhook/whatsapp/\S+ 204", logs)
    assert len(webhook_pids) == 10
    print(
        f"webhooks on the stream's worker: {webhook_pids.count(stream_pid)}/10, "
        f"on the other worker: {10 - webhook_pids.count(stream_pid)}/10, on another instance: 2; "
        f"slowest delivery {max(latencies):.2f} s"
    )


def _owner_email(db, tenant) -> str:
    from server.db.models import User

    with db.scope() as session:
        return session.get(User, tenant.user_id).email

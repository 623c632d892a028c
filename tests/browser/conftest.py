"""The staff console in a real browser: Debian's Chromium driven by Playwright, against the app under
real gunicorn (two gevent workers) with the vendor fakes behind the production base-URL settings.

One app per test module and database (SQLite file, PostgreSQL), shared by the module's tests; each
test makes its own customers, so the tests don't depend on each other's data.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from server.db.engine import Database
from server.db.migrate import run_migrations
from server.db.models import ApiToken, Business, BusinessNumber, User
from server.security import bridge_hmac
from server.security.passwords import hash_password
from testkit.fakes.bridge import FakeBridge
from testkit.fakes.paypal_server import FakePayPal
from testkit.fakes.tranzila_server import FakeTranzila
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.servers import PROJECT_ROOT, GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN, throwaway_pg_database

playwright_sync = pytest.importorskip("playwright.sync_api")
# Assertions wait as long as actions do (10 s): on a loaded machine a page that hashes a password or
# waits on the database takes longer than `expect`'s 5 s default, which is not what the tests test.
playwright_sync.expect.set_options(timeout=10_000)

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SCREENSHOTS = PROJECT_ROOT / "test-output" / "screenshots"
PASSWORD = "correct horse battery"
WA_SECRET = "console-wa-secret"
TWILIO_SENDER = "+97235550999"
BUSINESS_VOICE = "+97235550001"
BUSINESS_WHATSAPP = "+97235550002"
WIDTHS = {"desktop": (1280, 900), "mobile": (360, 740)}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@dataclass
class Console:
    """The running app, its fakes and its people."""

    url: str
    server: GunicornServer
    db: Database
    twilio: FakeTwilioRest
    bridge: FakeBridge
    paypal: FakePayPal
    tranzila: FakeTranzila
    business_id: int
    owner_email: str
    agent_email: str
    owner_id: int
    agent_id: int
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- the vendors' side of the webhooks --------------------------------------------------------
    def twilio_post(self, path: str, form: dict[str, str]) -> requests.Response:
        """POST `form` as Twilio does: signed over PUBLIC_BASE_URL + path with the auth token."""
        signature = RequestValidator(TEST_TWILIO_TOKEN).compute_signature(self.url + path, form)
        return requests.post(self.url + path, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)

    def inbound_whatsapp(self, customer: str, body: str, *, name: str = "דנה") -> str:
        sid = "SM" + secrets.token_hex(16)
        form = {
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ProfileName": name,
            "MessageType": "text",
            "SmsSid": sid,
            "WaId": customer.lstrip("+"),
            "SmsStatus": "received",
            "Body": body,
            "To": f"whatsapp:{BUSINESS_WHATSAPP}",
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
            "From": f"whatsapp:{customer}",
            "ApiVersion": "2010-04-01",
        }
        response = self.twilio_post("/webhook/whatsapp/twilio", form)
        assert response.status_code == 204, response.text
        return sid

    def message_status(self, sid: str, status: str, customer: str, **extra: str) -> None:
        form = {
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": BASE_TEST_ENV["TWILIO_ACCOUNT_SID"],
            "From": f"whatsapp:{TWILIO_SENDER}",
            "To": f"whatsapp:{customer}",
            "ApiVersion": "2010-04-01",
            **extra,
        }
        response = self.twilio_post("/webhook/whatsapp/twilio/status", form)
        assert response.status_code == 204, response.text

    def bridge_event(self, event: dict[str, Any]) -> None:
        raw = json.dumps(event, ensure_ascii=False).encode("utf-8")
        response = requests.post(
            self.url + "/webhook/whatsapp/baileys",
            data=raw,
            timeout=10,
            headers={"Content-Type": "application/json", bridge_hmac.HEADER: bridge_hmac.sign(WA_SECRET, raw)},
        )
        assert response.status_code == 204, response.text

    # ---- the database --------------------------------------------------------------------------
    def execute(self, statement: Any) -> Any:
        with self.db.engine.begin() as conn:
            return conn.execute(statement)

    def twilio_sends_to(self, customer: str) -> list[tuple[str, dict[str, Any]]]:
        """(Message SID, message) of every message the Twilio fake accepted for `customer`, oldest first."""
        return [(sid, m) for sid, m in list(self.twilio.messages.items()) if m.get("to") == f"whatsapp:{customer}"]

    def revoke_sessions(self, user_id: int) -> None:
        """What an owner's "sign out everywhere" or an expiry does: every token of the user stops working."""
        self.execute(
            sa.update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=sa.func.now())
        )


def new_customer_phone() -> str:
    return "+9725" + "".join(secrets.choice("0123456789") for _ in range(8))


def _seed(engine: sa.Engine) -> dict[str, Any]:
    with engine.begin() as conn:
        business_id = conn.execute(
            sa.insert(Business)
            .values(
                name="מספרת דנה",
                ai_instructions="",
                opening_line="",
                greeting_enabled=False,
                payments_enabled=True,
                default_payment_provider="paypal",
                timezone="Asia/Jerusalem",
                features={},
            )
            .returning(Business.id)
        ).scalar()
        conn.execute(
            sa.insert(BusinessNumber).values(
                [
                    {"business_id": business_id, "number": BUSINESS_VOICE, "kind": "voice"},
                    {"business_id": business_id, "number": BUSINESS_WHATSAPP, "kind": "whatsapp"},
                ]
            )
        )
        people = {}
        for role in ("owner", "agent"):
            email = f"{role}-{uuid.uuid4().hex[:6]}@salon.example"
            people[role] = (
                conn.execute(
                    sa.insert(User)
                    .values(business_id=business_id, email=email, password_hash=hash_password(PASSWORD), role=role)
                    .returning(User.id)
                ).scalar(),
                email,
            )
    return {"business_id": business_id, "owner": people["owner"], "agent": people["agent"]}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console(request, tmp_path_factory):
    """The app under gunicorn with two gevent workers on this module's own database."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("console-db") / "agentlocator.db"
        database_url = f"sqlite:///{path}"
        database = None
    else:
        database = throwaway_pg_database("agentlocator_console")
        database_url = database.__enter__()
    db = Database(database_url)
    run_migrations(db.engine)
    seeded = _seed(db.engine)
    log_dir = tmp_path_factory.mktemp("console-logs")
    with (
        FakeTwilioRest(account_sid=BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], auth_token=TEST_TWILIO_TOKEN) as twilio,
        FakeBridge(WA_SECRET) as bridge,
        FakePayPal() as paypal,
        FakeTranzila() as tranzila,
    ):
        env = {
            **BASE_TEST_ENV,
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "WARNING",
            "TWILIO_API_BASE_URL": twilio.url,
            "TWILIO_API_TIMEOUT_SECONDS": "3",
            "ENABLE_WA_TWILIO": "true",
            "TWILIO_WA_FROM": f"whatsapp:{TWILIO_SENDER}",
            "ENABLE_WA_BAILEYS": "true",
            "WA_SHARED_SECRET": WA_SECRET,
            "WA_BAILEYS_URL": bridge.url,
            "WA_BAILEYS_TIMEOUT_SECONDS": "2",
            "WA_PROVIDER_PRIORITY": "twilio,baileys",
            "PAYPAL_CLIENT_ID": paypal.client_id,
            "PAYPAL_CLIENT_SECRET": paypal.client_secret,
            "PAYPAL_WEBHOOK_ID": paypal.webhook_id,
            "PAYPAL_API_BASE_URL": paypal.url,
            # No system Tranzila terminal: a business stores its own (the hosted page is the fake's).
            "TRANZILA_API_BASE_URL": tranzila.url,
            "TRANZILA_IFRAME_BASE_URL": tranzila.url,
            "PAYMENTS_HTTP_TIMEOUT_SECONDS": "5",
            # Every test signs in afresh, the owner a dozen times per module, all from 127.0.0.1.
            "LOGIN_LIMIT_PER_ADDRESS": "1000/minute",
            "LOGIN_LIMIT_PER_ACCOUNT": "1000/minute",
        }
        server = GunicornServer(env, workers=2, log_path=log_dir / "gunicorn.log")
        # The browser reaches the app at its own address, so that is the public origin (cookies, CSRF,
        # signatures and payment links all use it).
        server.env["PUBLIC_BASE_URL"] = server.url
        with server:
            yield Console(
                url=server.url,
                server=server,
                db=db,
                twilio=twilio,
                bridge=bridge,
                paypal=paypal,
                tranzila=tranzila,
                business_id=seeded["business_id"],
                owner_id=seeded["owner"][0],
                owner_email=seeded["owner"][1],
                agent_id=seeded["agent"][0],
                agent_email=seeded["agent"][1],
            )
            assert "Traceback" not in server.logs(), server.logs()[-4000:]
    db.engine.dispose()
    if database is not None:
        database.__exit__(None, None, None)


@pytest.fixture(scope="session")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    with playwright_sync.sync_playwright() as playwright:
        # Autoplay without a gesture: the recording test starts playback from the test itself.
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--autoplay-policy=no-user-gesture-required"]
        )
        yield browser
        browser.close()


@contextlib.contextmanager
def open_page(browser, console: Console, *, bypass_csp: bool = False) -> Iterator[Any]:
    """A console page at desktop size, in Hebrew and Israel's time; a JavaScript error in it fails the
    test. `bypass_csp` lets in the axe-core script a test injects (the console's CSP allows only its
    own scripts)."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900},
        locale="he-IL",
        timezone_id="Asia/Jerusalem",
        base_url=console.url,
        bypass_csp=bypass_csp,
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def page(browser, console):
    with open_page(browser, console) as page:
        yield page


@pytest.fixture
def axe_page(browser, console):
    """`page`, with the axe-core script the test injects allowed in."""
    with open_page(browser, console, bypass_csp=True) as page:
        yield page


def sign_in(page, console: Console, email: str | None = None, *, next_path: str = "/app/") -> None:
    page.goto(next_path)
    page.get_by_label("אימייל").fill(email or console.owner_email)
    page.get_by_label("סיסמה").fill(PASSWORD)
    page.get_by_role("button", name="כניסה").click()
    page.get_by_role("button", name="התנתקות").wait_for()


def axe_violations(page) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page as it is now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)

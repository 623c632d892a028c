"""Benchmark the staff console: how long an inbound WhatsApp message takes to show in an open inbox,
and how much the console's first load weighs.

    python -m bench.bench_console_latency [--messages 50] [--workers 2] [--database sqlite|postgresql]
                                          [--admin-url postgresql://127.0.0.1:5432/test] [--gap 0.2]

It starts `gunicorn -k gevent -w N` on a loopback port (SQLite file, or a throwaway PostgreSQL
database that is dropped at the end), signs an owner in with Debian's Chromium (Playwright), opens
the conversation, and then sends `--messages` signed Twilio inbound webhooks one after the other.
For each one it measures from just before the POST to the moment the message's bubble is added to
the page (a MutationObserver stamps `performance.timeOrigin + performance.now()`, the same wall
clock as the sender's). The webhook may land on either worker; the browser's event stream is held
by one of them, so most messages cross workers through the database, as in production.

Printed: p50 / p95 / max latency in ms, then the gzipped size of the files of the first load
(index.html, the CSS and the modules the sign-in and inbox screens import), and the whole result
as JSON on the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from server.db.migrate import run_migrations
from server.db.models import Business, BusinessNumber, User
from server.security.passwords import hash_password
from testkit.servers import PROJECT_ROOT, GunicornServer

AUTH_TOKEN = "bench-twilio-auth-token"
ACCOUNT_SID = "AC" + "c" * 32
BUSINESS_NUMBER = "+97235550002"
CUSTOMER = "+972501112233"
PASSWORD = "bench password 1"
APP_DIR = PROJECT_ROOT / "static" / "app"
# `import … from './x.js'` (static: part of the first load); dynamic `import('./x.js')` is not followed.
_IMPORT = re.compile(r"""(?:^|\s)(?:import|export)\s[^'"]*?from\s+['"](\.{1,2}/[^'"]+)['"]""", re.MULTILINE)


def first_load_files(entry_views: tuple[str, ...] = ("login", "inbox")) -> list[Path]:
    """index.html, its stylesheet, and every module reachable from main.js by static imports, plus the
    views the first screens load (sign-in, then the inbox) with their static imports."""
    files = [APP_DIR / "index.html", APP_DIR / "app.css"]
    queue = [APP_DIR / "js" / "main.js", *(APP_DIR / "js" / "views" / f"{view}.js" for view in entry_views)]
    seen: set[Path] = set()
    while queue:
        path = queue.pop().resolve()
        if path in seen:
            continue
        seen.add(path)
        for match in _IMPORT.finditer(path.read_text(encoding="utf-8")):
            queue.append(path.parent / match.group(1))
    return files + sorted(seen)


def gzipped_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def _driver_url(url: str) -> str:
    """SQLAlchemy's own default PostgreSQL driver is psycopg 3; the app uses psycopg2."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def _seed(url: str) -> str:
    engine = sa.create_engine(_driver_url(url))
    run_migrations(engine)
    email = f"owner-{uuid.uuid4().hex[:6]}@bench.example"
    with engine.begin() as conn:
        business_id = conn.execute(
            sa.insert(Business).values(name="Bench", timezone="Asia/Jerusalem", features={}).returning(Business.id)
        ).scalar()
        conn.execute(sa.insert(BusinessNumber).values(business_id=business_id, number=BUSINESS_NUMBER, kind="whatsapp"))
        conn.execute(
            sa.insert(User).values(
                business_id=business_id, email=email, password_hash=hash_password(PASSWORD), role="owner"
            )
        )
    engine.dispose()
    return email


def _inbound(url: str, body: str) -> None:
    sid = "SM" + secrets.token_hex(16)
    form = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": f"whatsapp:{CUSTOMER}",
        "To": f"whatsapp:{BUSINESS_NUMBER}",
        "Body": body,
        "NumMedia": "0",
        "ProfileName": "Bench",
        "WaId": CUSTOMER.lstrip("+"),
        "ApiVersion": "2010-04-01",
    }
    path = "/webhook/whatsapp/twilio"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url + path, form)
    response = requests.post(url + path, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
    if response.status_code != 204:
        raise RuntimeError(f"webhook answered {response.status_code}: {response.text}")


_OBSERVER = """() => {
  window.__seen = {};
  const record = (node) => {
    if (!(node instanceof Element)) return;
    for (const el of [node, ...node.querySelectorAll('.msg.in')]) {
      const match = el.matches && el.matches('.msg.in') && /bench-(\\d+)-end/.exec(el.textContent);
      if (match && !(match[1] in window.__seen)) window.__seen[match[1]] = performance.timeOrigin + performance.now();
    }
  };
  new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach(record)))
    .observe(document.body, {childList: true, subtree: true});
}"""


def measure(url: str, email: str, messages: int, gap: float, chromium: str) -> list[float]:
    from playwright.sync_api import sync_playwright

    _inbound(url, "bench-0 the conversation starts")
    latencies = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(base_url=url)
        page.goto("/app/login")
        page.get_by_label("אימייל").fill(email)
        page.get_by_label("סיסמה").fill(PASSWORD)
        page.get_by_role("button", name="כניסה").click()
        page.locator(".thread-item").first.click()
        page.locator(".timeline .msg.in", has_text="bench-0").wait_for()
        page.wait_for_function("() => (document.getElementById('live-status') || {}).dataset?.state === 'open'")
        page.evaluate(_OBSERVER)
        for n in range(1, messages + 1):
            sent = time.time() * 1000
            _inbound(url, f"bench-{n}-end")
            page.wait_for_function(f"() => '{n}' in window.__seen", timeout=10_000)
            latencies.append(page.evaluate(f"() => window.__seen['{n}']") - sent)
            time.sleep(gap)
        browser.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--admin-url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between one message shown and the next sent")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium is needed: apt-get install -y chromium")

    with contextlib.ExitStack() as stack:
        if args.database == "sqlite":
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-console-")))
            url = f"sqlite:///{directory / 'bench.db'}"
        else:
            admin = sa.create_engine(_driver_url(args.admin_url), isolation_level="AUTOCOMMIT")
            name = f"bench_console_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

            def drop() -> None:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()

            stack.callback(drop)
            url = args.admin_url.rsplit("/", 1)[0] + "/" + name
        email = _seed(url)
        env = {
            "DATABASE_URL": url,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "APP_SECRET": "bench-app-secret",
            "LOG_LEVEL": "WARNING",
        }
        server = GunicornServer(env, workers=args.workers)
        server.env["PUBLIC_BASE_URL"] = server.url
        stack.enter_context(server)
        latencies = measure(server.url, email, args.messages, args.gap, chromium)

    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * len(ordered))) - 1)]
    result = {
        "messages": len(latencies),
        "workers": args.workers,
        "database": args.database,
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(ordered[-1], 1),
    }
    print(
        f"webhook → shown in the open inbox ({args.database}, {args.workers} workers, {len(latencies)} messages): "
        f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, max {result['max_ms']} ms"
    )
    files = first_load_files()
    sizes = {str(path.relative_to(PROJECT_ROOT)): gzipped_size(path) for path in files}
    for name, size in sizes.items():
        print(f"  {size:>7} B gz  {name}")
    result["first_load_gzip_bytes"] = sum(sizes.values())
    result["all_console_files_gzip_bytes"] = sum(gzipped_size(p) for p in APP_DIR.rglob("*") if p.is_file())
    print(
        f"first load (JS + CSS + HTML, gzip): {result['first_load_gzip_bytes']} B; "
        f"every console file: {result['all_console_files_gzip_bytes']} B"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The console's pages and cookie session: sign in, who am I, sign out; the cookie on every API route,
its CSRF rule, expiry and revocation, and disabled users. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from server.config import PROJECT_ROOT
from server.db.models import ApiToken, Business, User, utcnow
from server.errors import DomainError
from server.security.sessions import COOKIE_NAME, SESSION_IDLE, check_csrf, origin_of
from tests.conftest import TEST_BASE_URL, add_user, create_tenant

OWN = {"Origin": TEST_BASE_URL}
CREDENTIALS = {"email": "owner@salon.example", "password": "correct horse"}


@pytest.fixture
def owner(db):
    return create_tenant(db, email="owner@salon.example", timezone="Asia/Jerusalem")


def sign_in(client, body=CREDENTIALS, headers=OWN):
    return client.post("/api/auth/session", json=body, headers=headers)


def session_cookie(response) -> str:
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{COOKIE_NAME}=")]
    return header


# ---- the pages ----------------------------------------------------------------------------------


def test_app_paths_serve_the_single_page_with_a_strict_policy(client):
    page = (PROJECT_ROOT / "static" / "app" / "index.html").read_bytes()
    for path in ("/app/", "/app/inbox", "/app/inbox/12", "/app/calls/CA123/anything"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.data == page and response.mimetype == "text/html"
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert client.get("/app").status_code == 308 and client.get("/app").headers["Location"].endswith("/app/")
    asset = client.get("/static/app/js/main.js")
    assert asset.status_code == 200 and b"import" in asset.data


# ---- signing in and out -------------------------------------------------------------------------


def test_sign_in_sets_an_httponly_lax_secure_cookie_and_describes_the_session(client, db, owner):
    response = sign_in(client)
    assert response.status_code == 200, response.json
    assert response.json == {
        "user": {"id": owner.user_id, "email": "owner@salon.example", "role": "owner"},
        "business": {"id": owner.business_id, "name": "Salon Dana", "time_zone": "Asia/Jerusalem"},
    }
    cookie = session_cookie(response)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path", "samesite", "max-age"} <= attributes
    assert "SameSite=Lax" in cookie and "Path=/" in cookie
    with db.scope() as session:  # stored like every token: only its digest, named as a session
        token = session.scalars(sa.select(ApiToken).where(ApiToken.user_id == owner.user_id)).all()[-1]
        assert token.name == "console session" and token.token_hash not in cookie


def test_the_cookie_is_not_secure_on_a_plain_http_deployment(make_app, owner):
    client = make_app(PUBLIC_BASE_URL="http://localhost:5000").test_client()
    response = client.post("/api/auth/session", json=CREDENTIALS)
    assert response.status_code == 200
    assert "Secure" not in session_cookie(response)


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"email": "owner@salon.example", "password": "wrong"}, 401, "invalid_credentials"),
        ({"email": "nobody@salon.example", "password": "correct horse"}, 401, "invalid_credentials"),
        ({"email": "owner@salon.example"}, 400, "invalid_field"),
        ({"email": 5, "password": ["x"]}, 400, "invalid_field"),
    ],
)
def test_bad_sign_ins_are_refused_without_a_cookie(client, owner, body, status, code):
    response = sign_in(client, body)
    assert response.status_code == status and response.json["error"] == code
    assert not response.headers.getlist("Set-Cookie")


def test_a_sign_in_posted_from_another_site_is_refused(client, owner):
    response = sign_in(client, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and response.json["error"] == "csrf_failed"
    assert not response.headers.getlist("Set-Cookie")
    assert sign_in(client, headers={}).status_code == 200  # no Origin: not a browser page (a script)


def test_me_answers_the_session_and_401_without_one(client, owner):
    assert client.get("/api/auth/me").status_code == 401
    sign_in(client)
    response = client.get("/api/auth/me")
    assert response.status_code == 200 and response.json["user"]["id"] == owner.user_id
    assert response.json["business"]["time_zone"] == "Asia/Jerusalem"


def test_sign_out_revokes_the_session_and_clears_the_cookie(client, db, owner):
    sign_in(client)
    cookie = client.get_cookie(COOKIE_NAME).value
    response = client.delete("/api/auth/session", headers=OWN)
    assert response.status_code == 204
    assert any(h.startswith(f"{COOKIE_NAME}=;") and "Max-Age=0" in h for h in response.headers.getlist("Set-Cookie"))
    assert client.get_cookie(COOKIE_NAME) is None
    # The token itself is dead, not only forgotten by this browser.
    client.set_cookie(COOKIE_NAME, cookie)
    assert client.get("/api/auth/me").status_code == 401
    assert client.delete("/api/auth/session", headers=OWN).status_code == 204  # signing out twice is fine


def test_a_forged_sign_out_changes_nothing(client, owner):
    sign_in(client)
    response = client.delete("/api/auth/session", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and response.json["error"] == "csrf_failed"
    assert client.get("/api/auth/me").status_code == 200


# ---- the cookie on the API, and its CSRF rule ---------------------------------------------------


def test_the_cookie_works_on_crm_and_whatsapp_routes_like_a_bearer_token(client, owner):
    sign_in(client)
    assert client.get("/api/crm/calls").status_code == 200
    assert client.get("/api/crm/users").status_code == 200
    created = client.post("/api/crm/customers", json={"name": "דנה", "phone": "0501234567"}, headers=OWN)
    assert created.status_code == 201, created.json
    # Reaches the send route (and its own validation) rather than stopping at authentication.
    send = client.post("/api/whatsapp/send", json={"to": "+972501234567", "text": "שלום"}, headers=OWN)
    assert send.status_code not in (401, 403), send.json


@pytest.mark.parametrize(
    "headers",
    [
        {},  # neither Origin nor Referer
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Origin": "https://agent.example.test.evil.example"},
        {"Origin": "http://agent.example.test"},  # the right host on the wrong scheme
    ],
)
def test_cookie_authenticated_writes_from_elsewhere_are_refused(client, owner, headers):
    sign_in(client)
    for method, path, body in (
        ("post", "/api/crm/customers", {"name": "x", "phone": "0501234567"}),
        ("patch", "/api/crm/business", {"name": "x"}),
        ("delete", "/api/crm/tokens/1", None),
    ):
        response = getattr(client, method)(path, json=body, headers=headers)
        assert response.status_code == 403 and response.json["error"] == "csrf_failed", (method, path)
    assert client.get("/api/crm/customers").json["items"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": TEST_BASE_URL},
        {"Origin": "https://AGENT.example.test:443"},
        {"Referer": TEST_BASE_URL + "/app/customers"},
        {"Origin": "http://localhost"},  # the host the request was made to
    ],
)
def test_cookie_authenticated_writes_from_our_own_pages_pass(client, owner, headers):
    sign_in(client)
    response = client.post("/api/crm/customers", json={"name": "דנה", "phone": "0501234567"}, headers=headers)
    assert response.status_code == 201, response.json


def test_bearer_requests_need_no_origin(client, owner):
    response = client.post("/api/crm/customers", json={"name": "דנה", "phone": "0501234567"}, headers=owner.headers)
    assert response.status_code == 201


def test_a_bearer_header_wins_over_the_cookie(client, db, owner, other_tenant):
    sign_in(client)
    response = client.get("/api/auth/me", headers=other_tenant.headers)
    assert response.json["user"]["id"] == other_tenant.user_id


# ---- expiry, revocation, disabled users ---------------------------------------------------------


def test_an_idle_session_expires(client, db, owner):
    sign_in(client)
    with db.scope() as session:
        token = session.scalar(sa.select(ApiToken).where(ApiToken.name == "console session"))
        token.last_used_at = utcnow() - SESSION_IDLE - timedelta(minutes=1)
    response = client.get("/api/crm/calls")
    assert response.status_code == 401 and response.json["error"] == "unauthorized"


def test_an_api_token_does_not_expire_when_idle(client, db, owner):
    with db.scope() as session:
        for token in session.scalars(sa.select(ApiToken)):
            token.last_used_at = utcnow() - SESSION_IDLE - timedelta(days=30)
    assert client.get("/api/crm/calls", headers=owner.headers).status_code == 200


def test_a_disabled_user_can_neither_sign_in_nor_use_a_session(client, db, owner):
    agent = add_user(db, owner.business_id, "agent")
    with db.scope() as session:
        email = session.get(User, agent.user_id).email
    agent_client = client.application.test_client()
    assert sign_in(agent_client, {"email": email, "password": "correct horse"}).status_code == 200
    with db.scope() as session:
        session.get(User, agent.user_id).disabled_at = utcnow()
    assert agent_client.get("/api/auth/me").status_code == 401
    assert client.get("/api/crm/calls", headers=agent.headers).status_code == 401
    refused = sign_in(agent_client, {"email": email, "password": "correct horse"})
    assert refused.status_code == 403 and refused.json["error"] == "account_disabled"
    wrong = sign_in(agent_client, {"email": email, "password": "wrong password"})
    assert wrong.status_code == 401  # being disabled is told only to someone who knows the password


def test_an_admin_session_acts_for_another_business_with_x_business_id(client, db, owner, other_tenant):
    admin = create_tenant(
        db, name="Support", phone="+97235550201", whatsapp="+97235550202", role="admin", email="support@example.test"
    )
    assert admin.business_id != other_tenant.business_id
    sign_in(client, {"email": "support@example.test", "password": "correct horse"})
    response = client.get("/api/auth/me", headers={"X-Business-Id": str(other_tenant.business_id)})
    assert response.json["business"]["id"] == other_tenant.business_id
    with db.scope() as session:
        assert response.json["business"]["name"] == session.get(Business, other_tenant.business_id).name


# ---- the CSRF rule itself -----------------------------------------------------------------------


def test_origins_are_compared_by_scheme_host_and_port():
    assert origin_of("https://Agent.Example.test:443/app/x?y") == "https://agent.example.test"
    assert origin_of("http://localhost:5000/") == "http://localhost:5000"
    assert origin_of("http://[::1]:8080") == "http://[::1]:8080"
    for bad in ("null", "", "javascript:alert(1)", "file:///etc/passwd", "https://", "https://x:99999"):
        assert origin_of(bad) is None
    allowed = {"https://agent.example.test"}
    check_csrf("GET", None, None, allowed)  # reads are never refused
    check_csrf("POST", "https://agent.example.test", None, allowed)
    with pytest.raises(DomainError):
        check_csrf("POST", "null", TEST_BASE_URL + "/app/", allowed)  # an Origin, even "null", is what counts

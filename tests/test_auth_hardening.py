"""Sign-in and offboarding: rate limits, the dummy hash, token expiry and sliding sessions, revoking
one's own token, changing one's own password, who mints tokens and who manages whom. SQLite and
PostgreSQL; the limiter's Redis storage against the machine's Redis."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from server.db.models import ApiToken, AuditLog, RateLimitWindow, User, utcnow
from server.security import passwords
from server.security.rate_limits import LoginLimiter, SqlWindowStorage, address_bucket, client_address, make_storage
from tests.conftest import TEST_BASE_URL, add_user, create_tenant

OWN = {"Origin": TEST_BASE_URL}
EMAIL, PASSWORD = "owner@salon.example", "correct horse"


@pytest.fixture
def owner(db):
    return create_tenant(db, email=EMAIL)


def login(client, email=EMAIL, password=PASSWORD, **headers):
    return client.post("/api/auth/login", json={"email": email, "password": password}, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def email_of(db, user_id: int) -> str:
    with db.scope() as session:
        return session.get(User, user_id).email


def audit_rows(db, action: str) -> list[AuditLog]:
    with db.scope() as session:
        rows = session.scalars(sa.select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)).all()
        session.expunge_all()
        return rows


# ---- rate limits ---------------------------------------------------------------------------------


def test_tries_for_one_account_are_limited_with_retry_after(make_app, db, owner):
    client = make_app(LOGIN_LIMIT_PER_ACCOUNT="3/minute").test_client()
    for _ in range(3):
        assert login(client, password="wrong").status_code == 401
    refused = login(client)  # even the right password: the limit is reached
    assert refused.status_code == 429 and refused.json["error"] == "rate_limited"
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60 and refused.json["retry_after"] == retry_after
    # the address itself is not blocked: another account still signs in
    other = add_user(db, owner.business_id, "agent")
    assert login(client, email_of(db, other.user_id)).status_code == 200


def test_unknown_accounts_are_counted_like_known_ones(make_app, owner):
    client = make_app(LOGIN_LIMIT_PER_ACCOUNT="2/minute").test_client()
    statuses = [login(client, "nobody@salon.example").status_code for _ in range(3)]
    assert statuses == [401, 401, 429]  # the same answers a known account gets: nothing to probe


def test_tries_from_one_address_are_limited_across_accounts(make_app, owner):
    client = make_app(LOGIN_LIMIT_PER_ADDRESS="4/minute").test_client()
    statuses = [login(client, f"guess{i}@salon.example").status_code for i in range(4)]
    assert statuses == [401] * 4
    assert login(client).status_code == 429
    # a client's own X-Forwarded-For proves nothing without a trusted proxy in front
    assert login(client, **{"X-Forwarded-For": "203.0.113.9"}).status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_counts(make_app, owner):
    client = make_app(LOGIN_LIMIT_PER_ADDRESS="2/minute", TRUSTED_PROXY_HOPS="1").test_client()
    for _ in range(2):
        assert login(client, password="wrong", **{"X-Forwarded-For": "203.0.113.9"}).status_code == 401
    assert login(client, **{"X-Forwarded-For": "203.0.113.9"}).status_code == 429
    # what the client wrote left of the proxy's entry is ignored; another real address is counted apart
    assert login(client, **{"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}).status_code == 200


def test_the_console_sign_in_shares_the_limit(make_app, owner):
    client = make_app(LOGIN_LIMIT_PER_ACCOUNT="3/minute").test_client()
    assert login(client, password="wrong").status_code == 401
    assert client.post("/api/auth/session", json={"email": EMAIL, "password": "wrong"}, headers=OWN).status_code == 401
    assert login(client, password="wrong").status_code == 401
    refused = client.post("/api/auth/session", json={"email": EMAIL, "password": PASSWORD}, headers=OWN)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert not refused.headers.getlist("Set-Cookie")


def test_a_refused_try_does_not_hash(make_app, owner, monkeypatch):
    client = make_app(LOGIN_LIMIT_PER_ACCOUNT="1/minute").test_client()
    assert login(client, password="wrong").status_code == 401
    checks = []
    monkeypatch.setattr(passwords, "check_password_hash", lambda *args: checks.append(args) or False)
    assert login(client).status_code == 429 and checks == []


def test_counters_live_in_the_database_and_a_window_ends(make_app, db, owner):
    client = make_app(LOGIN_LIMIT_PER_ACCOUNT="1/minute").test_client()
    assert login(client, password="wrong").status_code == 401
    assert login(client).status_code == 429
    with db.scope() as session:
        rows = session.scalars(sa.select(RateLimitWindow)).all()
        assert rows and all(len(row.key) == 64 and EMAIL not in row.key for row in rows)  # digests only
        for row in rows:
            row.expires_at = time.time() - 1  # the window is over
    assert login(client).status_code == 200


def test_the_database_counter_is_atomic_under_concurrency(db):
    storage = SqlWindowStorage(db.engine)
    key = f"test/{uuid.uuid4().hex}"
    errors: list[BaseException] = []

    def hit():
        try:
            for _ in range(10):
                storage.incr(key, 60)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and storage.get(key) == 60
    assert time.time() < storage.get_expiry(key) <= time.time() + 60
    storage.clear(key)
    assert storage.get(key) == 0


def test_redis_counters_are_shared_by_every_limiter(db):
    url = f"redis://127.0.0.1:6379/{uuid.uuid4().int % 15 + 1}"
    first = LoginLimiter(make_storage(url, db.engine), "100/minute", "2/minute")
    try:
        first._limiter.storage.check()
    except Exception:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    second = LoginLimiter(make_storage(url, db.engine), "100/minute", "2/minute")  # another instance
    account = f"{uuid.uuid4().hex}@salon.example"
    first.hit("192.0.2.1", account)
    second.hit("192.0.2.2", account)
    with pytest.raises(Exception) as refused:
        first.hit("192.0.2.3", account)
    assert refused.value.code == "rate_limited" and 1 <= refused.value.details["retry_after"] <= 60


def test_an_unreachable_redis_lets_tries_through(db, caplog):
    limiter = LoginLimiter(make_storage("redis://127.0.0.1:1/0", db.engine), "1/minute", "1/minute")
    for _ in range(3):
        limiter.hit("192.0.2.1", "someone@salon.example")
    assert any(getattr(r, "event", None) == "rate_limit_store_error" for r in caplog.records)


def test_addresses_are_counted_per_ipv4_address_and_ipv6_64():
    assert address_bucket("192.0.2.7") == "192.0.2.7"
    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_bucket("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_bucket("not an address") == "other:not an address"
    assert client_address("10.0.0.1", "1.1.1.1, 2.2.2.2", 0) == "10.0.0.1"
    assert client_address("10.0.0.1", "1.1.1.1, 2.2.2.2", 1) == "2.2.2.2"
    assert client_address("10.0.0.1", "1.1.1.1, 2.2.2.2", 2) == "1.1.1.1"
    assert client_address("10.0.0.1", "2.2.2.2", 3) == "2.2.2.2"
    assert client_address("10.0.0.1", None, 1) == "10.0.0.1"


# ---- the dummy hash ------------------------------------------------------------------------------


def test_an_unknown_email_costs_a_hash_like_a_known_one(client, owner, monkeypatch):
    checks = []
    real = passwords.check_password_hash
    monkeypatch.setattr(passwords, "check_password_hash", lambda *args: checks.append(args[0]) or real(*args))
    assert login(client, "nobody@salon.example").status_code == 401
    assert len(checks) == 1 and checks[0].startswith("scrypt:")
    assert login(client, password="wrong").status_code == 401
    assert len(checks) == 2


def test_unknown_and_known_accounts_take_about_as_long(client, owner):
    login(client, "warm-up@salon.example")  # the dummy hash is made once per process

    def median(email):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            assert login(client, email, "wrong password").status_code == 401
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    known, unknown = median(EMAIL), median("nobody@salon.example")
    assert unknown > 0.4 * known, (known, unknown)  # once: 2 ms against 124 ms


# ---- token expiry and sliding sessions -----------------------------------------------------------


def test_tokens_expire_after_token_ttl_days(make_app, db, owner):
    client = make_app(TOKEN_TTL_DAYS="30").test_client()
    assert client.get("/api/crm/calls", headers=owner.headers).status_code == 200
    listed = client.get("/api/crm/tokens", headers=owner.headers).json["items"]
    assert listed[0]["expires_at"] is not None
    with db.scope() as session:
        session.execute(sa.update(ApiToken).values(created_at=utcnow() - timedelta(days=30, minutes=1)))
    response = client.get("/api/crm/calls", headers=owner.headers)
    assert response.status_code == 401 and "expired" in response.json["message"]
    never = make_app(TOKEN_TTL_DAYS="0").test_client()  # 0: tokens don't expire
    assert never.get("/api/crm/calls", headers=owner.headers).status_code == 200
    assert never.get("/api/crm/tokens", headers=owner.headers).json["items"][0]["expires_at"] is None


def test_console_sessions_slide_with_use_and_end_when_idle(make_app, db, owner):
    client = make_app(SESSION_IDLE_MINUTES="30", TOKEN_TTL_DAYS="7").test_client()
    signed_in = client.post("/api/auth/session", json={"email": EMAIL, "password": PASSWORD}, headers=OWN)
    assert signed_in.status_code == 200
    cookie = [h for h in signed_in.headers.getlist("Set-Cookie") if h.startswith("al_session=")][0]
    assert f"Max-Age={7 * 86400}" in cookie  # the browser keeps it no longer than it can work

    def idle_for(minutes):
        with db.scope() as session:
            session.execute(
                sa.update(ApiToken)
                .where(ApiToken.name == "console session")
                .values(last_used_at=utcnow() - timedelta(minutes=minutes))
            )

    idle_for(29)
    assert client.get("/api/auth/me").status_code == 200  # in use: the idle limit starts again
    with db.scope() as session:
        used = session.scalar(sa.select(ApiToken.last_used_at).where(ApiToken.name == "console session"))
    assert utcnow() - used < timedelta(minutes=1)
    idle_for(31)
    assert client.get("/api/auth/me").status_code == 401
    # an API token is not a session: idle means nothing to it
    with db.scope() as session:
        session.execute(
            sa.update(ApiToken)
            .where(ApiToken.name != "console session")
            .values(last_used_at=utcnow() - timedelta(days=5))
        )
    assert client.get("/api/crm/calls", headers=owner.headers).status_code == 200


# ---- revoking one's own token --------------------------------------------------------------------


def test_a_token_revokes_itself(client, db, owner):
    second = login(client).json["token"]
    response = client.delete("/api/auth/token", headers=bearer(second))
    assert response.status_code == 204
    assert client.get("/api/crm/calls", headers=bearer(second)).status_code == 401
    assert client.delete("/api/auth/token", headers=bearer(second)).status_code == 401
    assert client.get("/api/crm/calls", headers=owner.headers).status_code == 200  # the user's other token
    [entry] = audit_rows(db, "token.revoked")
    assert entry.actor == f"user:{owner.user_id}" and entry.details == {"user_id": owner.user_id}


def test_a_cookie_session_revokes_itself_only_from_our_own_pages(client, owner):
    client.post("/api/auth/session", json={"email": EMAIL, "password": PASSWORD}, headers=OWN)
    assert client.delete("/api/auth/token", headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.get("/api/auth/me").status_code == 200
    assert client.delete("/api/auth/token", headers=OWN).status_code == 204
    assert client.get("/api/auth/me").status_code == 401


# ---- changing one's own password -----------------------------------------------------------------


def test_changing_ones_own_password(client, db, owner):
    browser = client.application.test_client()
    assert browser.post("/api/auth/session", json={"email": EMAIL, "password": PASSWORD}).status_code == 200
    current = login(client).json["token"]
    body = {"current_password": PASSWORD, "new_password": "a much better passphrase"}
    assert client.post("/api/auth/password", json=body, headers=bearer(current)).status_code == 204
    assert login(client).status_code == 401
    assert login(client, password="a much better passphrase").status_code == 200
    assert client.get("/api/crm/calls", headers=bearer(current)).status_code == 200  # the one in use stays
    assert client.get("/api/crm/calls", headers=owner.headers).status_code == 200  # API tokens stay
    assert browser.get("/api/auth/me").status_code == 401  # other sign-ins end
    [entry] = audit_rows(db, "user.password_changed")
    assert entry.actor == f"user:{owner.user_id}" and entry.details == {"sessions_ended": 1}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"current_password": "wrong", "new_password": "a much better passphrase"}, "current_password"),
        ({"current_password": PASSWORD, "new_password": "short"}, "new_password"),
        ({"current_password": PASSWORD, "new_password": PASSWORD}, "new_password"),
        ({"current_password": PASSWORD, "new_password": 12345678}, "new_password"),
        ({"current_password": PASSWORD, "new_password": "x" * 201}, "new_password"),
        ({"current_password": PASSWORD, "new_password": "with\x00nul inside"}, "new_password"),
        ({"current_password": "", "new_password": "a much better passphrase"}, "current_password"),
        ({"new_password": "a much better passphrase"}, "current_password"),
        ({"current_password": PASSWORD, "new_password": "a much better passphrase", "x": 1}, "x"),
    ],
)
def test_bad_password_changes_are_a_400_naming_the_field(client, owner, body, field):
    response = client.post("/api/auth/password", json=body, headers=owner.headers)
    assert response.status_code == 400 and response.json["error"] == "invalid_field"
    assert response.json["field"] == field
    assert login(client).status_code == 200  # unchanged


def test_guessing_the_current_password_is_rate_limited(make_app, owner):
    client = make_app(LOGIN_LIMIT_PER_ACCOUNT="2/minute").test_client()
    body = {"current_password": "guess", "new_password": "a much better passphrase"}
    statuses = [client.post("/api/auth/password", json=body, headers=owner.headers).status_code for _ in range(3)]
    assert statuses == [400, 400, 429]


# ---- who manages whom, and who minted a token ----------------------------------------------------


def test_owners_manage_agents_but_not_other_owners(client, db, owner):
    partner = add_user(db, owner.business_id, "owner")
    agent = add_user(db, owner.business_id, "agent")
    partner_token = client.get("/api/crm/tokens", headers=partner.headers).json["items"]
    partner_token_id = [t["id"] for t in partner_token if t["user_id"] == partner.user_id][0]
    refused = [
        client.post(
            "/api/crm/users",
            json={"email": "third@example.test", "password": "long enough", "role": "owner"},
            headers=owner.headers,
        ),
        client.patch(f"/api/crm/users/{partner.user_id}", json={"disabled": True}, headers=owner.headers),
        client.post(
            f"/api/crm/users/{partner.user_id}/password", json={"password": "taken over!"}, headers=owner.headers
        ),
        client.post("/api/crm/tokens", json={"user_id": partner.user_id}, headers=owner.headers),
        client.delete(f"/api/crm/tokens/{partner_token_id}", headers=owner.headers),
    ]
    assert [(r.status_code, r.json["error"]) for r in refused] == [(403, "forbidden")] * 5
    assert client.get("/api/crm/calls", headers=partner.headers).status_code == 200
    assert login(client, email_of(db, partner.user_id)).status_code == 200
    # agents are the owner's to manage
    assert client.post("/api/crm/tokens", json={"user_id": agent.user_id}, headers=owner.headers).status_code == 201
    assert (
        client.patch(f"/api/crm/users/{agent.user_id}", json={"disabled": True}, headers=owner.headers).status_code
        == 200
    )
    # and an owner's own token and password are their own business
    assert client.post("/api/crm/tokens", json={"user_id": owner.user_id}, headers=owner.headers).status_code == 201
    own_reset = client.post(
        f"/api/crm/users/{owner.user_id}/password", json={"password": "no current needed"}, headers=owner.headers
    )
    assert own_reset.status_code == 403  # one's own password needs the current one: POST /api/auth/password


def test_admins_manage_owners(client, db, owner):
    admin = create_tenant(db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin")
    support = {**admin.headers, "X-Business-Id": str(owner.business_id)}
    created = client.post(
        "/api/crm/users",
        json={"email": "second-owner@example.test", "password": "long enough", "role": "owner"},
        headers=support,
    )
    assert created.status_code == 201
    minted = client.post("/api/crm/tokens", json={"user_id": owner.user_id}, headers=support)
    assert minted.status_code == 201 and minted.json["created_by_user_id"] == admin.user_id
    reset = client.post(
        f"/api/crm/users/{owner.user_id}/password", json={"password": "reset by support"}, headers=support
    )
    assert reset.status_code == 204
    assert client.patch(f"/api/crm/users/{owner.user_id}", json={"disabled": True}, headers=support).status_code == 200
    assert client.get("/api/crm/calls", headers=owner.headers).status_code == 401


def test_each_token_names_who_made_it(app, client, db, owner):
    agent = add_user(db, owner.business_id, "agent")
    minted = client.post("/api/crm/tokens", json={"user_id": agent.user_id, "name": "zapier"}, headers=owner.headers)
    assert minted.status_code == 201
    assert (minted.json["user_id"], minted.json["created_by_user_id"]) == (agent.user_id, owner.user_id)
    [entry] = audit_rows(db, "token.created")
    assert entry.actor == f"user:{owner.user_id}" and entry.details == {
        "user_id": agent.user_id,
        "created_by_user_id": owner.user_id,
        "name": "zapier",
    }
    signed_in = login(client).json["token"]
    listed = {t["id"]: t for t in client.get("/api/crm/tokens", headers=owner.headers).json["items"]}
    mine = [t for t in listed.values() if t["user_id"] == owner.user_id and t["name"] == "login"]
    assert len(mine) == 1 and mine[0]["created_by_user_id"] == owner.user_id and signed_in
    # the operator's CLI mints the first token: audited as made by the CLI
    made = app.test_cli_runner().invoke(
        args=[
            "create-user",
            "--business-id",
            str(owner.business_id),
            "--email",
            "cli-owner@example.test",
            "--password",
            "long enough",
            "--role",
            "owner",
        ]
    )
    assert made.exit_code == 0, made.output
    cli_entries = [e for e in audit_rows(db, "token.created") if e.actor == "cli"]
    assert len(cli_entries) == 1 and cli_entries[0].details["name"] == "cli"


def test_a_disabled_agent_whose_tokens_were_revoked_can_not_sign_in_again(client, db, owner):
    agent = add_user(db, owner.business_id, "agent")
    email = email_of(db, agent.user_id)
    assert (
        client.patch(f"/api/crm/users/{agent.user_id}", json={"disabled": True}, headers=owner.headers).status_code
        == 200
    )
    for token in client.get("/api/crm/tokens", headers=owner.headers).json["items"]:
        if token["user_id"] == agent.user_id:
            assert client.delete(f"/api/crm/tokens/{token['id']}", headers=owner.headers).status_code == 204
    again = login(client, email)
    assert again.status_code == 403 and again.json["error"] == "account_disabled"
    assert client.get("/api/crm/calls", headers=agent.headers).status_code == 401
    assert (
        client.patch(f"/api/crm/users/{agent.user_id}", json={"disabled": False}, headers=owner.headers).status_code
        == 200
    )
    assert login(client, email).status_code == 200
    assert client.get("/api/crm/calls", headers=agent.headers).status_code == 401  # revoked stays revoked

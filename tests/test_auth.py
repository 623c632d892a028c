import pytest
from flask import Blueprint, g, jsonify

from server.db.models import Customer
from server.routes import db_session
from server.routes.auth_api import require_auth
from server.security.auth import get_owned
from tests.conftest import add_user


def test_login_gives_a_working_token(client, db):
    from tests.conftest import create_tenant

    tenant = create_tenant(db, email="owner@salon.example")
    response = client.post("/api/auth/login", json={"email": "Owner@Salon.example ", "password": "correct horse"})
    assert response.status_code == 200, response.json
    assert response.json["token"].startswith("al_") and response.json["business_id"] == tenant.business_id


@pytest.mark.parametrize(
    "body, status",
    [
        ({"email": "owner@salon.example", "password": "wrong"}, 401),
        ({"email": "nobody@salon.example", "password": "correct horse"}, 401),
        ({"email": "owner@salon.example"}, 400),
        ({"email": 5, "password": []}, 400),
    ],
)
def test_bad_logins_are_refused_clearly(client, db, body, status):
    from tests.conftest import create_tenant

    create_tenant(db, email="owner@salon.example")
    response = client.post("/api/auth/login", json=body)
    assert response.status_code == status
    assert set(response.json) >= {"error", "message"}


def test_login_with_malformed_json_is_400(client):
    response = client.post("/api/auth/login", data="{not json", content_type="application/json")
    assert response.status_code == 400 and response.json["error"] == "invalid_json"
    response = client.post("/api/auth/login", json=["a", "list"])
    assert response.status_code == 400


@pytest.fixture
def guarded_app(make_app):
    app = make_app()
    bp = Blueprint("guarded", __name__)

    @bp.get("/api/test/whoami")
    @require_auth()
    def whoami():
        return jsonify(user=g.user.id, business=g.business_id)

    @bp.get("/api/test/owners-only")
    @require_auth(role="owner")
    def owners_only():
        return jsonify(ok=True)

    @bp.get("/api/test/customers/<int:customer_id>")
    @require_auth()
    def customer(customer_id):
        return jsonify(id=get_owned(db_session(), Customer, g.business_id, customer_id).id)

    app.register_blueprint(bp)
    return app


def test_bearer_token_checks(guarded_app, tenant):
    client = guarded_app.test_client()
    assert client.get("/api/test/whoami").status_code == 401
    assert client.get("/api/test/whoami", headers={"Authorization": "Bearer al_nope"}).status_code == 401
    assert client.get("/api/test/whoami", headers={"Authorization": "Basic abc"}).status_code == 401
    ok = client.get("/api/test/whoami", headers=tenant.headers)
    assert ok.status_code == 200 and ok.json == {"user": tenant.user_id, "business": tenant.business_id}


def test_roles_rank_agent_below_owner_below_admin(guarded_app, tenant, db):
    client = guarded_app.test_client()
    agent = add_user(db, tenant.business_id, "agent")
    admin = add_user(db, tenant.business_id, "admin")
    assert client.get("/api/test/owners-only", headers=agent.headers).status_code == 403
    assert client.get("/api/test/owners-only", headers=tenant.headers).status_code == 200
    assert client.get("/api/test/owners-only", headers=admin.headers).status_code == 200


def test_another_business_object_is_404_and_admin_can_act_for_it(guarded_app, tenant, other_tenant, db):
    from server.db import dao_crm

    with db.scope() as s:
        theirs = dao_crm.upsert_customer(s, other_tenant.business_id, phone="+972501112222").id
    client = guarded_app.test_client()
    assert client.get(f"/api/test/customers/{theirs}", headers=tenant.headers).status_code == 404
    assert client.get("/api/test/customers/999999", headers=tenant.headers).status_code == 404
    # X-Business-Id means nothing for non-admins
    assert (
        client.get(
            f"/api/test/customers/{theirs}", headers={**tenant.headers, "X-Business-Id": str(other_tenant.business_id)}
        ).status_code
        == 404
    )
    admin = add_user(db, tenant.business_id, "admin")
    headers = {**admin.headers, "X-Business-Id": str(other_tenant.business_id)}
    assert client.get(f"/api/test/customers/{theirs}", headers=headers).status_code == 200
    assert client.get("/api/test/whoami", headers={**admin.headers, "X-Business-Id": "999"}).status_code == 404


def test_tokens_are_stored_hashed(db, tenant):
    import sqlalchemy as sa

    from server.db.models import ApiToken

    with db.scope() as s:
        stored = s.scalars(sa.select(ApiToken.token_hash)).all()
    assert tenant.token not in stored and len(stored[0]) == 64


def test_token_use_is_recorded_at_most_once_a_minute(guarded_app, tenant, db):
    from datetime import timedelta

    import sqlalchemy as sa

    from server.db.models import ApiToken, utcnow

    client = guarded_app.test_client()

    def last_used():
        with db.scope() as s:
            return s.scalar(sa.select(ApiToken.last_used_at))

    assert client.get("/api/test/whoami", headers=tenant.headers).status_code == 200
    first = last_used()
    assert first is not None
    assert client.get("/api/test/whoami", headers=tenant.headers).status_code == 200
    assert last_used() == first
    with db.scope() as s:
        s.execute(sa.update(ApiToken).values(last_used_at=utcnow() - timedelta(minutes=5)))
    assert client.get("/api/test/whoami", headers=tenant.headers).status_code == 200
    assert last_used() != first

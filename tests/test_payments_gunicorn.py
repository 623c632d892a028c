"""Both payment flows through real gunicorn with the gevent worker, as production runs them.

PostgreSQL only (the production database); every flow also runs in process on both databases."""

from __future__ import annotations

import pytest
import requests

from server.app_factory import create_app
from server.app_state import services
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, make_settings, truncate_all
from tests.payments_support import business_owner, payment_env, paypal, paypal_server, tranzila, tranzila_server  # noqa: F401

# the app under real gunicorn
pytestmark = pytest.mark.slow


def test_paypal_and_tranzila_links_under_gunicorn_gevent(pg_database, paypal, tranzila, tmp_path):
    truncate_all(pg_database)
    app = create_app(make_settings(DATABASE_URL=pg_database, JOBS_URL=f"sqlite:///{tmp_path / 'jobs.db'}"))
    owner = business_owner(app, payments_enabled=True)
    services(app).database.engine.dispose()
    env = {**BASE_TEST_ENV, **payment_env(paypal, tranzila), "DATABASE_URL": pg_database, "LOG_LEVEL": "WARNING"}
    server = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
    server.env["PUBLIC_BASE_URL"] = server.url
    with server:

        def create(provider: str) -> dict:
            response = requests.post(
                f"{server.url}/api/crm/payments/create",
                json={"amount": "49.90", "provider": provider},
                headers=owner.headers,
                timeout=10,
            )
            assert response.status_code == 201, response.text
            return response.json()

        link = create("paypal")
        assert link["url"].startswith(f"{server.url}/pay/")
        approve = requests.get(link["url"], allow_redirects=False, timeout=10)
        assert approve.status_code == 302, server.logs()[-2000:]
        back = requests.get(approve.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
        page = requests.get(back, timeout=10)
        assert page.status_code == 200 and "התשלום התקבל" in page.text

        link = create("tranzila")
        hosted_page = requests.get(link["url"], allow_redirects=False, timeout=10).headers["Location"]
        notification = tranzila.pay(hosted_page)
        assert requests.post(notification.url, data=notification.form, timeout=10).json() == {"status": "paid"}

        for payment_id in (link["payment_id"] - 1, link["payment_id"]):
            status = requests.get(f"{server.url}/api/crm/payments/{payment_id}", headers=owner.headers, timeout=10)
            assert status.json()["status"] == "paid"

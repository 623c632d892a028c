"""The appointment book under production conditions: real gunicorn with two gevent worker processes
on both databases, many staff (or AI tools) booking the last slot at the same moment, and the
notice sent by the separate jobs worker process."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
import requests

from testkit.servers import GunicornServer
from tests.appointments_support import local, next_weekday, set_up_book
from tests.conftest import BASE_TEST_ENV, create_tenant
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    bridge,
    bridge_server,
    twilio_api,
    twilio_server,
    wa_env,
    wait_for,
)

# the app under real gunicorn, two workers
pytestmark = pytest.mark.slow
CONTENDERS = 10


def test_the_last_slot_goes_to_exactly_one_of_many_processes(database_url, db, tmp_path, wa_env, bridge):
    tenant = create_tenant(db)
    book = set_up_book(db, tenant.business_id)
    sunday = next_weekday(0)
    start = local(sunday, "10:00").isoformat()
    env = {**BASE_TEST_ENV, **wa_env(), "DATABASE_URL": database_url}
    with GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log", jobs_worker=True) as server:
        barrier = threading.Barrier(CONTENDERS)

        def contend(index: int) -> requests.Response:
            barrier.wait(10)
            return requests.post(
                server.url + "/api/appointments",
                json={
                    "service_id": book.haircut,
                    "start": start,
                    "phone": f"05012345{index:02d}",
                    "name": f"לקוח {index}",
                },
                headers=tenant.headers,
                timeout=30,
            )

        with concurrent.futures.ThreadPoolExecutor(CONTENDERS) as pool:
            answers = list(pool.map(contend, range(CONTENDERS)))
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201] + [409] * (CONTENDERS - 1), [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 409:
                assert answer.json()["error"] == "slot_taken" and answer.json()["alternatives"]
        winner = next(answer.json() for answer in answers if answer.status_code == 201)
        day = requests.get(server.url + f"/api/appointments?from={sunday}", headers=tenant.headers, timeout=10).json()
        assert [a["id"] for a in day["items"]] == [winner["id"]]
        # The winner's notice is sent by the jobs worker process, not by the request.
        assert wait_for(lambda: len(bridge.accepted) == 1, timeout=20)
        assert bridge.accepted[0].body["to"] == winner["customer"]["phone"]
        assert "בשעה 10:00" in bridge.accepted[0].body["text"]
        assert "Traceback" not in server.logs()

"""Schemathesis against `/api/openapi.json`: every documented operation, with valid and invalid
input, authenticated as an owner on a seeded database. No server error, every answer matches the
document (status code, content type, body schema), and input the document calls invalid is refused.

Bounded for the normal suite: a fixed number of derandomized examples per operation (plus
schemathesis's deterministic coverage cases), on SQLite. WhatsApp sends go to local fakes of the
Baileys bridge and of Twilio's REST API, so staff replies and /api/whatsapp/send really succeed.
Payments stay unconfigured: their documented answer is 501, the one 5xx allowed here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from server.app_factory import create_app
from server.app_state import services
from server.db.models import User
from server.security.auth import issue_token
from testkit.fakes.bridge import FakeBridge
from testkit.fakes.twilio_rest import FakeTwilioRest
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN, create_tenant, make_settings
from tests.crm_seed import seed_business

# a long schemathesis run over every operation
pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 10
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
]
NOT_CONFIGURED = "501"
BRIDGE_SECRET = "fuzz-bridge-secret"


@pytest.fixture(scope="module")
def fuzz_target():
    # Thousands of small commits: on a RAM disk when there is one (SQLite syncs every commit).
    shm = Path("/dev/shm")
    directory = Path(tempfile.mkdtemp(prefix="agentlocator-fuzz-", dir=shm if shm.is_dir() else None))
    with (
        FakeBridge(BRIDGE_SECRET) as bridge,
        FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as twilio,
    ):
        app = create_app(
            make_settings(
                DATABASE_URL=f"sqlite:///{directory / 'fuzz.db'}",
                LOG_LEVEL="WARNING",
                ENABLE_WA_BAILEYS="true",
                WA_BAILEYS_URL=bridge.url,
                WA_SHARED_SECRET=BRIDGE_SECRET,
                ENABLE_WA_TWILIO="true",
                TWILIO_WA_FROM="+97235550002",
                TWILIO_API_BASE_URL=twilio.url,
            )
        )
        database = services(app).database
        owner = create_tenant(database)
        other = create_tenant(database, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102")
        seed_business(database, owner.business_id, label="a")
        seed_business(database, other.business_id, label="b")
        yield app, owner
        database.engine.dispose()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def api_schema(fuzz_target):
    app, owner = fuzz_target
    config = SchemathesisConfig.from_dict(
        {
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in CHECKS},
                "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "3xx", "4xx", NOT_CONFIGURED]},
            },
            "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION, "deterministic": True},
            "headers": owner.headers,
            # The console's event stream never ends by itself: its first event (`ready`) is the answer.
            "max-stream-events": 1,
        }
    )
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app, config=config, headers=owner.headers)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """Schemathesis 4.32's lazy loader names each operation's subtest through `Node._nodeid`,
    an attribute pytest 9 no longer has (it keeps `_id`); give it the current id to start from."""
    request.node._nodeid = request.node.nodeid


def fresh_owner_token(app, owner) -> dict[str, str]:
    """A new token per case: DELETE /api/crm/tokens/{id} may well revoke the one in use."""
    with services(app).database.scope() as session:
        return {"Authorization": f"Bearer {issue_token(session, session.get(User, owner.user_id))}"}


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_openapi_document(case, fuzz_target):
    case.call_and_validate(headers=fresh_owner_token(*fuzz_target))

import subprocess
import sys

import pytest

from testkit.servers import PROJECT_ROOT

# each case is a fresh Python subprocess
pytestmark = pytest.mark.slow

PROBE = """
from gevent import monkey
monkey.patch_all()
import psycopg2.extensions
from grpc._cython import cygrpc
from server.cooperative import make_io_cooperative
from server.providers.google_credentials import make_grpc_cooperative
assert psycopg2.extensions.get_wait_callback() is None
make_io_cooperative()
before = bool(getattr(cygrpc, "g_gevent_activated", False))
make_grpc_cooperative()  # what the Google providers call before their first channel
print(psycopg2.extensions.get_wait_callback() is not None, before, bool(getattr(cygrpc, "g_gevent_activated", False)))
"""


def test_under_gevent_psycopg2_is_cooperative_at_once_and_grpc_before_its_first_channel():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "True"], out.stderr


def test_without_gevent_nothing_is_patched():
    probe = (
        "import psycopg2.extensions\nfrom server.cooperative import make_io_cooperative\n"
        "make_io_cooperative()\nprint(psycopg2.extensions.get_wait_callback())"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "None", out.stderr

"""A PostgreSQL cluster of a test's own (initdb into a directory, pg_ctl on a free port), so a test
can stop and start the database under a running service without touching anyone else's server.

    with TemporaryPostgres() as pg:   # pg.url: an empty database, trust auth
        pg.stop()    # the database is gone (connections cut, new ones refused)
        pg.start()   # and back, with its data
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testkit.servers import free_port

DATABASE = "agentlocator"
SUPERUSER = "postgres"


def postgres_bin() -> Path | None:
    """The newest installed server's bin directory (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class TemporaryPostgres:
    def __init__(self):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        # Not under pytest's tmp_path: that is private to the test's user, and the server may run as another.
        self.directory = Path(tempfile.mkdtemp(prefix="agentlocator-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # initdb and the server refuse to run as root: as root, run them as the `postgres` account.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120, check=check)

    def create(self) -> "TemporaryPostgres":
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-instructions",
        )
        self.start()
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE)
        return self

    def start(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as when the server crashes or is restarted."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def __enter__(self) -> "TemporaryPostgres":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

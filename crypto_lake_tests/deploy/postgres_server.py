"""A real PostgreSQL server for the tests: Debian's binaries, a throwaway cluster on loopback.

``./dev test`` installs Debian's ``postgresql`` when it is missing (as it installs chromium).
The cluster lives in a fresh folder under the system temp dir; when the tests run as root
(CI), ``initdb`` and the server run as the ``postgres`` user, which owns that folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER, PASSWORD, DB = "dagster", "dagster-test-password", "dagster"


def _bindir() -> Path:
    """The newest installed server's bin folder (``initdb`` is not on PATH on Debian)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parent)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL server not found: apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()`` a cluster with one password-protected role and database; ``stop()`` it."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="crypto-lake-pg-"))
        self.data = self.root / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [*self._as, *args], input=stdin, capture_output=True, text=True, cwd=self.root
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return proc.stdout

    def start(self) -> PostgresServer:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")  # fmt: skip
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.root} -c fsync=off "
                   "-c max_connections=200 -c shared_buffers=64MB")  # fmt: skip
        log = str(self.root / "server.log")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options,
                  "-w", "-t", "60", "start")  # fmt: skip
        self.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'; ")
        self.psql(f"CREATE DATABASE {DB} OWNER {USER};")
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the cluster's own Unix socket."""
        return self._run(str(self.bindir / "psql"), "-h", str(self.root), "-p", str(self.port),
                         "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1",
                         "-Atc", sql)  # fmt: skip

    def env(self) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables deploy/dagster.yaml reads."""
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_DB": DB, "DAGSTER_PG_USER": USER,
                "DAGSTER_PG_PASSWORD": PASSWORD}  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A throw-away PostgreSQL server for tests: ``initdb`` into a new temporary directory, the
server on a private loopback address and a kernel-chosen port, stopped (or killed) by its PID.

The binaries are Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``; a
test skips with the install command when they are missing, and fails in CI, where
``PYCONPRO_REQUIRE_POSTGRES=1``). ``initdb`` and the server refuse to run as root, so as root
(CI) both run as the ``postgres`` OS user through ``setpriv``, which changes user and *execs*:
the server's PID is our child's own, so ``kill`` (SIGKILL) and ``stop`` reach the postmaster
itself. The data directory is a fresh ``mkdtemp`` under the system's temporary directory
(pytest's own is 0700 root and the postgres user could not enter it), removed by ``close``.

What it shares with the other servers the sink tests start (the state directory, the log,
start until it answers, stop or kill by PID, the session fixture) is ``tests/support/servers.py``.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyconpro.workers.process import spawn

from tests.support.ports import free_port
from tests.support.requirements import skip_or_fail
from tests.support.servers import ThrowAwayServer, session_server

# An address of our own inside 127/8, so that a developer's PostgreSQL on 127.0.0.1:5432 and
# other suites' servers never meet ours.
PG_HOST = "127.83.61.9"
INSTALL = "apt-get install postgresql"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# Settings for a test server: no fsync (the tests kill the server, not the machine), few
# connections, nothing on a Unix socket (the port is private, a socket file would not be).
_SETTINGS = {
    "listen_addresses": PG_HOST,
    "unix_socket_directories": "",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "40",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
}


def bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``postgres``."""
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if (d / "initdb").exists() and (d / "postgres").exists() and d.parent.name.isdigit():
            found.append((int(d.parent.name), d))
    return max(found)[1] if found else None


def require_postgres() -> Path:
    """The binaries' directory; skips the test (fails in CI) when there is none."""
    found = bin_dir()
    if found is None:
        skip_or_fail(
            "postgres",
            f"PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: {INSTALL}",
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("postgres", "psycopg is not installed: pip install -e '.[test]' (./dev)")
    return found


def _as_postgres() -> list[str]:
    """The prefix that runs a command as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        skip_or_fail("postgres", f"as root the server runs as user 'postgres', missing: {INSTALL}")
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
            "--pdeathsig=SIGQUIT", "--"]  # fmt: skip




class PostgresServer(ThrowAwayServer):
    """One server and its data directory (``ThrowAwayServer``; its clean stop is a fast
    shutdown, SIGINT: clients disconnected, a clean checkpoint)."""

    NAME = "PostgreSQL"
    STOP_SIGNAL = signal.SIGINT
    STOP_TIMEOUT_S = STOP_TIMEOUT_S

    def __init__(self, bin_path: Path, host: str = PG_HOST) -> None:
        super().__init__("pyconpro-pg-", "server.log")
        self.bin = bin_path
        self.host = host
        self.port = free_port(host)
        self.data = self.root / "data"
        self._prefix = _as_postgres()
        if self._prefix:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        try:
            self._initdb()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _initdb(self) -> None:
        argv = [*self._prefix, str(self.bin / "initdb"), "-D", str(self.data),
                "--username=postgres", "--auth=trust", "--encoding=UTF8", "--locale=C",
                "--no-sync"]  # fmt: skip
        child = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _out, err = child.communicate(START_TIMEOUT_S)
        finally:
            child.kill()
        if child.returncode != 0:
            raise RuntimeError(f"initdb failed ({child.returncode}): {err.strip()[-2000:]}")

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server and return once it takes connections. After ``kill`` the old
        server's backends may still hold its shared memory for a moment: the start is retried
        until the deadline."""
        settings = [f"--{k.replace('_', '-')}={v}" for k, v in _SETTINGS.items()]
        argv = [*self._prefix, str(self.bin / "postgres"), "-D", str(self.data), "-p",
                str(self.port), *settings]  # fmt: skip
        self._launch(argv, self._accepts, timeout_s, parent_death_signal=int(signal.SIGQUIT))

    def _accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.conninfo(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash: the next ``start`` runs crash recovery), then wait
        until its backends have noticed and exited (they hold its shared memory)."""
        if self.child is None:
            return
        super().kill()
        self._wait_backends_gone()

    def _wait_backends_gone(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        marker = str(self.data).encode()
        while time.monotonic() < deadline:
            if not any(_cwd_of(p).startswith(marker) for p in _pids_of_user(self._prefix)):
                return
            time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """A new empty database; its conninfo."""
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def query(self, dbname: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.conninfo(dbname)) as conn:
            return list(conn.execute(sql, params))


def _pids_of_user(prefix: list[str]) -> Iterator[int]:
    """PIDs of the processes of the user the server runs as (postgres, or us)."""
    uid = pwd.getpwnam("postgres").pw_uid if prefix else os.geteuid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    yield int(entry.name)
            except OSError:
                continue


def _cwd_of(pid: int) -> bytes:
    """The working directory of ``pid``: every backend of a server runs in its data directory."""
    try:
        return os.readlink(f"/proc/{pid}/cwd").encode()
    except OSError:
        return b""


# --------------------------------------------------------------------------- pytest fixtures
# Imported by tests/conftest.py.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the session (each test gets its own database: ``postgres_db``); the
    tests that kill or stop a server start their own ``PostgresServer``."""
    yield from session_server(PostgresServer(require_postgres()))


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> str:
    """The conninfo of a new, empty database on the session's server."""
    name = f"t{next(_db_numbers)}_{os.getpid()}"
    return postgres_server.create_database(name)


_db_numbers = itertools.count(1)


def json_value(value_int: Any, value_real: Any, value_bool: Any, value_text: Any,
               value_json: Any) -> Any:  # fmt: skip
    """A sample's value from the typed columns of the PostgreSQL sink's ``samples``."""
    for v in (value_int, value_real, value_bool, value_text):
        if v is not None:
            return v
    return value_json

"""A throw-away PostgreSQL server for tests: ``initdb`` into a new temporary directory, the
server on a private loopback address and a kernel-chosen port, stopped (or killed) by its PID.

The binaries are Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``; a
test skips with the install command when they are missing, and fails in CI, where
``PYCONPRO_REQUIRE_POSTGRES=1``). ``initdb`` and the server refuse to run as root, so as root
(CI) both run as the ``postgres`` OS user through ``setpriv``, which changes user and *execs*:
the server's PID is our child's own, so ``kill`` (SIGKILL) and ``stop`` reach the postmaster
itself. The data directory is a fresh ``mkdtemp`` under the system's temporary directory
(pytest's own is 0700 root and the postgres user could not enter it), removed by ``close``.

The same shape serves the other servers the sink tests start (a broker on a private port and
a throw-away store): find the binary or skip, make the state directory, spawn on loopback,
wait until it answers, stop by PID, remove the directory.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyconpro.workers.process import Child, spawn

from tests.support import leaks
from tests.support.ports import free_port
from tests.support.requirements import skip_or_fail

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




class PostgresServer:
    """One server and its data directory. ``start`` / ``kill`` / ``stop`` may be called any
    number of times (the kill-and-restart tests do); ``close`` stops it and removes the data."""

    def __init__(self, bin_path: Path, host: str = PG_HOST) -> None:
        self.bin = bin_path
        self.host = host
        self.port = free_port(host)
        self.root = Path(tempfile.mkdtemp(prefix="pyconpro-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.child: Child | None = None
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

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.child.alive() else None

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server and return once it takes connections. After ``kill`` the old
        server's backends may still hold its shared memory for a moment: the start is retried
        until the deadline."""
        assert self.pid is None, "already running"
        deadline = time.monotonic() + timeout_s
        settings = [f"--{k.replace('_', '-')}={v}" for k, v in _SETTINGS.items()]
        argv = [*self._prefix, str(self.bin / "postgres"), "-D", str(self.data), "-p",
                str(self.port), *settings]  # fmt: skip
        while True:
            with open(self.log_path, "ab") as log:
                log.write(b"--- start\n")
            self.child = spawn(argv, stdout=self.log_path, stderr=self.log_path,
                               parent_death_signal=int(signal.SIGQUIT))  # fmt: skip
            if self._wait_ready(deadline):
                return
            self.child.kill()
            self.child = None
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; its log:\n{self.log_tail()}")
            time.sleep(0.2)

    def _wait_ready(self, deadline: float) -> bool:
        import psycopg

        assert self.child is not None
        while time.monotonic() < deadline:
            if not self.child.alive():
                return False
            try:
                with psycopg.connect(self.conninfo(), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash: the next ``start`` runs crash recovery), then wait
        until its backends have noticed and exited (they hold its shared memory)."""
        if self.child is None:
            return
        self.child.kill()
        self.child = None
        self._wait_backends_gone()

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected, a clean checkpoint); SIGKILL if it does
        not end within ``STOP_TIMEOUT_S``."""
        if self.child is None:
            return
        self.child.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.child.wait(STOP_TIMEOUT_S)
        self.kill()

    def _wait_backends_gone(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        marker = str(self.data).encode()
        while time.monotonic() < deadline:
            if not any(_cwd_of(p).startswith(marker) for p in _pids_of_user(self._prefix)):
                return
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

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

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


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
    server = PostgresServer(require_postgres())
    try:
        server.start()
        assert server.pid is not None
        leaks.session_child(server.pid)
        yield server
    finally:
        server.close()


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

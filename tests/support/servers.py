"""What the throw-away servers of the sink tests share (``tests/support/mosquitto.py``,
``nats.py``, ``postgres.py``): a state directory of their own under the system's temporary
directory, one log file in it, the server a child of ours (``workers/process.py``) started
until it answers, stopped (or killed) by its PID, the directory removed at the end; and the
session fixture's shape (start, register the PID with ``leaks.session_child``, close).

Each server keeps its own command line and its own test of readiness.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pyconpro.workers.process import Child, spawn

from tests.support import leaks
from tests.support.requirements import skip_or_fail

POLL_S = 0.05  # between two readiness checks
RESTART_PAUSE_S = 0.2  # before another start (the port of a killed server may still be held)


def require_server(what: str, binary: str, candidates: Sequence[str], missing: str,
                   module: str, client: str) -> str:  # fmt: skip
    """The server's ``binary`` (on PATH, else the first executable of ``candidates``), its
    client library ``module`` importable; else the test skips (fails in CI, where
    PYCONPRO_REQUIRE_<WHAT>=1) with ``missing`` or the install command of ``client``."""
    found = shutil.which(binary) or next(
        (p for p in candidates if os.access(p, os.X_OK)), None
    )
    if found is None:
        skip_or_fail(what, missing)
    try:
        importlib.import_module(module)
    except ImportError:
        skip_or_fail(what, f"{client} is not installed: pip install -e '.[test]' (./dev)")
    return found


class ThrowAwayServer:
    """One server and its directory. ``start`` (the subclass's) / ``kill`` / ``stop`` may be
    called any number of times (the kill-and-restart tests do); ``close`` stops it and removes
    the directory."""

    NAME: ClassVar[str] = "server"  # in errors
    STOP_SIGNAL: ClassVar[signal.Signals] = signal.SIGTERM  # a clean shutdown
    STOP_TIMEOUT_S: ClassVar[float] = 15.0  # then SIGKILL

    def __init__(self, prefix: str, log_name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.log_path = self.root / log_name
        self.child: Child | None = None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.child.alive() else None

    def start(self) -> None:
        """Start the server and return once it answers (``_launch`` with its command line and
        its test of readiness)."""
        raise NotImplementedError

    def _launch(self, argv: Sequence[str], ready: Callable[[], bool], timeout_s: float, *,
                retry: bool = True, **spawn_options: Any) -> None:  # fmt: skip
        """Spawn ``argv`` (its output appended to the log) and return once ``ready()``; a
        server that ends or is not ready within ``timeout_s`` is killed and, with ``retry``,
        started again until then; ``RuntimeError`` with the log's tail after that."""
        assert self.pid is None, "already running"
        deadline = time.monotonic() + timeout_s
        while True:
            with open(self.log_path, "ab") as log:
                log.write(b"--- start\n")
            self.child = spawn(list(argv), stdout=self.log_path, stderr=self.log_path,
                               **spawn_options)  # fmt: skip
            while self.child.alive() and time.monotonic() < deadline:
                if ready():
                    return
                time.sleep(POLL_S)
            self.child.kill()
            self.child = None
            if not retry or time.monotonic() > deadline:
                raise RuntimeError(f"{self.NAME} did not start; its log:\n{self.log_tail()}")
            time.sleep(RESTART_PAUSE_S)

    def kill(self) -> None:
        """SIGKILL (a crash: what it held in memory is gone)."""
        if self.child is not None:
            self.child.kill()
            self.child = None

    def stop(self) -> None:
        """``STOP_SIGNAL`` (a clean shutdown); SIGKILL if it does not end within
        ``STOP_TIMEOUT_S``."""
        if self.child is None:
            return
        self.child.send_signal(self.STOP_SIGNAL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.child.wait(self.STOP_TIMEOUT_S)
        self.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


S = TypeVar("S", bound=ThrowAwayServer)


def session_server(server: S) -> Iterator[S]:
    """The body of a session fixture (``yield from``): ``server`` started, its PID registered
    as the session's (``leaks``), yielded, closed at the end."""
    try:
        server.start()
        assert server.pid is not None
        leaks.session_child(server.pid)
        yield server
    finally:
        server.close()

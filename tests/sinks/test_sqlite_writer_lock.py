"""One writer per SQLite file, across processes: a second sink on the same database is refused
with the path and the owner's PID; the lock of a sink that was killed is taken over."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from pyconpro.sinks.sqlite import SqliteSink
from pyconpro.workers.process import spawn

from tests.sinks.bus_testkit import PROCESS_TIMEOUT_S, REPO, SinkProcess, TestPublisher
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(120)


def _holder(lock: Path) -> str:
    return lock.read_text().strip() if lock.exists() else ""


class _SinkOn:
    """A sqlite sink process on the database ``db`` (SinkProcess picks its own path)."""

    def __init__(self, db: Path, endpoint: str, stderr: Path) -> None:
        self.stderr_path = stderr
        stderr.write_bytes(b"")
        self.proc = spawn([sys.executable, "-m", "pyconpro.sinks.cli", "sqlite", "--connect",
                           endpoint, "--db", str(db)], stderr=stderr, cwd=REPO)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


def test_a_second_writer_process_is_refused_and_a_dead_ones_lock_taken_over(
    tmp_path: Path, publisher: TestPublisher
) -> None:
    first = SinkProcess("sqlite", publisher.endpoint, tmp_path / "first")
    db = tmp_path / "first" / "bus.db"
    lock = db.with_name("bus.db.lock")
    try:
        wait_for(lambda: _holder(lock) == str(first.proc.pid), "the first sink's lock")
        second = _SinkOn(db, publisher.endpoint, tmp_path / "second.err")
        code = second.proc.wait(timeout_s=PROCESS_TIMEOUT_S)
        assert code == 2, second.stderr
        assert (f"{db} is written by another sink (PID {first.proc.pid}, lock {lock})"
                in second.stderr), second.stderr
        assert _holder(lock) == str(first.proc.pid)  # the refused one did not touch it
    finally:
        first.kill()  # SIGKILL: its lock file stays, holding a dead PID
    assert _holder(lock) == str(first.proc.pid)
    third = _SinkOn(db, publisher.endpoint, tmp_path / "third.err")
    try:
        wait_for(lambda: _holder(lock) == str(third.proc.pid), "the third sink's lock")
        third.proc.send_signal(signal.SIGTERM)
        assert third.proc.wait(timeout_s=PROCESS_TIMEOUT_S) == 0, third.stderr
    finally:
        third.proc.kill()
    assert _holder(lock) == ""  # released at close


def test_two_sinks_in_one_process_and_a_reopen_after_close(tmp_path: Path) -> None:
    db = tmp_path / "one.sqlite3"
    a = SqliteSink(db)
    a.open()
    try:
        with pytest.raises(RuntimeError, match=rf"PID {os.getpid()}, lock .*one.sqlite3.lock"):
            SqliteSink(db).open()
    finally:
        a.close()
    b = SqliteSink(db)
    b.open()
    b.close()

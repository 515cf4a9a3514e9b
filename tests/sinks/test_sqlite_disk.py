"""The SQLite sink survives its disk: full, read-only, locked by another program, its directory
removed. Each failed write is rolled back (the file passes ``PRAGMA integrity_check`` and holds
whole batches only), the records are kept in memory up to ``max_pending`` (past it the oldest
are dropped, counted exactly) and written in order once the disk takes them again.

The first tests drive the sink loop on a fake clock with a real database: SQLITE_FULL comes from
``PRAGMA max_page_count`` (no root needed), the lock from a second connection holding
``BEGIN EXCLUSIVE``. The last ones run the sink as a process (the command ``pyconpro run``
starts) on a tmpfs of its own, really filled and really remounted read-only; they need root to
mount and skip without it, failing instead where ``PYCONPRO_REQUIRE_MOUNT=1`` (CI).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from pyconpro.acquisition.wire import Sample, SeqCounter, topic_for_sample
from pyconpro.sinks.base import LoopOptions, SubscriberLoop
from pyconpro.sinks.sqlite import SqliteSink
from pyconpro.workers.process import Child, spawn

from tests.sinks.bus_testkit import BUS_HOST, PROCESS_TIMEOUT_S, REPO, TestPublisher
from tests.support.requirements import skip_or_fail
from tests.support.sqlite_rows import stored_count as count
from tests.support.sqlite_rows import stored_seqs as stored
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)

WAIT_S = 60.0


def make_samples(n: int, start: int = 0, raw_size: int = 100) -> list[Sample]:
    seqs = SeqCounter()
    topic = topic_for_sample("line1", "Speed")
    for _ in range(start):
        seqs.next(topic)
    return [
        Sample(seq=seqs.next(topic), publisher="w1", plc="line1", tag="Speed",
               t_wall_ns=1_700_000_000_000_000_000 + i, t_mono_ns=i, cip_seq=i & 0xFFFF, gap=0,
               value=float(i), raw=bytes(raw_size), type_name="REAL")
        for i in range(start, start + n)
    ]  # fmt: skip


# --------------------------------------------------------------------------- on a fake clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SmallSqlite(SqliteSink):
    """A database of at most ``pages`` pages of 4 KiB (``PRAGMA max_page_count``, applied at
    every open, so raising it and letting the sink reopen is "freeing space")."""

    pages = 1_000_000

    def _prepare(self, db: sqlite3.Connection) -> None:
        super()._prepare(db)
        db.execute(f"PRAGMA max_page_count={self.pages}")


def loop_on(sink: SqliteSink, batch_size: int = 50) -> tuple[SubscriberLoop, FakeClock]:
    clock = FakeClock()
    # Written when a batch is full (an hour-long interval never triggers on this clock).
    options = LoopOptions(endpoints=["tcp://127.0.0.1:1"], flush_interval=3600.0,
                          batch_size=batch_size)  # fmt: skip
    loop = SubscriberLoop(sink, options, clock=clock, wall_ns=lambda: 5)
    sink.open()
    return loop, clock


def feed(loop: SubscriberLoop, samples: Sequence[Sample]) -> None:
    """Hand ``samples`` to the loop one by one, as the socket would, writing when due."""
    for s in samples:
        loop.handle(list(s.encode()))
        loop.flush_if_due()


def drain(loop: SubscriberLoop, clock: FakeClock) -> None:
    """Let time pass until everything kept is written (fails if it never is)."""
    for _ in range(1000):
        if not loop.pending and not loop.health.retrying:
            return
        clock.now += 5.0
        loop.flush_if_due()
    raise AssertionError(f"still {loop.pending} pending: {loop.health.message}")


def fill_until_full(loop: SubscriberLoop, sink: SmallSqlite, samples: list[Sample]) -> int:
    """Feed until the sink reports the disk full; returns how many samples were fed."""
    for i in range(0, len(samples), 10):
        feed(loop, samples[i : i + 10])
        if loop.health.retrying:
            assert loop.health.cause == "disk full", loop.health.message
            return i + 10
    raise AssertionError(f"{sink.path} never filled up ({sink.pages} pages)")


def test_a_full_database_keeps_whole_batches_only_and_resumes_in_order(tmp_path: Path) -> None:
    sink = SmallSqlite(tmp_path / "db.sqlite3")
    sink.pages = 16  # the schema takes about 7 pages; room for a few hundred rows
    loop, clock = loop_on(sink, batch_size=50)
    samples = make_samples(3000)
    fed = fill_until_full(loop, sink, samples)
    assert loop.health.message == (f"disk full at {tmp_path}: free space there or point `path`"
                                   " elsewhere")  # fmt: skip
    committed = stored(sink.path)
    assert committed == list(range(len(committed)))  # every committed row, in order ...
    assert len(committed) % 50 == 0 and committed  # ... of whole batches: none half-written
    assert loop.pending == fed - len(committed)
    for _ in range(5):  # still full: the retries fail, nothing is lost, nothing half-written
        clock.now += 10
        loop.flush_if_due()
        assert stored(sink.path) == committed
    feed(loop, samples[fed:])  # more arrives meanwhile
    sink.pages = 1_000_000  # space returns
    drain(loop, clock)
    assert stored(sink.path) == list(range(3000))
    assert (loop.counters.written, loop.counters.dropped) == (3000, 0)
    assert loop.counters.write_failures >= 6


def test_past_max_pending_the_oldest_are_dropped_with_exact_counts(tmp_path: Path) -> None:
    sink = SmallSqlite(tmp_path / "db.sqlite3", max_pending=200)
    sink.pages = 16
    loop, clock = loop_on(sink, batch_size=20)
    samples = make_samples(2000)
    fed = fill_until_full(loop, sink, samples)
    committed = len(stored(sink.path))
    feed(loop, samples[fed:])
    assert loop.pending == 200
    dropped = 2000 - committed - 200
    assert loop.counters.dropped == dropped and loop.report()["dropped"] == dropped
    sink.pages = 1_000_000
    drain(loop, clock)
    # what was committed before, then the newest 200, in order; the ones between are dropped
    assert stored(sink.path) == list(range(committed)) + list(range(1800, 2000))


def test_a_database_locked_by_another_program_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    sink = SqliteSink(path, busy_timeout_s=0.05)
    loop, clock = loop_on(sink, batch_size=10)
    samples = make_samples(100)
    feed(loop, samples[:10])
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        feed(loop, samples[10:60])
        assert loop.health.cause == "locked" and loop.pending == 50
        assert loop.health.message.startswith(f"database {path} is locked by another connection")
        clock.now += 30
        loop.flush_if_due()  # the lock is still held
        assert loop.health.retrying
    finally:
        other.execute("COMMIT")
        other.close()
    feed(loop, samples[60:])
    drain(loop, clock)
    assert stored(path) == list(range(100))


def test_a_removed_directory_is_waited_for_and_the_kept_rows_go_to_a_new_database(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    path = directory / "db.sqlite3"
    sink = SqliteSink(path)
    loop, clock = loop_on(sink, batch_size=10)
    samples = make_samples(100)
    feed(loop, samples[:30])
    shutil.rmtree(directory)  # SQLite would write on into the deleted file without an error
    feed(loop, samples[30:60])
    assert loop.health.cause == "directory missing", loop.health.message
    assert loop.health.message == (f"directory {directory} does not exist (removed, or its disk"
                                   " not mounted): create it or point `path` elsewhere")
    for _ in range(3):
        clock.now += 10
        loop.flush_if_due()
    assert loop.health.cause == "directory missing" and loop.pending == 30
    directory.mkdir()
    drain(loop, clock)
    feed(loop, samples[60:])
    drain(loop, clock)
    assert stored(path) == list(range(30, 100))


def test_a_database_file_removed_while_open_is_started_again(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    sink = SqliteSink(path)
    loop, clock = loop_on(sink, batch_size=10)
    samples = make_samples(40)
    feed(loop, samples[:20])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink()
    feed(loop, samples[20:30])
    assert loop.health.cause == "file removed", loop.health.message
    feed(loop, samples[30:])
    drain(loop, clock)
    assert stored(path) == list(range(20, 40))


def test_a_path_that_is_a_directory_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="is a directory: `path` names the database file"):
        SqliteSink(tmp_path).open()


def test_a_file_that_is_not_a_database_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database at all, " * 200)
    with pytest.raises(RuntimeError, match="is not a SQLite database or is damaged"):
        SqliteSink(path).open()


# --------------------------------------------------------------------------- a real disk


def require_root_mount() -> None:
    if os.geteuid() != 0:
        skip_or_fail("mount", "mounting a tmpfs needs root (run the tests as root, as CI does)")


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False,
                          timeout=30)  # fmt: skip


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` for the duration; unmounted however it ends."""
    require_root_mount()
    path.mkdir()
    r = _mount("-t", "tmpfs", "-o", f"size={size}", "pyconpro-test", str(path))
    if r.returncode != 0:
        skip_or_fail("mount", f"cannot mount a tmpfs on {path}: {r.stderr.strip()}")
    try:
        yield path
    finally:
        _mount("-o", "remount,rw", str(path))
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True,
                              check=False).returncode == 0:  # fmt: skip
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], check=False)
            raise AssertionError(f"{path} stayed busy; unmounted lazily")


def remount(path: Path, mode: str) -> None:
    """``mount -o remount,<mode>``; a read-only remount fails while a file is open for writing
    (the sink opens the database at each retry), so it is tried until it goes through."""
    last = ""
    for _ in range(200):
        r = _mount("-o", f"remount,{mode}", str(path))
        if r.returncode == 0:
            return
        last = r.stderr.strip()
        time.sleep(0.05)
    raise AssertionError(f"remount,{mode} {path}: {last}")


def fill(path: Path) -> int:
    """Write ``path`` until its file system has no block left; returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            chunk = bytes(size)
            try:
                while True:
                    written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return written


class Reports:
    """Stands in for the supervisor's control socket: receives the sink's ``sink_report``
    requests and answers them as the supervisor does."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://{BUS_HOST}:*")
        self.endpoint: str = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.last: dict[str, Any] = {}
        self.causes: list[str] = []  # every distinct cause reported, in order

    def poll(self) -> dict[str, Any]:
        while self.sock.poll(0, zmq.POLLIN):
            *envelope, body = self.sock.recv_multipart()
            req = msgpack.unpackb(body, raw=False)
            assert req["op"] == "sink_report" and req["child"] == "sink-sqlite", req
            self.sock.send_multipart([*envelope, msgpack.packb({"ok": True})])
            self.last = req["report"]
            cause = self.last["cause"]
            if cause and (not self.causes or self.causes[-1] != cause):
                self.causes.append(cause)
        return self.last

    def wait(self, cond: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            report = self.poll()
            if report and cond(report):
                return report
            time.sleep(0.05)
        raise AssertionError(f"timed out after {WAIT_S:g} s waiting for {what}; last report"
                             f" {self.last}")  # fmt: skip

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


class SinkUnderTest:
    """The SQLite sink as a process, with ``--report`` to ``reports`` and a fast flush."""

    def __init__(self, tmp: Path, db: Path, publisher: TestPublisher, reports: Reports,
                 *extra: str) -> None:  # fmt: skip
        self.err = tmp / "sink.err"
        self.proc: Child = spawn(
            [sys.executable, "-m", "pyconpro.sinks.cli", "sqlite", "--connect",
             publisher.endpoint, "--db", str(db), "--flush-interval", "0.05",
             "--batch-size", "200", "--report", reports.endpoint, *extra],
            stderr=self.err, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip
        self.publisher = publisher
        publisher.wait_subscribed([b"sample/"])

    @property
    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the sink ignored SIGTERM; its log:\n{self.log}") from None


@pytest.fixture
def bus() -> Iterator[tuple[TestPublisher, Reports]]:
    publisher, reports = TestPublisher(), Reports()
    try:
        yield publisher, reports
    finally:
        publisher.close()
        reports.close()


def send_until_full(sink: SinkUnderTest, reports: Reports, samples: list[Sample]) -> int:
    """Publish batches until the sink says the disk is full; returns how many were sent."""
    sent = 0
    while sent < len(samples):
        for s in samples[sent : sent + 100]:
            sink.publisher.send(s)
        sent += 100
        n = sent

        def written_or_full(r: dict[str, Any]) -> bool:
            return bool(r["state"] == "retrying" or r["written"] >= n)

        if reports.wait(written_or_full, f"{n} written or the disk full")["state"] == "retrying":
            return sent
    raise AssertionError(f"{len(samples)} samples did not fill the disk; log:\n{sink.log}")


@pytest.mark.slow
def test_a_really_full_disk_then_space_freed(tmp_path: Path, bus: tuple[TestPublisher, Reports]
                                             ) -> None:  # fmt: skip
    publisher, reports = bus
    samples = make_samples(20_000, raw_size=200)
    with tmpfs(tmp_path / "disk", "16m") as disk:
        db = disk / "db.sqlite3"
        sink = SinkUnderTest(tmp_path, db, publisher, reports)
        try:
            for s in samples[:100]:
                publisher.send(s)
            reports.wait(lambda r: r["written"] >= 100, "the first rows written")
            filler = disk / "filler"
            fill(filler)
            sent = send_until_full(sink, reports, samples[100:]) + 100
            assert reports.causes == ["disk full"]
            assert reports.last["message"] == (f"disk full at {disk}: free space there or point"
                                               " `path` elsewhere")  # fmt: skip
            before = stored(db)
            assert before == list(range(len(before)))  # whole batches, in order, intact
            for s in samples[sent : sent + 500]:  # more arrives while the disk is full
                publisher.send(s)
            total = sent + 500
            reports.wait(lambda r: r["samples"] == total, "every sample received")
            kept = reports.last["pending"]
            freed = time.monotonic()
            filler.unlink()
            wait_for(lambda: count(db) == total, f"{total} rows after space was freed")
            resumed_s = time.monotonic() - freed
            report = reports.wait(lambda r: r["state"] == "writing" and r["pending"] == 0,
                                  "the sink writing again, nothing pending")  # fmt: skip
            assert (report["dropped"], report["written"]) == (0, total)
            print(f"\nfull disk: {len(before)} rows stored before, {kept} kept in memory, all"
                  f" {total} stored {resumed_s:.2f} s after space was freed")  # fmt: skip
        finally:
            code = sink.stop()
        assert code == 0, sink.log
        assert stored(db) == list(range(total))
    log = sink.log
    assert "Traceback" not in log
    assert log.count(f"cannot write: disk full at {disk}") == 1, log
    assert "writing again after" in log


@pytest.mark.slow
def test_a_read_only_disk_at_start_and_during_an_outage(
    tmp_path: Path, bus: tuple[TestPublisher, Reports]
) -> None:
    publisher, reports = bus
    samples = make_samples(20_000, raw_size=200)
    with tmpfs(tmp_path / "disk", "16m") as disk:
        remount(disk, "ro")
        db = disk / "db.sqlite3"
        sink = SinkUnderTest(tmp_path, db, publisher, reports)
        try:
            reports.wait(lambda r: r["cause"] == "read-only", "read-only reported")
            assert reports.last["message"] == (f"{disk} is on a read-only file system"
                                               " (SQLITE_CANTOPEN): remount it read-write (after"
                                               " an error: check the disk, dmesg) or point `path`"
                                               " elsewhere")  # fmt: skip
            for s in samples[:300]:
                publisher.send(s)
            reports.wait(lambda r: r["pending"] == 300, "300 samples kept")
            remount(disk, "rw")
            wait_for(lambda: count(db) == 300, "300 rows once writable")
            # Full first; then, while the sink waits, the disk goes read-only; then back.
            filler = disk / "filler"
            fill(filler)
            sent = 300 + send_until_full(sink, reports, samples[300:])
            remount(disk, "ro")
            reports.wait(lambda r: r["cause"] == "read-only", "read-only reported")
            for s in samples[sent : sent + 200]:
                publisher.send(s)
            total = sent + 200
            remount(disk, "rw")
            reports.wait(lambda r: r["cause"] == "disk full", "full again once writable")
            filler.unlink()
            wait_for(lambda: count(db) == total, f"{total} rows")
        finally:
            code = sink.stop()
        assert code == 0, sink.log
        assert stored(db) == list(range(total))
        assert reports.causes == ["read-only", "disk full", "read-only", "disk full"]
    assert "Traceback" not in sink.log


@contextmanager
def ext4_on_loop(tmp: Path) -> Iterator[tuple[Path, str]]:
    """A 32 MiB ext4 image on a loop device, mounted ``errors=remount-ro`` on ``tmp/ext4``:
    (the mount point, the loop device's name)."""
    require_root_mount()
    for tool, package in (("mkfs.ext4", "e2fsprogs"), ("losetup", "mount")):
        if shutil.which(tool) is None:
            skip_or_fail("mount", f"{tool} is missing: apt-get install {package}")
    image, mnt = tmp / "disk.img", tmp / "ext4"
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    r = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True,
                       check=False)  # fmt: skip
    if r.returncode != 0:
        skip_or_fail("mount", f"no loop device to attach a disk image to: {r.stderr.strip()}")
    device = r.stdout.strip()
    mnt.mkdir()
    try:
        r = _mount("-o", "errors=remount-ro", device, str(mnt))
        assert r.returncode == 0, r.stderr
        yield mnt, os.path.basename(device)
    finally:
        for _ in range(50):
            if not os.path.ismount(mnt):
                break
            subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
            time.sleep(0.1)
        subprocess.run(["losetup", "-d", device], check=False)


def unmount(path: Path) -> None:
    """``umount``, tried until no file is open there (the sink reopens at each retry)."""
    last = ""
    for _ in range(200):
        r = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
        if r.returncode == 0:
            return
        last = r.stderr.strip()
        time.sleep(0.05)
    raise AssertionError(f"umount {path}: {last}")


@pytest.mark.slow
def test_a_file_system_that_fails_under_the_sink_then_comes_back(
    tmp_path: Path, bus: tuple[TestPublisher, Reports]
) -> None:
    """A real I/O failure while the database is open: ext4 told to fail
    (``trigger_fs_error``) turns itself read-only for every write. The disk is then unmounted
    (the sink must not start a new database on the disk below the mount point) and mounted
    again; the sink writes on into the same database.

    ``synchronous = FULL``: the file system drops what it had not written when it fails, and
    with ``NORMAL`` the last commits before the failure are only in the page cache.
    """
    publisher, reports = bus
    samples = make_samples(400)
    with ext4_on_loop(tmp_path) as (mnt, loop_name):
        db = mnt / "db.sqlite3"
        sink = SinkUnderTest(tmp_path, db, publisher, reports, "--synchronous", "FULL")
        try:
            for s in samples[:100]:
                publisher.send(s)
            reports.wait(lambda r: r["written"] >= 100, "the first rows written")
            Path(f"/sys/fs/ext4/{loop_name}/trigger_fs_error").write_text("pyconpro test\n")
            for s in samples[100:200]:
                publisher.send(s)
            reports.wait(lambda r: r["cause"] == "read-only", "the failed disk reported")
            unmount(mnt)
            for s in samples[200:300]:
                publisher.send(s)
            report = reports.wait(lambda r: r["cause"] == "not mounted", "unmounted reported")
            assert report["message"].startswith(f"{mnt} is no longer on the file system")
            assert list(mnt.iterdir()) == []  # nothing written to the disk below
            r = _mount("-o", "errors=remount-ro", f"/dev/{loop_name}", str(mnt))
            assert r.returncode == 0, r.stderr
            for s in samples[300:]:
                publisher.send(s)
            wait_for(lambda: count(db) == 400, "400 rows once mounted again")
        finally:
            code = sink.stop()
        assert code == 0, sink.log
        assert stored(db) == list(range(400))
        assert reports.causes == ["read-only", "not mounted"]
    assert "Traceback" not in sink.log

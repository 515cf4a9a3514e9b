"""SQLite sink: every sample, event, gap (bus loss and outages) and stats message in one file.

Schema (``PRAGMA user_version`` = 3; later versions only add tables/columns)::

    samples(id INTEGER PRIMARY KEY, plc TEXT, tag TEXT, t_wall_ns INTEGER, t_mono_ns INTEGER,
            type TEXT NULL, value_json TEXT, value_real REAL NULL, raw BLOB,
            cip_seq INTEGER, gap INTEGER, publisher TEXT, seq INTEGER,
            t_source_ns INTEGER NULL)  -- the controller's time (a tag's source_time), ns
        index samples_by_tag_time (plc, tag, t_wall_ns)   -- "value of X between t1 and t2"
    events(id, plc, tag, t_wall_ns, t_mono_ns, kind, state_from, state_to, cip_general,
           cip_extended, status_text, message, publisher, seq)
        index events_by_tag_time (plc, tag, t_wall_ns)
    gaps(id, t_wall_ns, publisher, topic, expected_seq NULL, received_seq NULL, missed,
         restart, kind, plc NULL, tag NULL, start_wall_ns NULL, start_mono_ns NULL,
         end_wall_ns NULL, end_mono_ns NULL, rpi_us NULL, cause NULL, resumed NULL)
        index gaps_by_tag_time (plc, tag, start_wall_ns)
        -- every known loss of data, one row each (docs/operations.md "Gaps and outages"):
        -- kind 'bus': messages this sink missed on one topic (expected/received_seq set);
        -- kind 'outage': an interruption of one tag's data at the worker (an `outage` event:
        -- start/end, missed = samples the RPI promised in between, cause, resumed).
        -- Datagrams lost inside a running connection are samples.gap and events kind='gap'.
    stats(id, t_wall_ns, t_mono_ns, worker, publisher, seq, counters_json)
    bus_marks(publisher, topic, seq, t_mono_ns)  PRIMARY KEY (publisher, topic)
        -- per bus stream, the last message stored (or left out by report by exception:
        -- ``write_skipped``): what a restart asks the replay to follow

``value_json`` is the decoded value as strict JSON (NaN/inf as strings, see sinks.records);
``value_real`` repeats it when it is a scalar number (bool as 0/1; SQLite stores NaN as NULL).
Unsigned 64-bit counters (``seq``, ``gap``) above 2**63-1 are stored wrapped to negative
INTEGERs, since SQLite integers are signed; no real run reaches that.

A version 1 file is upgraded when opened: its ``gaps`` rows (all bus loss) are kept, as
``kind`` 'bus', in the version 2 table. A version 2 file gets the ``t_source_ns`` column (NULL
in the rows it held).

One writer per file: opening takes an exclusive ``flock`` on ``<db>.lock`` beside the database
and writes its PID there; a second sink (another pipeline, in this process or another) is
refused with the path and that PID. The lock is the kernel's, so it goes with its process: the
file left by a sink that was killed holds a dead PID and is simply taken over. ``close`` releases
it (the file stays, empty), and so does an outage of the disk (nothing of the sink may stay open
there: a disk with a file open cannot be unmounted or remounted read-only); the lock is taken
again with the database when the disk is back.

``bus_marks`` is written in the same transaction as the rows it describes, so at any moment,
whatever killed the sink, it says exactly what the file holds of each stream, and the next start
asks the bus's replay buffer for what follows (``stored_marks``, sinks/base.py). A file from
before the table existed gets it filled from its last rows of each stream when first opened.

Durability: WAL journal, ``synchronous=NORMAL`` by default, one transaction per loop flush, so
a flush is one fsync-light commit and readers (Grafana, sqlite3 CLI) never block the writer.

When the disk cannot take a write (full, read-only, locked by another writer, its directory
removed, an I/O error) the transaction is rolled back, so the file only ever holds whole
batches and passes ``PRAGMA integrity_check``; the connection is closed, and
``OutputUnavailable`` names the cause and the fix (``diagnose``). The next write reopens the
database at ``path``. Before and after each COMMIT the file at ``path`` is checked to be the
one open: SQLite writes on into a file deleted under it without an error, so a removed file
(or directory) is noticed there, and a batch committed into it is written again.
"""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from pyconpro.acquisition.replay import Key, Mark
from pyconpro.acquisition.sink_config import Option, OptionValue, Output, SinkSchema
from pyconpro.acquisition.wire import (
    Event,
    EventKind,
    OutageCause,
    Sample,
    Stats,
    topic_for_event,
    topic_for_sample,
    topic_for_stats,
)
from pyconpro.sinks import lock
from pyconpro.sinks.base import DEFAULT_MAX_PENDING, BusGap, OutputUnavailable, Sink
from pyconpro.sinks.records import event_topic, sample_topic, stats_topic, to_json, value_real
from pyconpro.sinks.registry import SinkKind

DB_SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    plc TEXT NOT NULL,
    tag TEXT NOT NULL,
    t_wall_ns INTEGER NOT NULL,
    t_mono_ns INTEGER NOT NULL,
    type TEXT,
    value_json TEXT NOT NULL,
    value_real REAL,
    raw BLOB NOT NULL,
    cip_seq INTEGER NOT NULL,
    gap INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    seq INTEGER NOT NULL,
    t_source_ns INTEGER
);
CREATE INDEX IF NOT EXISTS samples_by_tag_time ON samples (plc, tag, t_wall_ns);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    plc TEXT NOT NULL,
    tag TEXT NOT NULL,
    t_wall_ns INTEGER NOT NULL,
    t_mono_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    state_from TEXT,
    state_to TEXT,
    cip_general INTEGER,
    cip_extended INTEGER,
    status_text TEXT,
    message TEXT NOT NULL,
    publisher TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_tag_time ON events (plc, tag, t_wall_ns);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    t_wall_ns INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    topic TEXT NOT NULL,
    expected_seq INTEGER,
    received_seq INTEGER,
    missed INTEGER NOT NULL,
    restart INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'bus',
    plc TEXT,
    tag TEXT,
    start_wall_ns INTEGER,
    start_mono_ns INTEGER,
    end_wall_ns INTEGER,
    end_mono_ns INTEGER,
    rpi_us INTEGER,
    cause TEXT,
    resumed INTEGER
);
CREATE INDEX IF NOT EXISTS gaps_by_tag_time ON gaps (plc, tag, start_wall_ns);
CREATE TABLE IF NOT EXISTS stats (
    id INTEGER PRIMARY KEY,
    t_wall_ns INTEGER NOT NULL,
    t_mono_ns INTEGER NOT NULL,
    worker TEXT NOT NULL,
    publisher TEXT NOT NULL,
    seq INTEGER NOT NULL,
    counters_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_marks (
    publisher TEXT NOT NULL,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    t_mono_ns INTEGER NOT NULL,
    PRIMARY KEY (publisher, topic)
) WITHOUT ROWID;
"""

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# How long a write waits for another connection's write lock before the database counts as
# locked (and the loop retries later): long enough for a short write by another program,
# short enough that the loop stays responsive.
BUSY_TIMEOUT_S = 1.0

SQLITE_SCHEMA = SinkSchema(
    kind="sqlite",
    help="write to a SQLite database (WAL, batched transactions)",
    options=(
        Option(
            "path", "path", "pyconpro.sqlite3", "Database file (created if missing).",
            flag="--db", cli_required=True, creates="file",
        ),
        Option(
            "synchronous", "choice", "NORMAL",
            "SQLite `synchronous` pragma; `NORMAL` is safe with WAL.",
            choices=SYNCHRONOUS, fold=True,
        ),
        Option(
            "max_pending", "integer", DEFAULT_MAX_PENDING,
            "Records kept in memory while the database cannot be written (disk full, read-only,"
            " locked, directory missing); past it the oldest are dropped and counted. About"
            " 1.5 KB of memory each (100000: 150 MB). Never below `batch_size`.",
            lo=1, hi=100_000_000, unit="records",
        ),
    ),
    output=Output(
        keys=("path",),
        what="the database {path!r}",
        fix='give each sqlite sink its own path, e.g. path = "second.sqlite3"',
        where="{path}",
    ),
)  # fmt: skip


_I64_WRAP = 2**64
_I64_MAX = 2**63 - 1


def _i64(n: int) -> int:
    return n - _I64_WRAP if n > _I64_MAX else n


def _u64(n: int) -> int:
    return n + _I64_WRAP if n < 0 else n


# Primary SQLite result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_SQLITE_IOERR = 10
# Codes that may come from the disk or its directory rather than from the database itself.
_DISK_CODES = (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN)


def diagnose(exc: BaseException, path: Path) -> OutputUnavailable | None:
    """What an error opening or writing the database at ``path`` means, when it is a condition
    that may pass (the disk, its directory, another program's lock); None for anything else.

    The directory is asked as well as SQLite, because SQLite reports one cause under several
    codes (a file system that turned read-only after an error fails writes with
    SQLITE_IOERR_WRITE and opens with SQLITE_READONLY; a missing directory is SQLITE_CANTOPEN):
    writing one byte to an unnamed file there gets the system's own answer (EROFS, ENOSPC,
    EACCES, EIO).
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    what = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return OutputUnavailable(
            "locked",
            f"database {path} is locked by another connection holding a write transaction:"
            " end that transaction or stop that program",
        )
    if not isinstance(exc, OSError) and primary not in _DISK_CODES:
        return None
    directory = path.parent
    if not directory.is_dir():
        return OutputUnavailable(
            "directory missing",
            f"directory {directory} does not exist (removed, or its disk not mounted): "
            "create it or point `path` elsewhere",
        )
    refused = _write_refused(directory)
    said = refused or getattr(exc, "errno", None)
    if said == errno.EROFS or _read_only(directory):
        return OutputUnavailable(
            "read-only",
            f"{directory} is on a read-only file system ({what}): remount it read-write (after"
            " an error: check the disk, dmesg) or point `path` elsewhere",
        )
    if primary == _SQLITE_FULL or said in (errno.ENOSPC, errno.EDQUOT):
        return OutputUnavailable(
            "disk full", f"disk full at {directory}: free space there or point `path` elsewhere"
        )
    if said in (errno.EACCES, errno.EPERM) or primary in (_SQLITE_READONLY, _SQLITE_PERM):
        return OutputUnavailable(
            "not writable",
            f"cannot write {path} ({what}): make {directory} and the database files in it "
            "writable for this user (and not immutable: lsattr), or point `path` elsewhere",
        )
    if refused is None and primary == _SQLITE_CANTOPEN:
        return OutputUnavailable(
            "cannot open",
            f"cannot open {path} ({what}): check that it is a file this user can open, or point"
            " `path` elsewhere",
        )
    detail = f"{what}, {errno.errorcode.get(refused, refused)}" if refused else what
    return OutputUnavailable(
        "I/O error",
        f"I/O error on {path} ({detail}): check the disk (dmesg, SMART) or point `path`"
        " elsewhere",
    )


def _write_refused(directory: Path) -> int | None:
    """The errno of writing one byte to an unnamed file in ``directory`` (nothing is left
    behind); None when it works or the file system has no unnamed files."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except OSError as exc:
        return None if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL) else exc.errno
    try:
        os.write(fd, b"\0")  # takes a block: ENOSPC on a full disk
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)
    return None


def _read_only(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _writing(
    method: Callable[Concatenate[SqliteSink, _P], _R],
) -> Callable[Concatenate[SqliteSink, _P], _R]:
    """A write method whose disk or lock errors roll the transaction back, close the
    connection and become ``OutputUnavailable`` (the next write reopens the database)."""

    @functools.wraps(method)
    def guarded(self: SqliteSink, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except OutputUnavailable:
            self._abandon()
            raise
        except (sqlite3.Error, OSError) as exc:
            self._abandon()
            problem = diagnose(exc, self.path)
            if problem is None:
                raise
            raise problem from exc

    return guarded


class SqliteSink(Sink):
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        max_pending: int = DEFAULT_MAX_PENDING,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r}: use OFF, NORMAL, FULL or EXTRA")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.max_pending = max_pending
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the open database
        self._dir_dev: int | None = None  # st_dev of its directory at the first open
        self._marks: dict[Key, Mark] = {}  # bus_marks as committed
        self._new_marks: dict[Key, Mark] = {}  # written in the transaction under way
        self._lock_fd: int | None = None  # <db>.lock, flock'ed while this sink writes

    @property
    def lock_path(self) -> Path:
        return lock.lock_path(self.path)

    def open(self) -> None:
        self._db = self._connect()
        self._marks = {
            (pub, topic.encode("utf-8")): (tm, _u64(seq))
            for pub, topic, seq, tm in self._db.execute(
                "SELECT publisher, topic, seq, t_mono_ns FROM bus_marks"
            )
        }

    def stored_marks(self) -> dict[Key, Mark]:
        return dict(self._marks)

    def _take_writer_lock(self) -> None:
        """Hold ``<db>.lock`` (module doc); RuntimeError naming the owner's PID when another
        sink holds it. A directory that is missing or read-only is left to ``_connect`` to
        diagnose (it may pass): the lock is then taken at the next open."""
        if self._lock_fd is not None:
            return
        try:
            self._lock_fd = lock.take(self.path)
        except lock.LockHeld as held:
            raise RuntimeError(
                f"{self.path} is written by another sink (PID {held.owner}, lock {held.path}):"
                " two pipelines must not write one database; stop that one, or give this one"
                " another path"
            ) from None
        except OSError:
            return

    def _release_writer_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            lock.release(fd)

    def _connect(self) -> sqlite3.Connection:
        """The database at ``path``, WAL on, schema in place; ``OutputUnavailable`` for a
        condition that may pass, ``RuntimeError`` for one that will not."""
        if self.path.is_dir():
            raise RuntimeError(
                f"{self.path} is a directory: `path` names the database file, e.g."
                f" {self.path / 'pyconpro.sqlite3'}"
            )
        self._same_file_system()
        self._take_writer_lock()
        db: sqlite3.Connection | None = None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per flush.
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=True,
                timeout=self.busy_timeout_s,
            )  # fmt: skip
            self._prepare(db)
            st = os.stat(self.path)
        except (sqlite3.Error, OSError) as exc:
            _close_quietly(db)
            self._release_writer_lock()
            problem = diagnose(exc, self.path)
            if problem is not None:
                raise problem from exc
            primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if primary in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
                raise RuntimeError(
                    f"{self.path} is not a SQLite database or is damaged ({exc}): move it away"
                    " (a new one is then started) or point `path` elsewhere"
                ) from exc
            raise RuntimeError(f"cannot open SQLite database {self.path}: {exc}") from exc
        except BaseException:
            _close_quietly(db)
            self._release_writer_lock()
            raise
        self._file = (st.st_dev, st.st_ino)
        if self._dir_dev is None:
            self._dir_dev = os.stat(self.path.parent).st_dev
        return db

    def _same_file_system(self) -> None:
        """Refuse to reopen in a directory that moved to another file system: its disk was
        unmounted and the mount point shows the disk below it (a new database there would
        fill the wrong disk and hide the data when the disk comes back)."""
        if self._dir_dev is None:
            return
        try:
            dev = os.stat(self.path.parent).st_dev
        except OSError:
            return  # missing: connecting says so
        if dev != self._dir_dev:
            raise OutputUnavailable(
                "not mounted",
                f"{self.path.parent} is no longer on the file system {self.path} was on (its"
                " disk unmounted?): mount it again, or restart the sink to write there anyway",
            )

    def _prepare(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > DB_SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this pyconpro"
                f" ({DB_SCHEMA_VERSION}); upgrade pyconpro or write to a new file"
            )
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: could not enable WAL (got {mode}); use a local disk")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("BEGIN")
        _upgrade_gaps_v1(db)
        _add_source_time_v2(db)
        had_marks = _has_table(db, "bus_marks")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        if not had_marks:
            _fill_marks(db)
        db.execute(f"PRAGMA user_version={DB_SCHEMA_VERSION}")
        db.execute("COMMIT")

    def _conn(self) -> sqlite3.Connection:
        """The connection, reopened after an outage, inside a transaction."""
        if self._db is None:
            self._db = self._connect()
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        return self._db

    def _abandon(self) -> None:
        """Roll back and close; whatever was not committed is the loop's to write again."""
        self._new_marks.clear()
        db, self._db = self._db, None
        if db is not None:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # closing rolls back too
            _close_quietly(db)
        self._release_writer_lock()  # nothing of ours stays open on a failing disk

    def _same_file(self) -> None:
        """Raise ``OutputUnavailable`` unless ``path`` is still the file that is open."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._file:
            if not self.path.parent.is_dir():
                problem = diagnose(FileNotFoundError(errno.ENOENT, "removed"), self.path)
                assert problem is not None
                raise problem
            raise OutputUnavailable(
                "file removed",
                f"{self.path} was removed or replaced while open: the batch is written again"
                " into a new database at that path",
            )

    @_writing
    def write_samples(self, samples: list[Sample]) -> None:
        marks = self._new_marks
        # The last sample of each stream, then its topic: once per stream, not per sample.
        last = {(s.publisher, s.plc, s.tag): s for s in samples}
        for (publisher, plc, tag), s in last.items():
            marks[(publisher, sample_topic(plc, tag))] = (s.t_mono_ns, s.seq)
        self._conn().executemany(
            "INSERT INTO samples (plc, tag, t_wall_ns, t_mono_ns, type, value_json, value_real,"
            " raw, cip_seq, gap, publisher, seq, t_source_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    s.plc,
                    s.tag,
                    s.t_wall_ns,
                    s.t_mono_ns,
                    s.type_name,
                    to_json(s.value),
                    value_real(s.value),
                    s.raw,
                    s.cip_seq,
                    _i64(s.gap),
                    s.publisher,
                    _i64(s.seq),
                    s.source_ns,
                )
                for s in samples
            ],
        )

    @_writing
    def write_events(self, events: list[Event]) -> None:
        marks = self._new_marks
        for e in events:
            marks[(e.publisher, event_topic(e.plc, e.tag))] = (e.t_mono_ns, e.seq)
        self._conn().executemany(
            "INSERT INTO events (plc, tag, t_wall_ns, t_mono_ns, kind, state_from, state_to,"
            " cip_general, cip_extended, status_text, message, publisher, seq)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    e.plc,
                    e.tag,
                    e.t_wall_ns,
                    e.t_mono_ns,
                    str(e.kind),
                    e.state_from,
                    e.state_to,
                    e.cip_general,
                    e.cip_extended,
                    e.status_text,
                    e.message,
                    e.publisher,
                    _i64(e.seq),
                )
                for e in events
            ],
        )
        self._write_outages(events)

    def _write_outages(self, events: list[Event]) -> None:
        """The ``outage`` events as rows of ``gaps`` (kind 'outage'): start, end, missed."""
        self._conn().executemany(
            "INSERT INTO gaps (t_wall_ns, publisher, topic, missed, restart, kind, plc, tag,"
            " start_wall_ns, start_mono_ns, end_wall_ns, end_mono_ns, rpi_us, cause, resumed)"
            " VALUES (?,?,?,?,?,'outage',?,?,?,?,?,?,?,?,?)",
            [
                (
                    e.t_wall_ns,
                    e.publisher,
                    topic_for_sample(e.plc, e.tag).decode("utf-8"),
                    _i64(e.expected or 0),
                    int(e.cause == OutageCause.RESTART),
                    e.plc,
                    e.tag,
                    e.outage_start_wall_ns,
                    e.outage_start_mono_ns,
                    e.t_wall_ns,
                    e.t_mono_ns,
                    e.rpi_us,
                    e.cause,
                    None if e.resumed is None else int(e.resumed),
                )
                for e in events
                if e.kind == EventKind.OUTAGE and e.outage_start_wall_ns is not None and e.tag
            ],
        )

    @_writing
    def write_gaps(self, gaps: list[BusGap]) -> None:
        self._conn().executemany(
            "INSERT INTO gaps (t_wall_ns, publisher, topic, expected_seq, received_seq, missed,"
            " restart) VALUES (?,?,?,?,?,?,?)",
            [
                (
                    g.t_wall_ns,
                    g.publisher,
                    g.topic,
                    _i64(g.expected_seq),
                    _i64(g.received_seq),
                    _i64(g.missed),
                    int(g.restart),
                )
                for g in gaps
            ],
        )

    def write_skipped(self, marks: Mapping[Key, Mark]) -> None:
        # Committed with this flush's rows, like theirs: the samples left out are done with.
        self._new_marks.update(marks)

    @_writing
    def write_stats(self, stats: list[Stats]) -> None:
        marks = self._new_marks
        for st in stats:
            marks[(st.publisher, stats_topic(st.worker))] = (st.t_mono_ns, st.seq)
        self._conn().executemany(
            "INSERT INTO stats (t_wall_ns, t_mono_ns, worker, publisher, seq, counters_json)"
            " VALUES (?,?,?,?,?,?)",
            [
                (s.t_wall_ns, s.t_mono_ns, s.worker, s.publisher, _i64(s.seq), to_json(s.counters))
                for s in stats
            ],
        )

    @_writing
    def flush(self) -> None:
        # Also the loop's retry with nothing to write: reopening is the test of the disk.
        db = self._conn()
        self._same_file()
        self._commit(db)
        self._same_file()  # deleted between the check and the commit: written again

    def _commit(self, db: sqlite3.Connection) -> None:
        """COMMIT, with the marks of the rows written in it: a crash keeps both or neither."""
        if self._new_marks:
            db.executemany(
                "INSERT OR REPLACE INTO bus_marks (publisher, topic, seq, t_mono_ns)"
                " VALUES (?,?,?,?)",
                [(pub, topic.decode("utf-8"), _i64(sq), tm)
                 for (pub, topic), (tm, sq) in self._new_marks.items()],
            )  # fmt: skip
        db.execute("COMMIT")
        self._marks.update(self._new_marks)
        self._new_marks.clear()

    def close(self) -> None:
        db, self._db = self._db, None
        try:
            if db is not None and db.in_transaction:
                # close() without a prior flush() means the loop died: keep what we have.
                self._commit(db)
        finally:
            if db is not None:
                db.close()
            self._release_writer_lock()


def _close_quietly(db: sqlite3.Connection | None) -> None:
    if db is not None:
        try:
            db.close()
        except sqlite3.Error:
            pass


def _upgrade_gaps_v1(db: sqlite3.Connection) -> None:
    """A version 1 ``gaps`` table (bus loss only, sequence columns NOT NULL) becomes the
    version 2 one, its rows kept as kind 'bus' (SQLite cannot relax NOT NULL in place)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(gaps)")}
    if not columns or "kind" in columns:
        return
    kept = "id, t_wall_ns, publisher, topic, expected_seq, received_seq, missed, restart"
    db.execute("ALTER TABLE gaps RENAME TO gaps_v1")
    for statement in SCHEMA.split(";"):
        if "TABLE IF NOT EXISTS gaps " in statement:
            db.execute(statement)
    db.execute(f"INSERT INTO gaps ({kept}) SELECT {kept} FROM gaps_v1")
    db.execute("DROP TABLE gaps_v1")


def _add_source_time_v2(db: sqlite3.Connection) -> None:
    """A version 2 ``samples`` table gets the ``t_source_ns`` column (NULL in its rows)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
    if columns and "t_source_ns" not in columns:
        db.execute("ALTER TABLE samples ADD COLUMN t_source_ns INTEGER")


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                      (name,)).fetchone() is not None  # fmt: skip


def _fill_marks(db: sqlite3.Connection) -> None:
    """``bus_marks`` of a file written before it existed: the last row of each stream."""
    last = "WHERE id IN (SELECT MAX(id) FROM {0} GROUP BY {1})"
    queries = (
        ("samples", "publisher, plc, tag", topic_for_sample),
        ("events", "publisher, plc, tag", topic_for_event),
        ("stats", "publisher, worker", lambda worker, _: topic_for_stats(worker)),
    )
    rows = []
    for table, names, topic_of in queries:
        sql = f"SELECT {names}, seq, t_mono_ns FROM {table} " + last.format(table, names)
        for pub, a, *rest in db.execute(sql):
            b = rest[0] if len(rest) == 3 else ""
            seq, tm = rest[-2], rest[-1]
            rows.append((pub, topic_of(a, b).decode("utf-8"), seq, tm))
    db.executemany("INSERT OR REPLACE INTO bus_marks (publisher, topic, seq, t_mono_ns)"
                   " VALUES (?,?,?,?)", rows)  # fmt: skip


def from_options(options: Mapping[str, OptionValue]) -> SqliteSink:
    return SqliteSink(
        str(options["path"]),
        synchronous=str(options["synchronous"]),
        max_pending=int(options["max_pending"]),
    )


SINK_KINDS = (SinkKind(SQLITE_SCHEMA, from_options),)

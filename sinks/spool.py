"""The store-and-forward spool of the network sinks: what their destination cannot take now
waits on local disk, in arrival order, bounded by size and by age, until it is back.

Owns: the spool file (SQLite, WAL: one writer, this process), its bounds and what it drops
past them, the order it hands records back in, the bookkeeping of what was delivered, the
``[[sink]]`` options every spooled sink kind declares (``SPOOL_OPTIONS``), and when records go
to the spool and come back (``SpoolFeed``, which the SUB loop of ``sinks/base.py`` asks for each
write). A sink kind only declares the options and makes its writes idempotent (docs/sinks.md
"Store and forward").

When the output is unavailable, or slower than the bus (more than ``SPILL_BATCHES`` batches
wait in memory), what waits goes to the spool's tail and arrivals follow it there; writes then
take the spool's oldest batch, and a record leaves the spool once the sink's ``flush()`` went
through. When it is empty, live records are written from memory again. The spool survives a
stop and a crash: a record is handed to the destination at least once, and the sink stores it
idempotently.

Tables (``PRAGMA user_version`` = 1)::

    spool(id INTEGER PRIMARY KEY AUTOINCREMENT, kind, publisher, topic, seq, t_wall_ns, body)
        -- one record each, oldest first; kind 0: a bus message (sample, event or stats),
        -- kind 1: a bus gap this sink noticed; body: the record's type and fields, MessagePack
        -- (the decoded record as the loop had it: no second validation of the bus message)
    marks(publisher, topic, seq, t_mono_ns)  PRIMARY KEY (publisher, topic)
        -- per bus stream, the mark (tm, sq) of the last message this sink took in for good:
        -- spooled, or written to the destination (``accepted``); a restart continues from it

A record leaves the spool only after the destination took it (``remove_through``, after the
sink's flush): a crash in between hands the same records again at the next start, so the
destination must store them idempotently (the PostgreSQL sink's unique key, NATS's message
id). ``AUTOINCREMENT`` keeps ids growing even when the spool empties, so "through id N" never
names a later record.

Bounds: ``max_bytes`` counts each record's topic, body and publisher plus ``ROW_OVERHEAD``
(SQLite's row and page costs; the file on disk stays within a few percent of it once it has
grown, since freed pages are reused); past it the oldest records go, at least ``DROP_CHUNK`` of
them at a time. ``max_age_s`` bounds the age of the oldest record by its own time (a sample's
receive time ``tw``). Both are counted (``dropped``, ``expired``) and logged.

Not thread-safe; every method that depends on time takes ``now_ns`` (wall clock, ns since the
epoch), so tests drive it with a fake clock.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
from pyconpro.acquisition.replay import Key, Mark
from pyconpro.acquisition.sink_config import Option, OptionValue, SinkConfig
from pyconpro.acquisition.wire import Event, Sample, Stats
from pyconpro.sinks import lock
from pyconpro.sinks.base import BusGap, Record, Skipped
from pyconpro.sinks.records import message_topic

log = logging.getLogger("pyconpro.sink")

SPOOL_SCHEMA_VERSION: Final = 1
# Bytes a record costs beyond its topic, body and publisher: the row's header and integers,
# its cell pointer, page fill (measured: docs/sinks.md "Store and forward").
ROW_OVERHEAD: Final = 40
# Past the size bound, drop at least this many records at a time (one DELETE per batch of
# arrivals, not one per record).
DROP_CHUNK: Final = 256
# Defaults: 2 GiB hold about 14 million samples of the usual size (150 bytes each on disk,
# measured: docs/sinks.md): 4 hours at 1 000 samples/s, 24 minutes at 10 000/s; a week is the
# age bound.
DEFAULT_MAX_BYTES: Final = 2 << 30
DEFAULT_MAX_AGE_S: Final = 7 * 86_400.0
DEFAULT_DIR: Final = "pyconpro-spool"
# Batches waiting in memory past which the destination counts as slower than the bus, and what
# waits goes to the spool (20 000 records at the default batch_size: about 30 MB of memory).
SPILL_BATCHES: Final = 20
# The keys of a sink's report about its spool (docs/operations.md, ``sinks``).
SPOOL_KEYS: Final = (
    "spool_depth", "spool_bytes", "spool_max_bytes", "spool_oldest_s", "spool_dropped",
    "spool_expired", "spool_delivered", "spooled",
)  # fmt: skip

_KIND_MESSAGE, _KIND_GAP = 0, 1
_I64_WRAP, _I64_MAX = 2**64, 2**63 - 1

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    topic BLOB NOT NULL,
    seq INTEGER NOT NULL,
    t_wall_ns INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (
    publisher TEXT NOT NULL,
    topic BLOB NOT NULL,
    seq INTEGER NOT NULL,
    t_mono_ns INTEGER NOT NULL,
    PRIMARY KEY (publisher, topic)
) WITHOUT ROWID;
"""

SPOOL_OPTIONS: Final = (
    Option(
        "spool_dir", "path", DEFAULT_DIR,
        "Directory of the store-and-forward spool (created if missing): records the"
        " destination cannot take now wait there, in `<spool_dir>/<sink name>.spool`, and"
        " are sent, oldest first, once it is back; kept across restarts.",
        creates="directory",
    ),
    Option(
        "spool_max_bytes", "integer", DEFAULT_MAX_BYTES,
        "Most disk the spool takes; past it the oldest records are dropped (counted,"
        " logged, recorded at the destination as a gap). A sample takes about 150 bytes:"
        " the default holds about 4 h at 1 000 samples/s.",
        lo=1 << 20, hi=1 << 44, unit="bytes", doc_default="`2147483648` (2 GiB)",
    ),
    Option(
        "spool_max_age_s", "number", DEFAULT_MAX_AGE_S,
        "Oldest record (by its receive time) the spool keeps; older ones are dropped,"
        " counted and logged.",
        lo=1.0, hi=366 * 86_400.0, unit="s", doc_default="`604800` (7 days)",
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """Where a sink's spool is and its bounds."""

    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age_s: float = DEFAULT_MAX_AGE_S


def spool_config(sink: SinkConfig) -> SpoolConfig | None:
    """The spool of ``sink``, when its kind declares ``SPOOL_OPTIONS``; None otherwise."""
    o: Mapping[str, OptionValue] = sink.options
    if "spool_dir" not in o:
        return None
    return SpoolConfig(
        Path(str(o["spool_dir"])) / f"{sink.name}.spool",
        int(o["spool_max_bytes"]),
        float(o["spool_max_age_s"]),
    )


class SpoolError(Exception):
    """The spool file cannot be written (its disk full, read-only, gone); the message says
    where and why. The loop then keeps records in memory, as for a sink without a spool."""


def _i64(n: int) -> int:
    return n - _I64_WRAP if n > _I64_MAX else n


def _u64(n: int) -> int:
    return n + _I64_WRAP if n < 0 else n


# A record's type in its row's body, and the fields stored, in order.
_TYPES: Final[tuple[type, ...]] = (Sample, Event, Stats, BusGap)
_FIELDS: Final = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TYPES}


def _row(record: Sample | Event | Stats | BusGap, now_ns: int
         ) -> tuple[int, str, bytes, int, int, bytes]:  # fmt: skip
    """The spool row of ``record``; its age is its own time, a gap record's the time it was
    spooled (it describes data of any age and must not expire before it is delivered)."""
    cls = type(record)
    body = msgpack.packb([_TYPES.index(cls), *(getattr(record, f) for f in _FIELDS[cls])],
                         use_bin_type=True)  # fmt: skip
    if isinstance(record, BusGap):
        return _KIND_GAP, record.publisher, record.topic.encode("utf-8"), 0, now_ns, body
    topic = message_topic(record)
    return _KIND_MESSAGE, record.publisher, topic, _i64(record.seq), record.t_wall_ns, body


def _record(body: bytes) -> Record:
    """The record a row's body holds; ValueError / TypeError for one that does not. A row
    written before a field was added (a sample's ``source_ns``) lacks it: the default."""
    code, *values = msgpack.unpackb(body, raw=False, strict_map_key=True)
    cls = _TYPES[code]
    fields = _FIELDS[cls]
    if len(values) > len(fields):
        raise ValueError(f"{len(values)} fields for a {cls.__name__}, which has {len(fields)}")
    record: Record = cls(**dict(zip(fields, values)))
    return record


def _size(publisher: str, topic: bytes, body: bytes) -> int:
    return len(publisher) + len(topic) + len(body) + ROW_OVERHEAD


def record_size(record: Sample | Event | Stats | BusGap) -> int:
    """What ``record`` counts against ``max_bytes`` in a spool."""
    _kind, publisher, topic, _seq, _t, body = _row(record, 0)
    return _size(publisher, topic, body)


class Spool:
    """One sink's spool file. ``open`` it, then ``append`` (to the tail), ``head`` (read the
    oldest), ``remove_through`` (delivered), ``accepted`` (marks of records delivered without
    the spool); ``close`` at the end. Counters and the current depth are attributes."""

    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self.path = config.path
        self.depth = 0  # records in the spool
        self.bytes = 0  # their size as counted against max_bytes
        self.dropped = 0  # records dropped past max_bytes (this process)
        self.expired = 0  # records dropped past max_age_s (this process)
        self.spooled = 0  # records appended (this process)
        self.delivered = 0  # records removed after the destination took them (this process)
        self._oldest_ns: int | None = None  # t_wall_ns of the oldest record
        self._marks: dict[Key, Mark] = {}
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._drop_log: list[BusGap] = []

    # -- life ------------------------------------------------------------------------------

    def open(self) -> None:
        """Create or reopen the file, take its lock, read what it holds. ``RuntimeError`` with
        the fix when it cannot be used (another process has it, it is not a spool)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except OSError as exc:
            self._unlock()
            raise RuntimeError(
                f"cannot create the spool {self.path}: {exc}; make {self.path.parent} writable"
                " or point `spool_dir` elsewhere"
            ) from exc
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SPOOL_SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} is a spool of a newer pyconpro (version {version}); upgrade,"
                    " or move it away (what it holds is then not sent)"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SPOOL_SCHEMA_VERSION}")
            db.execute("COMMIT")
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(publisher) + length(topic) + length(body)),"
                " 0) FROM spool"
            ).fetchone()
            self._marks = {
                (pub, bytes(topic)): (tm, _u64(seq))
                for pub, topic, seq, tm in db.execute(
                    "SELECT publisher, topic, seq, t_mono_ns FROM marks"
                )
            }
        except sqlite3.Error as exc:
            db.close()
            self._unlock()
            raise RuntimeError(
                f"{self.path} cannot be used as a spool ({exc}): move it away (what it holds is"
                " then not sent) or point `spool_dir` elsewhere"
            ) from exc
        self._db = db
        self.depth, self.bytes = count, size + count * ROW_OVERHEAD
        self._oldest_ns = self._read_oldest()
        if count:
            log.info("spool %s holds %d record(s) (%.1f MB) from before: sending them first",
                     self.path, count, self.bytes / 1e6)  # fmt: skip

    def _lock(self) -> None:
        try:
            self._lock_fd = lock.take(self.path)
        except lock.LockHeld as held:
            raise RuntimeError(
                f"the spool {self.path} is in use by another sink process (PID {held.owner}):"
                " give each sink its own name (or `spool_dir`), or stop the other one"
            ) from None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            lock.release(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        db, self._db = self._db, None
        try:
            if db is not None:
                if self.depth == 0:
                    # Give the disk back after a long outage (pages of an empty spool).
                    db.execute("VACUUM")
                db.close()
        except sqlite3.Error as exc:
            log.warning("closing the spool %s: %s", self.path, exc)
        finally:
            self._unlock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the spool is not open")
        return self._db

    # -- reading -----------------------------------------------------------------------------

    def oldest_age_s(self, now_ns: int) -> float | None:
        """Age of the oldest record by its own time, None when the spool is empty."""
        if self._oldest_ns is None:
            return None
        return max(0.0, (now_ns - self._oldest_ns) / 1e9)

    def marks(self) -> dict[Key, Mark]:
        """Per bus stream, the mark of the last message taken in for good (spooled or
        delivered): what a restarted sink continues from."""
        return dict(self._marks)

    def head(self, n: int) -> tuple[int, list[Record]]:
        """The oldest ``n`` records (fewer when the spool holds fewer) and the id of the last
        one (0 when empty). Records that no longer decode (a file damaged by hand) are skipped
        with a log line."""
        rows = self._conn().execute(
            "SELECT id, body FROM spool ORDER BY id LIMIT ?", (n,)
        ).fetchall()
        out: list[Record] = []
        for row_id, body in rows:
            try:
                out.append(_record(bytes(body)))
            except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
                log.error("spool %s: record %d cannot be read (%s): skipped", self.path,
                          row_id, exc)  # fmt: skip
        return (rows[-1][0] if rows else 0), out

    def _read_oldest(self) -> int | None:
        row = self._conn().execute("SELECT t_wall_ns FROM spool ORDER BY id LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    # -- writing -----------------------------------------------------------------------------

    def append(self, records: Sequence[Record], now_ns: int) -> None:
        """Add ``records`` at the tail, in one transaction with their marks; then drop what
        the bounds no longer allow. ``SpoolError`` when the file cannot be written (nothing
        was added). A ``Skipped`` record (report by exception) adds its mark only."""
        if not records:
            return
        self.spooled += self._insert(records, now_ns)
        self.enforce(now_ns)

    def _insert(self, records: Sequence[Record], now_ns: int) -> int:
        """The rows of ``records`` and their marks, in one transaction; how many rows."""
        rows = [_row(r, now_ns) for r in records if not isinstance(r, Skipped)]
        self._commit_marks(_marks_of(records), rows)
        self.depth += len(rows)
        self.bytes += sum(_size(r[1], r[2], r[5]) for r in rows)
        if self._oldest_ns is None and rows:
            self._oldest_ns = rows[0][4]
        return len(rows)

    def accepted(self, records: Iterable[Record]) -> None:
        """``records`` were written to the destination without going through the spool:
        remember their marks (a restart continues after them). ``SpoolError`` when the file
        cannot be written."""
        marks = _marks_of(records)
        if marks:
            self._commit_marks(marks, [])

    def _commit_marks(self, marks: Mapping[Key, Mark], rows: Sequence[tuple[object, ...]]
                      ) -> None:  # fmt: skip
        """One transaction: ``rows`` into the spool, ``marks`` into the marks."""
        db = self._conn()
        try:
            db.execute("BEGIN")
            if rows:
                db.executemany(
                    "INSERT INTO spool (kind, publisher, topic, seq, t_wall_ns, body)"
                    " VALUES (?,?,?,?,?,?)", rows,
                )  # fmt: skip
            _write_marks(db, marks)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(db)
            raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
        self._marks.update(marks)

    def remove_through(self, last_id: int) -> None:
        """The destination took every record up to ``last_id`` (as ``head`` returned it)."""
        self.delivered += self._delete_through(last_id)

    def _delete_through(self, last_id: int) -> int:
        """Delete every record up to ``last_id``, counted off the depth and bytes; how many."""
        db = self._conn()
        try:
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(publisher) + length(topic)"
                " + length(body)), 0) FROM spool WHERE id <= ?", (last_id,),
            ).fetchone()  # fmt: skip
            db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
        self._removed(count, size)
        return int(count)

    def _removed(self, count: int, size: int) -> None:
        self.depth -= count
        self.bytes -= size + count * ROW_OVERHEAD
        if self.depth <= 0:
            self.depth, self.bytes, self._oldest_ns = 0, 0, None
        else:
            self._oldest_ns = self._read_oldest()

    def enforce(self, now_ns: int) -> None:
        """Drop the oldest records past ``max_age_s``, then past ``max_bytes``; what went is
        counted, logged, and recorded for the destination: one gap record per stream, at the
        spool's tail (they are small, and may take the spool a little past ``max_bytes``)."""
        if self._oldest_ns is None:
            return
        self._enforce(now_ns)
        drops, self._drop_log = self._drop_log, []
        if drops:
            self._insert(drops, now_ns)

    def _enforce(self, now_ns: int) -> None:
        assert self._oldest_ns is not None
        cutoff = now_ns - int(self.config.max_age_s * 1e9)
        if self._oldest_ns < cutoff:
            # From the oldest on, while records are too old (arrival order: a record of
            # another publisher may be a little older than the one before it, and stays).
            last_id = 0
            for row_id, t_wall_ns in self._conn().execute(
                "SELECT id, t_wall_ns FROM spool ORDER BY id"
            ):
                if t_wall_ns >= cutoff:
                    break
                last_id = row_id
            if last_id:
                self.expired += self._drop_through(last_id, "older than spool_max_age_s",
                                                   now_ns)
        if self.bytes > self.config.max_bytes:
            self.dropped += self._drop_size(now_ns)

    def _drop_size(self, now_ns: int) -> int:
        excess = self.bytes - self.config.max_bytes
        freed, last_id, n = 0, 0, 0
        for row_id, size in self._conn().execute(
            "SELECT id, length(publisher) + length(topic) + length(body) FROM spool ORDER BY id"
        ):
            freed += size + ROW_OVERHEAD
            last_id, n = row_id, n + 1
            if freed >= excess and n >= DROP_CHUNK:
                break
        if not last_id:
            return 0
        return self._drop_through(last_id, "spool_max_bytes reached", now_ns)

    def _drop_through(self, last_id: int, why: str, now_ns: int) -> int:
        """Delete every record up to ``last_id``; the bus messages among them become one gap
        record per stream (noticed ``now_ns``), the gap records among them are kept (they go
        to the tail again). Returns the number of bus messages dropped."""
        db = self._conn()
        try:
            lost = db.execute(
                "SELECT publisher, topic, MIN(seq), MAX(seq), COUNT(*) FROM spool"
                " WHERE id <= ? AND kind = ? GROUP BY publisher, topic",
                (last_id, _KIND_MESSAGE),
            ).fetchall()
            kept = db.execute(
                "SELECT body FROM spool WHERE id <= ? AND kind = ? ORDER BY id",
                (last_id, _KIND_GAP),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        count = self._delete_through(last_id)
        for pub, topic, first, last, n in lost:
            self._drop_log.append(BusGap(
                pub, bytes(topic).decode("utf-8", "replace"), _u64(first), _u64(last) + 1,
                n, False, now_ns, "spool",
            ))  # fmt: skip
        for (body,) in kept:
            gap = _record(bytes(body))
            assert isinstance(gap, BusGap)
            self._drop_log.append(gap)
        messages = count - len(kept)
        log.warning(
            "spool %s: dropped the %d oldest record(s) (%s; %d kept, %.1f MB); they are"
            " recorded at the destination as gaps of kind 'spool'",
            self.path, messages, why, self.depth, self.bytes / 1e6,
        )  # fmt: skip
        return int(messages)



def spool_depth(path: Path) -> int:
    """How many records the spool file at ``path`` holds, read from outside the sink that owns
    it (tools, tests); 0 when there is none or it cannot be read yet."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM spool").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def _marks_of(records: Iterable[Record]) -> dict[Key, Mark]:
    """The mark of the last message of each stream in ``records``."""
    marks: dict[Key, Mark] = {}
    for r in records:
        if isinstance(r, Skipped):
            marks[(r.publisher, r.topic)] = (r.t_mono_ns, r.seq)
        elif not isinstance(r, BusGap):
            marks[(r.publisher, message_topic(r))] = (r.t_mono_ns, r.seq)
    return marks


def _write_marks(db: sqlite3.Connection, marks: Mapping[Key, Mark]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO marks (publisher, topic, seq, t_mono_ns) VALUES (?,?,?,?)",
        [(pub, topic, _i64(sq), tm) for (pub, topic), (tm, sq) in marks.items()],
    )


def _rollback(db: sqlite3.Connection) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


class SpoolFeed:
    """How the SUB loop uses a sink's spool: ``pending`` is the loop's own queue of records in
    memory (oldest first), shared. Invariant: while the spool holds records, every record in
    memory is newer than all of them."""

    def __init__(self, config: SpoolConfig, pending: deque[Record], batch_size: int,
                 wall_ns: Callable[[], int]) -> None:  # fmt: skip
        self.spool = Spool(config)
        self.pending = pending
        self.batch_size = batch_size
        self.spill_at = SPILL_BATCHES * batch_size
        self._wall_ns = wall_ns
        self._failing = False  # the last write to the spool failed (logged once)

    @property
    def dropped(self) -> int:
        return self.spool.dropped + self.spool.expired

    def write(self, write: Callable[[list[Record], bool], bool]) -> int | None:
        """One write through ``write`` (the loop's: hand to the sink, saying whether the
        records come out of the spool, and flush; False when the output is unavailable): the
        spool's oldest batch while it holds any (what is in memory goes behind it first), else
        the oldest in memory, unless so much waits there that it goes to the spool. The number
        of records written; None when the output was unavailable (what was in memory is in the
        spool then)."""
        spool = self.spool
        if spool.depth or len(self.pending) > self.spill_at:
            self.spill()
        if spool.depth:
            last_id, records = spool.head(self.batch_size)
            if not write(records, True):
                self.spill()
                return None
            self._call(spool.remove_through, last_id)
            return len(records)
        n = min(len(self.pending), self.batch_size)
        records = list(itertools.islice(self.pending, n))
        if not write(records, False):
            self.spill()
            return None
        for _ in range(n):
            self.pending.popleft()
        self._call(spool.accepted, records)
        return n

    def spill(self) -> bool:
        """Everything in memory to the spool's tail; False when the spool cannot be written
        (the records stay in memory, under the loop's ``max_pending``)."""
        if not self.pending:
            return True
        if not self._call(self.spool.append, list(self.pending), self._wall_ns()):
            return False
        self.pending.clear()
        return True

    def stop(self) -> None:
        """At a stop, after the loop's last writes: what is still in memory goes to the spool,
        for the next start."""
        self.spill()
        if self.spool.depth:
            log.warning("stopping with %d record(s) in the spool %s: the next start sends them",
                        self.spool.depth, self.spool.path)  # fmt: skip

    def _call(self, method: Callable[..., None], *args: Any) -> bool:
        """A write to the spool; its failure is logged (once until one works) and False."""
        try:
            method(*args)
        except SpoolError as exc:
            if not self._failing:
                log.error("%s; keeping records in memory meanwhile (max_pending)", exc)
            self._failing = True
            return False
        if self._failing:
            log.info("the spool %s takes writes again", self.spool.path)
        self._failing = False
        return True

    def report(self, now_ns: int) -> dict[str, Any]:
        """Its depth in records and bytes, its bound, the age of its oldest record, what its
        bounds dropped, what it sent and took (``SPOOL_KEYS``)."""
        sp = self.spool
        age = sp.oldest_age_s(now_ns)
        return {
            "spool_depth": sp.depth,
            "spool_bytes": sp.bytes,
            "spool_max_bytes": sp.config.max_bytes,
            "spool_oldest_s": None if age is None else round(age, 3),
            "spool_dropped": sp.dropped,
            "spool_expired": sp.expired,
            "spool_delivered": sp.delivered,
            "spooled": sp.spooled,
        }

    def summary(self) -> str:
        sp = self.spool
        return (f"spooled={sp.spooled} spool_depth={sp.depth} spool_dropped={sp.dropped}"
                f" spool_expired={sp.expired} spool_delivered={sp.delivered}")

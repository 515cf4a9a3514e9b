"""SQLite sink: every sample, event, bus gap and stats message in one database file.

Schema (``PRAGMA user_version`` = 1; later versions only add tables/columns)::

    samples(id INTEGER PRIMARY KEY, plc TEXT, tag TEXT, t_wall_ns INTEGER, t_mono_ns INTEGER,
            type TEXT NULL, value_json TEXT, value_real REAL NULL, raw BLOB,
            cip_seq INTEGER, gap INTEGER, publisher TEXT, seq INTEGER)
        index samples_by_tag_time (plc, tag, t_wall_ns)   -- "value of X between t1 and t2"
    events(id, plc, tag, t_wall_ns, t_mono_ns, kind, state_from, state_to, cip_general,
           cip_extended, status_text, message, publisher, seq)
        index events_by_tag_time (plc, tag, t_wall_ns)
    gaps(id, t_wall_ns, publisher, topic, expected_seq, received_seq, missed, restart)
        -- bus loss seen by this sink; CIP-level loss is samples.gap and events kind='gap'
    stats(id, t_wall_ns, t_mono_ns, worker, publisher, seq, counters_json)

``value_json`` is the decoded value as strict JSON (NaN/inf as strings, see sinks.records);
``value_real`` repeats it when it is a scalar number (bool as 0/1; SQLite stores NaN as NULL).
Unsigned 64-bit counters (``seq``, ``gap``) above 2**63-1 are stored wrapped to negative
INTEGERs, since SQLite integers are signed; no real run reaches that.

Durability: WAL journal, ``synchronous=NORMAL`` by default, one transaction per loop flush, so
a flush is one fsync-light commit and readers (Grafana, sqlite3 CLI) never block the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from pyconpro.acquisition.sink_config import Option, OptionValue, Output, SinkSchema
from pyconpro.acquisition.wire import Event, Sample, Stats
from pyconpro.sinks.base import BusGap, Sink
from pyconpro.sinks.records import to_json, value_real
from pyconpro.sinks.registry import SinkKind

DB_SCHEMA_VERSION = 1

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
    seq INTEGER NOT NULL
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
    expected_seq INTEGER NOT NULL,
    received_seq INTEGER NOT NULL,
    missed INTEGER NOT NULL,
    restart INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stats (
    id INTEGER PRIMARY KEY,
    t_wall_ns INTEGER NOT NULL,
    t_mono_ns INTEGER NOT NULL,
    worker TEXT NOT NULL,
    publisher TEXT NOT NULL,
    seq INTEGER NOT NULL,
    counters_json TEXT NOT NULL
);
"""

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

SQLITE_SCHEMA = SinkSchema(
    kind="sqlite",
    help="write to a SQLite database (WAL, batched transactions)",
    options=(
        Option(
            "path", "path", "pyconpro.sqlite3", "Database file (created if missing).",
            flag="--db", cli_required=True,
        ),
        Option(
            "synchronous", "choice", "NORMAL",
            "SQLite `synchronous` pragma; `NORMAL` is safe with WAL.",
            choices=SYNCHRONOUS, fold=True,
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


class SqliteSink(Sink):
    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r}: use OFF, NORMAL, FULL or EXTRA")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per flush.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise RuntimeError(
                f"cannot open SQLite database {self.path}: {exc}; check the directory exists"
                " and is writable"
            ) from exc
        self._db = db
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
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={DB_SCHEMA_VERSION}")
        db.execute("COMMIT")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("SqliteSink used before open()")
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        return self._db

    def write_samples(self, samples: list[Sample]) -> None:
        self._conn().executemany(
            "INSERT INTO samples (plc, tag, t_wall_ns, t_mono_ns, type, value_json, value_real,"
            " raw, cip_seq, gap, publisher, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
                )
                for s in samples
            ],
        )

    def write_events(self, events: list[Event]) -> None:
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

    def write_stats(self, stats: list[Stats]) -> None:
        self._conn().executemany(
            "INSERT INTO stats (t_wall_ns, t_mono_ns, worker, publisher, seq, counters_json)"
            " VALUES (?,?,?,?,?,?)",
            [
                (s.t_wall_ns, s.t_mono_ns, s.worker, s.publisher, _i64(s.seq), to_json(s.counters))
                for s in stats
            ],
        )

    def flush(self) -> None:
        if self._db is not None and self._db.in_transaction:
            self._db.execute("COMMIT")

    def close(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        try:
            if db.in_transaction:
                # close() without a prior flush() means the loop died: keep what we have.
                db.execute("COMMIT")
        finally:
            db.close()


def from_options(options: Mapping[str, OptionValue]) -> SqliteSink:
    return SqliteSink(str(options["path"]), synchronous=str(options["synchronous"]))


SINK_KINDS = (SinkKind(SQLITE_SCHEMA, from_options),)

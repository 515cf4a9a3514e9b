"""Each output on its own: SQLite schema and types, file rotation, CSV/JSONL shape, stdout lines."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sqlite3
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyconpro.acquisition.wire import Event, EventKind, Sample, Stats, Value
from pyconpro.sinks.base import BusGap
from pyconpro.sinks.files import CsvSink, JsonlSink, RotatingFile
from pyconpro.sinks.records import iso_time, json_safe, sample_json, sample_record, to_json
from pyconpro.sinks.sqlite import SqliteSink
from pyconpro.sinks.stdout import (
    StdoutSink,
    display_time,
    display_value,
    float32_text,
    format_event,
    format_gap,
    format_sample,
)

S = Sample(
    seq=0, publisher="w1", plc="plc1", tag="Temp", t_wall_ns=1_700_000_000_000_000_001,
    t_mono_ns=9, cip_seq=7, gap=1, value=21.5, raw=b"\x00\x00\xac\x41", type_name="REAL",
)  # fmt: skip
E = Event(
    seq=0, publisher="w1", plc="plc1", tag="Temp", t_wall_ns=2, t_mono_ns=3,
    kind=EventKind.REJECT, state_from="OPENING", state_to="BACKOFF", cip_general=1,
    cip_extended=0x0113, status_text="out of connections", message="retry in 2 s",
)  # fmt: skip
G = BusGap("w1", "sample/plc1/Temp/", 5, 9, 4, False, 77)
ST = Stats(seq=4, publisher="w1", worker="eth0", t_wall_ns=3, t_mono_ns=4, counters={"rx": 10})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- records


def test_iso_time_keeps_nanoseconds() -> None:
    assert iso_time(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert iso_time(0) == "1970-01-01T00:00:00.000000000Z"


# Values of every shape a sample carries, non-finite floats and non-ASCII text included.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=200)
@given(
    json_values, st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8),
    st.none() | st.text(min_size=1, max_size=8), st.integers(-(2**63), 2**63 - 1),
    st.none() | st.integers(-(2**63), 2**63 - 1),
)  # fmt: skip
def test_sample_json_is_the_json_of_the_sample_record(
    value: Value, plc: str, publisher: str, type_name: str | None, t_wall_ns: int,
    source_ns: int | None,
) -> None:
    s = dataclasses.replace(S, value=value, plc=plc, publisher=publisher, type_name=type_name,
                            t_wall_ns=t_wall_ns, gap=2**64 - 1, source_ns=source_ns)  # fmt: skip
    assert sample_json(s) == to_json(sample_record(s))


@given(json_values)
def test_to_json_spells_values_as_the_json_module(value: Value) -> None:
    assert to_json(value) == json.dumps(
        json_safe(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def test_json_is_strict_with_named_non_finite_floats() -> None:
    text = to_json({"a": [math.nan, math.inf, -math.inf, 1.0], "é": None})
    assert text == '{"a":["NaN","Infinity","-Infinity",1.0],"é":null}'
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


# --------------------------------------------------------------------------- sqlite


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "out.db"


def write_all(sink: SqliteSink | JsonlSink | CsvSink, samples: list[Sample]) -> None:
    sink.write_samples(samples)
    sink.write_events([E])
    sink.write_gaps([G])
    sink.write_stats([ST])
    sink.flush()


def test_sqlite_rows_types_and_wal(db_path: Path) -> None:
    sink = SqliteSink(db_path)
    sink.open()
    values: list[Value] = [21.5, 3, True, [1, 2], {"x": math.nan}, None, "s", math.nan]
    samples = [dataclasses.replace(S, seq=i, value=v) for i, v in enumerate(values)]
    write_all(sink, samples)
    # Readable by another connection after flush(), before close(): the batch is committed.
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        rows = db.execute(
            "SELECT value_json, value_real, typeof(value_real), raw, type, seq FROM samples"
            " ORDER BY id"
        ).fetchall()
        assert [(r[0], r[1]) for r in rows] == [
            ("21.5", 21.5),
            ("3", 3.0),
            ("true", 1.0),
            ("[1,2]", None),
            ('{"x":"NaN"}', None),
            ("null", None),
            ('"s"', None),
            ('"NaN"', None),  # SQLite keeps no NaN in a REAL column: NULL
        ]
        assert rows[0][2:] == ("real", b"\x00\x00\xac\x41", "REAL", 0)
        assert db.execute(
            "SELECT kind, cip_general, cip_extended, message FROM events"
        ).fetchall() == [("reject", 1, 0x0113, "retry in 2 s")]
        assert db.execute(
            "SELECT id, t_wall_ns, publisher, topic, expected_seq, received_seq, missed, restart,"
            " kind, plc, tag, start_wall_ns, cause FROM gaps"
        ).fetchall() == [(1, 77, "w1", "sample/plc1/Temp/", 5, 9, 4, 0, "bus", None, None, None,
                          None)]
        assert db.execute("SELECT worker, counters_json FROM stats").fetchall() == [
            ("eth0", '{"rx":10}')
        ]
        plan = " ".join(
            r[-1]
            for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM samples WHERE plc='plc1' AND tag='Temp'"
                " AND t_wall_ns BETWEEN 0 AND 5"
            )
        )
        assert "samples_by_tag_time" in plan
    finally:
        db.close()
        sink.close()


OUTAGE = Event(
    seq=3, publisher="w1", plc="plc1", tag="Temp", t_wall_ns=1_700_000_002_020_000_000,
    t_mono_ns=52_020_000_000, kind=EventKind.OUTAGE, message="outage of 1.020 s (timeout) ...",
    outage_start_wall_ns=1_700_000_001_000_000_000, outage_start_mono_ns=51_000_000_000,
    expected=50, rpi_us=20_000, cause="timeout", resumed=True,
)  # fmt: skip


def write_and_close(db_path: Path, events: list[Event], gaps: Sequence[BusGap] = ()) -> None:
    """One sink run that writes ``events`` and ``gaps`` into ``db_path``."""
    sink = SqliteSink(db_path)
    sink.open()
    sink.write_events(events)
    sink.write_gaps(list(gaps))
    sink.flush()
    sink.close()


def test_sqlite_records_outages_in_gaps_with_their_start_end_and_missed_samples(
        db_path: Path) -> None:
    restart = dataclasses.replace(OUTAGE, seq=4, cause="restart", resumed=False, expected=7)
    write_and_close(db_path, [E, OUTAGE, restart], [G])
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("SELECT count(*) FROM events WHERE kind = 'outage'").fetchone() == (2,)
        rows = db.execute(
            "SELECT kind, plc, tag, topic, start_wall_ns, end_wall_ns, start_mono_ns,"
            " end_mono_ns, missed, rpi_us, cause, resumed, restart, expected_seq, t_wall_ns"
            " FROM gaps ORDER BY id").fetchall()
        assert rows == [
            ("outage", "plc1", "Temp", "sample/plc1/Temp/", 1_700_000_001_000_000_000,
             1_700_000_002_020_000_000, 51_000_000_000, 52_020_000_000, 50, 20_000, "timeout",
             1, 0, None, 1_700_000_002_020_000_000),
            ("outage", "plc1", "Temp", "sample/plc1/Temp/", 1_700_000_001_000_000_000,
             1_700_000_002_020_000_000, 51_000_000_000, 52_020_000_000, 7, 20_000, "restart",
             0, 1, None, 1_700_000_002_020_000_000),
            ("bus", None, None, "sample/plc1/Temp/", None, None, None, None, 4, None, None, None,
             0, 5, 77),
        ]  # fmt: skip
        # "How much of Temp was lost between t1 and t2" is one indexed query.
        plan = " ".join(r[-1] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT sum(missed) FROM gaps WHERE plc = 'plc1' AND"
            " tag = 'Temp' AND start_wall_ns BETWEEN 0 AND 5"))
        assert "gaps_by_tag_time" in plan
    finally:
        db.close()


def test_sqlite_upgrades_a_version_1_file_keeping_its_gaps(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    db.executescript("""
        CREATE TABLE gaps (id INTEGER PRIMARY KEY, t_wall_ns INTEGER NOT NULL,
            publisher TEXT NOT NULL, topic TEXT NOT NULL, expected_seq INTEGER NOT NULL,
            received_seq INTEGER NOT NULL, missed INTEGER NOT NULL, restart INTEGER NOT NULL);
        INSERT INTO gaps VALUES (1, 77, 'w1', 'sample/plc1/Temp/', 5, 9, 4, 0);
        PRAGMA user_version = 1;
    """)
    db.close()
    write_and_close(db_path, [OUTAGE])
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
        assert db.execute("SELECT id, kind, expected_seq, missed FROM gaps ORDER BY id"
                          ).fetchall() == [(1, "bus", 5, 4), (2, "outage", None, 50)]
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def test_sqlite_upgrades_a_version_2_file_with_the_source_time_column(db_path: Path) -> None:
    """A file written before the controller's time existed gets its column, NULL in the rows
    it held; new samples fill it when they carry one."""
    for run in range(2):
        if run:  # the file as version 2 made it
            db = sqlite3.connect(db_path)
            db.executescript("ALTER TABLE samples DROP COLUMN t_source_ns;"
                             " PRAGMA user_version = 2;")  # fmt: skip
            db.close()
        sink = SqliteSink(db_path)
        sink.open()
        sink.write_samples([dataclasses.replace(S, seq=run, source_ns=(
            1_700_000_000_123_456_000 if run else None))])  # fmt: skip
        sink.flush()
        sink.close()
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
        assert db.execute("SELECT seq, t_source_ns FROM samples ORDER BY id").fetchall() == [
            (0, None), (1, 1_700_000_000_123_456_000)]  # fmt: skip
    finally:
        db.close()


def test_sqlite_appends_to_an_existing_database(db_path: Path) -> None:
    for run in range(2):
        sink = SqliteSink(db_path)
        sink.open()
        sink.write_samples([dataclasses.replace(S, seq=run)])
        sink.flush()
        sink.close()
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("SELECT seq FROM samples ORDER BY id").fetchall() == [(0,), (1,)]
    finally:
        db.close()


def test_sqlite_refuses_a_newer_schema(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA user_version=4")
    db.close()
    sink = SqliteSink(db_path)
    with pytest.raises(RuntimeError, match="newer than this pyconpro"):
        sink.open()
    sink.close()


def test_sqlite_unsigned_64_bit_counters_wrap_instead_of_failing(db_path: Path) -> None:
    sink = SqliteSink(db_path)
    sink.open()
    sink.write_samples([dataclasses.replace(S, seq=2**64 - 1, gap=2**63)])
    sink.flush()
    sink.close()
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("SELECT seq, gap FROM samples").fetchone() == (-1, -(2**63))
    finally:
        db.close()


def test_sqlite_close_without_flush_keeps_written_rows(db_path: Path) -> None:
    sink = SqliteSink(db_path)
    sink.open()
    sink.write_samples([S])
    sink.close()
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("SELECT count(*) FROM samples").fetchone() == (1,)
    finally:
        db.close()


# --------------------------------------------------------------------------- files


def test_rotating_file_by_size_never_splits_a_record(tmp_path: Path) -> None:
    r = RotatingFile(tmp_path, "s", ".txt", max_bytes=10, max_seconds=0, header=b"H\n")
    for rec in [b"aaaa\n", b"bbbb\n", b"cccccccccccccc\n", b"d\n"]:
        r.write(rec)
    r.close()
    contents = [p.read_bytes() for p in r.paths]
    assert contents == [b"H\naaaa\n", b"H\nbbbb\n", b"H\ncccccccccccccc\n", b"H\nd\n"]
    assert r.paths == sorted(r.paths)


def test_rotating_file_writes_a_batch_as_one_record_after_the_other(tmp_path: Path) -> None:
    records = [b"aaaa\n", b"bb\n", b"cccccccccccccc\n", b"d\n", b"e\n", b"ffff\n"]
    one = RotatingFile(tmp_path / "one", "s", ".txt", max_bytes=10, max_seconds=0, header=b"H\n")
    batch = RotatingFile(tmp_path / "all", "s", ".txt", max_bytes=10, max_seconds=0, header=b"H\n")
    for d in (tmp_path / "one", tmp_path / "all"):
        d.mkdir()
    for rec in records:
        one.write(rec)
    batch.write_all(records[:3])
    batch.write_all(records[3:])
    one.close()
    batch.close()
    assert [p.read_bytes() for p in batch.paths] == [p.read_bytes() for p in one.paths]
    assert len(batch.paths) == 4


def test_rotating_file_by_age_including_when_idle(tmp_path: Path) -> None:
    clock = Clock()
    r = RotatingFile(tmp_path, "s", ".txt", max_bytes=0, max_seconds=60, clock=clock)
    r.write(b"1\n")
    clock.now = 59.9
    r.write(b"2\n")
    clock.now = 60.0
    r.flush()  # idle: the age limit closes the file without waiting for the next record
    assert len(r.paths) == 1
    r.write(b"3\n")
    r.close()
    assert [p.read_bytes() for p in r.paths] == [b"1\n2\n", b"3\n"]


def test_rotating_file_never_overwrites(tmp_path: Path) -> None:
    def wall() -> float:  # both writers get the same second-resolution name
        return 0.0

    first = RotatingFile(tmp_path, "s", ".txt", max_bytes=0, max_seconds=0, wall=wall)
    first.write(b"first\n")
    first.close()
    second = RotatingFile(tmp_path, "s", ".txt", max_bytes=0, max_seconds=0, wall=wall)
    second.write(b"second\n")
    second.close()
    assert first.paths[0] != second.paths[0]
    assert first.paths[0].read_bytes() == b"first\n"
    assert second.paths[0].name == "s-19700101T000000Z-0002.txt"


def test_jsonl_lines(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "out")
    sink.open()
    write_all(sink, [S])
    sink.close()
    (sample_file,) = sink.streams["samples"].paths
    (line,) = sample_file.read_text(encoding="utf-8").splitlines()
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.000000001Z",
        "t_wall_ns": 1_700_000_000_000_000_001,
        "t_mono_ns": 9,
        "plc": "plc1",
        "tag": "Temp",
        "type": "REAL",
        "value": 21.5,
        "value_real": 21.5,
        "cip_seq": 7,
        "gap": 1,
        "publisher": "w1",
        "seq": 0,
        "raw": "0000ac41",
        "t_source_ns": None,  # no controller time for this tag
    }
    (gap_file,) = sink.streams["gaps"].paths
    assert json.loads(gap_file.read_text(encoding="utf-8"))["missed"] == 4
    assert sample_file.name.startswith("pyconpro-samples-")


def test_csv_header_per_file_and_json_value_column(tmp_path: Path) -> None:
    sink = CsvSink(tmp_path, prefix="x", max_bytes=400, max_seconds=0)
    sink.open()
    samples = [dataclasses.replace(S, seq=i, value=["a,b", i]) for i in range(6)]
    write_all(sink, samples)
    sink.close()
    paths = sink.streams["samples"].paths
    assert len(paths) > 1  # the size limit split the stream
    rows = []
    for p in paths:
        with open(p, newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))  # every file has its own header
    assert [json.loads(r["value"]) for r in rows] == [["a,b", i] for i in range(6)]
    assert [r["value_real"] for r in rows] == [""] * 6
    with open(sink.streams["events"].paths[0], newline="", encoding="utf-8") as f:
        (ev,) = list(csv.DictReader(f))
    assert (ev["cip_extended"], ev["status_text"]) == ("275", "out of connections")


def test_file_sink_reports_an_unusable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RuntimeError, match="cannot create output directory"):
        JsonlSink(blocker / "sub").open()


# --------------------------------------------------------------------------- stdout


def test_stdout_lines() -> None:
    buf = io.StringIO()
    sink = StdoutSink(buf, raw=True, utc=True)
    write_all_stdout: list[Callable[[], None]] = [
        lambda: sink.write_samples([dataclasses.replace(S, plc="line 2")]),
        lambda: sink.write_events([E]),
        lambda: sink.write_gaps([G, dataclasses.replace(G, restart=True, missed=0)]),
        lambda: sink.write_stats([ST]),
    ]
    for write in write_all_stdout:
        write()
    sink.flush()
    lines = buf.getvalue().splitlines()
    assert lines[0] == (
        "2023-11-14T22:13:20.000000001Z sample line%202/Temp REAL = 21.5"
        "  [cs=7 gap=1 pub=w1 sq=0 raw=0000ac41]"
    )
    assert format_sample(dataclasses.replace(S, source_ns=1_700_000_000_000_000_000),
                         utc=True).endswith(
        "[cs=7 gap=1 pub=w1 sq=0 st=2023-11-14T22:13:20.000000000Z]")  # the controller's time
    assert lines[1] == format_event(E, utc=True)
    assert (
        "reject OPENING->BACKOFF status=0x01/0x0113 (out of connections) : retry in 2 s" in lines[1]
    )
    assert lines[2] == format_gap(G, utc=True)
    assert "BUS-LOSS missed=4" in lines[2]
    assert "BUS-RESTART" in lines[3]
    assert lines[4].endswith("stats eth0 rx=10  [pub=w1 sq=4]")


def test_stdout_local_time_carries_its_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    # A POSIX TZ string needs no tz database: one hour east of UTC, no daylight saving.
    monkeypatch.setenv("TZ", "UTC0")
    time.tzset()
    # The same second formatted in another zone first: a change of zone is not answered from
    # what was formatted before it.
    assert display_time(1_700_000_000_000_000_000) == "2023-11-14T22:13:20.000000000+00:00"
    monkeypatch.setenv("TZ", "XYZ-1")
    time.tzset()
    try:
        assert display_time(1_700_000_000_123_456_789) == "2023-11-14T23:13:20.123456789+01:00"
        assert display_time(1_700_000_000_123_456_789, utc=True).endswith("20.123456789Z")
        line = format_sample(dataclasses.replace(S, t_wall_ns=0))
        assert line.startswith("1970-01-01T01:00:00.000000000+01:00 sample")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-53.95302963256836, "-53.95303"),  # float32(-53.95303) widened to float64
        (0.10000000149011612, "0.1"),
        (21.5, "21.5"),
        (3.0, "3.0"),
        (16777216.0, "16777216.0"),
        (3.4028234663852886e38, "3.4028235e+38"),  # FLT_MAX
        (1.401298464324817e-45, "1e-45"),  # the smallest subnormal
    ],
)
def test_float32_shortest_text_reads_back_exactly(value: float, text: str) -> None:
    assert float32_text(value) == text
    assert struct.unpack("<f", struct.pack("<f", float(text)))[0] == value


def test_float32_text_refuses_what_no_float32_holds() -> None:
    assert float32_text(0.1) is None  # needs float64 precision
    assert float32_text(1e39) is None  # beyond FLT_MAX
    assert float32_text(math.nan) is None and float32_text(math.inf) is None


def test_displayed_values_keep_the_precision_of_their_type() -> None:
    f32 = struct.unpack("<f", struct.pack("<f", -53.95303))[0]
    assert display_value(f32, "REAL") == "-53.95303"
    assert display_value([f32, 1.5, math.nan], "REAL[3]") == '[-53.95303,1.5,"NaN"]'
    assert display_value(f32, "LREAL") == "-53.95302963256836"  # LREAL: float64 digits kept
    assert display_value({"t": f32, "n": 3, "s": "a\"b", "x": 0.1}, "Recipe") == (
        '{"t":-53.95303,"n":3,"s":"a\\"b","x":0.1}'
    )
    assert display_value(7, "DINT") == "7"


def test_stdout_reader_gone_ends_quietly() -> None:
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    sink = StdoutSink(Gone())
    with pytest.raises(SystemExit) as exc:
        sink.write_samples([S])
    assert exc.value.code == 0

"""The SQLite sink's ``bus_marks``: per stream, the last message stored, committed in the same
transaction as the rows, so that whatever stops the sink, the file says exactly what it holds
and the next start asks the replay for exactly what follows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pyconpro.acquisition.replay import Key, Mark
from pyconpro.acquisition.wire import (
    Event,
    Sample,
    Stats,
    topic_for_event,
    topic_for_sample,
    topic_for_stats,
)
from pyconpro.sinks.base import OutputUnavailable
from pyconpro.sinks.sqlite import SqliteSink


def sample(seq: int, tag: str = "A", pub: str = "w1", tm: int | None = None) -> Sample:
    return Sample(seq=seq, publisher=pub, plc="p1", tag=tag, t_wall_ns=1,
                  t_mono_ns=seq * 10 if tm is None else tm, cip_seq=0, gap=0, value=1,
                  raw=b"\0")  # fmt: skip


def event(seq: int, tag: str = "") -> Event:
    return Event(seq=seq, publisher="w1", plc="p1", tag=tag, t_wall_ns=1, t_mono_ns=seq + 5,
                 kind="state")  # fmt: skip


def stats(seq: int) -> Stats:
    return Stats(seq=seq, publisher="w1", worker="w1", t_wall_ns=1, t_mono_ns=seq + 7)


def from_rows(path: Path) -> dict[Key, Mark]:
    """Per stream, the mark of its last row, read from the rows themselves."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[Key, Mark] = {}
        for pub, plc, tag, seq, tm in db.execute(
                "SELECT publisher, plc, tag, seq, t_mono_ns FROM samples ORDER BY id"):  # fmt: skip
            out[(pub, topic_for_sample(plc, tag))] = (tm, seq)
        for pub, plc, tag, seq, tm in db.execute(
                "SELECT publisher, plc, tag, seq, t_mono_ns FROM events ORDER BY id"):  # fmt: skip
            out[(pub, topic_for_event(plc, tag))] = (tm, seq)
        for pub, worker, seq, tm in db.execute(
                "SELECT publisher, worker, seq, t_mono_ns FROM stats ORDER BY id"):  # fmt: skip
            out[(pub, topic_for_stats(worker))] = (tm, seq)
        return out
    finally:
        db.close()


def from_table(path: Path) -> dict[Key, Mark]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(pub, topic.encode()): (tm, seq) for pub, topic, seq, tm in
                db.execute("SELECT publisher, topic, seq, t_mono_ns FROM bus_marks")}  # fmt: skip
    finally:
        db.close()


def reopened(path: Path) -> dict[Key, Mark]:
    sink = SqliteSink(path)
    sink.open()
    try:
        return sink.stored_marks()
    finally:
        sink.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "db.sqlite3"


def test_marks_are_the_last_row_of_each_stream_after_every_flush(path: Path) -> None:
    sink = SqliteSink(path)
    sink.open()
    assert sink.stored_marks() == {}
    sink.write_samples([sample(0), sample(1), sample(0, "B"), sample(2)])
    sink.write_events([event(0), event(1, "A")])
    sink.write_stats([stats(3)])
    sink.flush()
    want = {
        ("w1", b"sample/p1/A/"): (20, 2), ("w1", b"sample/p1/B/"): (0, 0),
        ("w1", b"event/p1//"): (5, 0), ("w1", b"event/p1/A/"): (6, 1),
        ("w1", b"stats/w1/"): (10, 3),
    }  # fmt: skip
    assert from_table(path) == from_rows(path) == sink.stored_marks() == want
    sink.write_samples([sample(3)])
    sink.flush()
    assert from_table(path) == from_rows(path) == {**want, ("w1", b"sample/p1/A/"): (30, 3)}
    sink.close()
    assert reopened(path) == from_rows(path)


def test_what_is_not_committed_moves_no_mark(path: Path) -> None:
    sink = SqliteSink(path)
    sink.open()
    sink.write_samples([sample(0), sample(1)])
    sink.flush()
    sink.write_samples([sample(2), sample(3)])  # in the transaction, not committed yet
    assert from_table(path) == from_rows(path) == {("w1", b"sample/p1/A/"): (10, 1)}
    # The file removed under the open database: the batch is rolled back and kept for later.
    path.unlink()
    with pytest.raises(OutputUnavailable):
        sink.flush()
    assert sink.stored_marks() == {("w1", b"sample/p1/A/"): (10, 1)}
    sink.write_samples([sample(4)])  # the next write reopens a new file at path
    sink.flush()
    assert from_table(path) == from_rows(path) == {("w1", b"sample/p1/A/"): (40, 4)}
    sink.close()


def test_close_without_a_flush_commits_the_marks_with_the_rows(path: Path) -> None:
    sink = SqliteSink(path)
    sink.open()
    sink.write_samples([sample(0), sample(1)])
    sink.close()  # the loop died: what was written is kept, and said so
    assert from_table(path) == from_rows(path) == {("w1", b"sample/p1/A/"): (10, 1)}


def test_a_restarted_publisher_and_huge_numbers_keep_their_marks(path: Path) -> None:
    sink = SqliteSink(path)
    sink.open()
    sink.write_samples([sample(2**64 - 2, tm=100), sample(0, tm=200)])
    sink.write_samples([sample(2**64 - 1, tag="B", tm=-5)])
    sink.flush()
    sink.close()
    assert reopened(path) == {("w1", b"sample/p1/A/"): (200, 0),
                              ("w1", b"sample/p1/B/"): (-5, 2**64 - 1)}  # fmt: skip


def test_a_file_from_before_bus_marks_gets_them_from_its_rows(path: Path) -> None:
    sink = SqliteSink(path)
    sink.open()
    sink.write_samples([sample(0), sample(1), sample(7, "B", pub="w2")])
    sink.write_events([event(4)])
    sink.write_stats([stats(9)])
    sink.flush()
    sink.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE bus_marks")
    db.commit()
    db.close()
    assert reopened(path) == from_rows(path) == {
        ("w1", b"sample/p1/A/"): (10, 1), ("w2", b"sample/p1/B/"): (70, 7),
        ("w1", b"event/p1//"): (9, 4), ("w1", b"stats/w1/"): (16, 9),
    }  # fmt: skip
    assert from_table(path) == from_rows(path)

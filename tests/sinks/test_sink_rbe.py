"""Report by exception in the shared SUB loop (sinks/base.py): samples left out are counted,
never gaps or loss; their marks reach an output that keeps marks (a real SQLite file, a real
spool), in order with the samples kept, so a restart continues after them; an event of the
tag or bus loss starts the tag's rule over."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest
from pyconpro.acquisition.rbe import ExceptionRule, ReportByException
from pyconpro.acquisition.replay import Key, Mark
from pyconpro.acquisition.wire import Event, EventKind, Sample, Value
from pyconpro.sinks.base import LoopOptions, OutputUnavailable, Sink, SubscriberLoop
from pyconpro.sinks.spool import SpoolConfig
from pyconpro.sinks.sqlite import SqliteSink

from tests.sinks.bus_testkit import MemorySink
from tests.sinks.test_sink_loop import TA, FakeClock, S

pytestmark = pytest.mark.timeout(60)

CHANGES = ReportByException(ExceptionRule(deadband=0.0))  # keep changes only
Clock = FakeClock


class MarkSink(MemorySink):
    """MemorySink that keeps marks, as an output with ``stored_marks`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[dict[Key, Mark]] = []
        self.fail = False

    def write_skipped(self, marks: Mapping[Key, Mark]) -> None:
        self.skipped.append(dict(marks))

    def stored_marks(self) -> dict[Key, Mark]:
        return {}

    def flush(self) -> None:
        if self.fail:
            self.pending = []
            raise OutputUnavailable("down", "the output is down")
        super().flush()


def make_loop(sink: Sink, **options: object) -> tuple[SubscriberLoop, Clock]:
    clock = Clock()
    opts = LoopOptions(endpoints=["tcp://127.0.0.1:1"], exception=CHANGES,
                       flush_interval=1.0, **options)  # type: ignore[arg-type]  # fmt: skip
    loop = SubscriberLoop(sink, opts, clock=clock, wall_ns=lambda: 5)
    loop._open_output()
    return loop, clock


def sample(seq: int, value: Value, tag: str = "A") -> Sample:
    return dataclasses.replace(S, seq=seq, tag=tag, value=value, t_mono_ns=seq * 1000)


def feed(loop: SubscriberLoop, *msgs: Sample | Event) -> None:
    for m in msgs:
        loop.handle(list(m.encode()))


def flush(loop: SubscriberLoop, clock: Clock) -> None:
    clock.now += 1.0
    loop.flush_if_due()


def test_left_out_samples_are_counted_and_are_no_gap() -> None:
    sink = MarkSink()
    loop, clock = make_loop(sink)
    feed(loop, *(sample(i, 2 if 4 <= i < 6 else 1) for i in range(10)))
    flush(loop, clock)
    assert [s.seq for s in sink.flushed] == [0, 4, 6]  # type: ignore[attr-defined]
    c = loop.counters
    assert (c.samples, c.filtered, c.written, c.gaps, c.lost) == (10, 7, 3, 0, 0)
    assert loop.report()["filtered"] == 7
    assert "filtered=7" in loop.summary()


def test_marks_follow_the_samples_kept_in_arrival_order() -> None:
    sink = MarkSink()
    loop, clock = make_loop(sink)
    feed(loop, sample(0, 1), sample(1, 1), sample(2, 1), sample(0, 5, "B"))
    flush(loop, clock)
    assert sink.skipped == [{("w1", TA): (2000, 2)}]  # after the kept B, with it
    # A left out, then a change of A kept: the kept sample's own mark is the later one.
    feed(loop, sample(3, 1), sample(4, 9))
    flush(loop, clock)
    assert sink.skipped[-1:] == [{("w1", TA): (2000, 2)}]  # nothing new skipped
    # Nothing but samples left out: their mark alone is written on the usual schedule.
    feed(loop, sample(5, 9), sample(6, 9))
    loop.flush_if_due()
    assert len(sink.skipped) == 1  # not before flush_interval
    flush(loop, clock)
    assert sink.skipped[-1] == {("w1", TA): (6000, 6)}
    assert loop.counters.written == 3  # marks are not records written


def test_an_event_of_the_tag_or_bus_loss_starts_its_rule_over() -> None:
    sink = MarkSink()
    loop, clock = make_loop(sink)
    ev = Event(seq=0, publisher="w1", plc="plc1", tag="A", t_wall_ns=1, t_mono_ns=1,
               kind=EventKind.STATE, state_from="RUNNING", state_to="WATCHDOG")  # fmt: skip
    feed(loop, sample(0, 1), sample(1, 1), ev, sample(2, 1), sample(3, 1), sample(7, 1))
    flush(loop, clock)
    # 2 after the event; 7 after bus loss (4..6 never arrived: a gap, counted as such). The
    # sink is handed samples, then events, then gaps.
    assert [(type(r).__name__, getattr(r, "seq", None)) for r in sink.flushed] == [
        ("Sample", 0), ("Sample", 2), ("Sample", 7), ("Event", 0), ("BusGap", None)]
    assert (loop.counters.filtered, loop.counters.lost) == (2, 3)


def test_a_restart_continues_after_the_left_out_samples_of_a_sqlite_file(
    tmp_path: Path,
) -> None:
    db = tmp_path / "rbe.sqlite3"
    loop, clock = make_loop(SqliteSink(db))
    feed(loop, *(sample(i, 1) for i in range(50)))
    flush(loop, clock)
    loop.sink.close()
    # The file holds one sample and knows every one of the 50 was done with.
    again = SqliteSink(db)
    again.open()
    try:
        assert again.stored_marks() == {("w1", TA): (49_000, 49)}
        rows = again._conn().execute("SELECT seq FROM samples").fetchall()
        assert rows == [(0,)]
    finally:
        again.close()
    loop2, _ = make_loop(SqliteSink(db))
    feed(loop2, sample(50, 1))
    assert (loop2.counters.gaps, loop2.counters.lost) == (0, 0)  # no gap at the restart
    loop2.sink.close()


def test_a_spool_takes_the_marks_of_left_out_samples_but_no_rows(tmp_path: Path) -> None:
    sink = MarkSink()
    loop, clock = make_loop(sink, spool=SpoolConfig(tmp_path / "s.spool"))
    try:
        feed(loop, sample(0, 1), sample(1, 1))
        flush(loop, clock)
        assert loop.feed is not None
        spool = loop.feed.spool
        assert spool.marks() == {("w1", TA): (1000, 1)}  # written: accepted with its mark
        sink.fail = True  # the destination goes away: records go to the spool
        feed(loop, sample(2, 3), sample(3, 3), sample(4, 3))
        flush(loop, clock)
        assert (spool.depth, spool.marks()) == (1, {("w1", TA): (4000, 4)})
        sink.fail = False
        clock.now += 10.0
        loop.flush_if_due()
        assert spool.depth == 0
        assert [s.seq for s in sink.flushed] == [0, 2]  # type: ignore[attr-defined]
    finally:
        assert loop.feed is not None
        loop.feed.spool.close()


def test_off_by_default_and_with_a_rule_that_keeps_everything() -> None:
    for rbe in (None, ReportByException(), ReportByException(ExceptionRule(),
                                                             (("*/*", ExceptionRule()),))):
        sink = MarkSink()
        clock = Clock()
        loop = SubscriberLoop(sink, LoopOptions(endpoints=["tcp://127.0.0.1:1"], exception=rbe),
                              clock=clock)  # fmt: skip
        assert loop.exception is None
        feed(loop, *(sample(i, 1) for i in range(5)))
        flush(loop, clock)
        assert len(sink.flushed) == 5 and sink.skipped == []

"""The store-and-forward spool: order, bounds by size and by age on a fake clock, the
bookkeeping that makes a replay after a crash hand the same records again, and the SUB loop
that spools what an unavailable or slow output cannot take (real spool files, fake sink)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from pyconpro.acquisition.wire import Event, EventKind, Sample, Stats, topic_for_sample
from pyconpro.sinks.base import BusGap, LoopOptions, Record, SubscriberLoop
from pyconpro.sinks.spool import SPILL_BATCHES, Spool, SpoolConfig, record_size

from tests.sinks.test_sink_loop import FakeClock, FlakySink, frames

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000_000_000_000
S = Sample(
    seq=0, publisher="w1", plc="plc1", tag="A", t_wall_ns=T0, t_mono_ns=1_000, cip_seq=0,
    gap=0, value=1.5, raw=b"\x01\x02\x03\x04",
)  # fmt: skip


def sample(i: int, tag: str = "A", t_wall_ns: int | None = None) -> Sample:
    return dataclasses.replace(S, seq=i, tag=tag, value=i, t_mono_ns=1_000 + i,
                               t_wall_ns=T0 + i * 1_000_000 if t_wall_ns is None else t_wall_ns)


def spool_at(path: Path, max_bytes: int = 1 << 30, max_age_s: float = 3600.0) -> Spool:
    sp = Spool(SpoolConfig(path / "s.spool", max_bytes, max_age_s))
    sp.open()
    return sp


# --------------------------------------------------------------------------- the spool alone


def test_records_come_back_oldest_first_whatever_their_kind_and_across_a_reopen(
    tmp_path: Path,
) -> None:
    ev = Event(seq=0, publisher="w1", plc="plc1", tag="A", t_wall_ns=T0 + 5, t_mono_ns=5,
               kind=EventKind.STATE, state_from="OPENING", state_to="RUNNING")  # fmt: skip
    st = Stats(seq=0, publisher="w1", worker="w1", t_wall_ns=T0 + 6, t_mono_ns=6,
               counters={"rx": 3, "rate": 1.5})  # fmt: skip
    gap = BusGap("w1", "sample/plc1/A/", 3, 7, 4, False, T0 + 7)
    records: list[Record] = [sample(0), ev, sample(1, "B"), st, gap, sample(2)]
    sp = spool_at(tmp_path)
    sp.append(records[:3], T0)
    sp.append(records[3:], T0)
    assert sp.depth == 6 and sp.spooled == 6
    assert sp.head(100)[1] == records
    counted = sp.bytes
    assert counted > sum(record_size(r) for r in records if isinstance(r, Sample))
    sp.close()

    sp = spool_at(tmp_path)  # what a stop left
    assert (sp.depth, sp.bytes) == (6, counted)
    last_id, first = sp.head(2)
    assert first == records[:2]
    sp.remove_through(last_id)
    assert sp.head(100)[1] == records[2:] and sp.depth == 4 and sp.delivered == 2
    sp.close()


def test_a_replay_cut_short_hands_the_same_records_again(tmp_path: Path) -> None:
    """Records leave only through ``remove_through``: a sink that wrote a batch and died
    before saying so gets that batch again (the destination's key makes it harmless)."""
    sp = spool_at(tmp_path)
    sp.append([sample(i) for i in range(10)], T0)
    last_id, batch = sp.head(4)
    assert batch == [sample(i) for i in range(4)]
    sp.close()  # the process dies here: written to the destination, not removed

    sp = spool_at(tmp_path)
    last_again, again = sp.head(4)
    assert (last_again, again) == (last_id, batch)
    sp.remove_through(last_again)
    sp.append([sample(10)], T0)  # ids keep growing: "through" never takes a later record
    assert sp.head(100)[1] == [sample(i) for i in range(4, 11)]
    sp.close()


def test_ids_are_not_reused_after_the_spool_emptied(tmp_path: Path) -> None:
    sp = spool_at(tmp_path)
    sp.append([sample(0), sample(1)], T0)
    last_id, _ = sp.head(10)
    sp.remove_through(last_id)
    assert sp.depth == 0 and sp.bytes == 0 and sp.oldest_age_s(T0) is None
    sp.append([sample(2)], T0)
    assert sp.head(10)[0] > last_id
    sp.close()


def test_past_max_bytes_the_oldest_go_counted_and_recorded_per_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = [sample(i, tag) for i in range(600) for tag in ("A", "B")]
    bound = sum(record_size(r) for r in first)
    sp = spool_at(tmp_path, max_bytes=bound)
    sp.append(first, T0)
    assert (sp.depth, sp.dropped, sp.bytes) == (1200, 0, bound)  # at the bound: nothing goes
    with caplog.at_level(logging.WARNING, logger="pyconpro.sink"):
        sp.append([sample(600, "A")], T0)
    # Over by one record: a chunk of the oldest go (A and B interleaved, oldest first), and
    # one gap record per stream says which, at the tail.
    dropped = sp.dropped
    assert dropped == 256 and sp.depth == 1201 - dropped + 2
    kept = sp.head(2000)[1]
    assert kept[0] == sample(dropped // 2, "A")
    assert kept[-3] == sample(600, "A")
    per_tag = {"A": (dropped + 1) // 2, "B": dropped // 2}
    assert sorted(kept[-2:], key=lambda g: g.topic) == [
        BusGap("w1", topic_for_sample("plc1", t).decode(), 0, per_tag[t], per_tag[t], False,
               T0, "spool")
        for t in ("A", "B")
    ]
    assert any("dropped the" in r.getMessage() and "spool_max_bytes" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    sp.close()


def test_past_max_age_the_oldest_go_on_a_fake_clock(tmp_path: Path) -> None:
    sp = spool_at(tmp_path, max_age_s=60.0)
    sp.append([sample(i, t_wall_ns=T0 + i * 10**9) for i in range(100)], T0 + 100 * 10**9)
    # At T0 + 100 s, every record with tw < T0 + 40 s is older than 60 s.
    assert sp.expired == 40 and sp.depth == 60 + 1  # and the gap record that says so
    assert sp.oldest_age_s(T0 + 100 * 10**9) == 60.0
    sp.enforce(T0 + 109 * 10**9 + 1)
    assert sp.expired == 50 and sp.head(1)[1] == [sample(50, t_wall_ns=T0 + 50 * 10**9)]
    gaps = [g for g in sp.head(100)[1] if isinstance(g, BusGap)]
    assert [(g.expected_seq, g.received_seq, g.missed) for g in gaps] == [(0, 40, 40),
                                                                         (40, 50, 10)]
    sp.enforce(T0 + 10**12)  # every sample expires; the gap records stay (they are news)
    left = sp.head(100)[1]
    assert sp.expired == 100 and all(isinstance(g, BusGap) for g in left)
    assert sum(g.missed for g in left if isinstance(g, BusGap)) == 100
    sp.close()


def test_marks_follow_what_was_spooled_or_delivered_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    sp = spool_at(tmp_path)
    sp.accepted([sample(0), sample(1), sample(0, "B")])
    sp.append([sample(2), sample(3)], T0)
    want = {
        ("w1", topic_for_sample("plc1", "A")): (1_003, 3),
        ("w1", topic_for_sample("plc1", "B")): (1_000, 0),
    }
    assert sp.marks() == want
    sp.close()
    sp = spool_at(tmp_path)
    assert sp.marks() == want
    sp.close()


def test_one_spool_file_serves_one_process(tmp_path: Path) -> None:
    sp = spool_at(tmp_path)
    with pytest.raises(RuntimeError, match="in use by another sink process"):
        spool_at(tmp_path)
    sp.close()
    spool_at(tmp_path).close()  # free again


def test_a_file_that_is_not_a_spool_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "s.spool").write_bytes(b"not a database" * 100)
    with pytest.raises(RuntimeError, match="cannot be used as a spool.*move it away"):
        spool_at(tmp_path)
    spool_at(tmp_path / "other").close()  # the lock was released on the way out


# --------------------------------------------------------------------------- the loop with it


def spool_loop(tmp_path: Path, max_bytes: int = 1 << 30, **options: object
               ) -> tuple[SubscriberLoop, FlakySink, FakeClock]:  # fmt: skip
    sink = FlakySink()
    clock = FakeClock()
    sink.clock = clock
    opts = LoopOptions(endpoints=["tcp://127.0.0.1:1"],
                       spool=SpoolConfig(tmp_path / "s.spool", max_bytes, 3600.0),
                       **options)  # type: ignore[arg-type]  # fmt: skip
    loop = SubscriberLoop(sink, opts, clock=clock, wall_ns=lambda: T0)
    assert loop.spool is not None
    loop.spool.open()
    return loop, sink, clock


def feed(loop: SubscriberLoop, clock: FakeClock, records: list[Sample], step: float = 0.1
         ) -> None:  # fmt: skip
    for r in records:
        loop.handle(frames(r))
        clock.now += step
        loop.flush_if_due()


def test_an_outage_goes_to_the_spool_and_comes_back_in_order_then_live(tmp_path: Path) -> None:
    loop, sink, clock = spool_loop(tmp_path, flush_interval=0.1, batch_size=4)
    assert loop.spool is not None
    feed(loop, clock, [sample(i) for i in range(3)])
    assert sink.flushed == [sample(i) for i in range(3)] and loop.spool.depth == 0
    sink.down = "unreachable"
    feed(loop, clock, [sample(i) for i in range(3, 20)])
    # Memory is emptied into the spool on the flush schedule: at most one record waits there.
    assert loop.pending <= 1 and loop.spool.depth + loop.pending == 17
    report = loop.report()
    assert report["state"] == "retrying" and report["spool_depth"] == loop.spool.depth
    assert report["spool_bytes"] > 0 and report["spool_oldest_s"] is not None
    sink.down = None
    clock.now += 10
    loop.flush_if_due()  # the spool's oldest batch first ...
    assert sink.flushed == [sample(i) for i in range(7)]
    feed(loop, clock, [sample(20)])  # ... a live record goes behind the spool ...
    while loop.spool.depth or loop.pending:
        clock.now += 0.1
        loop.flush_if_due()
    assert sink.flushed == [sample(i) for i in range(21)]  # ... and arrives after it
    assert loop.counters.written == 21 and loop.spool.spooled == 18
    feed(loop, clock, [sample(21)], step=0.2)  # the spool is empty: live from memory again
    assert sink.flushed[-1] == sample(21) and loop.spool.spooled == 18
    assert loop.spool.marks()[("w1", topic_for_sample("plc1", "A"))] == (1_021, 21)
    loop.spool.close()


def test_a_slow_output_spills_to_the_spool_instead_of_growing_memory(tmp_path: Path) -> None:
    loop, sink, clock = spool_loop(tmp_path, flush_interval=1.0, batch_size=10)
    assert loop.spool is not None
    for i in range(SPILL_BATCHES * 10 + 5):  # more batches arrive than one write takes
        loop.handle(frames(sample(i)))
    loop.flush_if_due()  # what waits goes to the spool, and its oldest batch is written
    assert sink.flushed == [sample(i) for i in range(10)]
    assert loop.pending == 0 and loop.spool.depth == SPILL_BATCHES * 10 - 5
    while loop.spool.depth:
        loop.flush_if_due()
    assert sink.flushed == [sample(i) for i in range(SPILL_BATCHES * 10 + 5)]
    loop.spool.close()


def test_stopping_with_the_output_down_keeps_the_spool_for_the_next_start(
    tmp_path: Path,
) -> None:
    loop, sink, clock = spool_loop(tmp_path, flush_interval=0.1, batch_size=4)
    assert loop.spool is not None
    sink.down = "unreachable"
    feed(loop, clock, [sample(i) for i in range(10)])
    loop._flush_all()  # the stop path: everything in memory goes to the spool too
    assert loop.unwritten == 0 and loop.spool.depth == 10 and sink.flushed == []
    loop.spool.close()

    loop, sink, clock = spool_loop(tmp_path, flush_interval=0.1, batch_size=4)
    assert loop.spool is not None and loop.spool.depth == 10
    while loop.spool.depth:
        clock.now += 0.1
        loop.flush_if_due()
    assert sink.flushed == [sample(i) for i in range(10)]
    loop.spool.close()


def test_a_full_spool_drops_the_oldest_counts_it_and_tells_the_output(tmp_path: Path) -> None:
    each = record_size(sample(0))
    loop, sink, clock = spool_loop(tmp_path, max_bytes=300 * each, flush_interval=0.1,
                                   batch_size=50)  # fmt: skip
    assert loop.spool is not None
    sink.down = "unreachable"
    feed(loop, clock, [sample(i) for i in range(1000)], step=0.01)
    dropped = loop.spool.dropped
    assert dropped > 0 and loop.report()["spool_dropped"] == dropped
    sink.down = None
    clock.now += 10
    while loop.spool.depth or loop.pending:
        clock.now += 0.1
        loop.flush_if_due()
    got = [r for r in sink.flushed if isinstance(r, Sample)]
    gaps = [r for r in sink.flushed if isinstance(r, BusGap)]
    assert [s.seq for s in got] == list(range(1000 - len(got), 1000))  # the newest, in order
    assert len(got) + dropped == 1000
    assert sum(g.missed for g in gaps) == dropped and {g.cause for g in gaps} == {"spool"}
    # Together the gap records name exactly the dropped range, 0 .. the first kept one.
    ranges = sorted((g.expected_seq, g.received_seq) for g in gaps)
    assert ranges[0][0] == 0 and ranges[-1][1] == got[0].seq
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    loop.spool.close()


def test_a_sample_spooled_before_source_time_existed_is_read_back(tmp_path: Path) -> None:
    """A spool left by a version without the controller's time (``source_ns``) is sent after
    the upgrade: its rows lack the field, which is then None."""
    import msgpack
    from pyconpro.sinks.spool import _FIELDS, _TYPES

    spool = Spool(SpoolConfig(tmp_path / "old.spool"))
    spool.open()
    try:
        s = Sample(seq=3, publisher="w1", plc="p", tag="T", t_wall_ns=1, t_mono_ns=2,
                   cip_seq=0, gap=0, value=1.5, raw=b"\x01", type_name="REAL")  # fmt: skip
        old = [_TYPES.index(Sample), *(getattr(s, f) for f in _FIELDS[Sample]
                                       if f != "source_ns")]  # fmt: skip
        spool._conn().execute(
            "INSERT INTO spool (kind, publisher, topic, seq, t_wall_ns, body)"
            " VALUES (0, 'w1', ?, 3, 1, ?)",
            (topic_for_sample("p", "T"), msgpack.packb(old, use_bin_type=True)),
        )
        assert spool.head(10)[1] == [s]
    finally:
        spool.close()

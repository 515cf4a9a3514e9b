"""The shared SUB loop: loss/restart detection, malformed input, batching on a fake clock,
and the loop over real sockets in a thread (topic filters, several endpoints, prompt stop)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
from pyconpro.acquisition.wire import Event, EventKind, Sample, Stats, topic_for_sample
from pyconpro.sinks.base import BusGap, GapDetector, LoopOptions, SubscriberLoop

from tests.sinks.bus_testkit import MemorySink, TestPublisher

pytestmark = pytest.mark.timeout(60)

S = Sample(
    seq=0, publisher="w1", plc="plc1", tag="A", t_wall_ns=1, t_mono_ns=1, cip_seq=0, gap=0,
    value=1, raw=b"\x01",
)  # fmt: skip
TA = topic_for_sample("plc1", "A")
TB = topic_for_sample("plc1", "B")


# --------------------------------------------------------------------------- GapDetector


def test_gap_detector_first_sight_and_consecutive_are_not_gaps() -> None:
    d = GapDetector()
    assert d.observe("w1", TA, 1000, 0) is None  # late joiner: nothing to compare
    assert d.observe("w1", TA, 1001, 0) is None
    assert d.observe("w1", TA, 1002, 0) is None


def test_gap_detector_reports_skipped_numbers() -> None:
    d = GapDetector()
    d.observe("w1", TA, 0, 0)
    assert d.observe("w1", TA, 4, 99) == BusGap("w1", "sample/plc1/A/", 1, 4, 3, False, 99)
    assert d.observe("w1", TA, 5, 0) is None


@pytest.mark.parametrize(("last", "seq", "missed"), [(10, 0, 0), (10, 3, 3), (10, 10, 10)])
def test_gap_detector_backwards_is_a_restart_not_a_huge_gap(
    last: int, seq: int, missed: int
) -> None:
    d = GapDetector()
    d.observe("w1", TA, last, 0)
    assert d.observe("w1", TA, seq, 7) == BusGap(
        "w1", "sample/plc1/A/", last + 1, seq, missed, True, 7
    )
    assert d.observe("w1", TA, seq + 1, 0) is None  # and the new run is followed from there


def test_gap_detector_streams_are_per_publisher_and_topic() -> None:
    d = GapDetector()
    for pub, topic in [("w1", TA), ("w1", TB), ("w2", TA)]:
        assert d.observe(pub, topic, 0, 0) is None
    assert d.observe("w1", TA, 1, 0) is None
    assert d.observe("w2", TA, 1, 0) is None
    assert d.observe("w1", TB, 1, 0) is None


# --------------------------------------------------------------------------- handle / batching


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_loop(**options: object) -> tuple[SubscriberLoop, MemorySink, FakeClock]:
    sink = MemorySink()
    clock = FakeClock()
    opts = LoopOptions(endpoints=["tcp://127.0.0.1:1"], **options)  # type: ignore[arg-type]
    return SubscriberLoop(sink, opts, clock=clock, wall_ns=lambda: 5), sink, clock


def frames(msg: Sample | Event | Stats) -> list[bytes]:
    return list(msg.encode())


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [TA],
        [TA, frames(S)[1], b""],
        [TA, b""],
        [TA, b"\x80"],  # empty map: keys missing
        [b"sample/plc1/Z/", frames(S)[1]],
        [b"nope/", frames(S)[1]],
    ],
)
def test_malformed_frames_are_counted_and_dropped(bad: list[bytes]) -> None:
    loop, sink, _ = make_loop()
    loop.handle(bad)
    loop.handle(frames(S))
    assert (loop.counters.malformed, loop.counters.samples, loop.counters.received) == (1, 1, 2)
    loop.flush_if_due()
    assert sink.flushed == []  # nothing due yet: one good sample, interval not elapsed


def test_flush_on_time_measured_from_the_oldest_record() -> None:
    loop, sink, clock = make_loop(flush_interval=1.0, batch_size=100)
    loop.flush_if_due()
    assert sink.flush_calls == 0  # nothing buffered, nothing to do
    loop.handle(frames(S))
    clock.now += 0.6
    loop.handle(frames(dataclasses.replace(S, seq=1)))
    clock.now += 0.399
    loop.flush_if_due()
    assert sink.flushed == []
    clock.now += 0.001
    loop.flush_if_due()
    assert sink.flushed == [S, dataclasses.replace(S, seq=1)]
    assert sink.flush_calls == 1


def test_flush_on_size() -> None:
    loop, sink, _ = make_loop(flush_interval=3600.0, batch_size=3)
    for i in range(2):
        loop.handle(frames(dataclasses.replace(S, seq=i)))
    loop.flush_if_due()
    assert sink.flushed == []
    loop.handle(frames(dataclasses.replace(S, seq=2)))
    loop.flush_if_due()
    assert len(sink.flushed) == 3


def test_silence_is_reported_after_5_s_once_then_every_minute() -> None:
    loop, _, clock = make_loop()
    assert loop.quiet_check() is None  # the clock starts here
    clock.now += 4.9
    assert loop.quiet_check() is None
    clock.now += 0.1
    text = loop.quiet_check()
    assert text == ("nothing received from tcp://127.0.0.1:1 for 5 s: is `pyconpro run` up"
                    " (`pyconpro status`), is the endpoint right?")  # fmt: skip
    clock.now += 59.9
    assert loop.quiet_check() is None  # once ...
    clock.now += 0.1
    assert loop.quiet_check() is not None  # ... then every minute
    loop.handle(frames(S))  # something arrives: quiet again only 5 s from now
    clock.now += 4.0
    assert loop.quiet_check() is None
    clock.now += 1.0
    assert loop.quiet_check() is not None


def test_every_kind_reaches_the_sink_with_gaps() -> None:
    loop, sink, clock = make_loop(flush_interval=0.5)
    ev = Event(seq=0, publisher="w1", plc="plc1", t_wall_ns=1, t_mono_ns=1, kind=EventKind.ERROR)
    st = Stats(seq=0, publisher="w1", worker="w1", t_wall_ns=1, t_mono_ns=1, counters={"rx": 1})
    msgs: list[Sample | Event | Stats] = [S, dataclasses.replace(S, seq=3), ev, st]
    for m in msgs:
        loop.handle(frames(m))
    clock.now += 1
    loop.flush_if_due()
    gap = BusGap("w1", "sample/plc1/A/", 1, 3, 2, False, 5)
    assert sink.flushed == [S, dataclasses.replace(S, seq=3), ev, gap, st]
    assert (loop.counters.gaps, loop.counters.lost) == (1, 2)


def test_loop_needs_an_endpoint() -> None:
    with pytest.raises(ValueError, match="--connect"):
        SubscriberLoop(MemorySink(), LoopOptions(endpoints=[]))


# --------------------------------------------------------------------------- real sockets


class LoopThread:
    def __init__(self, sink: MemorySink, options: LoopOptions) -> None:
        self.loop = SubscriberLoop(sink, options)
        self.stop = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="sink-loop-under-test")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run(self.stop.is_set)
        except Exception as exc:  # noqa: BLE001 - re-raised by join() in the test thread
            self.error = exc

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "the loop did not stop within 20 s of being asked"
        if self.error is not None:
            raise self.error


@pytest.fixture
def publishers() -> Iterator[list[TestPublisher]]:
    pubs = [TestPublisher(), TestPublisher()]
    try:
        yield pubs
    finally:
        for p in pubs:
            p.close()


def test_topic_filter_is_exact_and_several_endpoints_are_merged(
    publishers: list[TestPublisher],
) -> None:
    sink = MemorySink()
    prefix = b"sample/plc1/"
    t = LoopThread(
        sink,
        LoopOptions(
            endpoints=[p.endpoint for p in publishers], topics=[prefix], flush_interval=0.05
        ),
    )
    try:
        for p in publishers:
            p.wait_subscribed([prefix])
        wanted_1 = dataclasses.replace(S, publisher="w1")
        wanted_2 = dataclasses.replace(S, publisher="w2", tag="B")
        publishers[0].send(wanted_1)
        publishers[0].send(dataclasses.replace(S, plc="plc10"))  # shares the text prefix only
        publishers[0].send(Event(seq=0, publisher="w1", plc="plc1", t_wall_ns=1, t_mono_ns=1,
                                 kind=EventKind.STATE))  # fmt: skip
        publishers[1].send(wanted_2)
        for p in publishers:
            p.close()
    finally:
        t.join()
    assert sorted(sink.flushed, key=repr) == sorted([wanted_1, wanted_2], key=repr)
    assert sink.opened and sink.closed


def test_stop_is_prompt_when_idle(publishers: list[TestPublisher]) -> None:
    sink = MemorySink()
    t = LoopThread(sink, LoopOptions(endpoints=[publishers[0].endpoint], poll_interval=0.05))
    publishers[0].wait_subscribed([b"sample/"])
    t.join()  # asserts it stops within the join timeout
    assert sink.closed
    assert t.loop.counters.received == 0


class ExplodingSink(MemorySink):
    def write_samples(self, samples: list[Sample]) -> None:
        raise OSError("disk full")


def test_a_failing_sink_stops_the_loop_and_is_still_closed(
    publishers: list[TestPublisher],
) -> None:
    sink = ExplodingSink()
    t = LoopThread(sink, LoopOptions(endpoints=[publishers[0].endpoint], flush_interval=0.0))
    publishers[0].wait_subscribed([b"sample/"])
    publishers[0].send(S)
    t.thread.join(timeout=20)
    assert not t.thread.is_alive()
    assert isinstance(t.error, OSError)
    assert sink.closed

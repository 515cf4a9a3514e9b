"""The shared SUB loop: loss/restart detection, malformed input, batching on a fake clock,
and the loop over real sockets in a thread (topic filters, several endpoints, prompt stop)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator

import pytest
import zmq
from pyconpro.acquisition.wire import Event, EventKind, Sample, Stats, topic_for_sample
from pyconpro.sinks.base import (
    BusGap,
    GapDetector,
    LoopOptions,
    OutputUnavailable,
    SubscriberLoop,
    receive_frames,
)

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


def test_silence_is_reported_after_15_s_once_then_every_minute() -> None:
    loop, _, clock = make_loop()
    assert loop.quiet_check() is None  # the clock starts here
    clock.now += 14.9
    assert loop.quiet_check() is None
    clock.now += 0.1
    text = loop.quiet_check()
    assert text == ("nothing received from tcp://127.0.0.1:1 for 15 s: is `pyconpro run` up"
                    " (`pyconpro status`), is the endpoint right?")  # fmt: skip
    clock.now += 59.9
    assert loop.quiet_check() is None  # once ...
    clock.now += 0.1
    assert loop.quiet_check() is not None  # ... then every minute
    loop.handle(frames(S))  # something arrives: quiet again only 15 s from now
    clock.now += 14.0
    assert loop.quiet_check() is None
    clock.now += 1.0
    assert loop.quiet_check() is not None


def test_a_sink_filtered_to_events_takes_stats_as_a_sign_of_life_only() -> None:
    # A sink of `event/` only: no event for minutes is normal while the bus is up. The stats
    # it did not ask for keep it from warning, and are neither stored nor counted.
    loop, sink, clock = make_loop(topics=(b"event/",))
    st = Stats(seq=0, publisher="w1", worker="w1", t_wall_ns=1, t_mono_ns=1, counters={"rx": 1})
    assert loop.quiet_check() is None
    for i in range(20):  # 100 s of stats every 5 s, no event
        clock.now += 5.0
        loop.handle(frames(dataclasses.replace(st, seq=i)))
        assert loop.quiet_check() is None
    loop.flush_if_due()
    clock.now += 10.0
    loop.flush_if_due()
    assert loop.counters.received == 0 and sink.flushed == []
    clock.now += 5.0  # the stats stopped 15 s ago: now the bus is silent
    assert loop.quiet_check() is not None
    # A sink that asked for stats stores them as before.
    loop2, _, _ = make_loop(topics=(b"stats/",))
    loop2.handle(frames(st))
    assert loop2.counters.received == 1


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


def test_receive_frames_reads_what_recv_multipart_reads() -> None:
    ctx = zmq.Context()
    tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        for sock in (tx, rx):
            sock.setsockopt(zmq.LINGER, 0)
        rx.bind("inproc://frames")
        tx.connect("inproc://frames")
        messages = [[TA], [TA, frames(S)[1]], [TA, b"", b"x" * 70_000], [b""], [TB, b"y"]]
        for m in messages:
            tx.send_multipart(m)
        assert rx.poll(10_000)
        got = [receive_frames(rx) for _ in messages]
        assert got == messages
        assert receive_frames(rx) is None  # nothing queued: no wait
    finally:
        tx.close()
        rx.close()
        ctx.term()


def test_messages_of_other_frame_counts_over_a_socket_are_malformed_alone(
    publishers: list[TestPublisher],
) -> None:
    sink = MemorySink()
    t = LoopThread(sink, LoopOptions(endpoints=[publishers[0].endpoint], flush_interval=0.05))
    try:
        publishers[0].wait_subscribed([b"sample/"])
        publishers[0].send_frames([TA])
        publishers[0].send(S)
        publishers[0].send_frames([TA, frames(S)[1], b""])
        publishers[0].send(dataclasses.replace(S, seq=1))
        publishers[0].close()
    finally:
        t.join()
    assert sink.flushed == [S, dataclasses.replace(S, seq=1)]
    assert (t.loop.counters.malformed, t.loop.counters.samples) == (2, 2)


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


# --------------------------------------------------------------------------- output unavailable


class FlakySink(MemorySink):
    """A MemorySink whose output can be taken away: while ``down`` holds a cause, every write
    raises OutputUnavailable after undoing what it took since the last flush, as a real sink
    must."""

    def __init__(self, max_pending: int = 100_000) -> None:
        super().__init__()
        self.max_pending = max_pending
        self.down: str | None = None
        self.attempts: list[float] = []  # clock of each flush attempt while down
        self.clock: FakeClock | None = None

    def _check(self) -> None:
        if self.down is not None:
            self.pending = []  # rolled back
            if self.clock is not None:
                self.attempts.append(self.clock.now)
            raise OutputUnavailable(self.down, f"{self.down} at /data: fix it")

    def open(self) -> None:
        super().open()
        self._check()

    def write_samples(self, samples: list[Sample]) -> None:
        self._check()
        super().write_samples(samples)

    def flush(self) -> None:
        self._check()
        super().flush()


def flaky_loop(
    max_pending: int = 100_000, **options: object
) -> tuple[SubscriberLoop, FlakySink, FakeClock]:
    sink = FlakySink(max_pending)
    clock = FakeClock()
    sink.clock = clock
    opts = LoopOptions(endpoints=["tcp://127.0.0.1:1"], **options)  # type: ignore[arg-type]
    return SubscriberLoop(sink, opts, clock=clock, wall_ns=lambda: 5), sink, clock


def sample(i: int) -> Sample:
    return dataclasses.replace(S, seq=i, value=i)


def test_records_are_kept_while_the_output_is_down_and_written_in_order_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, sink, clock = flaky_loop(flush_interval=0.1, batch_size=4)
    for i in range(3):
        loop.handle(frames(sample(i)))
    clock.now += 0.1
    loop.flush_if_due()
    assert sink.flushed == [sample(i) for i in range(3)]
    sink.down = "disk full"
    with caplog.at_level(logging.INFO, logger="pyconpro.sink"):
        for i in range(3, 13):  # more than two batches' worth while the output is down
            loop.handle(frames(sample(i)))
            clock.now += 0.1
            loop.flush_if_due()
        assert loop.health.retrying and loop.pending == 10
        report = loop.report()
        assert (report["state"], report["cause"], report["pending"], report["dropped"]) == (
            "retrying", "disk full", 10, 0)
        assert report["message"] == "disk full at /data: fix it"
        sink.down = None
        clock.now += 60
        loop.flush_if_due()  # one batch per call, oldest first ...
        assert sink.flushed == [sample(i) for i in range(7)]
        while loop.pending:  # ... and the backlog is due at once, batch after batch
            loop.flush_if_due()
    assert sink.flushed == [sample(i) for i in range(13)]
    assert not loop.health.retrying and loop.report()["state"] == "writing"
    assert (loop.counters.written, loop.counters.dropped) == (13, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["cannot write: disk full at /data: fix it; keeping up to 100000 records"
                      " in memory (1 now) and retrying until it works"]  # fmt: skip
    infos = [r.getMessage() for r in caplog.records if "writing again" in r.getMessage()]
    assert len(infos) == 1 and "(disk full): 10 kept record(s) being written, 0 dropped" in infos[0]


def test_retries_back_off_from_half_a_second_to_five() -> None:
    loop, sink, clock = flaky_loop(flush_interval=0.0)
    sink.down = "locked"
    start = clock.now
    loop.handle(frames(sample(0)))
    for _ in range(80):  # 8 s in steps of 0.1 s (the attempt falls due on a step)
        loop.flush_if_due()
        clock.now = round(clock.now + 0.1, 3)
    assert [round(t - start, 3) for t in sink.attempts] == [0.0, 0.5, 1.5, 3.5, 7.5]
    assert loop.report()["retry_in_s"] == pytest.approx(4.5)  # next at 12.5


def test_oldest_records_are_dropped_past_max_pending_with_exact_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, sink, clock = flaky_loop(max_pending=5, flush_interval=0.0, batch_size=2)
    sink.down = "read-only"
    with caplog.at_level(logging.WARNING, logger="pyconpro.sink"):
        for i in range(12):
            loop.handle(frames(sample(i)))
            loop.flush_if_due()
    assert (loop.pending, loop.counters.dropped) == (5, 7)
    assert loop.report()["dropped"] == 7
    drops = [r.getMessage() for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(drops) == 1  # said once, counted after
    sink.down = None
    clock.now += 10
    while loop.pending:
        loop.flush_if_due()
    assert sink.flushed == [sample(i) for i in range(7, 12)]  # the newest five, in order
    assert (loop.counters.written, loop.counters.dropped) == (5, 7)


def test_max_pending_is_never_below_a_batch() -> None:
    loop, sink, clock = flaky_loop(max_pending=1, flush_interval=3600.0, batch_size=3)
    for i in range(3):  # a full batch is written before the limit could drop from it
        loop.handle(frames(sample(i)))
    loop.flush_if_due()
    assert sink.flushed == [sample(i) for i in range(3)] and loop.counters.dropped == 0


def test_a_new_cause_is_told_again_and_a_lasting_one_reminded_every_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, sink, clock = flaky_loop(flush_interval=0.0)
    sink.down = "disk full"
    with caplog.at_level(logging.INFO, logger="pyconpro.sink"):
        loop.handle(frames(sample(0)))
        loop.flush_if_due()
        assert loop.unavailable_check() is None
        clock.now += 59.9
        loop.flush_if_due()
        assert loop.unavailable_check() is None
        clock.now += 0.1
        text = loop.unavailable_check()
        assert text == ("still cannot write after 60 s: disk full at /data: fix it; 1 record(s)"
                        " kept, 0 dropped so far")  # fmt: skip
        assert loop.unavailable_check() is None  # once a minute
        sink.down = "read-only"
        clock.now += 5
        loop.flush_if_due()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.split(";")[0] for e in errors] == [
        "cannot write: disk full at /data: fix it",
        "still cannot write after 60 s: disk full at /data: fix it",
        "cannot write: read-only at /data: fix it",
    ]


def test_an_output_unusable_at_start_is_retried_not_fatal(publishers: list[TestPublisher]) -> None:
    sink = FlakySink()
    sink.down = "directory missing"
    t = LoopThread(sink, LoopOptions(endpoints=[publishers[0].endpoint], flush_interval=0.0,
                                     poll_interval=0.02))  # fmt: skip
    try:
        publishers[0].wait_subscribed([b"sample/"])
        publishers[0].send(sample(0))
        deadline = time.monotonic() + 20
        while t.loop.pending == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the record is kept in memory
        assert t.loop.pending == 1 and t.loop.health.retrying
        sink.down = None
        while sink.flushed != [sample(0)] and time.monotonic() < deadline:
            time.sleep(0.01)  # the next attempt (0.5 s after the first) writes it
        assert sink.flushed == [sample(0)]
    finally:
        t.join()
    assert t.loop.unwritten == 0


def test_stopping_while_the_output_is_down_counts_what_is_lost(
    publishers: list[TestPublisher],
) -> None:
    sink = FlakySink()
    t = LoopThread(sink, LoopOptions(endpoints=[publishers[0].endpoint], flush_interval=0.0,
                                     poll_interval=0.02))  # fmt: skip
    publishers[0].wait_subscribed([b"sample/"])
    sink.down = "disk full"
    for i in range(3):
        publishers[0].send(sample(i))
    deadline = time.monotonic() + 20
    while t.loop.pending < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t.join()
    assert (t.loop.unwritten, sink.flushed, sink.closed) == (3, [], True)

"""The SUB loop's start from what its output stored: the gap detector continues each stream, and
the replay (the forwarder's buffer and its thread, real sockets) brings what was missed before
live data, while a publisher keeps publishing, with each message once. The supervisor's relay
of the control socket is played by a ROUTER in the test thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import zmq
from pyconpro.acquisition.replay import Key, Mark
from pyconpro.acquisition.wire import Sample, topic_for_sample
from pyconpro.sinks.base import BusGap, GapDetector, LoopOptions
from pyconpro.workers.forwarder import Forwarder

from tests.sinks.bus_testkit import BUS_HOST, MemorySink, TestPublisher
from tests.sinks.test_sink_loop import LoopThread
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(60)

TA = topic_for_sample("plc1", "A")
TB = topic_for_sample("plc1", "B")


class StoredSink(MemorySink):
    """A MemorySink that says it stored up to ``marks`` before this start."""

    def __init__(self, marks: Mapping[Key, Mark]) -> None:
        super().__init__()
        self.marks = dict(marks)

    def stored_marks(self) -> Mapping[Key, Mark]:
        return self.marks

    def seqs(self, tag: str) -> list[int]:
        return [r.seq for r in self.flushed if isinstance(r, Sample) and r.tag == tag]

    def gaps(self) -> list[BusGap]:
        return [r for r in self.flushed if isinstance(r, BusGap)]


class Streams:
    """Samples of tags A and B from publisher w1, ``tm`` 1 ms apart, numbered per tag."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}
        self.t_ns = 10**12

    def sample(self, tag: str) -> Sample:
        seq = self.next.get(tag, 0)
        self.next[tag] = seq + 1
        self.t_ns += 1_000_000
        return Sample(seq=seq, publisher="w1", plc="plc1", tag=tag, t_wall_ns=self.t_ns,
                      t_mono_ns=self.t_ns, cip_seq=seq & 0xFFFF, gap=0, value=seq,
                      raw=b"\0\0\0\0")  # fmt: skip


def test_gap_detector_continues_a_seeded_stream() -> None:
    d = GapDetector()
    d.seed("w1", TA, 9)
    assert d.resuming("w1", TA) and not d.resuming("w1", TB)
    assert d.observe("w1", TA, 15, 5) == BusGap("w1", TA.decode(), 10, 15, 5, False, 5)
    assert not d.resuming("w1", TA)
    d.seed("w1", TB, 9)
    assert d.observe("w1", TB, 10, 5) is None


def test_without_replay_what_was_missed_while_down_is_a_gap_saying_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    streams = Streams()
    stored = [streams.sample("A") for _ in range(4)]
    missed = [streams.sample("A") for _ in range(6)]
    sink = StoredSink({("w1", TA): (stored[-1].t_mono_ns, stored[-1].seq)})
    with TestPublisher() as pub, caplog.at_level(logging.WARNING, "pyconpro.sink"):
        t = LoopThread(sink, LoopOptions(endpoints=[pub.endpoint], flush_interval=0.05))
        try:
            pub.wait_subscribed([b"sample/"])
            live = streams.sample("A")
            pub.send(live)
            wait_for(lambda: sink.seqs("A") == [10], "the live sample written")
        finally:
            t.join()
    assert [(g.expected_seq, g.received_seq, g.missed) for g in sink.gaps()] == [(4, 10, 6)]
    assert len(missed) == 6
    assert ("while this sink was down, 6 message(s) from 'w1' on sample/plc1/A/ were missed"
            " (sq 4..9): no replay asked (no --replay endpoint)") in caplog.text  # fmt: skip


class Relay:
    """What the supervisor does with replay requests on its control socket: a ROUTER whose
    requests go to the forwarder's replay thread and whose replies come back. Used from the
    thread that started the forwarder."""

    def __init__(self, fwd: Forwarder, endpoint: str) -> None:
        assert fwd.replay is not None
        self.replay = fwd.replay
        self.ctx: zmq.Context[Any] = zmq.Context.instance()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(endpoint)

    def pump(self, timeout_ms: int) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.replay.socket, zmq.POLLIN)
        ready = dict(poller.poll(timeout_ms))
        if self.router in ready:
            while True:
                try:
                    self.replay.request(self.router.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
        if self.replay.socket in ready:
            for frames in self.replay.replies():
                self.router.send_multipart(frames)

    def close(self) -> None:
        self.router.close()


def test_a_restarted_sink_gets_what_it_missed_before_live_data_each_once(tmp_path: Path) -> None:
    fwd = Forwarder(f"tcp://{BUS_HOST}:0", f"tcp://{BUS_HOST}:0", replay_s=60,
                    replay_bytes=1 << 24)  # fmt: skip
    fwd.start()
    relay = Relay(fwd, f"ipc://{tmp_path}/ctl")
    ctx: zmq.Context[Any] = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.connect(fwd.upstream_endpoint)
    streams = Streams()
    t: LoopThread | None = None
    try:
        # With a buffer, the forwarder subscribes upstream to everything, with no subscriber:
        # once the first message is buffered, the publisher is connected.
        first = streams.sample("A")
        wait_for(lambda: pub.send_multipart(list(first.encode())) or (
            fwd.replay is not None and fwd.replay.stats()["messages"] > 0),
            "the publisher's first message buffered", interval=0.2)  # fmt: skip
        history = [streams.sample(tag) for _ in range(300) for tag in ("A", "B")]
        for s in history:
            pub.send_multipart(list(s.encode()))
        wait_for(lambda: (fwd.replay.stats() if fwd.replay else {}).get("messages", 0) >= 600,
                 "the history buffered", interval=0.2)  # fmt: skip
        a, b = history[2 * 100], history[2 * 50 + 1]  # stored up to A 101 and B 50
        sink = StoredSink({("w1", TA): (a.t_mono_ns, a.seq), ("w1", TB): (b.t_mono_ns, b.seq)})
        t = LoopThread(sink, LoopOptions(endpoints=[fwd.public_endpoint], flush_interval=0.05,
                                         replay=f"ipc://{tmp_path}/ctl"))  # fmt: skip
        # Live data all along: the replay's cut falls somewhere in it.
        deadline = time.monotonic() + 30
        while t.loop.counters.replayed == 0 or streams.next["A"] < 700:
            assert time.monotonic() < deadline, "no replay within 30 s"
            for tag in ("A", "B"):
                pub.send_multipart(list(streams.sample(tag).encode()))
            relay.pump(1)
        last = {tag: n - 1 for tag, n in streams.next.items()}
        wait_for(lambda: sink.seqs("A")[-1:] == [last["A"]] and sink.seqs("B")[-1:] == [last["B"]],
                 "everything written")  # fmt: skip
    finally:
        if t is not None:
            t.join()
        pub.close()
        relay.close()
        fwd.stop()
    assert sink.seqs("A") == list(range(102, last["A"] + 1))
    assert sink.seqs("B") == list(range(51, last["B"] + 1))
    assert sink.gaps() == []
    c = t.loop.counters
    assert c.replayed >= 600 - 102 - 51 and c.lost == 0

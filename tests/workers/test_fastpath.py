"""The compiled receive path (workers/_fastpath.c, workers/fastpath.py) against the Python
reference it must equal: the value program against the compiled decoders on every kind of
type and on random images (NaNs, strings whose LEN lies, ...), the sample bytes against
``wire.SampleStream.encode``, the flight recorder ring against ``FlightRecorder.record_in``,
the receive loop over real sockets (express samples on a real PUB socket, the hand-over of
what Python must decide), ``sendmmsg``, the bus forwarder's compiled step (``forward``: what
it moves, what it counts, when it hands back to Python), and the choice of the path by
``PYCONPRO_FASTPATH``. The forwarder on both of its loops is tests/workers/test_forwarder*.py.

The demultiplexing rules are tests/acquisition/test_demux.py, run on both paths; the whole
worker on both paths with the same datagrams is tests/integration/test_receive_paths.py."""

from __future__ import annotations

import socket
import time
from array import array
from collections.abc import Iterator
from contextlib import closing
from types import ModuleType
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from pyconpro.acquisition import class1, wire
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_types import (
    CONNECTION_STATUS,
    DINT,
    REAL,
    STRING,
    ArrayType,
    LogixType,
    StructType,
    byte_size,
)
from pyconpro.acquisition.originator import FlightRecorder, what_code
from pyconpro.acquisition.value_plan import compile_value_plan
from pyconpro.workers import fastpath

from tests.acquisition.test_logix_types import logix_types
from tests.support.receive_paths import compiled
from tests.support.wait import wait_for

LOCAL = "127.61.15.1"
PLC = "127.61.15.2"


@pytest.fixture(scope="module")
def fp() -> ModuleType:
    return compiled()


def stream_and_tap(fp: ModuleType, t: LogixType | None, size: int,
                   counter: wire.SeqCounter) -> tuple[wire.SampleStream, Any]:
    stream = wire.SampleStream("w1", "plc1", "Tag", t.name if t is not None else None, counter)
    plan = compile_value_plan(t)
    assert plan is not None
    tap = fp.Tap("plc1/Tag")
    tap.stream(stream.topic, stream.fragments(), plan, size, counter.table)
    return stream, tap


# ------------------------------------------------------------------ values and sample bytes


def assert_same_sample(fp: ModuleType, t: LogixType, raw: bytes) -> None:
    counter = wire.SeqCounter()
    stream, tap = stream_and_tap(fp, t, byte_size(t), counter)
    value = compile_decoder(t)(raw)
    # Both number in the one table: the compiled body takes sq 0, the Python one sq 1.
    ours = tap.encode(1_700_000_000_000_000_000, 123_456_789, 0xBEEF, 3, raw)
    counter.table[stream.topic] = 0
    ref = stream.encode(1_700_000_000_000_000_000, 123_456_789, 0xBEEF, 3, value, raw)
    assert ours == ref, (t.name, msgpack.unpackb(ours), msgpack.unpackb(ref))
    assert counter.table[stream.topic] == 1


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_value_program_packs_what_the_decoder_returns(fp: ModuleType,
                                                          data: st.DataObject) -> None:
    t = data.draw(logix_types())
    raw = data.draw(st.binary(min_size=byte_size(t), max_size=byte_size(t)))
    assert_same_sample(fp, t, raw)


@pytest.mark.parametrize("t", [
    DINT, REAL, STRING, CONNECTION_STATUS, ArrayType(REAL, (100,)), ArrayType(DINT, (2, 3, 4)),
    ArrayType(STRING, (2,)),
], ids=lambda t: t.name)
def test_hostile_images(fp: ModuleType, t: LogixType) -> None:
    size = byte_size(t)
    for raw in (b"\xff" * size, b"\x00" * size, bytes(range(256)) * (size // 256) + bytes(
            range(size % 256)), (b"\x7f\xc0\x00\x01" * size)[:size], (b"\x01\x00\x80\x7f"
            * size)[:size]):
        assert_same_sample(fp, t, raw)


def test_strings_whose_length_lies_are_clamped_like_the_decoder(fp: ModuleType) -> None:
    for length in (-5, 0, 3, 82, 83, 10_000):
        raw = length.to_bytes(4, "little", signed=True) + bytes(range(0x60, 0xB2)) + b"\0\0"
        assert_same_sample(fp, STRING, raw)


def test_a_size_only_consumer_publishes_nil(fp: ModuleType) -> None:
    counter = wire.SeqCounter()
    stream, tap = stream_and_tap(fp, None, 6, counter)
    ours = tap.encode(5, 6, 7, 0, b"abcdef")
    counter.table[stream.topic] = 0
    assert ours == stream.encode(5, 6, 7, 0, None, b"abcdef")


def test_a_type_without_program_is_said_so() -> None:
    # Two members of one name would merge in the decoder's dict: not expressible.
    twice = StructType("Twice", 1, 2, 8, (
        StructType.build("X", [("A", "DINT"), ("B", "DINT")]).members[0],
        StructType.build("Y", [("A", "DINT"), ("B", "DINT")]).members[0]))
    assert compile_value_plan(twice) is None


def test_a_program_that_reads_past_the_image_is_refused(fp: ModuleType) -> None:
    stream = wire.SampleStream("w1", "p", "t", "DINT")
    tap = fp.Tap("p/t")
    plan = compile_value_plan(DINT)
    with pytest.raises(ValueError, match="does not fit an image of 3 bytes"):
        tap.stream(stream.topic, stream.fragments(), plan, 3, {})
    tap.stream(stream.topic, stream.fragments(), plan, 4, {})
    with pytest.raises(ValueError, match="raw is 5 bytes"):
        tap.encode(0, 0, 0, 0, b"12345")


# ------------------------------------------------------------------ the receive loop


class Rig:
    """A compiled demultiplexer reading a real UDP socket, a PUB socket its express samples
    go out on, and a SUB socket that reads them."""

    def __init__(self, fp: ModuleType, endpoint: str = "tcp://127.0.0.1:*",
                 hwm: int = 1000) -> None:
        self.fp = fp
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((LOCAL, 0))
        self.udp.setblocking(False)
        self.plc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.plc.bind((PLC, 0))
        self.source = (PLC, self.plc.getsockname()[1])
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)  # as the worker's: a full pipe refuses, counted
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, hwm)
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)
        self.pub.bind(endpoint)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, hwm)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.pub.getsockopt_string(zmq.LAST_ENDPOINT))
        assert self.pub.poll(5000), "no subscription"
        self.pub.recv()
        self.demux = fastpath.CompiledDemux(fp)
        self.demux.c.publisher(self.pub.underlying)
        self.t = 100.0

    def clock(self) -> float:
        return self.t

    def send(self, *datagrams: bytes, source: socket.socket | None = None) -> None:
        for d in datagrams:
            (source or self.plc).sendto(d, self.udp.getsockname())

    def drain(self, expect: int) -> tuple[bool, list[Any]]:
        """Read until ``expect`` datagrams were read (they travel loopback: a moment)."""
        deadline = time.monotonic() + 10
        slow: list[Any] = []
        before = self.demux.c.datagrams
        drained = True
        while self.demux.c.datagrams - before < expect:
            assert time.monotonic() < deadline, "datagrams did not arrive"
            drained, more = self.demux.c.drain([self.udp.fileno()], self.clock,
                                               lambda: 1_700_000_000_000_000_000, 0.002)
            slow += more
        return drained, slow

    def received(self, n: int) -> list[list[bytes]]:
        out = []
        for _ in range(n):
            assert self.sub.poll(5000), "sample not received"
            out.append(self.sub.recv_multipart())
        return out

    def close(self) -> None:
        self.sub.close()
        self.pub.close()
        self.ctx.term()
        self.udp.close()
        self.plc.close()


@pytest.fixture
def rig(fp: ModuleType) -> Iterator[Rig]:
    with closing(Rig(fp)) as r:
        yield r


def dgram(seq: int, value: int, cid: int = 0x1000, cseq: int | None = None) -> bytes:
    return class1.Class1Datagram(cid, seq, seq & 0xFFFF if cseq is None else cseq,
                                 value.to_bytes(4, "little", signed=True)).encode()


def test_routine_datagrams_are_published_and_recorded_in_c(rig: Rig) -> None:
    counter = wire.SeqCounter()
    stream, tap = stream_and_tap(rig.fp, DINT, 4, counter)
    recorder = FlightRecorder()
    tap.recorder(recorder.buf, recorder.size, what_code("T->O"))
    rig.demux.add(rig.source, 0x1000, 4, tap, max_jump=32)
    tap.express = 1
    sent = [dgram(10 + k, -7 * k) for k in range(20)]
    rig.send(*sent)
    drained, slow = rig.drain(20)
    assert drained and slow == []
    assert tap.take() == (20, 100.0) and tap.samples == 20 and rig.demux.c.samples == 20
    got = rig.received(20)
    counter.table[stream.topic] = 0
    for (topic, body), d in zip(got, sent, strict=True):
        raw = d[20:]
        assert topic == stream.topic
        assert body == stream.encode(1_700_000_000_000_000_000, 100_000_000_000, d[18] | d[19] << 8,
                                     0, compile_decoder(DINT)(raw), raw)
    # The ring holds what FlightRecorder.record_in would have written.
    reference = FlightRecorder()
    for d in sent:
        reference.record_in(100.0, "T->O", d)
    assert recorder.buf == reference.buf
    assert recorder.incoming[-1].data == sent[-1][:64] and len(recorder.incoming) == 8


def test_what_python_must_decide_is_handed_over_in_order(rig: Rig) -> None:
    counter = wire.SeqCounter()
    _, tap = stream_and_tap(rig.fp, DINT, 4, counter)
    rig.demux.add(rig.source, 0x1000, 4, tap, max_jump=32)
    rig.demux.add(rig.source, 0x2000, 4, "plain")  # an owner without a tap: always Python
    tap.express = 1
    rig.send(dgram(1, 1), dgram(2, 2), dgram(5, 5), dgram(6, 6), dgram(1, 9, cid=0x2000))
    _, slow = rig.drain(5)
    # 1 and 2 were routine; 5 has a gap (3 and 4 missed): Python decides, and 6 follows it
    # there so the consumer's samples stay in order; express is off until Python says so.
    seq32 = [(o, int.from_bytes(d[10:14], "little"), m) for o, d, m, *_ in slow]
    assert seq32 == [(tap, 5, 2), (tap, 6, 0), ("plain", 1, 0)]
    assert tap.express == 0 and tap.take()[0] == 2
    owner, data, missed, cseq, now, t_wall = slow[0]
    assert (cseq, now, t_wall) == (5, 100.0, 1_700_000_000_000_000_000)


def test_hostile_datagrams_are_counted_by_reason(rig: Rig) -> None:
    _, tap = stream_and_tap(rig.fp, DINT, 4, wire.SeqCounter())
    rig.demux.add(rig.source, 0x1000, 4, tap, max_jump=32)
    tap.express = 1
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stranger.bind((PLC, 0))  # the PLC's address, another port
        rig.send(b"junk", dgram(1, 1, cid=0x9999), dgram(1, 1)[:-1], dgram(1, 1))
        rig.send(dgram(2, 2), source=stranger)
        rig.send(dgram(1, 1), dgram(1_000_000, 3))
        _, slow = rig.drain(7)
    finally:
        stranger.close()
    assert slow == []
    drops = {r.value: n for r, n in rig.demux.drops.items() if n}
    assert drops == {"malformed": 2, "unknown_id": 1, "wrong_port": 1, "stale": 1,
                     "seq_jump": 1}
    assert rig.demux.accepted == 1 and rig.demux.c.datagrams == 7


def test_a_full_pub_pipe_is_counted_not_blocking(fp: ModuleType) -> None:
    # inproc: the pipe holds SNDHWM + RCVHWM messages and the subscriber never reads.
    r = Rig(fp, "inproc://fastpath-full", hwm=2)
    try:
        _, tap = stream_and_tap(fp, DINT, 4, wire.SeqCounter())
        r.demux.add(r.source, 0x1000, 4, tap, max_jump=32)
        tap.express = 1
        r.send(*(dgram(k, k) for k in range(1, 41)))
        r.drain(40)
        assert r.demux.c.samples == 40
        assert 30 <= r.demux.c.pub_drops <= 38  # all but the few the pipe held
        got = r.received(40 - r.demux.c.pub_drops)
        assert [msgpack.unpackb(b)["sq"] for _, b in got] == list(range(len(got)))
    finally:
        r.close()


def test_sendmmsg_sends_them_all_and_counts_the_refused(fp: ModuleType) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind((PLC, 0))
        rx.settimeout(5)
        tx.bind((LOCAL, 0))
        port = rx.getsockname()[1]
        batch = [(class1.heartbeat(7, k, k), PLC, port) for k in range(100)]
        batch.insert(50, (b"x", "127.0.0.1", 0))  # port 0: the kernel refuses it
        assert fp.sendmmsg(tx.fileno(), batch) == (100, 1)
        got = [rx.recv(100) for _ in range(100)]
        assert got == [class1.heartbeat(7, k, k) for k in range(100)]
    finally:
        rx.close()
        tx.close()


# ------------------------------------------------------------------ the forwarder's step


class Bus:
    """What the forwarder's thread holds (an XSUB, an XPUB, a capture PUB, its end of the
    control pipe), all inproc in one context, and the peers of each: a publisher, a
    subscriber, a reader of the capture, the owner's end of the pipe."""

    def __init__(self, fp: ModuleType) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.socks: list[zmq.Socket[Any]] = []
        self.xsub = self._socket(zmq.XSUB, bind="inproc://fwd-in")
        self.xpub = self._socket(zmq.XPUB, bind="inproc://fwd-out")
        self.capture = self._socket(zmq.PUB, bind="inproc://fwd-capture")
        self.control = self._socket(zmq.PAIR, bind="inproc://fwd-control")
        self.owner = self._socket(zmq.PAIR, connect="inproc://fwd-control")
        self.pub = self._socket(zmq.PUB, connect="inproc://fwd-in")
        self.sub = self._socket(zmq.SUB, connect="inproc://fwd-out")
        self.copies = self._socket(zmq.SUB, connect="inproc://fwd-capture")
        self.counts = array("Q", [0, 0])
        self.step = fastpath.CompiledForwarding(fp, self.xsub, self.xpub, self.capture,
                                                self.control, self.counts, 100).step

    def _socket(self, kind: int, *, bind: str = "", connect: str = "") -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if bind:
            sock.bind(bind)
        else:
            sock.connect(connect)
        self.socks.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.ctx.term()


@pytest.fixture
def bus(fp: ModuleType) -> Iterator[Bus]:
    with closing(Bus(fp)) as b:
        yield b


def test_the_step_hands_back_what_python_must_see(bus: Bus) -> None:
    assert bus.step(1) == 0  # nothing: the time was up
    bus.owner.send(b"TERMINATE")
    assert bus.step(10_000) == fastpath.CONTROL_READY
    assert bus.control.recv() == b"TERMINATE"
    bus.sub.subscribe(b"a/")  # a subscription arrives on the XPUB: Python judges it
    assert bus.step(10_000) == fastpath.XPUB_READY
    assert bus.xpub.recv() == b"\x01a/"
    assert bus.step(1) == 0 and list(bus.counts) == [0, 0]


def test_the_step_moves_whole_messages_to_subscribers_and_capture_and_counts_them(
        bus: Bus) -> None:
    bus.xsub.send(b"\x01")  # upstream: everything
    bus.sub.subscribe(b"")
    bus.copies.subscribe(b"")
    assert bus.step(10_000) == fastpath.XPUB_READY
    bus.xpub.recv()
    # The subscriptions travel inproc too: a message goes through once both are there.
    def through() -> bool:
        bus.pub.send(b"warm")
        bus.step(1)
        return bool(bus.sub.poll(0) and bus.copies.poll(0))
    wait_for(through, "a message through to the subscriber and the capture", interval=0.01)
    for sock in (bus.sub, bus.copies):
        while sock.poll(0):
            sock.recv_multipart()
    before = list(bus.counts)
    sent = [[b"t/%d" % k] + [bytes([k]) * (k * 1000)] * (k % 5) for k in range(250)]
    sent += [[b"big", b"x" * 1_000_000, b"", b"tail"]]
    for msg in sent:
        bus.pub.send_multipart(msg)
    # Batches of 100, and nothing else to see: the step returns when the time is up.
    while bus.counts[0] - before[0] < sum(len(m) for m in sent):
        assert bus.step(50) in (0, fastpath.XSUB_READY)
    assert bus.counts[0] - before[0] == sum(len(m) for m in sent)
    assert bus.counts[1] - before[1] == sum(len(f) for m in sent for f in m)
    for sock in (bus.sub, bus.copies):
        got = [sock.recv_multipart() for _ in sent]
        assert got == sent
        assert not sock.poll(0)


def test_the_step_refuses_what_is_not_its_sockets(fp: ModuleType, bus: Bus) -> None:
    with pytest.raises(ValueError, match="must be sockets"):
        fp.forward(0, bus.xpub.underlying, 0, bus.control.underlying, 1, 10, bus.counts)
    with pytest.raises(ValueError, match="two uint64"):
        fp.forward(bus.xsub.underlying, bus.xpub.underlying, 0, bus.control.underlying, 1, 10,
                   array("Q", [0]))
    with pytest.raises(BufferError, match="not writable"):
        fp.forward(bus.xsub.underlying, bus.xpub.underlying, 0, bus.control.underlying, 1, 10,
                   b"0123456789abcdef")


# ------------------------------------------------------------------ choosing the path


def test_the_environment_chooses_the_path(fp: ModuleType) -> None:
    assert fastpath.choose({}).name == "compiled"
    assert fastpath.choose({fastpath.ENV: "1"}).module is fp
    off = fastpath.choose({fastpath.ENV: "0"})
    assert off.module is None and off.name == "python" and "PYCONPRO_FASTPATH=0" in off.reason
    with pytest.raises(UsageError, match="give 1 .* 0 .* or auto"):
        fastpath.choose({fastpath.ENV: "fast"})


def test_asking_for_a_missing_compiled_path_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "load", lambda: (None, "not built (no compiler)"))
    with pytest.raises(fastpath.FastPathError, match="PYCONPRO_FASTPATH=1: not built"):
        fastpath.choose({fastpath.ENV: "1"})
    auto = fastpath.choose({})
    assert auto.module is None and "not built" in auto.reason

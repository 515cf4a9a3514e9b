"""Counting subscribers: what reached the end of the bus, and what was lost on the way.

Both read the worker's PUB socket in this process and decode every message with msgpack (what a
sink in Python pays at least). Loss is told apart by where it happened: a jump in a topic's
``sq`` is loss on the bus (ZeroMQ high-water marks, the worker's ``pub_drops``); a jump in the
CIP sequence count ``cs`` is loss before the worker published (the kernel dropping datagrams at
a full receive buffer, or the source), because every datagram advances ``cs`` (the simulator
runs with ``--seq16 every``, and the native sender advances it on every datagram too).

``Window`` counts a time window of a running pipeline (``scripts/bench_pipeline.py``);
``StepCounter`` counts one step of the native sender, whose datagrams are known one by one: it
knows the ``cs`` each topic's first sample of the step must carry, so nothing is guessed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

Handler = Callable[[bytes, dict[str, Any], int], None]

# pyzmq's compiled ``recv``, without its Python subclass's checks: two frames in 0.4 us against
# 3.6 us for ``recv_multipart``, so the subscriber keeps up with the compiled receive path of
# the worker it measures (it was the limit of the ceiling at about 80,000 samples/s).
_RECV: Callable[..., Any] = getattr(getattr(zmq, "backend", None), "Socket", zmq.Socket).recv
_NOBLOCK = int(zmq.NOBLOCK)


def _take_queued(sub: zmq.Socket[Any], handle: Handler, limit: int) -> int:
    """Hand up to ``limit`` queued messages to ``handle`` without waiting; how many."""
    unpackb = msgpack.unpackb
    now_ns = time.monotonic_ns
    for n in range(limit):
        try:
            topic = _RECV(sub, _NOBLOCK)
        except zmq.Again:
            return n
        body = _RECV(sub, _NOBLOCK)  # a message's frames arrive together
        handle(topic, unpackb(body, raw=False), now_ns())
    return limit


def receive_until(sub: zmq.Socket[Any], until: float, handle: Handler) -> int:
    """Receive and hand every message to ``handle(topic, body, receive time ns)`` until
    ``until`` (time.monotonic()); the number of messages."""
    n = 0
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return n
        if sub.poll(max(1, int(left * 1000))):
            n += _take_queued(sub, handle, 1000)  # a burst: what is queued, without polling


def receive_every(sub: zmq.Socket[Any], until: float, handle: Handler,
                  period_s: float = 0.01) -> int:
    """Like ``receive_until``, but waking every ``period_s`` to take what is queued instead of
    at every message: at a steady rate of small messages a fraction of the wake-ups, so the
    subscriber takes less of the machine it shares with what it measures (nothing is lost:
    the socket has no high-water mark). The receive time handed on is the wake-up's, so not
    for latencies."""
    n = 0
    while True:
        n += _take_queued(sub, handle, 10_000)  # then the clock again, however much is queued
        left = until - time.monotonic()
        if left <= 0:
            return n
        time.sleep(min(period_s, left))


def resync_topic(event_topic: bytes) -> bytes:
    """The sample topic of an event's topic (``event/p/t/`` -> ``sample/p/t/``)."""
    return b"sample/" + event_topic[len(b"event/") :]


# ====================================================================== a time window


@dataclass
class TopicState:
    sq: int
    cs: int
    gap: int
    resync: bool = False  # the connection reopened: its next cs starts a new count


@dataclass
class Window:
    """What the subscriber counted while ``counting`` was on."""

    counting: bool = False
    samples: int = 0
    bus_lost: int = 0  # sq jumps
    cip_lost: int = 0  # cs jumps (every datagram advances cs: --seq16 every)
    reopens: int = 0  # samples after a connection state change: cs not compared
    gap_growth: int = 0  # growth of the samples' own gap counters
    other: dict[str, int] = field(default_factory=dict)  # events by kind, stats messages
    stats: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (received, counters)
    latencies_ns: list[int] = field(default_factory=list)
    topics: dict[bytes, TopicState] = field(default_factory=dict)

    def handle(self, topic: bytes, m: dict[str, Any], rx_mono_ns: int) -> None:
        if topic.startswith(b"sample/"):
            sq, cs, gap = m["sq"], m["cs"], m["gap"]
            st = self.topics.get(topic)
            if st is None:
                self.topics[topic] = TopicState(sq, cs, gap)
                return
            if self.counting:
                self.samples += 1
                self.bus_lost += max(0, sq - st.sq - 1)
                if st.resync:
                    self.reopens += 1
                elif cs != st.cs:
                    self.cip_lost += ((cs - st.cs) & 0xFFFF) - 1
                self.gap_growth += gap - st.gap
                self.latencies_ns.append(rx_mono_ns - m["tm"])
            st.sq, st.cs, st.gap, st.resync = sq, cs, gap, False
            return
        if topic.startswith(b"stats/"):
            self.stats.append((time.monotonic(), m["c"]))
        elif topic.startswith(b"event/") and m.get("to"):
            # A new triad starts a new CIP sequence count (the worker publishes the event
            # before the first sample of the new connection).
            st = self.topics.get(resync_topic(topic))
            if st is not None:
                st.resync = True
        if self.counting:
            kind = "stats" if topic.startswith(b"stats/") else f"event:{m.get('k')}"
            self.other[kind] = self.other.get(kind, 0) + 1


def drain(sub: zmq.Socket[Any], until: float, w: Window) -> None:
    """Receive and account every message until ``until`` (time.monotonic())."""
    receive_until(sub, until, w.handle)


# ====================================================================== one step of the sender


@dataclass
class StepTopic:
    index: int  # the sender's stream
    expect_cs: int = 0  # cs of the next sample of this step
    last_sq: int | None = None


@dataclass
class StepCounter:
    """Counts the samples of one step of the native sender, topic by topic.

    ``topics`` maps each sample topic to the sender's stream index. ``begin`` takes the ``cs``
    of every stream's first datagram of the step; a sample whose ``cs`` is behind it belongs to
    an earlier step (``stray``), one ahead of it means datagrams were lost (``cip_lost``).
    """

    topics: Mapping[bytes, int]
    received: int = 0
    cip_lost: int = 0
    bus_lost: int = 0
    stray: int = 0
    last_rx_ns: int = 0
    events: dict[str, int] = field(default_factory=dict)
    record: bool = False
    # (stream index, steps of cs since the stream's first datagram, receive ns, worker read ns)
    samples: list[tuple[int, int, int, int]] = field(default_factory=list)
    _state: dict[bytes, StepTopic] = field(default_factory=dict)
    _first: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._state = {t: StepTopic(i) for t, i in self.topics.items()}

    def begin(self, first_cs: Sequence[int], *, record: bool = False) -> None:
        self.received = self.cip_lost = self.bus_lost = self.stray = self.last_rx_ns = 0
        self.events = {}
        self.record = record
        self.samples = []
        self._first = list(first_cs)
        for st in self._state.values():
            st.expect_cs = self._first[st.index]

    def handle(self, topic: bytes, m: dict[str, Any], rx_mono_ns: int) -> None:
        st = self._state.get(topic)
        if st is None:
            if topic.startswith(b"event/"):
                kind = str(m.get("k"))
                self.events[kind] = self.events.get(kind, 0) + 1
            return
        sq, cs = m["sq"], m["cs"]
        if st.last_sq is not None and sq != st.last_sq + 1:
            self.bus_lost += max(0, sq - st.last_sq - 1)
        st.last_sq = sq
        ahead = (cs - st.expect_cs) & 0xFFFF
        if ahead >= 0x8000:
            self.stray += 1  # sent before this step began
            return
        self.cip_lost += ahead
        st.expect_cs = (cs + 1) & 0xFFFF
        self.received += 1
        self.last_rx_ns = rx_mono_ns
        if self.record:
            since = (cs - self._first[st.index]) & 0xFFFF
            self.samples.append((st.index, since, rx_mono_ns, m["tm"]))

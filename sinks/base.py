"""The shared SUB loop every sink process runs, and the ``Sink`` interface sinks implement.

A sink process owns one SUB socket and one output (ARCHITECTURE.md "Processes"). This module
does everything that is the same for every output: connect and subscribe with explicit RCVHWM
and LINGER (STYLE.md #10), decode through ``acquisition.wire``, detect bus loss from the
per-publisher, per-topic ``sq`` numbers (telling a publisher restart apart from loss), survive
malformed messages (counted, logged, skipped), batch records and hand them to the ``Sink`` on a
size or time trigger, and on SIGTERM/SIGINT drain what already arrived, flush, and exit 0.

The loop polls with a short timeout so that a stop request is seen within ``poll_interval``.
"""

from __future__ import annotations

import abc
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import zmq
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.wire import Event, Sample, Stats, decode, topic_prefix
from pyconpro.workers.guard import ClientKeys

log = logging.getLogger("pyconpro.sink")

DEFAULT_TOPICS: tuple[bytes, ...] = (
    topic_prefix("sample"),
    topic_prefix("event"),
    topic_prefix("stats"),
)
# Log the first few malformed messages in full, then one line per this many, so a flood of
# garbage cannot flood the log too.
MALFORMED_LOG_FIRST = 10
MALFORMED_LOG_EVERY = 1000


@dataclass(frozen=True, slots=True)
class BusGap:
    """Loss or a restart seen in one publisher's ``sq`` numbers on one topic.

    ``missed`` messages never reached this subscriber. For a restart (``restart=True``, the
    sequence went backwards) ``missed`` counts the messages of the new run numbered below
    ``received_seq``; the old run's tail cannot be known and is not guessed.
    """

    publisher: str
    topic: str
    expected_seq: int
    received_seq: int
    missed: int
    restart: bool
    t_wall_ns: int  # when this subscriber noticed, ns since the Unix epoch


class GapDetector:
    """Tracks the last ``sq`` per (publisher, topic); pure logic, fed by the loop."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[tuple[str, bytes], int] = {}

    def observe(self, publisher: str, topic: bytes, seq: int, now_wall_ns: int) -> BusGap | None:
        key = (publisher, topic)
        last = self._last.get(key)
        self._last[key] = seq
        if last is None or seq == last + 1:
            # First sight of a stream: a late joiner cannot know what it missed before.
            return None
        topic_text = topic.decode("utf-8", "replace")
        if seq <= last:
            return BusGap(publisher, topic_text, last + 1, seq, seq, True, now_wall_ns)
        return BusGap(publisher, topic_text, last + 1, seq, seq - last - 1, False, now_wall_ns)


class Sink(abc.ABC):
    """One output of a sink process. The loop calls, from a single thread:

    ``open()`` once; then any number of ``write_*`` calls each followed by ``flush()``, which
    must make everything written so far durable (commit, file flush); ``close()`` once at the
    end (after a final ``flush()`` on a clean stop, without one if the loop died of an error).
    """

    def open(self) -> None:
        """Create files/tables; raise with a helpful message if the output is unusable."""

    @abc.abstractmethod
    def write_samples(self, samples: list[Sample]) -> None: ...

    @abc.abstractmethod
    def write_events(self, events: list[Event]) -> None: ...

    def write_gaps(self, gaps: list[BusGap]) -> None:
        """Bus loss/restarts noticed by the loop; default: not recorded (it is logged)."""

    def write_stats(self, stats: list[Stats]) -> None:
        """Worker counters; default: ignored."""

    @abc.abstractmethod
    def flush(self) -> None: ...

    def close(self) -> None:
        """Release files/connections. Must not raise if ``open()`` failed half-way."""


@dataclass
class LoopOptions:
    """How the SUB loop connects and batches. Defaults suit a database or file sink."""

    endpoints: Sequence[str]
    topics: Sequence[bytes] = DEFAULT_TOPICS
    curve: ClientKeys | None = None  # CURVE client keys when the bus uses CURVE
    # Messages queued in this process before ZeroMQ drops (the publisher never blocks).
    rcvhwm: int = 100_000
    flush_interval: float = 1.0  # seconds a received record may wait before flush()
    batch_size: int = 1000  # records that trigger a flush regardless of time
    poll_interval: float = 0.1  # upper bound on the reaction time to a stop request
    drain_idle: float = 0.25  # on stop: keep receiving until the socket is quiet this long
    drain_max: float = 5.0  # on stop: but never longer than this
    quiet_warn: float = 5.0  # nothing at all received this long: warn (the bus may be down)
    quiet_repeat: float = 60.0  # ... and again this often while it stays quiet


@dataclass
class Counters:
    received: int = 0
    samples: int = 0
    events: int = 0
    stats: int = 0
    malformed: int = 0
    gaps: int = 0
    lost: int = 0
    restarts: int = 0
    flushes: int = 0

    def summary(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.__dict__.items())


@dataclass
class _Batch:
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    gaps: list[BusGap] = field(default_factory=list)
    stats: list[Stats] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples) + len(self.events) + len(self.gaps) + len(self.stats)


class SubscriberLoop:
    """Runs one sink: ``SubscriberLoop(sink, options).run(should_stop)``.

    ``should_stop`` is polled at least every ``poll_interval`` seconds; when it returns True the
    loop drains, flushes, closes the sink and returns. The socket is created inside ``run`` and
    used by that thread only (ZeroMQ sockets are not thread-safe).
    """

    def __init__(
        self,
        sink: Sink,
        options: LoopOptions,
        *,
        context: zmq.Context[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if not options.endpoints:
            raise ValueError("a sink needs at least one --connect endpoint, e.g. tcp://host:5600")
        self.sink = sink
        self.options = options
        self.counters = Counters()
        self.gaps = GapDetector()
        self._context = context
        self._clock = clock
        self._wall_ns = wall_ns
        self._batch = _Batch()
        self._flush_due: float | None = None
        self._last_rx: float | None = None  # when something last arrived (or the loop started)
        self._next_quiet_warn = 0.0

    # -- the loop ---------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> None:
        own_context = self._context is None
        ctx = zmq.Context() if own_context else self._context
        assert ctx is not None
        sock = ctx.socket(zmq.SUB)
        clean = subscribed = False
        try:
            sock.setsockopt(zmq.RCVHWM, self.options.rcvhwm)
            sock.setsockopt(zmq.LINGER, 0)
            self.sink.open()
            for prefix in self.options.topics:
                sock.setsockopt(zmq.SUBSCRIBE, prefix)
            if self.options.curve is not None:
                self.options.curve.apply(sock)
            for endpoint in self.options.endpoints:
                sock.connect(endpoint)
            subscribed = True
            log.info(
                "sink subscribed to %s on %s",
                ", ".join(repr(t.decode("utf-8", "replace")) for t in self.options.topics),
                ", ".join(self.options.endpoints),
            )
            self._serve(sock, should_stop)
            self._drain(sock)
            self._flush()
            clean = True
        finally:
            sock.close(linger=0)
            if own_context:
                ctx.term()
            try:
                self.sink.close()
            except Exception:
                if clean:
                    raise
                log.exception("closing the sink after an error failed too")
            if subscribed:  # a bad endpoint: the caller's error message says it all
                log.info("sink stopped: %s", self.counters.summary())

    def _serve(self, sock: zmq.Socket[Any], should_stop: Callable[[], bool]) -> None:
        poll_ms = max(1, int(self.options.poll_interval * 1000))
        self._last_rx = self._clock()
        while not should_stop():
            timeout = poll_ms
            if self._flush_due is not None:
                left = int((self._flush_due - self._clock()) * 1000)
                timeout = max(0, min(timeout, left))
            if sock.poll(timeout, zmq.POLLIN):
                self._receive_available(sock)
            self.flush_if_due()
            self.quiet_check()

    def quiet_check(self) -> str | None:
        """Warn when nothing at all arrived for ``quiet_warn`` seconds, again every
        ``quiet_repeat`` while it stays so; returns the warning (None when there is none)."""
        now = self._clock()
        if self._last_rx is None:
            self._last_rx = now
        quiet = now - self._last_rx
        if quiet < self.options.quiet_warn or now < self._next_quiet_warn:
            return None
        self._next_quiet_warn = now + self.options.quiet_repeat
        text = (
            f"nothing received from {', '.join(self.options.endpoints)} for {quiet:.0f} s: "
            "is `pyconpro run` up (`pyconpro status`), is the endpoint right?"
        )
        log.warning("%s", text)
        return text

    def _drain(self, sock: zmq.Socket[Any]) -> None:
        """After a stop request, take what already reached this process (ZeroMQ queues and
        the kernel socket buffer) so that a graceful stop loses nothing that was delivered."""
        hard = self._clock() + self.options.drain_max
        idle_ms = max(1, int(self.options.drain_idle * 1000))
        while self._clock() < hard:
            if not sock.poll(idle_ms, zmq.POLLIN):
                return
            self._receive_available(sock)
            self.flush_if_due()
        log.warning(
            "stop: still receiving after %.1fs of draining; stopping anyway", self.options.drain_max
        )

    def _receive_available(self, sock: zmq.Socket[Any]) -> None:
        # Bounded so a firehose cannot starve the time-based flush or the stop check.
        for _ in range(self.options.batch_size):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(frames)
            if len(self._batch) >= self.options.batch_size:
                self._flush()

    # -- per message (public so tests can feed frames without sockets) -----------------

    def handle(self, frames: list[bytes]) -> None:
        self.counters.received += 1
        self._last_rx = self._clock()
        self._next_quiet_warn = 0.0
        if len(frames) != 2:
            self._malformed(
                frames[0] if frames else b"", f"2 frames [topic, body], got {len(frames)}"
            )
            return
        topic, body = frames
        try:
            msg = decode(topic, body)
        except MalformedPacket as exc:
            self._malformed(topic, str(exc))
            return
        gap = self.gaps.observe(msg.publisher, topic, msg.seq, self._wall_ns())
        if gap is not None:
            self._record_gap(gap)
        if isinstance(msg, Sample):
            self.counters.samples += 1
            self._batch.samples.append(msg)
        elif isinstance(msg, Event):
            self.counters.events += 1
            self._batch.events.append(msg)
        else:
            self.counters.stats += 1
            self._batch.stats.append(msg)
        if self._flush_due is None:
            self._flush_due = self._clock() + self.options.flush_interval

    def _record_gap(self, gap: BusGap) -> None:
        if gap.restart:
            self.counters.restarts += 1
            log.warning(
                "publisher %r restarted on %s (sq %d after %d); %d message(s) of the new run"
                " missed",
                gap.publisher,
                gap.topic,
                gap.received_seq,
                gap.expected_seq - 1,
                gap.missed,
            )
        else:
            self.counters.gaps += 1
            log.warning(
                "lost %d message(s) from %r on %s (sq %d, expected %d); raise --rcvhwm or make"
                " the sink faster",
                gap.missed,
                gap.publisher,
                gap.topic,
                gap.received_seq,
                gap.expected_seq,
            )
        self.counters.lost += gap.missed
        self._batch.gaps.append(gap)
        if self._flush_due is None:
            self._flush_due = self._clock() + self.options.flush_interval

    def _malformed(self, topic: bytes, why: str) -> None:
        self.counters.malformed += 1
        n = self.counters.malformed
        if n <= MALFORMED_LOG_FIRST:
            log.warning("skipped malformed message on topic %r: %s", topic[:80], why)
        elif n % MALFORMED_LOG_EVERY == 0:
            log.warning("%d malformed messages skipped so far (last on %r: %s)", n, topic[:80], why)

    # -- batching ------------------------------------------------------------------------

    def flush_if_due(self) -> None:
        """Hand the batch to the sink if it is full or its oldest record waited long enough."""
        if self._flush_due is not None and (
            len(self._batch) >= self.options.batch_size or self._clock() >= self._flush_due
        ):
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, _Batch()
        self._flush_due = None
        if batch.samples:
            self.sink.write_samples(batch.samples)
        if batch.events:
            self.sink.write_events(batch.events)
        if batch.gaps:
            self.sink.write_gaps(batch.gaps)
        if batch.stats:
            self.sink.write_stats(batch.stats)
        self.sink.flush()
        self.counters.flushes += 1


def run_sink(sink: Sink, options: LoopOptions, *, context: zmq.Context[Any] | None = None) -> int:
    """Run a sink in this (main) thread until SIGTERM or SIGINT, then flush and return 0.

    The handlers only set a flag: the loop notices it within ``poll_interval`` and stops
    through the same drain-and-flush path as any other stop.
    """
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        SubscriberLoop(sink, options, context=context).run(stop.is_set)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if received:
        log.info("stopped by %s", signal.Signals(received[0]).name)
    return 0

"""The shared SUB loop every sink process runs, and the ``Sink`` interface sinks implement.

A sink process owns one SUB socket and one output (ARCHITECTURE.md "Processes"). This module
does everything that is the same for every output: connect and subscribe with explicit RCVHWM
and LINGER (STYLE.md #10), decode through ``acquisition.wire``, detect bus loss from the
per-publisher, per-topic ``sq`` numbers (telling a publisher restart apart from loss), survive
malformed messages (counted, logged, skipped), batch records and hand them to the ``Sink`` on a
size or time trigger, and on SIGTERM/SIGINT drain what already arrived, flush, and exit 0.

When the output cannot take writes (disk full, read-only, locked, its directory gone: the sink
raises ``OutputUnavailable`` after undoing the partial write), the records stay in memory, in
arrival order, up to the sink's ``max_pending`` (past it the oldest are dropped and counted); the
loop says so once, reminds every minute, retries with backoff (``OutputHealth``) and, once a
write goes through, writes what it kept, oldest first. It never exits for such a condition, so
the supervisor sees no crash loop. With ``LoopOptions.report`` it sends its state to the
supervisor's control socket (``sink_report``), which ``pyconpro status`` shows.

A sink whose output keeps track of what it stored (``Sink.stored_marks``: per stream, the
mark of the last message stored) starts from there: the gap detector continues each stream
from its stored ``sq``, and with ``LoopOptions.replay`` (the supervisor's control socket) the
loop subscribes live, asks the bus's replay buffer for everything after those marks, writes
what comes back before any live message, and drops the live messages the replay already
brought (``acquisition.replay.ReplayClient``; docs/operations.md "When a sink restarts").
What the buffer no longer held is a jump in ``sq`` the gap detector records, exact.

A network sink (``LoopOptions.spool``) keeps what its destination cannot take on disk instead:
the store-and-forward spool; ``sinks/spool.py`` (``SpoolFeed``) says when records go there and
come back, this loop asks it for each write.

With ``LoopOptions.exception`` (report by exception, ``acquisition/rbe.py``) a filter stage
between the gap detector and the batches leaves out the samples the rule says; the gap
detector has seen them (they are no loss), and their marks still reach the output, as
``Skipped`` records, so a restart does not ask the replay for them again.

The loop polls with a short timeout so that a stop request is seen within ``poll_interval``.
"""

from __future__ import annotations

import abc
import itertools
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeAlias

import zmq
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.originator import BackoffPolicy
from pyconpro.acquisition.rbe import ExceptionFilter, ReportByException
from pyconpro.acquisition.replay import (
    REPLAY_TOPIC,
    Deliver,
    Key,
    Mark,
    ReplayClient,
    ReplayEnded,
    SendRequest,
)
from pyconpro.acquisition.wire import Event, Sample, Stats, decode, topic_prefix
from pyconpro.sinks.gaps import BusGap as BusGap
from pyconpro.sinks.gaps import GapDetector as GapDetector
from pyconpro.sinks.health import OutputHealth as OutputHealth
from pyconpro.sinks.health import OutputState as OutputState
from pyconpro.sinks.replay import ReplayLink, Reporter
from pyconpro.workers.guard import ClientKeys

if TYPE_CHECKING:
    from pyconpro.sinks.spool import Spool, SpoolConfig, SpoolFeed

log = logging.getLogger("pyconpro.sink")

STATS_PREFIX = topic_prefix("stats")
DEFAULT_TOPICS: tuple[bytes, ...] = (
    topic_prefix("sample"),
    topic_prefix("event"),
    topic_prefix("stats"),
)
# Log the first few malformed messages in full, then one line per this many, so a flood of
# garbage cannot flood the log too.
MALFORMED_LOG_FIRST = 10
MALFORMED_LOG_EVERY = 1000
# Records a sink keeps in memory while its output cannot be written, unless it says otherwise.
DEFAULT_MAX_PENDING = 100_000
# Exit status of ``run_sink`` when it was stopped while the output could not be written: the
# records still in memory are lost (the log says how many).
EXIT_UNWRITTEN = 3


# pyzmq's compiled recv, called without its Python subclass's wrapper; copy=False gives a Frame
# that says whether more frames follow (the RCVMORE socket option costs more to ask for).
_recv: Callable[..., Any] = getattr(getattr(zmq, "backend", None), "Socket", zmq.Socket).recv
_NOBLOCK = int(zmq.NOBLOCK)


def receive_frames(sock: zmq.Socket[Any]) -> list[bytes] | None:
    """The frames of the next message queued on ``sock``, None when there is none: what
    ``recv_multipart(zmq.NOBLOCK)`` returns, in half its time (1.6 us against 3.5 us for two
    frames)."""
    try:
        frame = _recv(sock, _NOBLOCK, False)
    except zmq.Again:
        return None
    frames = [frame.bytes]
    while frame.more:  # the frames of a message arrive together
        frame = _recv(sock, 0, False)
        frames.append(frame.bytes)
    return frames


class OutputUnavailable(Exception):
    """The output cannot take writes now, for a reason outside this process that may pass: the
    disk is full, the file system read-only, the database locked by another program, the
    directory gone, an I/O error. ``cause`` is a few words (``disk full``) for status lines,
    the message says what happened where and what to do.

    A sink raises it only after undoing everything handed to it since its last successful
    ``flush()`` (the loop hands those records again on its next attempt), and gets ready to
    reopen its output on the next call.
    """

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


class Sink(abc.ABC):
    """One output of a sink process. The loop calls, from a single thread:

    ``open()`` once; then any number of ``write_*`` calls each followed by ``flush()``, which
    must make everything written so far durable (commit, file flush); ``close()`` once at the
    end (after a final ``flush()`` on a clean stop, without one if the loop died of an error).

    Any of them may raise ``OutputUnavailable`` (see there); the loop then keeps the records,
    at most ``max_pending`` of them, and calls ``write_*`` / ``flush()`` again later (a retry
    with nothing to write is a bare ``flush()``, which should check that the output is usable).
    Any other exception ends the loop.
    """

    #: Records kept in memory while the output is unavailable; past it the oldest are dropped.
    max_pending: int = DEFAULT_MAX_PENDING
    #: Set by the loop before each write: True when the records handed came out of the
    #: store-and-forward spool (they waited; an MQTT sink marks them historical).
    from_spool: bool = False

    def open(self) -> None:
        """Create files/tables; raise with a helpful message if the output is unusable
        (``OutputUnavailable`` when that may pass by itself: the loop then retries)."""

    @abc.abstractmethod
    def write_samples(self, samples: list[Sample]) -> None: ...

    @abc.abstractmethod
    def write_events(self, events: list[Event]) -> None: ...

    def write_gaps(self, gaps: list[BusGap]) -> None:
        """Bus loss/restarts noticed by the loop; default: not recorded (it is logged)."""

    def write_stats(self, stats: list[Stats]) -> None:
        """Worker counters; default: ignored."""

    def write_skipped(self, marks: Mapping[Key, Mark]) -> None:
        """Per stream, the mark of the last sample that report by exception left out, later
        than every record of that stream written before in this flush: an output that keeps
        marks (``stored_marks``) stores them with this flush; default: nothing."""

    def stored_marks(self) -> Mapping[Key, Mark] | None:
        """After ``open()``: per stream (publisher, topic), the mark ``(tm, sq)`` of the last
        message this output stored, as committed with it, so a restart asks the replay for
        exactly what follows. None: this output does not keep track (no replay)."""
        return None

    @abc.abstractmethod
    def flush(self) -> None: ...

    def close(self) -> None:
        """Release files/connections. Must not raise if ``open()`` failed half-way."""


@dataclass(slots=True)
class Pending:
    """The records a sink was handed since its last flush, by kind."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    gaps: list[BusGap] = field(default_factory=list)
    stats: list[Stats] = field(default_factory=list)

    def clear(self) -> None:
        """After a flush, whatever happened in it: the loop hands the same records again
        after a failure."""
        self.samples, self.events, self.gaps, self.stats = [], [], [], []


class PendingSink(Sink):
    """A sink that writes at the flush what it was handed since the last one (a network sink:
    one transaction, one batch of messages): ``write_*`` keep the records in ``pending``,
    ``flush`` writes them and ends with ``pending.clear()``."""

    pending: Pending

    def __init__(self) -> None:
        self.pending = Pending()

    def write_samples(self, samples: list[Sample]) -> None:
        self.pending.samples += samples

    def write_events(self, events: list[Event]) -> None:
        self.pending.events += events

    def write_gaps(self, gaps: list[BusGap]) -> None:
        self.pending.gaps += gaps

    def write_stats(self, stats: list[Stats]) -> None:
        self.pending.stats += stats


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
    # Nothing at all received this long: warn (the bus may be down). A sink that does not want
    # stats still subscribes to them, unstored, as a sign of life (workers send them every
    # [worker] stats_interval_s, 5 s by default): three intervals of silence, not one.
    quiet_warn: float = 15.0
    quiet_repeat: float = 60.0  # ... and again this often while it stays quiet
    # While the output is unavailable: retry after 0.5, 1, 2, 4, 5, 5 ... s; remind every minute.
    retry: BackoffPolicy = BackoffPolicy(base_s=0.5, cap_s=5.0, jitter=0.0)
    remind_every: float = 60.0
    # The supervisor's control socket to send this sink's state to (``pyconpro run`` sets it),
    # as child ``report_name``, every ``report_interval`` seconds and at once on a change.
    report: str | None = None
    report_name: str = "sink"
    report_interval: float = 2.0
    report_curve: ClientKeys | None = None  # CURVE client keys when that socket uses CURVE
    # The supervisor's control socket to ask for the messages missed while this sink was down
    # (the bus's replay buffer; ``pyconpro run`` sets it); None: live data only.
    replay: str | None = None
    replay_curve: ClientKeys | None = None  # CURVE client keys when that socket uses CURVE
    replay_new: bool = False  # also replay streams never stored (all the buffer holds)
    replay_timeout: float = 10.0  # no reply for this long: give the replay up, go live
    # A network sink's store-and-forward spool (sinks/spool.py); None: memory only.
    spool: SpoolConfig | None = None
    # Report by exception (acquisition/rbe.py); None, or a rule that keeps all: every sample.
    exception: ReportByException | None = None


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
    replayed: int = 0  # messages the replay brought at start
    duplicates: int = 0  # live messages dropped because the replay had brought them
    flushes: int = 0
    written: int = 0  # records the output took (committed)
    dropped: int = 0  # records dropped, oldest first, past max_pending while it could not
    write_failures: int = 0  # writes that raised OutputUnavailable
    filtered: int = 0  # samples report by exception left out (not written, not loss)

    def summary(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.__dict__.items())


@dataclass(frozen=True, slots=True)
class Skipped:
    """The place in its stream of the last sample(s) report by exception left out: no data,
    only the mark (``t_mono_ns``, ``seq``) an output that keeps marks stores, so that a restart
    continues after it. ``count`` samples were left out since the stream's last record."""

    publisher: str
    topic: bytes
    plc: str
    tag: str
    t_mono_ns: int
    seq: int
    count: int


Record: TypeAlias = Sample | Event | BusGap | Stats | Skipped


@dataclass
class _Batch:
    """Records of one write, by kind, each kind in arrival order; ``skipped``: the marks of
    the ``Skipped`` records that no later sample of their stream in the batch overtakes."""

    samples: list[Sample]
    events: list[Event]
    gaps: list[BusGap]
    stats: list[Stats]
    skipped: dict[Key, Mark]
    markers: int = 0  # Skipped records in the batch

    @classmethod
    def of(cls, records: Iterable[Record]) -> _Batch:
        batch = cls([], [], [], [], {})
        lists: dict[type, list[Any]] = {
            Sample: batch.samples, Event: batch.events, BusGap: batch.gaps, Stats: batch.stats,
        }  # fmt: skip
        markers: dict[tuple[str, str, str], Skipped] = {}
        for r in records:
            if type(r) is Skipped:
                markers[(r.publisher, r.plc, r.tag)] = r
                batch.markers += 1
                continue
            if markers and type(r) is Sample:  # a later sample's own mark wins
                markers.pop((r.publisher, r.plc, r.tag), None)
            lists[type(r)].append(r)
        for m in markers.values():
            batch.skipped[(m.publisher, m.topic)] = (m.t_mono_ns, m.seq)
        return batch


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
        self._pending: deque[Record] = deque()  # not written yet, oldest first
        # Never below a batch: a full batch is written before another record is taken in.
        self._limit = max(1, sink.max_pending, options.batch_size)
        self._outage_dropped = 0  # dropped since the output became unavailable
        self.health = OutputHealth(options.retry, options.remind_every)
        self.unwritten = 0  # records still in memory when the loop ended (lost)
        self._flush_due: float | None = None
        self._last_rx: float | None = None  # when something last arrived (or the loop started)
        self._next_quiet_warn = 0.0
        # Stats subscribed to only as a sign of life when the sink's topics leave them out.
        self._alive_only: tuple[bytes, ...] = (
            () if any(STATS_PREFIX.startswith(p) for p in options.topics) else (STATS_PREFIX,)
        )
        self._report_due = 0.0
        # Why messages missed while this sink was down were not replayed (for the gap's log).
        self._replay_note = "no replay asked"
        rbe = options.exception
        self.exception = ExceptionFilter(rbe) if rbe is not None and rbe.active else None
        # Per stream, the last sample the filter left out since the stream's last record in
        # ``_pending`` (a ``Skipped`` queued at the next write); newer than all of them.
        self._skips: dict[Key, Skipped] = {}
        self._mark_skips = True  # False: the output keeps no marks, Skipped records are moot
        self._markers_written = 0  # Skipped records in the last write
        self.feed: SpoolFeed | None = None  # a network sink's spool and how it is used
        if options.spool is not None:
            from pyconpro.sinks.spool import SpoolFeed

            self.feed = SpoolFeed(options.spool, self._pending, options.batch_size, wall_ns)

    @property
    def spool(self) -> Spool | None:
        return self.feed.spool if self.feed is not None else None

    @property
    def pending(self) -> int:
        """Records received and not written yet (in memory; the spool's are ``spool.depth``)."""
        return len(self._pending)

    # -- the loop ---------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> None:
        own_context = self._context is None
        ctx = zmq.Context() if own_context else self._context
        assert ctx is not None
        sock = ctx.socket(zmq.SUB)
        reporter = None
        if self.options.report is not None:
            reporter = Reporter(ctx, self.options.report, self.options.report_curve)
        clean = subscribed = False
        replay: ReplayLink | None = None
        try:
            sock.setsockopt(zmq.RCVHWM, self.options.rcvhwm)
            sock.setsockopt(zmq.LINGER, 0)
            marks = self._open_output()
            for prefix in (*self.options.topics, *self._alive_only):
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
            replay = self._start_replay(ctx, sock, marks)
            self._serve(sock, should_stop, reporter, replay)
            if replay is not None and replay.client.active:
                self._stop_replay(sock, replay)
            else:
                self._drain(sock)
            self._flush_all()
            clean = True
        finally:
            if replay is not None:
                replay.close()
            sock.close(linger=0)
            if reporter is not None:
                reporter.close()
            if own_context:
                ctx.term()
            try:
                self.sink.close()
            except Exception:
                if clean:
                    raise
                log.exception("closing the sink after an error failed too")
            finally:
                if self.spool is not None:
                    self.spool.close()
            if subscribed:  # a bad endpoint: the caller's error message says it all
                log.info("sink stopped: %s", self.summary())

    def _open_output(self) -> Mapping[Key, Mark] | None:
        """Open the spool (a network sink) and the sink; the marks a restart continues from:
        the spool's (what it took in for good: spooled, or written), else what the output
        stored (None: it does not keep track, or could not be read)."""
        if self.feed is not None:
            self.feed.spool.open()
            if self.feed.spool.depth:
                self._flush_due = self._clock()  # what the last run left: send it first
        marks: Mapping[Key, Mark] | None = None
        try:
            self.sink.open()
            if self.spool is None:
                marks = self._resume_from(self.sink.stored_marks())
        except OutputUnavailable as exc:  # keep what arrives; retry (a disk may be late)
            self._unavailable(exc)
            if self.options.replay is not None and self.spool is None:
                log.warning("cannot read what the output stored (%s): no replay, and what"
                            " was published while this sink was down is not known",
                            exc.cause)  # fmt: skip
        if self.spool is not None:
            marks = self._resume_from(self.spool.marks())
        return marks

    def _serve(
        self,
        sock: zmq.Socket[Any],
        should_stop: Callable[[], bool],
        reporter: Reporter | None,
        replay: ReplayLink | None = None,
    ) -> None:
        poll_ms = max(1, int(self.options.poll_interval * 1000))
        self._last_rx = self._clock()
        while not should_stop():
            timeout = poll_ms
            due = self._next_write_at()
            if reporter is not None:
                due = self._report_due if due is None else min(due, self._report_due)
            if due is not None:
                left = int((due - self._clock()) * 1000)
                timeout = max(0, min(timeout, left))
            if replay is not None and replay.client.active:
                timeout = min(timeout, self._serve_replay(sock, replay))
            if replay is not None and replay.client.active:
                if sock in replay.wait(sock, timeout):
                    self._hold_available(sock, replay.client)
            elif sock.poll(timeout, zmq.POLLIN):
                self._receive_available(sock)
            self.flush_if_due()
            self.quiet_check()
            self.unavailable_check()
            if reporter is not None and self._clock() >= self._report_due:
                self._report_due = self._clock() + self.options.report_interval
                reporter.send(self.options.report_name, self.report())

    # -- the replay at start --------------------------------------------------------------

    def _resume_from(self, stored: Mapping[Key, Mark] | None) -> Mapping[Key, Mark] | None:
        """The marks of the streams this sink subscribes to, each stream's gap detection
        continued from its stored ``sq``; None when the output does not keep track."""
        if stored is None:
            self._replay_note = "this output does not keep track of what it stored"
            self._mark_skips = False
            return None
        topics = self.options.topics
        marks = {k: m for k, m in stored.items() if any(k[1].startswith(p) for p in topics)}
        for (publisher, topic), (_tm, seq) in marks.items():
            self.gaps.seed(publisher, topic, seq)
        return marks

    def _start_replay(
        self, ctx: zmq.Context[Any], sock: zmq.Socket[Any], marks: Mapping[Key, Mark] | None
    ) -> ReplayLink | None:
        """Ask for what was missed since ``marks`` (the live subscription is connected)."""
        opts = self.options
        if opts.replay is None:
            if marks:
                self._replay_note = "no replay asked (no --replay endpoint)"
            return None
        if marks is None:
            if not opts.replay_new:
                return None
            marks = {}
        if not marks and not opts.replay_new:
            log.info("replay: nothing stored yet, so nothing to ask for; live data only")
            return None
        client = ReplayClient(
            os.urandom(8).hex(), marks, opts.topics if opts.replay_new else (),
            timeout_s=opts.replay_timeout, max_held=opts.rcvhwm,
        )  # fmt: skip
        # After connect(): the marker's subscription follows the data subscriptions.
        sock.setsockopt(zmq.SUBSCRIBE, client.marker_topic)
        link = ReplayLink(ctx, opts.replay, opts.replay_curve, client)
        # A stream whose first replayed message is not the next after its mark: the buffer no
        # longer held those (if the replay fails, _replay_ended says so instead).
        self._replay_note = ("the bus's replay buffer no longer held them: raise [bus] replay_s"
                             " / replay_bytes to bridge longer outages")  # fmt: skip
        log.info("replay: asking %s for what %d stream(s) missed, holding live data meanwhile",
                 opts.replay, len(marks))  # fmt: skip
        client.start(self._clock())
        self._replay_outputs(sock, link)
        return link

    def _serve_replay(self, sock: zmq.Socket[Any], link: ReplayLink) -> int:
        """Replies and the replay's timer; the milliseconds until the replay's deadline."""
        now = self._clock()
        for body in link.replies():
            link.client.reply(body, now)
        link.client.on_timer(now)
        self._replay_outputs(sock, link)
        if not link.client.active:
            return 0
        due = link.client.next_deadline()
        return 0 if due is None else max(0, int((due - now) * 1000))

    def _replay_outputs(self, sock: zmq.Socket[Any], link: ReplayLink) -> None:
        for out in link.client.take_outputs():
            match out:
                case SendRequest(body):
                    link.send(body)
                case Deliver(messages, replayed):
                    if replayed:
                        self.counters.replayed += len(messages)
                    for topic, body in messages:
                        self.handle([topic, body])
                        self._write_if_full()
                case ReplayEnded() as ended:
                    self._replay_ended(sock, link, ended)

    def _replay_ended(self, sock: zmq.Socket[Any], link: ReplayLink, e: ReplayEnded) -> None:
        sock.setsockopt(zmq.UNSUBSCRIBE, link.client.marker_topic)
        link.close()
        self.counters.duplicates += e.duplicates
        if e.ok:
            log.info(
                "replay done in %.3f s: %d message(s) replayed, %d live held meanwhile (%d of"
                " them already replayed, dropped); live from now on",
                e.seconds, e.replayed, e.held, e.duplicates,
            )  # fmt: skip
        else:
            self._replay_note = f"the replay failed: {e.reason}"
            log.warning(
                "replay from %s given up after %.1f s: %s; %d message(s) replayed before;"
                " live from now on (what is missing is recorded as gaps)",
                self.options.replay, e.seconds, e.reason, e.replayed,
            )  # fmt: skip
        if e.evicted:
            log.warning("replay: the buffer dropped %d message(s) while the replay ran; what"
                        " this sink missed of them is recorded as gaps", e.evicted)  # fmt: skip

    def _hold_available(self, sock: zmq.Socket[Any], client: ReplayClient) -> None:
        """During the replay: live messages go through ``client`` (held, up to its bound and
        past it left in the socket, until the replay has ended; then those it did not bring
        are delivered)."""
        for _ in range(self.options.batch_size):
            if client.held_full or not client.active:
                return
            frames = receive_frames(sock)
            if frames is None:
                return
            self._last_rx = self._clock()
            if len(frames) == 2:
                client.live(frames[0], frames[1], self._last_rx)
            else:
                self.handle(frames)  # counted as malformed

    def _stop_replay(self, sock: zmq.Socket[Any], link: ReplayLink) -> None:
        """Stopped during the replay: keep what was replayed, not the live messages held or
        still queued (they come after what is still to replay; the next start asks the buffer
        for them again)."""
        held = link.client.abandon()
        self._replay_outputs(sock, link)
        log.warning("stopped during the replay: %d live message(s) held are not written; the"
                    " next start asks for them again", held)  # fmt: skip

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
        # Bounded so a firehose cannot starve the time-based flush or the stop check. With a
        # spool, everything queued is taken in before the next write (up to the spill bound),
        # so a destination slower than the bus fills memory, then the spool, not ZeroMQ's
        # queue, where the excess would be lost.
        spooled = self.feed is not None
        for _ in range(2 * self.options.batch_size if spooled else self.options.batch_size):
            frames = receive_frames(sock)
            if frames is None:
                return
            self.handle(frames)
            self._write_if_full()

    def _write_if_full(self) -> None:
        if self.feed is not None:  # past the spill bound: to the spool (and one batch out)
            if len(self._pending) > self.feed.spill_at:
                self._write_batch()
        elif len(self._pending) >= self.options.batch_size and not self.health.retrying:
            self._write_batch()

    # -- per message (public so tests can feed frames without sockets) -----------------

    def handle(self, frames: list[bytes]) -> None:
        if frames and frames[0].startswith(REPLAY_TOPIC):
            return  # the marker of this sink's replay (acquisition/replay.py), not data
        self._last_rx = self._clock()
        self._next_quiet_warn = 0.0
        if self._alive_only and frames and frames[0].startswith(self._alive_only):
            return  # stats this sink does not store: only a sign that the bus is up
        self.counters.received += 1
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
        resuming = self.gaps.resuming(msg.publisher, topic)
        gap = self.gaps.observe(msg.publisher, topic, msg.seq, self._wall_ns())
        if gap is not None:
            self._record_gap(gap, resuming)
        if isinstance(msg, Sample):
            self.counters.samples += 1
            if self.exception is not None and self._left_out(msg, topic, gap is not None):
                return
        elif isinstance(msg, Event):
            self.counters.events += 1
            if self.exception is not None:
                self.exception.reset(msg.plc, msg.tag)
        else:
            self.counters.stats += 1
        self._keep(msg)

    def _left_out(self, msg: Sample, topic: bytes, after_gap: bool) -> bool:
        """Report by exception: True when the rule leaves ``msg`` out (counted; its mark kept
        for the next write). An event of the tag or bus loss on its topic starts the tag's
        rule over: the sample after it is kept."""
        f = self.exception
        assert f is not None
        if after_gap:
            f.reset(msg.plc, msg.tag)
        key = (msg.publisher, topic)
        if f.keep(msg.plc, msg.tag, msg.t_mono_ns, msg.value):
            if self._skips:
                self._skips.pop(key, None)  # this sample's own mark follows the skipped ones
            return False
        self.counters.filtered += 1
        if self._mark_skips:
            last = self._skips.get(key)
            count = 1 if last is None else last.count + 1
            self._skips[key] = Skipped(msg.publisher, topic, msg.plc, msg.tag, msg.t_mono_ns,
                                       msg.seq, count)  # fmt: skip
            if self._flush_due is None:  # marks alone are written too, on the usual schedule
                self._flush_due = self._clock() + self.options.flush_interval
        return True

    def _queue_skips(self) -> None:
        """The marks of the samples left out go behind everything kept (module doc)."""
        skips, self._skips = self._skips, {}
        for skip in skips.values():
            self._keep(skip)

    def _record_gap(self, gap: BusGap, while_down: bool = False) -> None:
        if while_down and not gap.restart:
            self.counters.gaps += 1
            log.warning(
                "while this sink was down, %d message(s) from %r on %s were missed (sq %d..%d):"
                " %s", gap.missed, gap.publisher, gap.topic, gap.expected_seq,
                gap.received_seq - 1, self._replay_note,
            )  # fmt: skip
        elif gap.restart:
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
        self._keep(gap)

    def _keep(self, record: Record) -> None:
        """Queue ``record`` for the next write; past the limit the oldest record goes."""
        if len(self._pending) >= self._limit:
            self._pending.popleft()
            self.counters.dropped += 1
            self._outage_dropped += 1
            if self._outage_dropped == 1:
                log.warning(
                    "%d records wait for the output (max_pending): dropping the oldest from now"
                    " on, counted in `dropped`; raise max_pending to keep more (about 1.5 KB of"
                    " memory each)", self._limit,
                )  # fmt: skip
        self._pending.append(record)
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

    def _next_write_at(self) -> float | None:
        """When ``flush_if_due`` next has something to do (None: not before a record arrives)."""
        if self.spool is not None:
            if self.health.retrying:  # records in memory go to the spool on the usual schedule
                due = self.health.next_attempt
                spill = self._flush_due if self._pending else None
                return spill if due is None else due if spill is None else min(due, spill)
            if self.spool.depth:
                return self._clock()  # a backlog: on with the next batch
        if self.health.retrying:
            return self.health.next_attempt
        if self._flush_due is not None and len(self._pending) >= self.options.batch_size:
            return self._clock()
        return self._flush_due

    def flush_if_due(self) -> None:
        """Hand the oldest batch to the sink if it is full or its oldest record waited long
        enough; while the output is unavailable, when the next attempt is due."""
        at = self._next_write_at()
        if at is not None and self._clock() >= at:
            self._write_batch()

    def _flush_all(self) -> None:
        """On stop: write everything kept, now (one attempt, whatever the backoff says). With
        a spool that holds records, or an output that is unavailable, what is in memory goes to
        the spool instead, for the next start."""
        self._queue_skips()
        feed = self.feed
        if feed is None or not (feed.spool.depth or self.health.retrying):
            while self._write_batch() and self._pending:
                pass
        if feed is not None:
            feed.stop()
        self.unwritten = len(self._pending)
        if self.unwritten:
            log.error(
                "stopping with %d record(s) not written, now lost: %s (%d dropped before)",
                self.unwritten, self.health.message, self.counters.dropped,
            )  # fmt: skip

    def _write_batch(self) -> bool:
        """Write the oldest ``batch_size`` records (all of them, or none) and flush; False
        when the output is unavailable (the records stay, the next attempt is scheduled)."""
        if self._skips:
            self._queue_skips()
        if self.feed is not None:
            return self._write_spooled(self.feed)
        n = min(len(self._pending), self.options.batch_size)
        if not self._write(itertools.islice(self._pending, n)):
            return False
        for _ in range(n):
            self._pending.popleft()
        self._written(n)
        return True

    def _write(self, records: Iterable[Record], from_spool: bool = False) -> bool:
        """Hand ``records`` to the sink and flush; False (and the retry scheduled) when the
        output is unavailable."""
        batch = _Batch.of(records)
        self.sink.from_spool = from_spool
        try:
            if batch.samples:
                self.sink.write_samples(batch.samples)
            if batch.events:
                self.sink.write_events(batch.events)
            if batch.gaps:
                self.sink.write_gaps(batch.gaps)
            if batch.stats:
                self.sink.write_stats(batch.stats)
            if batch.skipped:
                self.sink.write_skipped(batch.skipped)
            self.sink.flush()
        except OutputUnavailable as exc:
            self._unavailable(exc)
            return False
        self._markers_written = batch.markers
        return True

    def _write_spooled(self, feed: SpoolFeed) -> bool:
        """One write of a sink with a spool (``SpoolFeed.write``); while the output is
        unavailable and no attempt is due, only memory to the spool."""
        if self.health.retrying and not self.health.attempt_due(self._clock()):
            feed.spill()
            self._flush_due = None
            return False
        n = feed.write(self._write)
        if n is None:
            return False
        self._written(n)
        return True

    def _written(self, n: int) -> None:
        """``n`` records went through: count them (not the marks of samples left out), and
        end an outage if one was going on."""
        self.counters.written += n - self._markers_written
        self.counters.flushes += 1
        now = self._clock()
        backlog = self._pending or (self.spool is not None and self.spool.depth)
        self._flush_due = now if backlog else None  # a backlog: on with the next batch
        outage = self.health.succeeded(now)
        if outage is not None:
            self._report_due = now
            level = logging.WARNING if self._outage_dropped else logging.INFO
            log.log(
                level,
                "writing again after %.1f s (%s): %d kept record(s) being written, %d dropped",
                outage, self.health.cause, n + len(self._pending) + self._spool_depth(),
                self._outage_dropped,
            )  # fmt: skip
            self._outage_dropped = 0

    def _spool_depth(self) -> int:
        return self.feed.spool.depth if self.feed is not None else 0

    def _unavailable(self, exc: OutputUnavailable) -> None:
        now = self._clock()
        self.counters.write_failures += 1
        if self.health.failed(exc.cause, exc.message, now):
            self._report_due = now
            if self.feed is not None:
                sp = self.feed.spool
                log.error(
                    "cannot write: %s; keeping records in the spool %s (%d there now, at most"
                    " %d bytes) and retrying until it works", exc.message, sp.path,
                    sp.depth + len(self._pending), sp.config.max_bytes,
                )  # fmt: skip
            else:
                log.error(
                    "cannot write: %s; keeping up to %d records in memory (%d now) and"
                    " retrying until it works", exc.message, self._limit, len(self._pending),
                )  # fmt: skip
        else:
            log.debug("still cannot write: %s", exc.message)

    def unavailable_check(self) -> str | None:
        """While the output is unavailable, a reminder every ``remind_every`` seconds (logged
        and returned; None when none is due)."""
        now = self._clock()
        if not self.health.reminder_due(now):
            return None
        text = (
            f"still cannot write after {now - self.health.since:.0f} s: {self.health.message};"
            f" {len(self._pending) + self._spool_depth()} record(s) kept,"
            f" {self.counters.dropped + self._spool_dropped()} dropped so far"
        )
        log.error("%s", text)
        return text

    def report(self) -> dict[str, Any]:
        """This sink's state for ``pyconpro status`` (docs/operations.md, ``sinks``)."""
        now = self._clock()
        h = self.health
        return {
            "state": h.state.value,
            "cause": h.cause if h.retrying else "",
            "message": h.message if h.retrying else "",
            "since_s": round(now - h.since, 3) if h.retrying else None,
            "retry_in_s": round(max(0.0, h.next_attempt - now), 3)
            if h.next_attempt is not None
            else None,
            "pending": len(self._pending),
            "max_pending": self._limit,
            **self.counters.__dict__,
            **self.spool_report(),
        }

    def spool_report(self) -> dict[str, Any]:
        """The spool's part of the report (``SpoolFeed.report``); None values for a sink
        without a spool, so a reader always finds the keys."""
        from pyconpro.sinks.spool import SPOOL_KEYS

        if self.feed is None:
            return dict.fromkeys(SPOOL_KEYS)
        return self.feed.report(self._wall_ns())

    def _spool_dropped(self) -> int:
        return self.feed.dropped if self.feed is not None else 0

    def summary(self) -> str:
        """The counters as ``key=value`` words (the last log line of a run)."""
        words = self.counters.summary()
        if self.feed is not None:
            words += " " + self.feed.summary()
        return words


def run_sink(sink: Sink, options: LoopOptions, *, context: zmq.Context[Any] | None = None) -> int:
    """Run a sink in this (main) thread until SIGTERM or SIGINT, then flush and return 0
    (``EXIT_UNWRITTEN`` when the output could not take what was still kept).

    The handlers only set a flag: the loop notices it within ``poll_interval`` and stops
    through the same drain-and-flush path as any other stop.
    """
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    loop = SubscriberLoop(sink, options, context=context)
    try:
        loop.run(stop.is_set)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if received:
        log.info("stopped by %s", signal.Signals(received[0]).name)
    return EXIT_UNWRITTEN if loop.unwritten else 0

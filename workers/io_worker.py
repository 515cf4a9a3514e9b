"""The I/O worker: one process per local interface address (ARCHITECTURE.md "Processes").

It owns, for its interface:

* the UDP socket on ``(local address, udp_port)`` that receives P2P T->O data and sends every
  O->T heartbeat, plus one socket per multicast group bound to ``(group, udp_port)`` with the
  membership joined on this interface only (``IP_ADD_MEMBERSHIP`` with the interface address,
  ``IP_MULTICAST_IF``, ``IP_MULTICAST_ALL = 0`` so Linux delivers only the (group, interface)
  pairs this socket joined: two workers on two interfaces never see each other's traffic);
* one TCP encapsulation session per PLC, opened from the interface address, driven by the pure
  ``acquisition.session.PlcSession`` (connect, register, keep-alive, a short capped reconnect
  schedule, requests in flight bounded); while it is down the PLC's consumers wait for it
  (``on_session_lost`` / ``on_session_ready``) and reopen the moment it is back;
* one ``acquisition.connection.ConsumerConnection`` per consumer, the class-1 ``Demux``;
* a ZeroMQ PUB socket (explicit SNDHWM and LINGER, never blocks: a full pipe drops and counts)
  publishing ``acquisition.wire`` samples, events and stats;
* a ZeroMQ ROUTER control socket (add / remove / list / status / stop, msgpack maps).

The loop is a thin shell (STYLE.md #3): wait on every socket until the earliest deadline of any
connection, session or periodic task; feed bytes to the core; send what it returns; publish its
events. Time is read from the injected ``clock`` (``time.monotonic`` by default; tests drive the
timers with a fake one). SIGTERM / SIGINT: Forward_Close every connection, UnRegisterSession, exit
0.

Run: ``python -m pyconpro.workers.io_worker --local-address 127.0.0.1 --consumer
plc=plc1,address=127.0.0.2,tag=Counter,rpi_ms=100``. See docs/worker.md.
"""

from __future__ import annotations

import argparse
import ctypes
import heapq
import itertools
import json
import logging
import math
import os
import random
import select
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import zmq
from pyconpro.acquisition import cip, control, cpf, source_time, wire
from pyconpro.acquisition.config import UDP_RCVBUF_DEFAULT, UDP_RCVBUF_MAX
from pyconpro.acquisition.connection import (
    ConnEvent,
    ConsumerConnection,
    JoinGroup,
    LeaveGroup,
    Listen,
    OutageEnded,
    Resolve,
    SendForwardClose,
    SendForwardOpen,
    SendHeartbeat,
    State,
    Unlisten,
)
from pyconpro.acquisition.control import ConsumerDef, consumer_from_spec, consumer_from_text
from pyconpro.acquisition.demux import Demux, DropReason
from pyconpro.acquisition.errors import PyconproError, UsageError
from pyconpro.acquisition.lateness import LatenessHistogram
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_types import LogixType
from pyconpro.acquisition.originator import BackoffPolicy, Originator, Timing, what_code
from pyconpro.acquisition.produce import ProducedTag, ProduceSpec, decode_feed, produce_topic
from pyconpro.acquisition.resolve import (
    Answer,
    CacheRequest,
    NotResolved,
    Resolved,
    Result,
    TypeCache,
)
from pyconpro.acquisition.security import SecurityConfig
from pyconpro.acquisition.session import PlcSession, SessionFailed, SessionReady
from pyconpro.acquisition.value_plan import compile_value_plan
from pyconpro.workers import fastpath
from pyconpro.workers.control_socket import answer_waiting
from pyconpro.workers.forwarder import connectable
from pyconpro.workers.guard import CurveError, ServerGuard, restrict_ipc
from pyconpro.workers.logfmt import LOG_FORMAT
from pyconpro.workers.netif import address_netmask
from pyconpro.workers.produce_server import DEFAULT_TCP_PORT, ProduceServer
from pyconpro.workers.realtime import set_realtime_priority
from pyconpro.workers.session_socket import SessionSocket

log = logging.getLogger("pyconpro.io_worker")

# Linux: deliver to this socket only multicast of groups it joined itself (on the interface it
# joined them on). Python 3.11 does not export the constant.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
DEFAULT_UDP_PORT = 2222
_RECV_BATCH = 64  # datagrams per recv batch; a short batch means the socket is empty
_PREFIX_SIZE = 20  # a class-1 datagram's data follows its 20-byte prefix (class1.PREFIX_SIZE)
# pyzmq flags as plain ints: an enum ``|`` on every send costs more than the send's checks.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
# pyzmq's compiled ``Socket.send``, without the checks of its Python subclass (a Frame, a
# tracker, copy thresholds: none of them applies to a small ``bytes`` body): 1.0 us for a
# topic and a body against 2.4 us. The subclass's when the compiled class is not there.
_SEND: Callable[..., Any] = getattr(getattr(zmq, "backend", None), "Socket", zmq.Socket).send
# zmq.Poller waits in whole milliseconds: the loop polls the ZeroMQ sockets for the floor of its
# wait and waits the rest (under 1 ms) in ``select`` on the UDP sockets, so it wakes at its
# deadline with sub-millisecond precision instead of up to 1 ms late (or early). While such
# short waits follow each other, the ZeroMQ sockets are still polled at least this often.
_ZMQ_POLL_EVERY_S = 0.001
# Linux lets a sleeping thread's timer fire up to its "timer slack" late (50 us by default) to
# group wake-ups; the loop asks for 1 ns (prctl PR_SET_TIMERSLACK), so a heartbeat's wake-up
# is not moved by a varying few tens of microseconds (a receiver sees that as jitter).
_PR_SET_TIMERSLACK = 29
# How long one drain may read before the timers run anyway. Reading to the end first is what
# keeps watchdogs honest (see ``step``); the bound keeps heartbeats on time when datagrams (a
# flood of junk, say) arrive faster than the worker can read them. Watchdogs are then held
# (``data_pending``: the connection's data may be in the buffer), but never longer than
# ``_MAX_WATCHDOG_HOLD_S`` in a row: a dead PLC behind a flood still times out.
_DRAIN_BUDGET_S = 0.002
_MAX_WATCHDOG_HOLD_S = 1.0
# Dropped datagrams (junk, forgeries) are reported in the log at most this often, as a rate
# with the reasons and the last sender, so a flood reads as a flood and not as PLC trouble.
_DROP_REPORT_S = 10.0
_REPORTED_DROPS = (
    DropReason.MALFORMED, DropReason.UNKNOWN_ID, DropReason.WRONG_SOURCE, DropReason.WRONG_PORT,
    DropReason.SEQ_JUMP, DropReason.WRONG_SIZE,
)  # fmt: skip
# A safety net, not a timer: every deadline is in some machine's ``next_deadline()`` (the loop
# waits exactly until the earliest); this only bounds the wait should one be missed.
_MAX_WAIT_S = 1.0
# While a PLC stays unreachable its reconnect attempts (every reconnect_max_s at most) are
# logged at DEBUG; the first failure, this reminder and the return are logged and published.
_SESSION_REMINDER_S = 60.0
DEFAULT_UDP_RCVBUF = UDP_RCVBUF_DEFAULT  # asked per UDP socket; Linux caps it at rmem_max
# The demultiplexer's owner of the O->T heartbeats of the tags this worker produces (one route
# per open connection, workers/produce_server.py); never a consumer key (those hold a '/').
_PRODUCE_OWNER = "\0produce"


@dataclass(slots=True)
class WorkerOptions:
    local_address: str
    udp_port: int = DEFAULT_UDP_PORT
    pub_endpoint: str | None = None
    control_endpoint: str | None = None
    name: str | None = None
    stats_interval_s: float = 5.0
    pub_hwm: int = 100_000
    udp_rcvbuf: int = DEFAULT_UDP_RCVBUF  # SO_RCVBUF asked for every UDP socket (bytes)
    # SCHED_FIFO priority of the thread that opens the worker and of its context's libzmq
    # threads; 0 = normal scheduling (workers/realtime.py).
    realtime_priority: int = 0
    pub_linger_ms: int = 1000
    shutdown_timeout_s: float = 3.0
    request_timeout_s: float = 10.0
    keepalive_s: float = 30.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # Jitter of each PLC session's reconnect schedule (the schedule itself is the PLC's:
    # ConsumerDef.session_policy()); tests set 0 to land on exact deadlines.
    session_jitter: float = 0.25
    timing: Timing = field(default_factory=Timing)
    seed: int | None = None
    security: SecurityConfig = field(default_factory=SecurityConfig)  # CURVE for pub/control
    # What the UDP bind error tells the user to change (the supervisor names the config key).
    udp_port_hint: str = "choose another --udp-port"
    # The level of a FAILED consumer's flight recorder dump (hex of the last exchanges): the
    # pipeline keeps it at WARNING for the log; the Python API asks DEBUG (its caller gets the
    # reason as an exception, the hex only when asking for it).
    recorder_log_level: int = logging.WARNING
    # The level of a connection's routine events (state changes, CIP gaps) in the log: INFO
    # for a worker run by hand; the supervisor asks DEBUG, as the events are on the bus (the
    # stdout sink, `pyconpro tail`, the sinks' events tables) and would show twice.
    event_log_level: int = logging.INFO
    # The bus's public endpoint (connectable), read by one SUB socket for what flows *towards*
    # the worker (docs/wire-format.md): the output images of exclusive-owner assembly consumers
    # (``output/<plc>/<name>/``) and the values of the tags this worker produces
    # (``produce/<name>/``). Produced tags (docs/worker.md "Producing tags") are served on TCP
    # ``tcp_port`` of the local address; their values also come from the control socket's ``set``.
    produce: tuple[ProduceSpec, ...] = ()
    tcp_port: int = DEFAULT_TCP_PORT
    bus_connect: str | None = None
    # The level of rejects, timeouts and errors: WARNING, but for a worker whose every event a
    # stdout sink of the same pipeline prints on the same console (the supervisor asks DEBUG
    # then, so each state change is shown once).
    problem_log_level: int = logging.WARNING

    @property
    def worker_name(self) -> str:
        if self.name:
            return self.name
        suffix = "" if self.udp_port == DEFAULT_UDP_PORT else f"-{self.udp_port}"
        return f"worker-{self.local_address}{suffix}"


@dataclass(slots=True)
class PlcLink:
    """The encapsulation session to one PLC (address, TCP port): ``tcp`` is its socket side,
    ``plc`` the machine that decides (connect, keep-alive, back-off, request matching)."""

    address: str
    port: int
    tcp: SessionSocket
    consumers: set[str] = field(default_factory=set)
    down_since: float | None = None  # the session failed then and is not back yet
    remind_at: float = 0.0  # next "still unreachable" line while it stays down
    # What this PLC's tag table told us, shared by its consumers (one listing in flight serves
    # them all); forgotten when the session is lost or a consumer's learned type is doubted.
    types: TypeCache = field(default_factory=TypeCache)
    sched: float | None = None  # its entry in the worker's timer heap (see WorkerConsumer)

    @property
    def name(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def plc(self) -> PlcSession:
        return self.tcp.plc

    @property
    def up(self) -> bool:
        return self.plc.up


@dataclass(slots=True)
class WorkerConsumer:
    defn: ConsumerDef
    conn: ConsumerConnection
    link: PlcLink
    decoder: Callable[[bytes], Any] | None = None
    decoder_type: LogixType | None = None
    stream: wire.SampleStream | None = None  # hot-path encoder of this consumer's samples
    samples: int = 0
    decode_errors: int = 0
    uid: int = 0  # this consumer's waiter id in its PLC's TypeCache (keys can be reused)
    digest: str = ""  # control.consumer_digest(defn): ``def`` in status, for the supervisor
    type_generation: int | None = None  # the TypeCache generation its learned type came from
    # The time of this consumer's entry in the worker's timer heap, or None: the heap holds an
    # entry at or before the connection's next deadline (never after it); an entry whose time
    # is not ``sched`` is stale and skipped when popped.
    sched: float | None = None
    # The compiled receive path's view of this consumer (workers/fastpath.py), or None on the
    # pure-Python path; ``tap_stream``: it can encode this consumer's samples (its type has a
    # value program), so its routine datagrams may be handled there.
    tap: Any = None
    tap_stream: bool = False
    # Bytes before the data in each T->O datagram's payload: an assembly's run/idle header.
    skip: int = 0
    run_idle: int | None = None  # the last run/idle header the device sent (skip = 4)

    @property
    def producer(self) -> tuple[str, int]:
        """Where this consumer's T->O datagrams come from: the PLC's address and class-1 port."""
        return (self.defn.address, self.defn.udp_port)


#: What the timer heap holds: a consumer (its connection's deadlines) or a PLC link (its
#: session's).
Timed = WorkerConsumer | PlcLink


class IoWorker:
    """``clock``: monotonic seconds, read for every ``now``; ``wall_ns``: the wall clock of
    the bus messages (``t_wall_ns``). Both injectable so tests drive the timers. ``path``: the
    receive path (default: what ``PYCONPRO_FASTPATH`` asks, ``fastpath.choose``; raises
    ``fastpath.FastPathError`` when it asks for the compiled one and that cannot run)."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        path: fastpath.Choice | None = None,
    ) -> None:
        self.opt = options
        self._clock = clock
        self._wall_ns = wall_ns
        self.name = options.worker_name
        rng = random.Random(options.seed) if options.seed is not None else random.SystemRandom()
        self.originator = Originator(rng)
        # The receive path (PYCONPRO_FASTPATH, workers/fastpath.py): pure Python or compiled.
        self.path = path if path is not None else fastpath.choose()
        self._fast: Any = self.path.module
        self.demux: Demux | fastpath.CompiledDemux = (
            Demux() if self._fast is None else fastpath.CompiledDemux(self._fast))
        self._what_in = what_code("T->O")
        self.consumers: dict[str, WorkerConsumer] = {}
        self.links: dict[tuple[str, int], PlcLink] = {}
        self.groups: dict[str, tuple[socket.socket, int]] = {}  # group -> (socket, refcount)
        self.seq = wire.SeqCounter()
        self.counters: dict[str, int] = {
            "datagrams": 0,
            "samples": 0,
            "pub_drops": 0,
            "heartbeats": 0,
            "heartbeats_skipped": 0,
            "heartbeat_send_errors": 0,
            "decode_errors": 0,
            "control_errors": 0,
            "outputs": 0,
            "output_errors": 0,
        }
        self._output_topics: dict[bytes, str] = {}  # output topic -> consumer key
        self.started = clock()
        self._context_rng = random.Random()  # sender contexts; never the seeded originator's
        self.stopping = False
        self._stop_requested = False
        self._shutdown_deadline = 0.0
        self._next_stats = 0.0
        self._pending_since: float | None = None  # datagrams left after every drain since then
        self._drops_report_at = 0.0
        self._drops_reported: dict[DropReason, int] = {}
        self.ctx: zmq.Context[Any] | None = None
        self.guard: ServerGuard | None = None  # set by open()
        self.udp: socket.socket | None = None
        self.udp_port = options.udp_port
        self.pub_endpoint = ""
        self.control_endpoint = ""
        self._closed = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        # Topic prefixes somebody subscribed to on the PUB socket (XPUB reports each prefix
        # when its first subscriber arrives and when its last one leaves).
        self.bus_subscriptions: set[bytes] = set()
        # The deadlines of every connection and PLC session: a heap of (time, tie-breaker,
        # consumer or link) with lazy invalidation (``sched``), so a loop iteration costs
        # O(log N) per due timer, not O(N), and data that moves a watchdog touches nothing.
        self._heap: list[tuple[float, int, Timed]] = []
        self._tie = itertools.count()
        self._held: list[Timed] | None = None  # due again within the running _timers pass
        self._held_before = 0.0
        # Heartbeats the connections asked for, sent together at the end of a timer pass or
        # loop iteration; how late they went out (``stats``: p50 / p99 / max per interval).
        self._heartbeats: list[tuple[WorkerConsumer, SendHeartbeat]] = []
        self.lateness = LatenessHistogram()
        self._zmq_polled = -math.inf  # when the ZeroMQ sockets were last polled
        self._udp_socks: list[socket.socket] = []  # the UDP socket, then one per group
        self._udp_fds: list[int] = []  # their file descriptors (the compiled path reads them)
        self._link_fds: dict[int, PlcLink] = {}  # TCP socket fd -> its link
        self._removing: set[str] = set()  # consumers waiting for CLOSED to be reaped
        self._uids = itertools.count(1)
        self._by_uid: dict[int, WorkerConsumer] = {}  # TypeCache waiter id -> consumer
        self.udp_rcvbuf = 0  # SO_RCVBUF granted by the kernel (Linux: twice what it allows)
        # Producing (opened with the first produced tag): the target's sockets, the poller
        # registrations of its clients, its heartbeat routes (O->T id -> originator source),
        # the SUB socket that reads the values published for the produced tags.
        self.producer: ProduceServer | None = None
        self._produce_fds: dict[int, socket.socket] = {}
        self._produce_routes: dict[int, tuple[str, int]] = {}
        self.feed: zmq.Socket[Any] | None = None
        self._feed_errors: dict[str, str] = {}

    # ================================================================== set-up / tear-down

    def open(self) -> None:
        """Bind every socket. Raises OSError / zmq.ZMQError with the address on failure, and
        CurveError when a key file of ``security`` is unusable (before anything is bound)."""
        self.guard = guard = ServerGuard(self.opt.security)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_rcvbuf = self._set_rcvbuf(self.udp)
        try:
            self.udp.bind((self.opt.local_address, self.opt.udp_port))
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot bind UDP {self.opt.local_address}:"
                f"{self.opt.udp_port} (another worker or program on this address?"
                f" {self.opt.udp_port_hint}): {exc.strerror}",
            ) from None
        self.udp.setblocking(False)
        self.udp_port = self.udp.getsockname()[1]
        self._udp_socks = [self.udp]
        self._udp_fds = [self.udp.fileno()]
        self.ctx = zmq.Context()
        if self.opt.realtime_priority:  # before the first socket: its I/O thread takes it too
            set_realtime_priority(self.opt.realtime_priority, "[worker] realtime_priority",
                                  self.ctx)  # fmt: skip
        # XPUB, not PUB: the same publishing, plus the subscriptions as messages, so ``status``
        # can say when a subscriber's (the supervisor's forwarder's) subscription has arrived
        # and nothing published from then on is lost to the slow-joiner window.
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.SNDHWM, self.opt.pub_hwm)
        self.pub.setsockopt(zmq.LINGER, self.opt.pub_linger_ms)
        # With NODROP a full subscriber pipe makes send(NOBLOCK) fail with EAGAIN instead of
        # dropping silently, so the loss is counted ("pub_drops"); we still never block.
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)
        if isinstance(self.demux, fastpath.CompiledDemux):
            self.demux.c.publisher(self.pub.underlying)  # routine samples are sent from there
        tmp = tempfile.gettempdir()
        self.pub_endpoint = _bind(
            self.pub, self.opt.pub_endpoint or f"ipc://{tmp}/pyconpro-{self.name}.pub", guard
        )
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.SNDHWM, 1000)
        self.control.setsockopt(zmq.RCVHWM, 1000)
        self.control_endpoint = _bind(
            self.control,
            self.opt.control_endpoint or f"ipc://{tmp}/pyconpro-{self.name}.ctl",
            guard,
        )
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.poller = zmq.Poller()
        self.poller.register(self.udp, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)
        self.poller.register(self.pub, zmq.POLLIN)
        self.poller.register(self._wake_r, zmq.POLLIN)
        if self.opt.bus_connect:
            self._open_feed(self.opt.bus_connect)
        for spec in self.opt.produce:
            self.add_produced(spec, self._clock())
        log.info(
            "%s: originator vendor 0x%04X serial 0x%08X (random per start), UDP %s:%d,"
            " PUB %s, control %s",
            self.name,
            self.originator.vendor_id,
            self.originator.serial,
            self.opt.local_address,
            self.udp_port,
            self.pub_endpoint,
            self.control_endpoint,
        )
        asked = self.opt.udp_rcvbuf
        # Linux doubles the value asked for (bookkeeping overhead) and caps the request at
        # net.core.rmem_max, so what it reports back is the number that counts.
        if asked > 0 and self.udp_rcvbuf < 2 * asked:
            log.warning(
                "%s: UDP receive buffer %d bytes granted, %d asked (Linux reports twice"
                " the usable size): raise net.core.rmem_max (sysctl -w"
                " net.core.rmem_max=%d) or lower --udp-rcvbuf, else bursts of datagrams"
                " are dropped by the kernel",
                self.name,
                self.udp_rcvbuf,
                asked,
                asked,
            )
        else:
            log.info(
                "%s: UDP receive buffer %d bytes granted (%d asked)",
                self.name,
                self.udp_rcvbuf,
                asked,
            )

    def _set_rcvbuf(self, sock: socket.socket) -> int:
        """Ask for ``udp_rcvbuf`` (0 = the system default) and return what was granted."""
        if self.opt.udp_rcvbuf > 0:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.opt.udp_rcvbuf)
            except OSError as exc:  # never fatal: the default buffer still works
                log.warning("SO_RCVBUF %d refused: %s", self.opt.udp_rcvbuf, exc)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def close(self) -> None:
        self._closed = True
        if self.producer is not None:
            self.producer.close()
        if self.feed is not None:
            self.feed.close(0)
            self.feed = None
        for link in list(self.links.values()):
            self._close_link(link)
        for group in list(self.groups):
            sock, _ = self.groups.pop(group)
            sock.close()
        for s in (self.udp, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        if self.ctx is not None:
            if isinstance(self.demux, fastpath.CompiledDemux):
                self.demux.c.publisher(0)  # it holds the libzmq socket closed next
            self.pub.close()
            self.control.close()
            if self.guard is not None:
                self.guard.close()
            self.ctx.term()
            self.ctx = None

    # ================================================================== consumers

    def add_consumer(
        self, defn: ConsumerDef, now: float, *, outage_since: float | None = None
    ) -> WorkerConsumer:
        """Start consuming ``defn``. ``outage_since``: its data stopped then, in a previous
        worker (see ``control.AddRequest``); its first sample here ends that outage."""
        if self.stopping:
            raise UsageError("the worker is stopping; not adding consumers")
        if defn.key in self.consumers:
            raise UsageError(
                f"consumer {defn.key!r} exists already; remove it first or give another 'alias'"
            )
        conn = ConsumerConnection(
            defn.params(), self.originator, backoff=self.opt.backoff, timing=self.opt.timing
        )
        policy = defn.session_policy()
        link = self.links.get((defn.address, defn.port))
        if link is None:
            link = self.links[(defn.address, defn.port)] = self._new_link(
                PlcSession(
                    defn.address,
                    defn.port,
                    rng=self.originator.rng,
                    context_rng=self._context_rng,
                    request_timeout=self.opt.request_timeout_s,
                    keepalive_s=self.opt.keepalive_s,
                    backoff=policy.backoff(self.opt.session_jitter),
                    connect_timeout=policy.connect_timeout_s,
                    max_in_flight=policy.max_in_flight,
                )
            )
        else:  # the PLC's session settings: the last consumer added says what they are now
            link.plc.configure(
                backoff=policy.backoff(self.opt.session_jitter),
                connect_timeout=policy.connect_timeout_s,
                max_in_flight=policy.max_in_flight,
            )
        link.consumers.add(defn.key)
        c = self.consumers[defn.key] = WorkerConsumer(defn, conn, link, uid=next(self._uids),
                                                      digest=control.consumer_digest(defn))
        if conn.assembly is not None:
            c.skip = conn.assembly.to_header
            if not conn.assembly.heartbeat:
                self._output_topics[wire.topic_for_output(defn.plc, defn.topic_name)] = defn.key
                if self.feed is not None:
                    self.feed.subscribe(wire.topic_for_output(defn.plc, defn.topic_name))
        if self._fast is not None:
            c.tap = self._fast.Tap(defn.key)
            c.tap.recorder(conn.recorder.buf, conn.recorder.size, self._what_in)
        self._by_uid[c.uid] = c
        try:
            if link.plc.down:
                conn.on_session_lost(now)  # it waits for the session like the others
            conn.start(now, outage_since=outage_since)
            self._pump(c, now)
        except Exception as exc:
            # A refused add leaves nothing behind: not the consumer (its key stays free for a
            # correct add), nor a session opened only for it.
            self._forget(c)
            log.error("%s: add refused: %s; the consumer was not added", defn.key, exc)
            self._publish(self._event(defn.plc, defn.topic_name, kind=wire.EventKind.ERROR.value,
                                      message=f"add refused: {exc}; the consumer was not added"))
            raise
        return c

    def remove_consumer(self, key: str, now: float) -> None:
        c = self.consumers.get(key)
        if c is None:
            raise UsageError(f"no consumer {key!r}; 'list' shows the keys (<plc>/<tag or alias>)")
        self._removing.add(key)
        self._sync(c)
        c.conn.stop(now)
        self._pump(c, now)

    def _reap(self) -> None:
        if not self._removing:
            return
        for key in list(self._removing):
            c = self.consumers.get(key)
            if c is None:
                self._removing.discard(key)
            elif c.conn.state is State.CLOSED:
                self._removing.discard(key)
                self._forget(c)

    def _forget(self, c: WorkerConsumer) -> None:
        """Drop every trace of ``c`` (closed, or an add that failed), and its PLC's session
        when no other consumer uses it."""
        key = c.defn.key
        if self.consumers.get(key) is c:
            del self.consumers[key]
        self._by_uid.pop(c.uid, None)
        c.link.types.forget(c.uid)
        topic = wire.topic_for_output(c.defn.plc, c.defn.topic_name)
        if self._output_topics.get(topic) == key:
            del self._output_topics[topic]
            if self.feed is not None:
                self.feed.unsubscribe(topic)
        c.sched = None  # its heap entries are stale from now on
        c.link.consumers.discard(key)
        if not c.link.consumers and not self.stopping:
            self._close_link(c.link)
            self.links.pop((c.link.address, c.link.port), None)

    # ================================================================== producing tags

    def add_produced(self, spec: ProduceSpec, now: float) -> ProducedTag:
        """Produce ``spec`` for Logix consumers: the first one opens the TCP listener (OSError
        naming the address when it cannot) and the bus subscription."""
        if self.producer is None:
            self._open_producer()
        assert self.producer is not None
        self.producer.add(spec)
        tag = self.producer.endpoint.tags.find(spec.name)
        assert tag is not None
        if self.feed is not None:
            self.feed.subscribe(produce_topic(spec.name))
        self._produce_sync(now)
        log.info("%s: producing %s (%s, %d bytes, up to %d consumers)", self.name, spec.name,
                 spec.type, tag.size(), spec.max_consumers)  # fmt: skip
        return tag

    def set_produced(self, name: str, value: Any, now: float, source: str) -> ProducedTag:
        """The latest value of a produced tag (UsageError: unknown tag, or it does not fit)."""
        if self.producer is None:
            raise UsageError(f"no produced tag {name!r}: this worker produces no tags")
        return self.producer.endpoint.set_value(name, value, now, source)

    def _open_producer(self) -> None:
        assert self.udp is not None and self.ctx is not None and self.guard is not None
        netmask = address_netmask(self.opt.local_address)
        if netmask is None:
            log.warning("%s: the netmask of %s is unknown: multicast consumers of the produced"
                        " tags are accepted from any subnet", self.name, self.opt.local_address)
        server = ProduceServer(self.opt.local_address, self.opt.tcp_port, self.udp_port,
                               self._send_produced, self._clock, netmask)
        server.open()
        self.producer = server
        # Multicast T->O leaves through this interface, TTL 1 (protocol.md 6.7).
        self.udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            socket.inet_aton(self.opt.local_address))
        self.udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)

    def _open_feed(self, endpoint: str) -> None:
        """The SUB socket on the bus for what flows towards the worker: output images and
        produced tags' values (subscribed per consumer and per produced tag)."""
        assert self.ctx is not None and self.guard is not None
        feed = self.ctx.socket(zmq.SUB)
        feed.setsockopt(zmq.LINGER, 0)
        feed.setsockopt(zmq.RCVHWM, 10_000)
        self.guard.secure_connect(feed, endpoint)
        feed.connect(connectable(endpoint))
        for topic in self._output_topics:
            feed.subscribe(topic)
        self.poller.register(feed, zmq.POLLIN)
        self.feed = feed

    def _send_produced(self, data: bytes, address: tuple[str, int]) -> None:
        assert self.udp is not None
        try:
            self.udp.sendto(data, address)
            self.counters["produced"] = self.counters.get("produced", 0) + 1
        except OSError as exc:
            self.counters["produce_send_errors"] = self.counters.get("produce_send_errors", 0) + 1
            log.debug("%s: T->O datagram to %s:%d not sent: %s", self.name, *address, exc)

    def _produce_sync(self, now: float) -> None:
        """After the producer handled something: its sockets in the poller, the heartbeat
        routes of its open connections in the demultiplexer."""
        server = self.producer
        if server is None:
            return
        server.pump(now)
        socks = {s.fileno(): s for s in server.fds()}
        for fd in [fd for fd in self._produce_fds if fd not in socks]:
            try:
                self.poller.unregister(self._produce_fds.pop(fd))
            except KeyError:
                pass
        for fd, sock in socks.items():
            old = self._produce_fds.get(fd)
            if old is not None and old is not sock:  # the number was reused
                try:
                    self.poller.unregister(old)
                except KeyError:
                    pass
            self._produce_fds[fd] = sock
            flags = zmq.POLLIN | (zmq.POLLOUT if server.wants_write(fd) else 0)
            self.poller.register(sock, flags)
        want = {cid: src for src, cid in server.routes()}
        for cid, src in list(self._produce_routes.items()):
            if want.get(cid) != src:
                self.demux.remove(src, cid, _PRODUCE_OWNER)
                del self._produce_routes[cid]
        for cid, src in want.items():
            if cid not in self._produce_routes:
                self.demux.add(src, cid, 0, _PRODUCE_OWNER)
                self._produce_routes[cid] = src

    def _produce_heartbeat(self, data: bytes, now: float) -> None:
        """A datagram the demultiplexer routed to the producer: a consumer's heartbeat (its
        source was checked there against the route)."""
        server = self.producer
        cid = ProduceServer.connection_id(data)
        src = self._produce_routes.get(cid) if cid is not None else None
        if server is not None and src is not None:
            server.on_heartbeat(data, src[0], now)

    def _on_feed(self, now: float) -> None:
        """What the bus sends towards the worker: output images (``output/``) and produced
        tags' values (``produce/``), at most 1000 messages per wake-up."""
        assert self.feed is not None
        for _ in range(1000):
            try:
                frames = self.feed.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frames and frames[0].startswith(b"output/"):
                self._on_output(frames, now)
            else:
                self._on_produce_value(frames, now)

    def _on_produce_value(self, frames: list[bytes], now: float) -> None:
        """A value published on ``produce/<name>/``: a map with ``value`` (or ``raw`` bytes)."""
        self.counters["produce_feed"] = self.counters.get("produce_feed", 0) + 1
        try:
            name, value = decode_feed(frames)
            self.set_produced(name, value, now, "bus")
            self._feed_errors.pop(name, None)
        except UsageError as exc:
            self.counters["produce_feed_errors"] = self.counters.get("produce_feed_errors", 0) + 1
            key = frames[0].decode("utf-8", "replace") if frames else "?"
            if self._feed_errors.get(key) != str(exc):  # once per tag and problem
                self._feed_errors[key] = str(exc)
                log.warning("%s: value on %s refused: %s", self.name, key, exc)

    # ================================================================== connection outputs

    def _pump(self, c: WorkerConsumer, now: float) -> None:
        """Carry out what the connection asked for."""
        conn = c.conn
        for out in conn.take_outputs():
            if isinstance(out, SendHeartbeat):
                self._heartbeats.append((c, out))  # sent with the others due (_send_heartbeats)
            elif isinstance(out, ConnEvent):
                self._publish_event(c, out)
            elif isinstance(out, SendForwardOpen):
                self._send_forward_open(c, out, now)
            elif isinstance(out, SendForwardClose):
                self._send_forward_close(c, out, now)
            elif isinstance(out, Listen):
                # Believed only from the PLC's class-1 port, and no further ahead than the
                # connection's timeout multiplier (acquisition/demux.py). On the compiled
                # path the owner is the consumer's tap, and the connection's first datagram
                # comes to Python (express off until it decided: an outage may end there).
                if c.tap is not None:
                    c.tap.express = 0
                self.demux.add(c.producer, out.connection_id, out.data_size, self._owner(c),
                               max_jump=4 << c.defn.multiplier)  # fmt: skip
            elif isinstance(out, Unlisten):
                self.demux.remove(c.producer, out.connection_id, self._owner(c))
            elif isinstance(out, JoinGroup):
                self._join(out.group)
            elif isinstance(out, LeaveGroup):
                self._leave(out.group)
            elif isinstance(out, Resolve):
                self._resolve(c, out.refresh)
            elif isinstance(out, OutageEnded):
                self._publish_outage(c, out)
        self._schedule(c, conn.next_deadline())

    @staticmethod
    def _owner(c: WorkerConsumer) -> Any:
        """Whom the demultiplexer delivers ``c``'s datagrams to: its key, or its tap."""
        return c.defn.key if c.tap is None else c.tap

    def _sync(self, c: WorkerConsumer) -> None:
        """Tell ``c``'s connection about the datagrams the compiled path handled for it since
        the last time (its watchdog, its counters): before anything reads or moves it."""
        if c.tap is not None and c.tap.pending:
            n, last = c.tap.take()
            c.samples += n
            c.conn.on_data(last, 0, n)

    def _schedule(self, item: Timed, d: float | None) -> None:
        """Make sure the timer heap has an entry for ``item`` (a consumer or a PLC link) at
        or before its next deadline ``d``. Data only moves a running connection's watchdog
        later, so the hot path pushes nothing; an entry left early is re-checked when it comes
        due (``_timers``)."""
        if d is None or (item.sched is not None and item.sched <= d):
            return
        item.sched = d
        if self._held is not None and d <= self._held_before:
            self._held.append(item)  # due again in this pass: next pass (no endless loop)
        else:
            heapq.heappush(self._heap, (d, next(self._tie), item))

    def _send_heartbeats(self) -> None:
        """Send the heartbeats the connections asked for since the last call, in one go, and
        record how late each went out against its slot on the absolute schedule."""
        batch, self._heartbeats = self._heartbeats, []
        if not batch or self.udp is None:
            return
        counters, lateness = self.counters, self.lateness
        t = self._clock()
        for c, out in batch:
            lateness.add(t - out.due)
            counters["heartbeats_skipped"] += out.skipped
        if self._fast is not None:  # one sendmmsg for all of them
            sent, failed = self._fast.sendmmsg(
                self.udp.fileno(), [(out.datagram, c.defn.address, out.port) for c, out in batch])
            counters["heartbeats"] += sent
            counters["heartbeat_send_errors"] += failed
            return
        sendto = self.udp.sendto
        for c, out in batch:
            try:
                sendto(out.datagram, (c.defn.address, out.port))
                counters["heartbeats"] += 1
            except OSError as exc:  # e.g. no route: the watchdog will tell the story
                counters["heartbeat_send_errors"] += 1
                log.debug("%s: heartbeat not sent: %s", c.defn.key, exc)

    def _send_forward_open(self, c: WorkerConsumer, out: SendForwardOpen, now: float) -> None:
        req = out.request
        extra: tuple[cpf.Item, ...] = ()
        if self.udp_port != DEFAULT_UDP_PORT and not c.defn.multicast:
            # Ask for P2P data on our port (protocol.md 1, 6.7): only when it is not 2222.
            extra = (
                cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("0.0.0.0", self.udp_port)),
            )

        def on_reply(reply: cip.Reply, items: tuple[cpf.Item, ...]) -> None:
            if self._by_uid.get(c.uid) is c:  # else its add failed: nothing to open
                c.conn.on_forward_open_reply(self._clock(), req, reply, items)
                self._pump(c, self._clock())

        def on_error(reason: str) -> None:
            if self._by_uid.get(c.uid) is c:
                c.conn.on_request_error(self._clock(), req, reason)
                self._pump(c, self._clock())

        self._request(c.link, req.encode(), extra, on_reply, on_error, now)

    def _send_forward_close(self, c: WorkerConsumer, out: SendForwardClose, now: float) -> None:
        req = out.request
        c.conn.recorder.record_out(now, "Forward_Close", req.encode())

        def on_reply(reply: cip.Reply, items: tuple[cpf.Item, ...]) -> None:
            if out.awaited:
                c.conn.on_forward_close_reply(self._clock(), req, reply)
                self._pump(c, self._clock())
            else:
                log.info(
                    "%s: best-effort Forward_Close of serial 0x%04X answered status 0x%02X",
                    c.defn.key,
                    req.connection_serial,
                    reply.status,
                )

        def on_error(reason: str) -> None:
            if out.awaited:
                c.conn.on_request_error(self._clock(), req, reason)
                self._pump(c, self._clock())

        self._request(c.link, req.encode(), (), on_reply, on_error, now)

    def _resolve(self, c: WorkerConsumer, refresh: bool) -> None:
        """Learn ``c``'s type through its PLC's shared ``TypeCache``: a hit is answered now, a
        miss waits for the one listing in flight for that PLC."""
        cache = c.link.types
        if refresh and cache.refresh_for(c.type_generation):
            log.info(
                "PLC %s: %s doubts its learned type; reading the tag table again"
                " (type cache generation %d)",
                c.link.name,
                c.defn.key,
                cache.generation,
            )
        cache.resolve(c.defn.tag, c.uid)
        self._type_requests(c.link)

    def _type_requests(self, link: PlcLink) -> None:
        """Carry out what the PLC's type cache asks (at most one request in flight) and deliver
        its answers."""
        cache = link.types
        for out in cache.take_outputs():
            match out:
                case CacheRequest(token, message, what):

                    def on_reply(
                        reply: cip.Reply, items: tuple[cpf.Item, ...], token: int = token
                    ) -> None:
                        cache.on_reply(token, reply)
                        self._type_requests(link)

                    def on_error(reason: str, token: int = token) -> None:
                        cache.on_error(token, f"size discovery: {reason}")
                        self._type_requests(link)

                    log.debug("PLC %s: type cache asks %s", link.name, what)
                    self._request(link, message, (), on_reply, on_error, self._clock())
                case Answer(waiter, _, result, generation):
                    c = self._by_uid.get(waiter) if isinstance(waiter, int) else None
                    if c is not None:
                        self._deliver_type(c, result, generation)

    def _deliver_type(self, c: WorkerConsumer, result: Result, generation: int) -> None:
        t = self._clock()
        if isinstance(result, Resolved):
            c.type_generation = generation
            c.conn.on_resolved(t, result.tag_bytes, result.tag_type)
        elif isinstance(result, NotResolved):
            c.conn.on_resolve_error(t, result.message, result.permanent)
        self._pump(c, t)

    # ================================================================== PLC sessions

    def _new_link(self, plc: PlcSession) -> PlcLink:
        """The link of ``plc``'s session: its socket waits in the worker's poller, the
        session's news go to ``_link_ready`` / ``_link_failed``, and after each pump its next
        deadline is in the timer heap."""
        link: PlcLink  # made below, before its socket can call back

        def watch(sock: socket.socket, write: bool) -> None:
            self._link_fds[sock.fileno()] = link
            self.poller.register(sock, zmq.POLLIN | (zmq.POLLOUT if write else 0))

        def on_session(out: SessionReady | SessionFailed, now: float) -> None:
            if isinstance(out, SessionReady):
                self._link_ready(link, out.handle, now)
            else:
                self._link_failed(link, out, now)

        tcp = SessionSocket(plc, self.opt.local_address, watch=watch, unwatch=self._unwatch_link,
                            on_session=on_session,
                            pumped=lambda: self._schedule(link, plc.next_deadline()))
        link = PlcLink(plc.host, plc.port, tcp, types=TypeCache(plc=plc.name))
        return link

    def _unwatch_link(self, sock: socket.socket) -> None:
        try:
            self.poller.unregister(sock)
        except KeyError:
            pass
        self._link_fds.pop(sock.fileno(), None)

    def _request(
        self,
        link: PlcLink,
        message: bytes,
        extra: tuple[cpf.Item, ...],
        on_reply: Callable[[cip.Reply, tuple[cpf.Item, ...]], None],
        on_error: Callable[[str], None],
        now: float,
    ) -> None:
        if self._closed:
            on_error("the worker is exiting")
            return
        # While stopping, connect at once whatever the back-off says: Forward_Close needs it.
        link.tcp.request(message, extra, on_reply, on_error, now, force=self.stopping)

    def _link_consumers(self, link: PlcLink) -> list[WorkerConsumer]:
        return [self.consumers[k] for k in link.consumers if k in self.consumers]

    def _link_failed(self, link: PlcLink, failed: SessionFailed, now: float) -> None:
        """The session failed (or an attempt to make it did); the machine retries after
        ``failed.retry_in``. The requests it took with it fail right after this, and its
        consumers, told first, wait for the session instead of backing off."""
        delay = failed.retry_in or 0.0
        # The PLC may have been restarted or downloaded: a type learned from it is learned again
        # before the next Forward_Open (issue 6).
        link.types.invalidate()
        for c in self._link_consumers(link):
            c.conn.on_session_lost(now)
        # Consumers waiting for a type learn now that there is no session (they wait for it).
        self._type_requests(link)
        if link.down_since is None:  # up (or never up) until now: say it once, loudly
            link.down_since = now
            link.remind_at = now + _SESSION_REMINDER_S
            log.warning("PLC %s: %s; reconnecting in %.2f s (then every %.2f s at most; its"
                        " consumers wait for it)", link.name, failed.reason, delay,
                        link.plc.backoff.cap_s)  # fmt: skip
            self._publish_plc_event(
                link,
                wire.EventKind.ERROR,
                f"encapsulation session to {link.name} lost: {failed.reason}; reconnecting in"
                f" {delay:.2f} s",
            )
        elif now >= link.remind_at:
            link.remind_at = now + _SESSION_REMINDER_S
            log.warning("PLC %s: still no session after %.0f s (%d attempts): %s", link.name,
                        now - link.down_since, link.plc.attempt, failed.reason)  # fmt: skip
        else:
            log.debug("PLC %s: %s; next attempt in %.2f s", link.name, failed.reason, delay)

    def _link_ready(self, link: PlcLink, handle: int, now: float) -> None:
        """The session is registered: every consumer waiting for it goes now (the session
        paces their requests, ``max_in_flight``)."""
        log.info("session 0x%08X registered with PLC %s from %s", handle, link.name,
                 self.opt.local_address)  # fmt: skip
        if link.down_since is not None:
            down, link.down_since = now - link.down_since, None
            self._publish_plc_event(
                link, wire.EventKind.STATE, f"encapsulation session to {link.name} back after"
                f" {down:.2f} s down")  # fmt: skip
        for c in self._link_consumers(link):
            c.conn.on_session_ready(now)
            self._pump(c, now)

    def _publish_plc_event(self, link: PlcLink, kind: wire.EventKind, message: str) -> None:
        """A PLC-wide event (``event/<plc>//``)."""
        plc = next((c.defn.plc for c in self._link_consumers(link)), link.address)
        self._publish(self._event(plc, "", kind=kind.value, message=message))

    def _close_link(self, link: PlcLink) -> None:
        """UnRegisterSession (when registered) and close; pending requests fail."""
        link.tcp.close(self._clock())

    def _mono_ns(self) -> int:
        return round(self._clock() * 1e9)

    # ================================================================== multicast

    def _join(self, group: str) -> None:
        entry = self.groups.get(group)
        if entry is not None:
            self.groups[group] = (entry[0], entry[1] + 1)
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # Several workers (interfaces) may consume the same group on this host.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            self._set_rcvbuf(sock)
            sock.bind((group, self.udp_port))
            local = socket.inet_aton(self.opt.local_address)
            sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + local
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, local)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.error("cannot join multicast %s on %s: %s", group, self.opt.local_address, exc)
            return
        self.groups[group] = (sock, 1)
        self._udp_socks.append(sock)
        self._udp_fds = [s.fileno() for s in self._udp_socks]
        self.poller.register(sock, zmq.POLLIN)
        log.info("joined multicast %s on %s port %d", group, self.opt.local_address, self.udp_port)

    def _leave(self, group: str) -> None:
        entry = self.groups.get(group)
        if entry is None:
            return
        sock, refs = entry
        if refs > 1:
            self.groups[group] = (sock, refs - 1)
            return
        del self.groups[group]
        self._udp_socks.remove(sock)
        self._udp_fds = [s.fileno() for s in self._udp_socks]
        self.poller.unregister(sock)
        sock.close()  # closing drops the membership
        log.info("left multicast %s", group)

    # ================================================================== receive path

    def _drain(self) -> bool:
        """Read the UDP sockets, a batch from each in turn, until every one is empty (its
        batch came back short) or ``_DRAIN_BUDGET_S`` is spent; False when one still had
        datagrams."""
        if isinstance(self.demux, fastpath.CompiledDemux):
            drained, slow = self.demux.c.drain(self._udp_fds, self._clock, self._wall_ns,
                                               _DRAIN_BUDGET_S)
            if slow:
                self._deliver_slow(slow)
            return bool(drained)
        pending = self._udp_socks
        clock = self._clock
        deadline = clock() + _DRAIN_BUDGET_S
        while pending:
            pending = [sock for sock in pending if self._drain_udp(sock) == _RECV_BATCH]
            if pending and clock() >= deadline:
                return False
        return True

    def _drain_udp(self, sock: socket.socket) -> int:
        """Read up to ``_RECV_BATCH`` datagrams, then handle them; return how many reads were
        made (fewer: the socket is empty). One clock read for the batch: its datagrams were
        all read by then."""
        batch = []
        recvfrom = sock.recvfrom
        reads = 0
        while reads < _RECV_BATCH:
            reads += 1
            try:
                batch.append(recvfrom(2048))
            except (BlockingIOError, InterruptedError):
                reads -= 1
                break
            except OSError as exc:  # ICMP errors surface here on Linux; the next read goes on
                log.debug("UDP receive error: %s", exc)
        if batch:
            self._deliver(batch)
        return reads

    def _deliver(self, batch: list[tuple[bytes, tuple[str, int]]]) -> None:
        """Admit and publish a batch of datagrams read just now."""
        # The time the datagrams were read, never a time taken before a possible pause of
        # this process: the watchdog counts from it.
        now = self._clock()
        self.counters["datagrams"] += len(batch)
        assert isinstance(self.demux, Demux)  # the pure-Python path
        admit = self.demux.admit
        consumers = self.consumers
        t_wall = t_mono = 0
        for data, addr in batch:
            route = admit(data, addr)
            if route is None:
                continue
            if not t_wall:
                t_wall, t_mono = self._wall_ns(), round(now * 1e9)
            raw = data[_PREFIX_SIZE:]
            # Nothing below changes routes (no Unlisten comes from data), so the owners list
            # can be walked as it is.
            for key in route.owners:
                c = consumers.get(str(key))
                if c is None:
                    if key == _PRODUCE_OWNER:
                        self._produce_heartbeat(data, now)
                    continue
                conn = c.conn
                conn.recorder.record_in(now, "T->O", data)
                conn.on_data(now, route.missed)
                if conn.has_outputs:  # a gap, the end of an outage
                    self._pump(c, now)
                self._publish_sample(c, route.cip_sequence, raw, t_wall, t_mono)

    def _deliver_slow(self, slow: list[tuple[Any, bytes, int, int, float, int]]) -> None:
        """The datagrams the compiled path handed over (a gap, the first after an outage or
        an open, a consumer without a value program), in order: what ``_deliver`` does with
        each, then its consumer's routine datagrams go back to the compiled path."""
        consumers = self.consumers
        for tap, data, missed, cseq, now, t_wall in slow:
            if tap == _PRODUCE_OWNER:
                self._produce_heartbeat(data, now)
                continue
            c = consumers.get(tap.key)
            if c is None or c.tap is not tap:
                continue
            self._sync(c)  # what the compiled path took for it before this one
            conn = c.conn
            conn.recorder.record_in(now, "T->O", data)
            conn.on_data(now, missed)
            if conn.has_outputs:
                self._pump(c, now)
            self._publish_sample(c, cseq, data[_PREFIX_SIZE:], t_wall, round(now * 1e9))
            if c.tap_stream and conn.data_is_routine:
                tap.gap = conn.counters.gap
                tap.express = 1

    def _sample_stream(self, c: WorkerConsumer) -> wire.SampleStream | None:
        """The decoder and stream of ``c``'s current type, built when it changed (and its
        tap's, on the compiled path: the same bytes, numbered in the same table)."""
        t = c.conn.tag_type
        c.decoder_type = t
        c.decoder = compile_decoder(t) if t is not None else None
        c.stream = None  # never the old type's name on the new type's values
        try:
            c.stream = wire.SampleStream(
                self.name, c.defn.plc, c.defn.topic_name, t.name if t is not None else None,
                self.seq,
            )
        except UsageError as exc:  # names that break the schema: refused at add time
            log.error("%s: cannot publish samples: %s", c.defn.key, exc)
        if c.tap is not None:
            # A tag with the controller's time (``source_time``) is published from Python:
            # the compiled encoder writes no ``st``.
            plan = (compile_value_plan(t)
                    if c.stream is not None and c.defn.source_time is None else None)
            size = c.conn.tag_bytes
            # An assembly's T->O run/idle header is taken off in Python (``_publish_sample``).
            c.tap_stream = plan is not None and size is not None and not c.skip
            if c.stream is not None and plan is not None and size is not None:
                c.tap.stream(c.stream.topic, c.stream.fragments(), plan, size, self.seq.table)
            else:
                c.tap.stream(None)  # its samples are published from Python
        return c.stream

    def _publish_sample(
        self, c: WorkerConsumer, cip_seq: int, raw: bytes, t_wall: int, t_mono: int
    ) -> None:
        # The connection hands out a new type object only when the type changed (learned again
        # after a download): rebuild the decoder and the stream (its type name) then.
        if c.skip:
            self._run_idle(c, raw)
            raw = raw[c.skip:]
        stream = c.stream
        if c.conn.tag_type is not c.decoder_type or stream is None:
            stream = self._sample_stream(c)
            if stream is None:
                return
        value: Any = None
        if c.decoder is not None:
            try:
                value = c.decoder(raw)
            except Exception:  # noqa: BLE001 - a decoder bug must not stop the receive loop
                c.decode_errors += 1
                self.counters["decode_errors"] += 1
        c.samples += 1
        self.counters["samples"] += 1
        at = c.conn.source_at
        try:
            body = stream.encode(t_wall, t_mono, cip_seq, c.conn.counters.gap, value, raw,
                                 None if at is None else source_time.read(raw, at))
            _SEND(self.pub, stream.topic, _SNDMORE_NOBLOCK)
            _SEND(self.pub, body, _NOBLOCK)
        except zmq.Again:
            self.counters["pub_drops"] += 1
        except UsageError as exc:  # a decoded value msgpack cannot carry: a bug, not fatal
            log.error("cannot publish on %r: %s", stream.topic, exc)

    def _run_idle(self, c: WorkerConsumer, raw: bytes) -> None:
        """The device's run/idle header: an event when it changes (run <-> idle)."""
        header = int.from_bytes(raw[:4], "little")
        if header == c.run_idle:
            return
        first, c.run_idle = c.run_idle is None, header
        mode = "run" if header & 1 else "idle"
        if first and mode == "run":
            return
        self._publish_event(c, ConnEvent("state", f"the device reports {mode} mode"
                                         f" (run/idle header 0x{header:08X})"))

    def _on_output(self, frames: list[bytes], now: float) -> None:
        """An output image (docs/wire-format.md "Output images"): the latest one of each
        exclusive-owner consumer goes out with its next O->T datagram."""
        if len(frames) != 2:  # not two frames: not an output image
            self.counters["output_errors"] += 1
            return
        topic, body = frames
        key = self._output_topics.get(topic)
        c = self.consumers.get(key) if key is not None else None
        if c is None:
            return
        try:
            image = wire.decode_output(body)
            c.conn.set_output(now, image)
        except UsageError as exc:
            self.counters["output_errors"] += 1
            log.debug("%s: output image refused: %s", c.defn.key, exc)
            self._pump(c, now)  # the refusal's event
            return
        self.counters["outputs"] += 1
        self._pump(c, now)

    def _publish_event(self, c: WorkerConsumer, ev: ConnEvent) -> None:
        level = (self.opt.event_log_level if ev.kind in ("state", "gap")
                 else self.opt.problem_log_level)
        log.log(
            level,
            "%s: %s%s",
            c.defn.key,
            f"{ev.state_from} -> {ev.state_to}: " if ev.state_to else "",
            ev.message,
        )
        if c.conn.state is State.FAILED and ev.state_to == "FAILED":
            for line in c.conn.recorder.dump():
                log.log(self.opt.recorder_log_level, "%s flight recorder: %s", c.defn.key, line)
        self._publish(
            self._event(
                c.defn.plc,
                c.defn.topic_name,
                kind=ev.kind,
                state_from=ev.state_from,
                state_to=ev.state_to,
                cip_general=ev.cip_general,
                cip_extended=ev.cip_extended,
                status_text=ev.status_text,
                message=ev.message,
            )
        )

    def _event(self, plc: str, tag: str, **fields: Any) -> wire.Event:
        """An event of this worker about ``plc`` / ``tag`` (``""``: the whole PLC), dated now
        unless ``fields`` give its times; ``seq`` is numbered when it is published."""
        fields.setdefault("t_wall_ns", self._wall_ns())
        fields.setdefault("t_mono_ns", self._mono_ns())
        return wire.Event(seq=0, publisher=self.name, plc=plc, tag=tag, **fields)

    def _publish_outage(self, c: WorkerConsumer, out: OutageEnded) -> None:
        """The outage record of ``c``'s data: an ``outage`` event whose tw/tm are its end.
        Wall times are the monotonic ones moved by the current offset between the clocks, so
        the duration is the monotonic one."""
        offset = self._wall_ns() - self._mono_ns()
        start, end = round(out.start * 1e9), round(out.end * 1e9)
        rpi_ms = out.rpi_us / 1000
        what = "data back" if out.resumed else "stopped before its data came back"
        message = (
            f"outage of {out.end - out.start:.3f} s ({out.cause}), {what}: {out.expected}"
            f" sample(s) expected at {rpi_ms:g} ms were not received"
        )
        log.info("%s: %s", c.defn.key, message)
        self._publish(
            self._event(
                c.defn.plc,
                c.defn.topic_name,
                t_wall_ns=offset + end,
                t_mono_ns=end,
                kind=wire.EventKind.OUTAGE.value,
                message=message,
                outage_start_wall_ns=offset + start,
                outage_start_mono_ns=start,
                expected=out.expected,
                rpi_us=out.rpi_us,
                cause=out.cause,
                resumed=out.resumed,
            )
        )

    def _publish(self, msg: wire.Sample | wire.Event | wire.Stats) -> None:
        topic = msg.topic
        try:
            # ``seq`` is per topic (wire.SeqCounter), assigned here in publication order.
            _, body = replace(msg, seq=self.seq.next(topic)).encode()
            self.pub.send_multipart([topic, body], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counters["pub_drops"] += 1
        except UsageError as exc:  # a value that breaks the schema: a bug, but not fatal
            log.error("cannot publish on %r: %s", topic, exc)

    def _on_subscriptions(self) -> None:
        """Track the bus subscriptions (XPUB delivers ``\x01prefix`` / ``\x00prefix``)."""
        for _ in range(1000):
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg or msg[0] not in (0, 1):
                continue
            if msg[0] == 1:
                self.bus_subscriptions.add(msg[1:])
            else:
                self.bus_subscriptions.discard(msg[1:])

    def _counters(self) -> dict[str, int]:
        """The worker's counters, the compiled path's included (every consumer synced)."""
        for c in self.consumers.values():
            self._sync(c)
        counters = dict(self.counters)
        if isinstance(self.demux, fastpath.CompiledDemux):
            fast = self.demux.c
            counters["datagrams"] += fast.datagrams
            counters["samples"] += fast.samples
            counters["pub_drops"] += fast.pub_drops
        counters.update(self.demux.counters())
        counters["fastpath"] = int(self._fast is not None)
        return counters

    def _publish_stats(self) -> None:
        counters: dict[str, int | float] = dict(self._counters())
        counters["consumers"] = len(self.consumers)
        states = Counter(c.conn.state for c in self.consumers.values())
        for st in State:
            counters[f"state_{st.value.lower()}"] = states[st]
        counters["sessions_up"] = sum(1 for link in self.links.values() if link.up)
        # How late the heartbeats of this interval went out (0 when none was sent).
        for k, v in self.lateness.summary_ms().items():
            counters[f"heartbeat_late_{k}"] = v or 0.0
        self.lateness.reset()
        counters.update(self._socket_counters())
        counters["uptime_s"] = round(self._clock() - self.started, 3)
        self._publish(
            wire.Stats(
                seq=0,
                publisher=self.name,
                worker=self.name,
                t_wall_ns=self._wall_ns(),
                t_mono_ns=self._mono_ns(),
                counters=counters,
            )
        )

    # ================================================================== control socket

    def _on_control(self, now: float) -> None:
        answer_waiting(self.control,
                       lambda body: control.encode_reply(self._control_reply(body, now)))

    def _control_reply(self, body: bytes, now: float) -> control.Reply:
        try:
            return self._control_request(body, now)
        except PyconproError as exc:
            self.counters["control_errors"] += 1
            return control.ErrorReply(str(exc))
        except Exception as exc:  # a bad request must never kill the worker
            self.counters["control_errors"] += 1
            log.exception("control request failed")
            return control.ErrorReply(f"internal error: {exc!r}")

    def _control_request(self, body: bytes, now: float) -> control.Reply:
        req = control.decode_request(body)
        return self._CONTROL_HANDLERS[type(req)](self, req, now)

    def _control_add(self, req: control.AddRequest, now: float) -> control.Reply:
        c = self.add_consumer(req.consumer, now, outage_since=req.outage_since)
        return control.ConsumerReply(c.defn.key, c.conn.state.value)

    def _control_remove(self, req: control.RemoveRequest, now: float) -> control.Reply:
        self.remove_consumer(req.key, now)
        found = self.consumers.get(req.key)
        return control.ConsumerReply(
            req.key, found.conn.state.value if found is not None else "CLOSED"
        )

    def _control_list(self, req: control.ListRequest, now: float) -> control.Reply:
        return control.ListReply(
            tuple(
                control.ConsumerListing(
                    key=k,
                    plc=c.defn.plc,
                    tag=c.defn.tag,
                    address=c.defn.address,
                    state=c.conn.state.value,
                    failure=c.conn.failure,
                )
                for k, c in self.consumers.items()
            )
        )

    def _control_status(self, req: control.StatusRequest, now: float) -> control.Reply:
        return control.StatusReply(self.status(recorder=req.recorder))

    def _control_recorder(self, req: control.RecorderRequest, now: float) -> control.Reply:
        found = self.consumers.get(req.key)
        if found is None:
            raise control.no_recorder_key(req.key)
        return control.RecorderReply(req.key, found.conn.state.value, found.conn.recorder.dump())

    def _control_output(self, req: control.OutputRequest, now: float) -> control.Reply:
        found = self.consumers.get(req.key)
        if found is None:
            raise UsageError(f"no consumer {req.key!r}; 'list' shows the keys")
        refused = found.conn.counters.outputs_refused
        found.conn.set_output(now, req.data)  # UsageError: not an exclusive owner
        if found.conn.counters.outputs_refused > refused:
            raise UsageError(f"{req.key}: output image of {len(req.data)} bytes refused: the"
                             f" output assembly is {found.conn.ot_bytes} bytes")
        self.counters["outputs"] += 1
        self._pump(found, now)
        return control.ConsumerReply(req.key, found.conn.state.value)

    def _control_stop(self, req: control.StopRequest, now: float) -> control.Reply:
        self._stop_requested = True
        return control.StopReply()

    def _control_produce(self, req: control.ProduceRequest, now: float) -> control.Reply:
        try:
            tag = self.add_produced(req.spec, now)
        except OSError as exc:  # the listener cannot be opened: the message names the port
            self.counters["control_errors"] += 1
            return control.ErrorReply(str(exc))
        return control.ProducedReply(tag.status(now))

    def _control_set(self, req: control.SetRequest, now: float) -> control.Reply:
        tag = self.set_produced(req.tag, req.value, now, "api")
        return control.ProducedReply(tag.status(now))

    #: Request class -> its handler (ARCHITECTURE.md: choices as tables keyed by input class).
    _CONTROL_HANDLERS: ClassVar[
        dict[type[Any], Callable[[IoWorker, Any, float], control.Reply]]
    ] = {
        control.AddRequest: _control_add,
        control.RemoveRequest: _control_remove,
        control.ListRequest: _control_list,
        control.StatusRequest: _control_status,
        control.RecorderRequest: _control_recorder,
        control.OutputRequest: _control_output,
        control.StopRequest: _control_stop,
        control.ProduceRequest: _control_produce,
        control.SetRequest: _control_set,
    }

    def _socket_counters(self) -> dict[str, int]:
        """``udp_rcvbuf`` (granted) and ``udp_kernel_drops``: datagrams the kernel dropped
        because a UDP socket of this worker was full (the worker never saw them; Linux only,
        -1 where it cannot be read)."""
        socks = [sock for sock, _ in self.groups.values()]
        if self.udp is not None:
            socks.append(self.udp)
        return {"udp_rcvbuf": self.udp_rcvbuf, "udp_kernel_drops": udp_kernel_drops(socks)}

    def status(self, recorder: bool = False) -> dict[str, Any]:
        """The ``status`` reply. The flight recorders (hex dumps, ~1 KB per consumer) only with
        ``recorder``: the periodic status of a worker with hundreds of consumers must stay
        small and quick, it is built while the receive loop waits."""
        self._on_subscriptions()  # read what arrived since the last poll: the answer is current
        now = self._clock()
        return {
            "worker": self.name,
            "local_address": self.opt.local_address,
            "udp_port": self.udp_port,
            "udp_rcvbuf": self.udp_rcvbuf,
            "pub": self.pub_endpoint,
            "control": self.control_endpoint,
            "vendor_id": self.originator.vendor_id,
            "originator_serial": self.originator.serial,
            "uptime_s": round(now - self.started, 3),
            "stopping": self.stopping,
            # > 0 once a subscriber's subscription reached this PUB: from then on it gets
            # every message it subscribed to (the supervisor adds consumers only then).
            "bus_subscriptions": len(self.bus_subscriptions),
            "bus_topics": sorted(t.decode("utf-8", "replace") for t in self.bus_subscriptions)[:32],
            "counters": {**self._counters(), **self._socket_counters()},
            # Which receive path runs (PYCONPRO_FASTPATH) and why; how late the heartbeats of
            # the current stats interval went out.
            "receive_path": self.path.name,
            "receive_path_note": self.path.reason,
            "heartbeat_lateness": self.lateness.summary_ms(),
            "groups": sorted(self.groups),
            # The tags this worker produces (docs/worker.md "Producing tags"), or None.
            "produce": None if self.producer is None else self.producer.status(now),
            "plcs": [
                {
                    "address": link.address,
                    "port": link.port,
                    "up": link.up,
                    "state": link.plc.state.value,
                    "down_for_s": None
                    if link.down_since is None
                    else round(now - link.down_since, 3),
                    "attempts": link.plc.attempt,
                    "in_flight": link.plc.in_flight,
                    "held": link.plc.held,
                    "sessions_opened": link.plc.sessions_opened,
                    "sessions_failed": link.plc.sessions_failed,
                    "last_failure": link.plc.last_failure,
                    "types": link.types.snapshot(),
                    "consumers": sorted(link.consumers),
                }
                for link in self.links.values()
            ],
            "consumers": [
                {
                    "key": k,
                    "def": c.digest,
                    "samples": c.samples,
                    **c.conn.snapshot(now),
                    **({"recorder": c.conn.recorder.dump()} if recorder else {}),
                }
                for k, c in self.consumers.items()
            ],
        }

    # ================================================================== main loop

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass

    def _begin_shutdown(self, now: float) -> None:
        self.stopping = True
        self._shutdown_deadline = now + self.opt.shutdown_timeout_s
        log.info("%s: stopping: Forward_Close for %d consumer(s)", self.name, len(self.consumers))
        for c in self.consumers.values():
            self._sync(c)
            c.conn.stop(now)
            self._pump(c, now)

    def _deadline(self, now: float) -> float:
        d = self.next_deadline()
        return now + _MAX_WAIT_S if d is None else min(d, now + _MAX_WAIT_S)

    def next_deadline(self) -> float | None:
        """The earliest deadline of every machine (connections, PLC sessions) and periodic
        task (stats, the shutdown timeout), or None. O(1) but for the heap entries it finds
        stale or early on top (each one once)."""
        d = math.inf
        heap = self._heap
        while heap:
            at, _, item = heap[0]
            if item.sched != at:
                heapq.heappop(heap)  # stale: rescheduled, reaped or closed
                continue
            due = item.conn.next_deadline() if isinstance(item, WorkerConsumer) else (
                item.plc.next_deadline())
            if due is None:
                heapq.heappop(heap)
                item.sched = None
            elif due > at:  # early (a deadline moved later): re-file at the real one
                item.sched = due
                heapq.heapreplace(heap, (due, next(self._tie), item))
            else:
                d = at
                break
        if self.opt.stats_interval_s > 0:
            d = min(d, self._next_stats)
        if self.producer is not None:
            d = min(d, self.producer.next_deadline() or math.inf)
        if self.stopping:
            d = min(d, self._shutdown_deadline)
        return None if d == math.inf else d

    def _timers(self, now: float, data_pending: bool = False) -> None:
        """Everything due at ``now``. ``data_pending``: a UDP socket still had datagrams after
        the drain, so T->O watchdogs are held (ConsumerConnection.on_timer)."""
        heap = self._heap
        self._held, self._held_before = [], now
        try:
            while heap and heap[0][0] <= now:
                at, _, item = heapq.heappop(heap)
                if item.sched != at:
                    continue  # stale entry
                item.sched = None
                if isinstance(item, PlcLink):
                    self._link_timer(item, now)
                    continue
                self._sync(item)
                d = item.conn.next_deadline()
                if d is not None and d > now:
                    # The entry was early (data moved the watchdog): re-file it, nothing due.
                    item.sched = d
                    heapq.heappush(heap, (d, next(self._tie), item))
                    continue
                item.conn.on_timer(now, data_pending=data_pending)
                self._pump(item, now)  # reschedules; still due now -> held for the next pass
        finally:
            held, self._held = self._held, None
            for item in held:
                if item.sched is not None:
                    heapq.heappush(heap, (item.sched, next(self._tie), item))
        self._send_heartbeats()
        if self.producer is not None and (self.producer.next_deadline() or math.inf) <= now:
            self.producer.on_timer(now)  # T->O data due, watchdogs of the produced tags
            self._produce_sync(now)
        if self.opt.stats_interval_s > 0 and now >= self._next_stats:
            self._next_stats = now + self.opt.stats_interval_s
            self._publish_stats()
        if now >= self._drops_report_at:
            self._report_drops(now)

    def _link_timer(self, link: PlcLink, now: float) -> None:
        """``link``'s heap entry came due: run its session's timers if they are."""
        sd = link.plc.next_deadline()
        if sd is None:
            return
        if sd > now:
            self._schedule(link, sd)  # early entry: re-file
            return
        # Reconnect ahead of need (a Forward_Close at stop needs a session, 7.7 step 8)
        # while one of its consumers lives.
        link.plc.on_timer(
            now,
            reconnect=not self.stopping
            and any(self.consumers[k].conn.is_live for k in link.consumers if k in self.consumers),
        )
        link.tcp.pump(now)  # reschedules

    def _report_drops(self, now: float) -> None:
        """One log line for the datagrams dropped since the last one (reasons, rate, the
        last sender of each), at most every ``_DROP_REPORT_S``; nothing when none were."""
        since = self._drops_report_at - _DROP_REPORT_S
        self._drops_report_at = now + _DROP_REPORT_S
        drops = self.demux.drops
        new = {r: drops[r] - self._drops_reported.get(r, 0) for r in _REPORTED_DROPS}
        self._drops_reported = {r: drops[r] for r in _REPORTED_DROPS}
        total = sum(new.values())
        if total == 0:
            return
        span = max(now - since, 1e-3)
        parts = []
        for reason, n in new.items():
            if n:
                host, port = self.demux.last_dropped[reason]
                parts.append(f"{reason.value} {n} (last from {host}:{port})")
        log.warning(
            "%s: %d datagram(s) dropped in the last %.0f s (%.0f/s): %s; these are not from a"
            " PLC's live connection (junk, forgeries or a misdirected sender), and are not the"
            " data of any tag",
            self.name, total, span, total / span, ", ".join(parts),
        )  # fmt: skip

    def _dispatch_fd(self, fd: int, flags: int, now: float) -> None:
        # UDP sockets are read at the top of every loop iteration (``run``), never here.
        if self._wake_r is not None and fd == self._wake_r.fileno():
            try:
                self._wake_r.recv(512)
            except OSError:
                pass
            return
        link = self._link_fds.get(fd)
        if link is not None:
            link.tcp.on_io(bool(flags & zmq.POLLIN), now)
            return
        if self.producer is not None and fd in self._produce_fds:
            if flags & zmq.POLLOUT:
                self.producer.writable(fd, now)
            if flags & zmq.POLLIN:
                self.producer.readable(fd, now)
            self._produce_sync(now)

    def run(self, ready: Callable[[dict[str, Any]], None] | None = None) -> int:
        log.info("%s: receive path %s", self.name, self.path.reason)
        _precise_timers()
        now = self._clock()
        self._next_stats = now + self.opt.stats_interval_s
        self._drops_report_at = now + _DROP_REPORT_S
        if ready is not None:
            ready(
                {
                    "ready": True,
                    "worker": self.name,
                    "pub": self.pub_endpoint,
                    "control": self.control_endpoint,
                    "local_address": self.opt.local_address,
                    "udp_port": self.udp_port,
                    "originator_serial": self.originator.serial,
                    "receive_path": self.path.name,
                    "tcp_port": None if self.producer is None else self.producer.tcp_port,
                }
            )
        while self.step():
            pass
        left = [
            c.defn.key
            for c in self.consumers.values()
            if c.conn.state not in (State.CLOSED, State.FAILED)
        ]
        if left:
            log.warning("%s: stop timeout; not confirmed closed: %s", self.name, ", ".join(left))
        self._publish_stats()
        log.info("%s: stopped", self.name)
        return 0

    def step(self, max_wait_s: float | None = None) -> bool:
        """One pass of the loop: timers due, then wait on every socket until the earliest
        deadline (or ``max_wait_s``), and handle what arrived. False once stopped."""
        now = self._clock()
        if self._stop_requested and not self.stopping:
            self._begin_shutdown(now)
        if self.stopping and (
            now >= self._shutdown_deadline
            or all(c.conn.state in (State.CLOSED, State.FAILED) for c in self.consumers.values())
        ):
            return False
        # Read every datagram that has arrived before judging any watchdog: after a pause
        # of this loop (GC, a slow control request, SIGSTOP, a loaded machine) the data of
        # every connection may be waiting in the socket buffer. ``now`` was taken before
        # the reads, and each read datagram counts from its own, later, read time, so a
        # watchdog due at ``now`` means no datagram of that connection arrived before
        # ``now``. Should the drain stop early, the watchdogs wait for the next pass.
        drained = self._drain()
        hold = False
        if drained:
            self._pending_since = None
        else:
            if self._pending_since is None:
                self._pending_since = now
            hold = now - self._pending_since < _MAX_WATCHDOG_HOLD_S
        self._timers(now, data_pending=hold)
        self._reap()
        until = now
        if drained:
            until = self._deadline(now)
            if max_wait_s is not None:
                until = min(until, now + max_wait_s)
        for item, flags in self._wait(until):
            now = self._clock()
            if item is self.control:
                self._on_control(now)
                continue
            if item is self.pub:
                self._on_subscriptions()
                continue
            if item is self.feed:
                self._on_feed(now)
                continue
            # pyzmq's Poller reports plain sockets by file descriptor.
            fd = item if isinstance(item, int) else item.fileno()
            self._dispatch_fd(fd, flags, now)
        self._send_heartbeats()  # those asked for by what arrived (a Forward_Open reply)
        return True

    def _wait(self, until: float) -> list[tuple[Any, int]]:
        """Wait until ``until`` (monotonic seconds) or until a socket has something, and
        return what the ZeroMQ poller reported. zmq waits in whole milliseconds: it waits the
        floor of the time left, and ``select`` on the UDP sockets (and the wake-up pipe) the
        rest, so the loop wakes at its deadline with sub-millisecond precision; a datagram
        ends either wait at once. While the waits are short, the ZeroMQ sockets (control,
        subscriptions, TCP sessions) are polled at most ``_ZMQ_POLL_EVERY_S`` apart."""
        clock = self._clock
        t = clock()
        left = until - t
        ms = int(left * 1000) if left > 0 else 0  # floor: never past the deadline
        events: list[tuple[Any, int]] = []
        if ms > 0 or left <= 0 or t - self._zmq_polled >= _ZMQ_POLL_EVERY_S:
            events = self.poller.poll(ms)
            self._zmq_polled = t = clock()
        if events:
            return events
        left = until - t
        if left > 0:
            fds = self._udp_socks if self._wake_r is None else [*self._udp_socks, self._wake_r]
            try:
                select.select(fds, [], [], left)
            except (OSError, ValueError):  # a socket closed under us: the next pass sees it
                pass
        return events


def _precise_timers() -> None:
    """Timer slack of 1 ns for the calling thread (the loop's), on Linux; else nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_TIMERSLACK): %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.debug("no prctl: %s", exc)


def udp_kernel_drops(socks: Sequence[socket.socket]) -> int:
    """Datagrams the kernel dropped on these UDP sockets (receive buffer full), from the
    ``drops`` column of /proc/net/udp matched by socket inode; -1 when it cannot be read."""
    try:
        inodes = {str(os.fstat(sock.fileno()).st_ino) for sock in socks}
        with open("/proc/net/udp", encoding="ascii") as f:
            next(f)  # the header line
            rows = [line.split() for line in f]
    except (OSError, StopIteration, ValueError):
        return -1
    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
    return sum(int(r[-1]) for r in rows if len(r) >= 13 and r[9] in inodes)


def route_source(address: str) -> str:
    """The local address the OS would use to reach ``address`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((address, 44818))
        return str(s.getsockname()[0])


def _bind(sock: zmq.Socket[Any], endpoint: str, guard: ServerGuard) -> str:
    """Bind ``sock`` (a CURVE server when ``endpoint`` needs it; an ipc file made 0600)."""
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        endpoint = endpoint[:-2] + ":*"
    guard.secure_bind(sock, endpoint)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise zmq.ZMQError(exc.errno, f"cannot bind {endpoint}: {exc}") from None
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    bound = last.decode() if isinstance(last, bytes) else str(last)
    restrict_ipc(bound)
    return bound


# ====================================================================== command line


def _rcvbuf(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of bytes (e.g. 4194304; 0 = the system default)"
        ) from None
    if not 0 <= value <= UDP_RCVBUF_MAX:
        raise argparse.ArgumentTypeError(
            f"{value} is outside 0..{UDP_RCVBUF_MAX} bytes (0 = the system default)"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pyconpro.workers.io_worker",
        description="pyconpro I/O worker: consumes produced tags through one local interface"
        " and publishes samples on ZeroMQ (docs/worker.md).",
    )
    p.add_argument(
        "--local-address",
        required=True,
        help="IPv4 address of the interface facing the PLCs (bound for UDP and TCP)",
    )
    p.add_argument(
        "--udp-port",
        type=int,
        default=DEFAULT_UDP_PORT,
        help="local class-1 UDP port (default 2222; 0 = any free port)",
    )
    p.add_argument(
        "--pub",
        dest="pub_endpoint",
        help="ZeroMQ PUB endpoint to bind (default ipc://<tmp>/pyconpro-<name>.pub;"
        " tcp://127.0.0.1:0 picks a free port)",
    )
    p.add_argument(
        "--control",
        dest="control_endpoint",
        help="ZeroMQ control endpoint to bind (default ipc://<tmp>/pyconpro-<name>.ctl)",
    )
    p.add_argument(
        "--name", help="worker name in stats topics and 'pub' (default worker-<local address>)"
    )
    p.add_argument(
        "--consumer",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="a consumer, e.g. plc=p1,address=10.0.0.5,tag=Count,rpi_ms=100"
        " (repeatable; keys in docs/worker.md)",
    )
    p.add_argument(
        "--config", help="pipeline TOML file: consume the PLCs it assigns to --local-address"
    )
    p.add_argument(
        "--produce",
        action="append",
        default=[],
        metavar="JSON",
        help='a tag to produce for Logix consumers, e.g. \'{"name": "Setpoint", "type":'
        ' "REAL"}\' (repeatable; keys in docs/worker.md "Producing tags")',
    )
    p.add_argument(
        "--tcp-port",
        type=int,
        default=DEFAULT_TCP_PORT,
        help="TCP port of the EtherNet/IP server when producing tags (default 44818; 0 = any)",
    )
    p.add_argument(
        "--bus-connect",
        metavar="ENDPOINT",
        help="the bus's public endpoint, read for what flows towards the worker: produced"
        " tags' values (produce/<name>/) and exclusive-owner output images"
        " (output/<plc>/<name>/)",
    )
    p.add_argument(
        "--stats-interval",
        type=float,
        default=None,
        help="seconds between stats messages (default 5; 0 = never)",
    )
    p.add_argument("--hwm", type=int, default=None, help="PUB send high-water mark")
    p.add_argument(
        "--udp-rcvbuf",
        type=_rcvbuf,
        default=None,
        metavar="BYTES",
        help="SO_RCVBUF asked for each UDP socket (default 4 MiB, or [worker]"
        " udp_rcvbuf of --config; Linux grants at most net.core.rmem_max; 0 = system"
        " default); the granted size is logged and in stats as udp_rcvbuf",
    )
    p.add_argument(
        "--realtime-priority",
        type=int,
        choices=range(100),
        default=None,
        metavar="0..99",
        help="run the worker at this SCHED_FIFO real-time priority (default 0 = normal, or"
        " [worker] realtime_priority of --config); needs CAP_SYS_NICE or an RLIMIT_RTPRIO that"
        " high, else a warning and normal priority",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=3.0,
        help="seconds to wait for Forward_Close replies on stop",
    )
    p.add_argument(
        "--curve-key",
        metavar="FILE",
        help="the pipeline's secret key file ([security] server_key): PUB and control sockets"
        " on non-loopback TCP endpoints are CURVE servers",
    )
    p.add_argument(
        "--curve-clients", metavar="DIR", help="directory of allowed client public keys (*.key)"
    )
    p.add_argument(
        "--curve-on-loopback", action="store_true", help="CURVE on loopback endpoints too"
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--udp-port-hint", help=argparse.SUPPRESS)  # the supervisor's wording
    p.add_argument("--recorder-log-level", default="WARNING", help=argparse.SUPPRESS)  # the API's
    p.add_argument(
        "--event-log-level",
        default="INFO",
        help="log level of routine connection events (state changes, gaps); `pyconpro run`"
        " passes DEBUG: they are on the bus already",
    )
    p.add_argument(
        "--problem-log-level",
        default="WARNING",
        help="log level of rejects, timeouts and errors; `pyconpro run` passes DEBUG when a"
        " stdout sink prints every event of this worker's PLCs on the same console",
    )
    return p


def _json_map(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag} {text!r}: give a JSON object")
    return value


def _command_line_wins(opts: WorkerOptions, args: argparse.Namespace) -> None:
    """The options given on the command line, over what ``--config`` said."""
    given = {
        "stats_interval_s": args.stats_interval, "pub_hwm": args.hwm,
        "udp_rcvbuf": args.udp_rcvbuf, "realtime_priority": args.realtime_priority,
    }  # fmt: skip
    for attr, value in given.items():
        if value is not None:
            setattr(opts, attr, value)


def _open_worker(opts: WorkerOptions) -> IoWorker | None:
    """A worker with its sockets bound, or None when it cannot start (the error printed)."""
    try:
        worker = IoWorker(opts)
    except (fastpath.FastPathError, UsageError) as exc:  # PYCONPRO_FASTPATH asks the impossible
        print(f"error: {exc}", file=sys.stderr)
        return None
    try:
        worker.open()
    except (OSError, zmq.ZMQError, CurveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        worker.close()
        return None
    return worker


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=LOG_FORMAT,
    )
    opts = WorkerOptions(
        local_address=args.local_address,
        udp_port=args.udp_port,
        pub_endpoint=args.pub_endpoint,
        control_endpoint=args.control_endpoint,
        name=args.name,
        shutdown_timeout_s=args.shutdown_timeout,
        security=SecurityConfig(args.curve_key, args.curve_clients, args.curve_on_loopback),
    )
    if args.udp_port_hint:
        opts.udp_port_hint = args.udp_port_hint
    levels = logging.getLevelNamesMapping()
    opts.recorder_log_level = levels[args.recorder_log_level.upper()]
    opts.event_log_level = levels[args.event_log_level.upper()]
    opts.problem_log_level = levels[args.problem_log_level.upper()]
    opts.tcp_port = args.tcp_port
    opts.bus_connect = args.bus_connect
    defs: list[ConsumerDef] = []
    try:
        produce = [ProduceSpec.from_dict(_json_map(text, "--produce")) for text in args.produce]
        for text in args.consumer:
            defs.append(consumer_from_text(text))
        if args.config:
            from pyconpro.acquisition.config import group_by_local_address

            from pyconpro.config_file import load_config

            cfg = load_config(args.config)
            opts.stats_interval_s = cfg.worker.stats_interval_s
            opts.pub_hwm = cfg.bus.hwm
            opts.udp_rcvbuf = cfg.worker.udp_rcvbuf
            opts.realtime_priority = cfg.worker.realtime_priority
            if args.udp_port == DEFAULT_UDP_PORT:
                opts.udp_port = cfg.worker.udp_port
            groups = [
                g
                for g in group_by_local_address(cfg, route_source)
                if g.local_address == args.local_address
            ]
            if not groups:
                print(
                    f"{args.config}: no PLC or produced tag is assigned to local address"
                    f" {args.local_address}",
                    file=sys.stderr,
                )
                return 2
            defs += [consumer_from_spec(s) for g in groups for s in g.consumers]
            produce += [s for g in groups for s in g.produce]
            opts.tcp_port = cfg.worker.tcp_port if args.tcp_port == DEFAULT_TCP_PORT else (
                args.tcp_port)
        opts.produce = tuple(produce)
    except PyconproError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _command_line_wins(opts, args)
    worker = _open_worker(opts)
    if worker is None:
        return 2

    def on_signal(signum: int, frame: object) -> None:
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        now = time.monotonic()
        for d in defs:
            try:
                worker.add_consumer(d, now)
            except PyconproError as exc:
                print(f"error: consumer {d.key}: {exc}", file=sys.stderr)
                return 2

        def ready(info: dict[str, Any]) -> None:
            print(json.dumps(info), flush=True)

        return worker.run(ready)
    finally:
        worker.close()


if __name__ == "__main__":
    sys.exit(main())

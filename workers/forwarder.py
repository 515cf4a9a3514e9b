"""The one stable bus endpoint: an XSUB -> XPUB forwarder owned by the supervisor.

Owns: two ZeroMQ sockets and one thread. The XSUB side connects to every I/O worker's PUB
endpoint (``set_upstreams``; ZeroMQ reconnects by itself when a worker restarts on the same
endpoint) and is also bound on an internal endpoint where publishers may connect; sinks, ``pyconpro
tail`` and any subscriber in any language connect to the XPUB side (``[bus].endpoint``). Workers
come and go (restarts, reloads, one per interface) and the public endpoint never moves
(ARCHITECTURE.md "Processes": "the single public bus endpoint").

Why a thread inside the supervisor and not a child process: a thread cannot be killed by
itself, cannot lose its endpoint to a restart race, and the supervisor reads its counters
in-process. ``scripts/bench_forwarder.py`` measures both of its loops against libzmq's own proxy
and a direct PUB/SUB link in the same run (docs/performance.md "The bus forwarder").

**Subscriptions from the outside are capped** (``acquisition/subscriptions.py`` decides). The
public XPUB runs in manual mode (``ZMQ_XPUB_MANUAL``): libzmq hands every (un)subscription
message to this thread, with its connection's metadata, and matches a subscriber's messages
only against the subscriptions this thread applied. A subscription longer than any topic, past
the peer's cap or past the bus's total is refused, counted, logged once per peer, and the
connection it came from is closed (libzmq keeps every subscription a connection sent until it
ends, applied or not: only ending it frees that memory). libzmq does not say which connection
a message came from, only its address: the socket monitor tells the thread every accepted
connection's file descriptor, and the one closed is that address's connection that sent the
most bytes (a subscriber sends nothing but subscriptions). A frame longer than twice the
longest topic ends its connection in libzmq itself (``ZMQ_MAXMSGSIZE``). When a peer's last
connection ends its state goes, and the memory libzmq freed is given back to the system
(``malloc_trim``). What subscribers ask for never reaches the publishers: the XSUB subscribes
them to everything, and passes up only the replay markers (``replay/<id>/``) for the replay
thread. So the forwarding loop is this thread's, not libzmq's ``zmq_proxy``, which would pass
every subscription upstream.

**Two forwarding loops, one behaviour** (``PYCONPRO_FASTPATH``, workers/fastpath.py, as the
worker's receive path): compiled (``forward`` of workers/_fastpath.c, ``CompiledForwarding``)
when it is built, which moves whole messages in C with the GIL released and returns to this
thread's Python as soon as the XPUB (a subscription to judge) or the control pipe has a
message, or the periodic duties are due; else Python (``_forward``: ``recv(copy=False)`` /
``send``), the reference. Each step returns which sockets had input, and the rest of the loop
is the same for both; tests/workers/test_forwarder*.py run on both. The counters (frames,
bytes) are an ``array`` both write and ``stats`` reads from any thread.

With a replay buffer (``replay_s`` and ``replay_bytes`` above 0, ``[bus]``), the thread also
copies every message it forwards to a capture socket (a PUB on an inproc endpoint, which never
waits) and binds the XSUB on a second, inproc, endpoint; the replay thread
(``workers/replay.py``) reads the one and publishes its markers into the other.

**Real-time priority** (``[bus] realtime_priority``, ``workers/realtime.py``): on a host whose
cores are busy, the forwarding thread and the libzmq I/O thread that moves its messages run at
a SCHED_FIFO priority, so a message waits for neither to get a core. The forwarder then has a
ZeroMQ context of its own, its first socket made by the forwarding thread once it runs at that
priority (libzmq starts the context's threads then; the supervisor's context, its control
socket, its links to the workers and its I/O thread, stay at normal priority). The replay
thread (started by the caller) and the connections watcher (started by the forwarding thread,
whose policy resets what it starts) stay at normal priority: neither is on a message's path
(copies wait in the capture socket, the bus never waits for them), and at a real-time priority
they would take the cores the subscribers need (docs/performance.md "Latency, where it goes").

Sockets are never shared across threads: the forwarder thread creates, binds, uses and closes
the XSUB/XPUB pair, the capture socket and the monitor (the compiled loop runs in that thread,
on those sockets, and only while that thread waits in it); the connections thread has its own
end of the monitor pipe and touches the XPUB's connections only as descriptors; the caller's
thread only ever touches its end of the inproc control pair (and of the replay thread's pipe).
PUB never blocks: the XPUB side drops for a subscriber past its HWM (STYLE.md #10).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import os
import socket
import struct
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import zmq
from pyconpro.acquisition.security import SecurityConfig
from pyconpro.acquisition.subscriptions import (
    Peer,
    SubscriptionLimits,
    SubscriptionTable,
    Upstream,
)
from pyconpro.workers import fastpath
from pyconpro.workers.fastpath import CONTROL_READY, XPUB_READY, XSUB_READY
from pyconpro.workers.guard import ServerGuard
from pyconpro.workers.realtime import set_realtime_priority
from pyconpro.workers.replay import ReplayThread
from zmq.utils.monitor import parse_monitor_message

__all__ = ["Forwarder", "ForwarderError", "ForwarderStats", "connectable"]

log = logging.getLogger("pyconpro.forwarder")


# The PAIR pipe between the owner and the forwarder thread carries a few commands only.
_CONTROL_HWM = 16
_TERMINATE = b"TERMINATE"
_RECONNECT = b"RECONNECT"
# Copies queued for the replay thread when the bus's own HWM is unlimited (0): past it the
# thread, not the bus, loses them (counted as the buffer's ``lost``).
_CAPTURE_HWM = 100_000
# Messages forwarded per wake-up before the subscriptions and the control pipe get a turn.
_BATCH = 2000
_SUBSCRIPTION_BATCH = 1000
# The public XPUB's receive HWM per connection: subscriptions only. libzmq moves what waits in a
# connection's pipe into the socket's queue (and its table of what each connection sent) every
# 100 reads, so a pipe this small keeps a flood from getting ahead of this thread's decisions;
# a subscriber waits, it loses nothing.
_SUBSCRIPTION_HWM = 100
_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
# After closing a connection of an address for a refusal, refusals of that address close no
# other for this long: the closed one's last messages may still be waiting to be read.
_CLOSE_HOLD_OFF_S = 0.5
_STATS_EVERY_S = 0.5
# What a connection may send (subscriptions, heartbeats): a burst of _BURST_BYTES, then
# _RATE_BYTES_S; checked every _CHECK_S from the kernel's count. libzmq takes a connection's
# messages in as fast as they come, ahead of this thread's decisions, and keeps each
# subscription until the connection ends: this bounds what a flood costs before it is cut.
_BURST_BYTES = 256 << 10
_RATE_BYTES_S = 16 << 10
_CHECK_S = 0.01
_TCP_INFO_BYTES_RECEIVED = 128  # struct tcp_info: tcpi_bytes_received (Linux 4.1 and later)
_INSTANCES = itertools.count()


class ForwarderError(RuntimeError):
    """The forwarder could not bind or stopped unexpectedly; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    """The forwarder's counters since start.

    Frames, as libzmq counts them: every bus message is two frames (``[topic, body]``), so
    ``messages_in`` is ``frames_in // 2``. ``subscribers``: the subscription table's counts
    (``SubscriptionTable.stats``), the connections open and those closed for a refusal.
    """

    frames_in: int  # frames received from publishers (workers) on the XSUB side
    bytes_in: int
    frames_out: int  # frames handed to the XPUB side (each then goes to every subscriber)
    bytes_out: int
    subscriptions: int  # (un)subscription messages passed upstream
    subscribers: dict[str, Any]

    @property
    def messages_in(self) -> int:
        return self.frames_in // 2

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages_in": self.messages_in,
            "frames_in": self.frames_in,
            "bytes_in": self.bytes_in,
            "frames_out": self.frames_out,
            "bytes_out": self.bytes_out,
            "subscriptions": self.subscriptions,
            "subscribers": self.subscribers,
        }


def connectable(endpoint: str) -> str:
    """The address a local subscriber connects to for a bound ``endpoint``.

    ``tcp://*:5555`` and ``tcp://0.0.0.0:5555`` listen on every interface; a local client
    connects to ``127.0.0.1`` instead.
    """
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard) :]
    return endpoint


def _malloc_trim() -> None:
    """Give the memory the C heap freed back to the system (glibc; elsewhere nothing)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:  # pragma: no cover - no C library to load
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


@dataclass(slots=True)
class _Connection:
    """One accepted connection of the public XPUB, as the socket monitor and the kernel tell."""

    fd: int
    address: str  # as libzmq's Peer-Address writes it: IP, or ":uid:gid:pid" for ipc
    port: int  # TCP source port (0 for ipc)
    at: float  # when ``received`` was read
    received: int = 0  # bytes, as the kernel counted them then
    allowance: float = _BURST_BYTES  # what it may still send (token bucket)
    closing: bool = False


def _describe(fd: int) -> tuple[str, int] | None:
    """(address, port) of the connected socket ``fd``, None when it is no longer one."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            pid, uid, gid = struct.unpack("3i", creds)
            return f":{uid}:{gid}:{pid}", 0
        peer = sock.getpeername()
        return str(peer[0]), int(peer[1])
    except OSError:
        return None
    finally:
        sock.close()  # the duplicate only: libzmq's descriptor stays open


def _bytes_received(fd: int) -> int:
    """What the kernel counted coming in on TCP socket ``fd`` (0 when it cannot tell)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        if len(info) < _TCP_INFO_BYTES_RECEIVED + 8:
            return 0
        return int(struct.unpack_from("<Q", info, _TCP_INFO_BYTES_RECEIVED)[0])
    except OSError:
        return 0
    finally:
        sock.close()


def _shut(conn: _Connection) -> bool:
    """End ``conn`` (libzmq then sees its peer go); False when ``conn.fd`` is no longer it."""
    if _describe(conn.fd) != (conn.address, conn.port):
        return False  # closed meanwhile, and the number maybe reused: leave it alone
    try:
        sock = socket.socket(fileno=os.dup(conn.fd))
    except OSError:
        return False
    try:
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        sock.close()


class _Connections:
    """The public XPUB's connections, watched from a thread of their own.

    libzmq takes a connection's subscriptions in as fast as they come, in C, whatever the
    forwarder thread does (and while it waits in a ``recv``): so this thread, not that one,
    reads the socket monitor (every accepted connection's descriptor) and every ``_CHECK_S``
    the kernel's count of what each TCP connection sent, and closes the one that sent more than
    its allowance. It touches no socket of the forwarder's, only descriptors (``_shut``). The
    forwarder thread takes the connections that ended (``take_ended``) and asks it to close
    the connection of a refused peer (``close_for_refusal``).
    """

    def __init__(self, ctx: zmq.Context[Any], monitor_ep: str) -> None:
        self._ctx = ctx
        self._monitor_ep = monitor_ep
        self._lock = threading.Lock()
        self.conns: dict[int, _Connection] = {}
        self._ended: deque[tuple[str, bool]] = deque()  # (address, its last connection)
        self._held_off: dict[str, float] = {}  # address -> until when no other is closed
        self._warned_rate: set[str] = set()
        self.closed = 0  # connections ended for a refusal
        self.closed_for_rate = 0  # connections ended for sending too fast
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bus-connections", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        mon = self._ctx.socket(zmq.PAIR)
        try:
            mon.setsockopt(zmq.LINGER, 0)
            mon.connect(self._monitor_ep)
            self._ready.set()
            next_check = 0.0
            while not self._stop.is_set():
                if mon.poll(int(_CHECK_S * 1000)):
                    while True:
                        try:
                            frames = mon.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_event(parse_monitor_message(frames), time.monotonic())
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + _CHECK_S
                    self._check(now)
        except zmq.ContextTerminated:  # pragma: no cover - the supervisor's context went first
            pass
        finally:
            self._ready.set()
            mon.close(0)

    def _on_event(self, ev: Any, now: float) -> None:
        fd = int(ev["value"])
        if ev["event"] == zmq.EVENT_ACCEPTED:
            where = _describe(fd)
            if where is not None:
                with self._lock:
                    self.conns[fd] = _Connection(fd, *where, at=now)
            return
        with self._lock:  # DISCONNECTED / CLOSED
            conn = self.conns.pop(fd, None)
            if conn is None:
                return
            last = not any(c.address == conn.address for c in self.conns.values())
            if last:
                self._warned_rate.discard(conn.address)
            self._ended.append((conn.address, last))

    def _check(self, now: float) -> None:
        """Close a TCP connection that sent more than its allowance (``_BURST_BYTES``)."""
        with self._lock:
            conns = [c for c in self.conns.values() if c.port and not c.closing]
        for conn in conns:  # ipc ones (port 0): only this user's processes reach them
            received = _bytes_received(conn.fd)
            conn.allowance = min(_BURST_BYTES, conn.allowance + (now - conn.at) * _RATE_BYTES_S)
            conn.allowance -= received - conn.received
            conn.received, conn.at = received, now
            if conn.allowance >= 0:
                continue
            if conn.address not in self._warned_rate:
                self._warned_rate.add(conn.address)
                log.warning(
                    "bus: closed a connection from %s:%d: it sent %d bytes, more than a "
                    "subscriber sends (%d KiB at once, then %d KiB/s); further ones from this "
                    "address are only counted (`pyconpro status`: forwarder.subscribers)",
                    conn.address, conn.port, received, _BURST_BYTES >> 10, _RATE_BYTES_S >> 10,
                )  # fmt: skip
            conn.closing = True
            if _shut(conn):
                self.closed_for_rate += 1

    def close_for_refusal(self, address: str, now: float) -> None:
        """End the connection from ``address`` that sent the most bytes (the module's doc);
        after one, none other of that address for ``_CLOSE_HOLD_OFF_S``."""
        with self._lock:
            if self._held_off.get(address, 0.0) > now:
                return
            self._held_off = {a: t for a, t in self._held_off.items() if t > now}
            self._held_off[address] = now + _CLOSE_HOLD_OFF_S
            # Without an address (a ZMTP 1.0/2.0 peer: no metadata) any connection may be it.
            conns = [c for c in self.conns.values()
                     if (c.address == address or not address) and not c.closing]  # fmt: skip
            if not conns:
                return
            worst = max(conns, key=lambda c: _bytes_received(c.fd))
            worst.closing = True
        if _shut(worst):
            self.closed += 1

    def addresses(self) -> set[str]:
        with self._lock:
            return {c.address for c in self.conns.values()}

    def take_ended(self) -> list[tuple[str, bool]]:
        out = []
        while self._ended:
            out.append(self._ended.popleft())
        return out

    def stats(self) -> dict[str, int]:
        return {"connections": len(self.conns), "closed_for_refusal": self.closed,
                "closed_for_rate": self.closed_for_rate}  # fmt: skip


class Forwarder:
    """XSUB bound on ``upstream`` -> XPUB bound on ``public``; run with ``start()``.

    ``public`` / ``upstream`` may use ``tcp://HOST:0`` (or ``:*``); the bound addresses are then in
    ``public_endpoint`` / ``upstream_endpoint`` after ``start()`` returns. ``guard``: the
    process's CURVE keys; each side bound on an endpoint that needs CURVE is a CURVE server, and
    the XSUB connects to publishers on such endpoints as a client with the pipeline's keys.
    ``replay_s`` / ``replay_bytes``: the replay buffer's bounds (either 0: no buffer); its
    thread is ``replay`` after ``start()``. ``limits``: the subscription caps. ``path``: the
    forwarding loop, compiled or Python (default: what ``PYCONPRO_FASTPATH`` asks,
    ``fastpath.choose``; raises ``fastpath.FastPathError`` when it asks for the compiled one
    and that cannot run). ``context``: the ZeroMQ context of its sockets (its inproc endpoints
    are there); None: one of its own, ended by ``stop()``. ``realtime_priority`` (1..99; 0 =
    normal scheduling): the SCHED_FIFO priority of the forwarding thread and of the libzmq
    threads of its context (module doc, "Real-time priority"); it needs a context of its own.
    """

    def __init__(
        self,
        public: str,
        upstream: str,
        *,
        hwm: int = 100_000,
        linger_ms: int = 1000,
        context: zmq.Context[Any] | None = None,
        guard: ServerGuard | None = None,
        replay_s: float = 0.0,
        replay_bytes: int = 0,
        limits: SubscriptionLimits | None = None,
        path: fastpath.Choice | None = None,
        realtime_priority: int = 0,
    ) -> None:
        if realtime_priority and context is not None:
            raise ValueError("a forwarder at a real-time priority needs a context of its own"
                             " (its I/O thread takes the priority): pass no context")
        self.realtime_priority = realtime_priority
        self._public_wanted = public
        self.path = path if path is not None else fastpath.choose()
        # CURVE for the endpoints that need it (workers/guard.py); none by default.
        self._guard = guard if guard is not None else ServerGuard(SecurityConfig())
        self._upstream_wanted = upstream
        self.hwm = hwm
        self.linger_ms = linger_ms
        self.limits = limits if limits is not None else SubscriptionLimits()
        self._own_ctx = context is None
        self._ctx: zmq.Context[Any] = context if context is not None else zmq.Context()
        # inproc names unique in the process: one of a forwarder just stopped may still be
        # bound for a moment (sockets close in the background), and ids are reused.
        self._n = next(_INSTANCES)
        self._control_ep = f"inproc://pyconpro-forwarder-{self._n}"
        self._control: zmq.Socket[Any] | None = None
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self._error: str | None = None
        self.public_endpoint = public
        self.upstream_endpoint = upstream
        self._lock = threading.Lock()
        self._want: frozenset[str] = frozenset()  # publisher endpoints the XSUB connects to
        # Counters, written by the forwarder thread only (each read as a whole): frames and
        # bytes taken in (in C or in Python: module doc), subscription messages sent upstream.
        self._counts = array("Q", [0, 0])
        self._upstream_sent = 0
        self._table = SubscriptionTable(self.limits)
        self._monitor_ep = f"inproc://pyconpro-forwarder-{self._n}-monitor"
        self._connections = _Connections(self._ctx, self._monitor_ep)
        self._trim = False  # a peer went: give the memory libzmq freed back (when idle)
        self._subscriber_stats: dict[str, Any] = self._subscriber_counts()
        self.replay: ReplayThread | None = None
        self._capture_ep = self._input_ep = ""
        if replay_s > 0 and replay_bytes > 0:
            self._capture_ep = f"inproc://pyconpro-forwarder-{self._n}-capture"
            self._input_ep = f"inproc://pyconpro-forwarder-{self._n}-input"
            self.replay = ReplayThread(
                self._ctx, capture=self._capture_ep, marker=self._input_ep,
                max_age_s=replay_s, max_bytes=replay_bytes, hwm=hwm,
            )  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 5.0) -> None:
        """Bind both sides and start forwarding; ``ForwarderError`` if an endpoint is unusable."""
        if self._thread is not None:
            raise ForwarderError("the forwarder is already started")
        # The thread makes the context's first socket (its I/O thread may take its priority)
        # and binds the control pipe; this end connects once it is there.
        self._thread = threading.Thread(target=self._run, name="bus-forwarder", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout):
            raise ForwarderError(f"the bus forwarder did not bind within {timeout:g} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise ForwarderError(self._error)
        self._control = self._ctx.socket(zmq.PAIR)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.setsockopt(zmq.SNDHWM, _CONTROL_HWM)  # a handful of commands at most
        self._control.setsockopt(zmq.RCVHWM, _CONTROL_HWM)
        self._control.connect(self._control_ep)
        if self.replay is not None:
            self.replay.start(timeout)  # from this thread: at normal priority (module doc)

    def _run(self) -> None:
        if self.realtime_priority:  # before the context's first socket (module doc)
            set_realtime_priority(self.realtime_priority, "[bus] realtime_priority", self._ctx)
        xsub = self._ctx.socket(zmq.XSUB)
        xpub = self._ctx.socket(zmq.XPUB)
        ctl = self._ctx.socket(zmq.PAIR)
        capture = self._ctx.socket(zmq.PUB) if self.replay is not None else None
        monitored = False
        try:
            for sock in (xsub, xpub, ctl):
                sock.setsockopt(zmq.LINGER, self.linger_ms)
            if capture is not None:
                capture.setsockopt(zmq.LINGER, 0)
                capture.setsockopt(zmq.SNDHWM, self.hwm or _CAPTURE_HWM)
                capture.bind(self._capture_ep)
                xsub.bind(self._input_ep)  # the replay thread's markers come in here
            ctl.setsockopt(zmq.SNDHWM, _CONTROL_HWM)
            ctl.setsockopt(zmq.RCVHWM, _CONTROL_HWM)
            xsub.setsockopt(zmq.RCVHWM, self.hwm)
            # A worker binds its PUB endpoint a moment after it is spawned and starts publishing
            # at once: retry the connection often so its first events are not lost.
            xsub.setsockopt(zmq.RECONNECT_IVL, 10)
            xsub.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            xpub.setsockopt(zmq.SNDHWM, self.hwm)
            xpub.setsockopt(zmq.RCVHWM, _SUBSCRIPTION_HWM)
            xpub.setsockopt(zmq.XPUB_MANUAL, 1)
            # A frame no subscription can be as long as ends its connection in libzmq.
            xpub.setsockopt(zmq.MAXMSGSIZE, 2 * self.limits.max_bytes)
            xpub.monitor(self._monitor_ep, _MONITOR_EVENTS)
            monitored = True
            self._connections.start()
            ctl.bind(self._control_ep)
            self._error = self._bind(xsub, xpub)
            if self._error is not None:
                return
            # Publishers send everything: what subscribers ask for stays here (the module's
            # doc). XSUB sends it to every publisher it connects to, now and later.
            xsub.send(b"\x01")
            self._upstream_sent += 1
            self._bound.set()
            log.info("bus forwarder: %s -> %s, %s forwarding loop%s", self.upstream_endpoint,
                     self.public_endpoint, self.path.name,
                     "" if self.path.module is not None else f" ({self.path.reason})")  # fmt: skip
            self._loop(xsub, xpub, ctl, capture)
        except zmq.ContextTerminated:
            pass
        except Exception:  # pragma: no cover - a bug: say so; the supervisor sees it not alive
            self._error = "the bus forwarder stopped on an unexpected error (see the log)"
            log.exception("the bus forwarder stopped")
        finally:
            self._bound.set()
            if monitored:
                # The monitor first: libzmq's I/O thread sends each event with a blocking send,
                # holding the socket's monitor lock, and with nobody left to read it, an event
                # (a subscriber leaving now) would stall that thread and disable_monitor for good.
                xpub.disable_monitor()
                self._connections.stop()
            for sock in (xsub, xpub, ctl, capture):
                if sock is not None:
                    sock.close()

    def _loop(self, xsub: zmq.Socket[Any], xpub: zmq.Socket[Any], ctl: zmq.Socket[Any],
              capture: zmq.Socket[Any] | None) -> None:  # fmt: skip
        step = self._stepper(xsub, xpub, ctl, capture)
        connected: set[str] = set()
        self._reconnect(xsub, connected)
        next_stats = 0.0
        orphans: set[str] = set()
        while True:
            ready = step(max(0, int((next_stats - time.monotonic()) * 1000)) + 1)
            self._take_ended()
            if ready & XPUB_READY:
                self._on_subscriptions(xpub, xsub)
            if ready & CONTROL_READY:
                try:
                    command = ctl.recv(zmq.NOBLOCK)
                except zmq.Again:  # pragma: no cover - poll said readable
                    command = b""
                if command == _TERMINATE:
                    return
                if command == _RECONNECT:
                    self._reconnect(xsub, connected)
            if self._trim and not ready & XSUB_READY:
                self._trim = False
                _malloc_trim()
            now = time.monotonic()
            if now >= next_stats:
                orphans = self._sweep(orphans)
                self._subscriber_stats = self._subscriber_counts()
                next_stats = now + _STATS_EVERY_S

    def _sweep(self, orphans: set[str]) -> set[str]:
        """Drop the peers of an address with no connection, two sweeps in a row (a connection
        the monitor could not describe, an end it missed): the table cannot outlive them."""
        known = self._table.addresses() - {""}
        now_orphans = known - self._connections.addresses()
        for address in orphans & now_orphans:
            self._table.gone(address)
            self._trim = True
        return now_orphans

    def _take_ended(self) -> None:
        """Tell the table about the connections that ended (the connections thread saw)."""
        now = time.monotonic()
        for address, last in self._connections.take_ended():
            self._table.left(address, now)
            if last:
                self._table.gone(address)
                self._trim = True

    def _subscriber_counts(self) -> dict[str, Any]:
        return {**self._table.stats(), **self._connections.stats()}

    def _stepper(self, xsub: zmq.Socket[Any], xpub: zmq.Socket[Any], ctl: zmq.Socket[Any],
                 capture: zmq.Socket[Any] | None) -> Callable[[int], int]:  # fmt: skip
        """The forwarding step of the loop chosen (module doc): given a timeout in ms, it
        forwards what the publishers sent and returns which sockets had input (``XSUB_READY``
        | ``XPUB_READY`` | ``CONTROL_READY``; 0: the time was up with nothing)."""
        if self.path.module is not None:
            return fastpath.CompiledForwarding(self.path.module, xsub, xpub, capture, ctl,
                                               self._counts, _BATCH).step  # fmt: skip
        poller = zmq.Poller()
        for sock in (xsub, xpub, ctl):
            poller.register(sock, zmq.POLLIN)

        def step(timeout_ms: int) -> int:
            ready = dict(poller.poll(timeout_ms))
            if xsub in ready:
                self._forward(xsub, xpub, capture)
            return ((XSUB_READY if xsub in ready else 0) | (XPUB_READY if xpub in ready else 0)
                    | (CONTROL_READY if ctl in ready else 0))  # fmt: skip

        return step

    def _forward(self, xsub: zmq.Socket[Any], xpub: zmq.Socket[Any],
                 capture: zmq.Socket[Any] | None) -> None:  # fmt: skip
        """Up to ``_BATCH`` messages from the publishers to the subscribers (and the capture):
        the reference of the compiled ``forward``."""
        recv, send = xsub.recv, xpub.send
        more, noblock = zmq.SNDMORE, zmq.NOBLOCK
        frames = size = 0
        try:
            for _ in range(_BATCH):
                frame = recv(noblock, copy=False)
                while True:
                    frames += 1
                    size += len(frame)
                    last = not frame.more
                    send(frame, 0 if last else more, copy=False)
                    if capture is not None:
                        capture.send(frame, 0 if last else more, copy=False)
                    if last:
                        break
                    frame = recv(copy=False)  # the rest of a message is there with its first
        except zmq.Again:
            pass
        self._counts[0] += frames
        self._counts[1] += size

    def _on_subscriptions(self, xpub: zmq.Socket[Any], xsub: zmq.Socket[Any]) -> None:
        """Decide on each (un)subscription message waiting on the public XPUB."""
        table = self._table
        keyed = self._guard.uses_curve(self._public_wanted)  # User-Id: the client's CURVE key
        for _ in range(_SUBSCRIPTION_BATCH):
            try:
                msg = xpub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            data = msg.bytes
            if not data or data[0] > 1 or msg.more:
                continue  # a message a subscriber sent upstream: nothing publishes to them
            topic = data[1:]
            peer = _peer_of(msg, keyed)
            if data[0] == 0:
                xpub.setsockopt(zmq.UNSUBSCRIBE, topic)  # no-op for a connection that ended
                if peer is None:
                    self._take_ended()  # a connection ended: which one, if it is known yet
                table.unsubscribe(peer, topic, time.monotonic())
            else:
                who = peer if peer is not None else Peer("")
                decision = table.subscribe(who, topic)
                if decision.refusal is None:
                    xpub.setsockopt(zmq.SUBSCRIBE, topic)
                else:
                    if decision.first:
                        self._log_refusal(who, topic, decision.refusal.value)
                    self._connections.close_for_refusal(who.address, time.monotonic())
            for up in table.take_outputs():
                self._send_upstream(xsub, up)

    def _send_upstream(self, xsub: zmq.Socket[Any], up: Upstream) -> None:
        try:
            xsub.send(up.frame, zmq.NOBLOCK)
            self._upstream_sent += 1
        except zmq.Again:  # pragma: no cover - XSUB never blocks on subscriptions
            log.warning("bus forwarder: could not pass %r upstream", up.frame)

    def _log_refusal(self, peer: Peer, topic: bytes, why: str) -> None:
        limits = self.limits
        what = {
            "too_long": f"it is {len(topic)} bytes, longer than any topic ({limits.max_bytes})",
            "peer_full": f"this peer holds {limits.per_peer} subscriptions already ([bus] "
                         "max_subscriptions_per_peer)",
            "bus_full": f"the bus holds {limits.total} subscriptions already ([bus] "
                        "max_subscriptions)",
        }[why]
        log.warning(
            "bus: refused a subscription from %s (%r...): %s; its connection is closed, and "
            "further refusals of this peer are only counted (`pyconpro status`: "
            "forwarder.subscribers); raise the limit if this subscriber is yours",
            peer, topic[:40], what,
        )  # fmt: skip

    def _reconnect(self, xsub: zmq.Socket[Any], connected: set[str]) -> None:
        with self._lock:
            want = self._want
        for ep in sorted(connected - want):
            try:
                xsub.disconnect(ep)
            except zmq.ZMQError:  # never connected (bad endpoint): nothing to undo
                pass
            connected.discard(ep)
        for ep in sorted(want - connected):
            try:
                xsub.connect(ep)
                connected.add(ep)
            except zmq.ZMQError as exc:
                log.error("bus forwarder: cannot connect to publisher %s: %s", ep, exc)

    def _bind(self, xsub: zmq.Socket[Any], xpub: zmq.Socket[Any]) -> str | None:
        """Bind both sides (CURVE servers where their endpoints need it); None, or the error."""
        guard = self._guard
        try:
            guard.secure_bind(xsub, self._upstream_wanted)
            xsub.bind(self._upstream_wanted)
            self.upstream_endpoint = xsub.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            return (
                f"cannot bind the workers' side of the bus {self._upstream_wanted}: {exc}; "
                "check [bus].control_base (its directory must exist and be writable)"
            )
        # The same socket also connects to the workers' PUB endpoints, as a client (libzmq
        # copies the options into each bind and each connect when it is made).
        xsub.curve_server = False
        client = guard.client_keys(self._upstream_wanted)
        if client is not None:
            client.apply(xsub)
        try:
            guard.secure_bind(xpub, self._public_wanted)
            xpub.bind(self._public_wanted)
            self.public_endpoint = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            return (
                f"cannot bind the bus endpoint {self._public_wanted}: {exc}; another "
                "pyconpro (or another program) may be using it: stop it or change "
                "[bus].endpoint"
            )
        return None

    def set_upstreams(self, endpoints: Iterable[str]) -> None:
        """Connect the XSUB side to exactly these publisher endpoints (workers' PUB sockets).

        Call from the thread that called ``start()``.
        """
        want = frozenset(endpoints)
        with self._lock:
            if want == self._want:
                return
            self._want = want
        self._command(_RECONNECT)

    @property
    def upstreams(self) -> frozenset[str]:
        with self._lock:
            return self._want

    def stop(self, timeout: float = 5.0) -> None:
        """Stop forwarding and close the sockets, and end the context when it is the
        forwarder's own (idempotent)."""
        if self._thread is not None and self._control is not None:
            if self.replay is not None:
                self.replay.stop(timeout)
            if self._thread.is_alive():
                self._command(_TERMINATE)
                self._thread.join(timeout)
            self._close_control()
        if self._own_ctx and not self._ctx.closed and not self.stuck_threads():
            self._guard.close(self._ctx)  # its ZAP thread's socket would hold term() forever
            self._ctx.term()  # stuck threads hold sockets: it would wait for them forever

    def stuck_threads(self) -> list[str]:
        """The names of this forwarder's threads still alive after ``stop()``: while any is,
        its sockets are open and terminating the context would wait for them forever."""
        threads = [self._thread, self._connections._thread,
                   self.replay._thread if self.replay is not None else None]  # fmt: skip
        return [t.name for t in threads if t is not None and t.is_alive()]

    def _command(self, command: bytes) -> None:
        if self._control is None or not self.alive:
            return
        try:
            self._control.send(command, zmq.NOBLOCK)
        except zmq.ZMQError:  # pragma: no cover - thread gone, or 16 commands unread
            log.warning("bus forwarder: %s not delivered", command.decode())

    def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    @property
    def capture_endpoint(self) -> str:
        """Where the copies for the replay buffer are published (inproc, in this forwarder's
        context; "" without a buffer)."""
        return self._capture_ep

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ counters

    def stats(self, timeout_ms: int = 1000) -> ForwarderStats | None:
        """The forwarder's counters (None when it is not running). ``timeout_ms`` is kept for
        callers of the proxy's version; the counters are read in-process now."""
        del timeout_ms
        if not self.alive:
            return None
        frames, size = self._counts
        return ForwarderStats(
            frames_in=frames, bytes_in=size, frames_out=frames, bytes_out=size,
            subscriptions=self._upstream_sent, subscribers=self._subscriber_stats,
        )  # fmt: skip


def _peer_of(msg: zmq.Frame, keyed: bool) -> Peer | None:
    """The peer a subscription message names in its metadata; None without metadata (libzmq
    unsubscribing for a connection that ended). ``keyed``: CURVE, the key is part of it."""
    try:
        address = str(msg.get("Peer-Address"))
    except zmq.ZMQError:
        return None
    if not keyed:
        return Peer(address)
    try:
        return Peer(address, str(msg.get("User-Id")))
    except zmq.ZMQError:
        return Peer(address)

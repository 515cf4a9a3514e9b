"""The one stable bus endpoint: an XSUB -> XPUB forwarder owned by the supervisor.

Owns: two ZeroMQ sockets and one thread. The XSUB side connects to every I/O worker's PUB
endpoint (``set_upstreams``; ZeroMQ reconnects by itself when a worker restarts on the same
endpoint) and is also bound on an internal endpoint where publishers may connect; sinks, ``pyconpro
tail`` and any subscriber in any language connect to the XPUB side (``[bus].endpoint``). Workers
come and go (restarts, reloads, one per interface), the public endpoint never moves, and
subscriptions flow upstream so workers only send what somebody wants (ARCHITECTURE.md
"Processes": "the single public bus endpoint").

Why a thread inside the supervisor and not a child process: the forwarding loop is libzmq's own
``zmq_proxy_steerable`` in C, which releases the GIL, so it costs the supervisor's Python
thread nothing; a thread cannot be killed by itself, cannot lose its endpoint to a restart race,
and the supervisor can read its counters (``STATISTICS``) over an inproc control socket.
``scripts/bench_forwarder.py`` measures it against a direct PUB/SUB link in the same run
(docs/operations.md records the numbers).

With a replay buffer (``replay_s`` and ``replay_bytes`` above 0, ``[bus]``), the proxy also
gets a capture socket (a PUB on an inproc endpoint: libzmq copies every forwarded message to
it without ever waiting) and the XSUB a second, inproc, endpoint; the replay thread
(``workers/replay.py``) reads the one and publishes its markers into the other. The XSUB then
also subscribes upstream to everything (the empty prefix), so publishers keep sending what a
sink that is down subscribed to, and the buffer has it when that sink comes back.

Sockets are never shared across threads: the proxy thread creates, binds, uses and closes the
XSUB/XPUB pair and the capture socket; the caller's thread only ever touches its end of the
inproc control pair (and of the replay thread's pipe).
PUB never blocks: the XPUB side drops for a subscriber past its HWM (STYLE.md #10).
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import zmq
from pyconpro.acquisition.security import SecurityConfig
from pyconpro.workers.guard import ServerGuard
from pyconpro.workers.replay import ReplayThread

__all__ = ["Forwarder", "ForwarderError", "ForwarderStats", "connectable"]

log = logging.getLogger("pyconpro.forwarder")


# The PAIR pipe between the owner and the forwarder thread carries a few commands only.
_CONTROL_HWM = 16
# Copies queued for the replay thread when the bus's own HWM is unlimited (0): past it the
# thread, not the bus, loses them (counted as the buffer's ``lost``).
_CAPTURE_HWM = 100_000
_INSTANCES = itertools.count()

class ForwarderError(RuntimeError):
    """The forwarder could not bind or stopped unexpectedly; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    """libzmq proxy counters since start (``zmq_proxy_steerable`` STATISTICS).

    libzmq counts *frames*; every bus message is two frames (``[topic, body]``), so
    ``messages_in`` is ``frames_in // 2``.
    """

    frames_in: int  # frames received from publishers (workers) on the XSUB side
    bytes_in: int
    frames_out: int  # frames handed to the XPUB side (each then goes to every subscriber)
    bytes_out: int
    subscriptions: int  # (un)subscription messages forwarded upstream

    @property
    def messages_in(self) -> int:
        return self.frames_in // 2

    def totals(self) -> tuple[int, int, int, int, int]:
        return (self.frames_in, self.bytes_in, self.frames_out, self.bytes_out, self.subscriptions)

    def as_dict(self) -> dict[str, int]:
        return {
            "messages_in": self.messages_in,
            "frames_in": self.frames_in,
            "bytes_in": self.bytes_in,
            "frames_out": self.frames_out,
            "bytes_out": self.bytes_out,
            "subscriptions": self.subscriptions,
        }


_U64 = struct.Struct("<Q")  # STATISTICS frames are native uint64; every supported host is LE


def connectable(endpoint: str) -> str:
    """The address a local subscriber connects to for a bound ``endpoint``.

    ``tcp://*:5555`` and ``tcp://0.0.0.0:5555`` listen on every interface; a local client
    connects to ``127.0.0.1`` instead.
    """
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard) :]
    return endpoint


class Forwarder:
    """XSUB bound on ``upstream`` -> XPUB bound on ``public``; run with ``start()``.

    ``public`` / ``upstream`` may use ``tcp://HOST:0`` (or ``:*``); the bound addresses are then in
    ``public_endpoint`` / ``upstream_endpoint`` after ``start()`` returns. ``guard``: the
    process's CURVE keys; each side bound on an endpoint that needs CURVE is a CURVE server, and
    the XSUB connects to publishers on such endpoints as a client with the pipeline's keys.
    ``replay_s`` / ``replay_bytes``: the replay buffer's bounds (either 0: no buffer); its
    thread is ``replay`` after ``start()``.
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
    ) -> None:
        self._public_wanted = public
        # CURVE for the endpoints that need it (workers/guard.py); none by default.
        self._guard = guard if guard is not None else ServerGuard(SecurityConfig())
        self._upstream_wanted = upstream
        self.hwm = hwm
        self.linger_ms = linger_ms
        self._ctx = context if context is not None else zmq.Context.instance()
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
        self._stopping = False
        self._base = (0, 0, 0, 0, 0)  # counters of earlier proxy runs (reconfigurations)
        self.replay: ReplayThread | None = None
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
        self._control = self._ctx.socket(zmq.PAIR)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.setsockopt(zmq.SNDHWM, _CONTROL_HWM)  # a handful of commands at most
        self._control.setsockopt(zmq.RCVHWM, _CONTROL_HWM)
        self._control.bind(self._control_ep)
        self._thread = threading.Thread(target=self._run, name="bus-forwarder", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout):
            raise ForwarderError(f"the bus forwarder did not bind within {timeout:g} s")
        if self._error is not None:
            self._thread.join(timeout)
            self._close_control()
            raise ForwarderError(self._error)
        if self.replay is not None:
            self.replay.start(timeout)

    def _run(self) -> None:
        xsub = self._ctx.socket(zmq.XSUB)
        xpub = self._ctx.socket(zmq.XPUB)
        ctl = self._ctx.socket(zmq.PAIR)
        capture = self._ctx.socket(zmq.PUB) if self.replay is not None else None
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
            ctl.connect(self._control_ep)
            self._error = self._bind(xsub, xpub)
            if self._error is not None:
                return
            if capture is not None:
                # Subscribe upstream to everything, for the buffer: a sink that is down takes
                # its subscriptions with it, and the workers would stop sending what only it
                # wanted. XSUB sends it to every publisher it connects to, now and later.
                xsub.send(b"\x01")
            self._bound.set()
            log.info("bus forwarder: %s -> %s", self.upstream_endpoint, self.public_endpoint)
            connected: set[str] = set()
            while True:
                with self._lock:
                    want, stopping = self._want, self._stopping
                if stopping:
                    break
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
                try:
                    # Returns on TERMINATE: either a stop or a change of upstream endpoints.
                    zmq.proxy_steerable(xsub, xpub, capture, ctl)
                except zmq.ContextTerminated:
                    break
                except zmq.ZMQError as exc:  # pragma: no cover - libzmq failure
                    self._error = f"the bus forwarder stopped: {exc}"
                    log.error("%s", self._error)
                    break
        finally:
            self._bound.set()
            for sock in (xsub, xpub, ctl, capture):
                if sock is not None:
                    sock.close()

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

        The proxy is paused for the change (microseconds; messages wait in the socket queues)
        and its counters carried over. Call from the thread that called ``start()``.
        """
        want = frozenset(endpoints)
        with self._lock:
            if want == self._want:
                return
            self._want = want
        if self.alive:
            before = self.stats(timeout_ms=500)
            if before is not None:
                self._base = before.totals()
            self._terminate()

    @property
    def upstreams(self) -> frozenset[str]:
        with self._lock:
            return self._want

    def stop(self, timeout: float = 5.0) -> None:
        """Stop forwarding and close the sockets (idempotent)."""
        if self._thread is None or self._control is None:
            return
        if self.replay is not None:
            self.replay.stop(timeout)
        with self._lock:
            self._stopping = True
        if self._thread.is_alive():
            self._terminate()
            self._thread.join(timeout)
        self._close_control()

    def _terminate(self) -> None:
        assert self._control is not None
        try:
            self._control.send(b"TERMINATE", zmq.NOBLOCK)
        except zmq.ZMQError:  # pragma: no cover - thread already gone
            return
        # libzmq 4.3.5 answers TERMINATE with one empty frame; read it so the next STATISTICS
        # reply is the next thing on the pipe.
        if self._control.poll(200):
            self._control.recv_multipart()

    def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ counters

    def stats(self, timeout_ms: int = 1000) -> ForwarderStats | None:
        """The proxy's counters, or None if it does not answer within ``timeout_ms``.

        Call from the thread that called ``start()`` (the control socket is not shared).
        """
        if self._control is None or not self.alive:
            return None
        try:
            self._control.send(b"STATISTICS", zmq.NOBLOCK)
        except zmq.ZMQError:
            return None
        while self._control.poll(timeout_ms):
            frames = self._control.recv_multipart()
            if len(frames) != 8 or any(len(f) != 8 for f in frames):
                continue  # a stray reply to an earlier command
            n = [_U64.unpack(f)[0] for f in frames]
            b = self._base
            # frontend (XSUB): in, bytes in, out, bytes out; then the same four for the XPUB side
            return ForwarderStats(
                frames_in=b[0] + n[0],
                bytes_in=b[1] + n[1],
                frames_out=b[2] + n[6],
                bytes_out=b[3] + n[7],
                subscriptions=b[4] + n[2],
            )
        return None

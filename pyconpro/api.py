"""The original in-process API, kept: ``Connection``, ``PLC``, ``Consumer``, ``ConsumerHint``.

    con = Connection(); con.Start()
    plc = con.addPLC("172.16.13.200", slot=0)
    c = plc.addConsumer(ConsumerHint(tag="test", datasize=6, rpi=1000, otrpi=1100), handler)
    c.Start(); ...; c.Stop(); con.Join(); con.Close()

The engine is the pipeline's: one I/O worker (``workers.io_worker``) per local interface,
started by this API as a **subprocess** the first time a consumer needs it, driven through its
control socket, and its samples received on its PUB socket by one dispatcher thread here that
calls the handlers. A subprocess rather than an engine thread because heartbeats and the T->O
watchdog must keep their deadlines whatever the handlers do: a handler that computes for a
while holds the GIL, and in-process that would delay heartbeats until the PLC drops the
connection. The worker is told to die with this process (Linux parent-death signal), and
``Close()`` (or interpreter exit) stops it gracefully: Forward_Close for every connection.

What changed for users (see docs/api.md): ``datasize`` is optional (learned from the
controller; when given and wrong, the error says the right value), ``rpi``/``otrpi`` stay in
milliseconds, the slot is honoured, and the "restart too soon" retry (``PleaseResetError``) is
done inside the worker; ``PleaseResetError`` is still exported but no longer raised.
Pythonic aliases (``start``, ``add_plc``, ``add_consumer``, ``stop``, ``join``, ``close``) and a
richer handler (``sample=True``: a ``TagSample`` with the decoded value and metadata) are offered
alongside.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import msgpack
import zmq

from pyconpro.acquisition import control, wire
from pyconpro.acquisition.assembly import MAP_KEYS
from pyconpro.acquisition.errors import MalformedPacket, PyconproError, UsageError
from pyconpro.acquisition.produce import MAX_CONSUMERS_DEFAULT, RPI_MAX_US_DEFAULT, ProduceSpec
from pyconpro.workers.process import SpawnError, describe_status, json_ready, spawn

log = logging.getLogger("pyconpro.api")

DEFAULT_START_TIMEOUT = 10.0
_CONTROL_TIMEOUT_MS = 5000
_POLL_S = 0.02
_UDP_PORT_HINT = ("pass Connection(udp_port=0) for any free port, or another udp_port "
                  "(or set PYCONPRO_UDP_PORT)")


class CommError(Exception):
    """Communication with a PLC (or with the engine) failed; the message says why."""


class PleaseResetError(CommError):
    """Kept for compatibility: the seed raised it when a consumer was restarted too soon. The
    worker now retries by itself (protocol.md 7.7), so this is never raised."""


class DatasizeError(CommError, ValueError):
    """``ConsumerHint.datasize`` does not match the tag; the message gives the right value."""


@dataclass
class ConsumerHint:
    """What to consume: ``tag``; ``datasize`` = tag bytes + 2 as in the seed (optional now);
    ``rpi`` (PLC -> us) and ``otrpi`` (our heartbeat) in milliseconds."""

    tag: str
    datasize: int | None = None
    rpi: float = 100
    otrpi: float | None = None


@dataclass
class AssemblyHint:
    """What to consume from a generic adapter (docs/assemblies.md): ``name`` (its topics and
    key, as ``ConsumerHint.tag`` for a tag), ``connection`` (``"exclusive_owner"``,
    ``"input_only"``, ``"listen_only"``), the connection points ``input`` (T->O), ``output``
    (O->T or heartbeat) and ``config``, or the whole ``path`` (bytes); ``input_size`` /
    ``output_size`` data bytes (None: the device's answer); ``layout``, the fields of the input
    image (``[{"name": "speed", "type": "INT"}, ...]``); ``output_layout``, those of the output
    image (exclusive owner: ``set_output`` then takes a map); ``rpi`` / ``otrpi`` in milliseconds;
    ``slot``: a backplane hop, for a device behind one (None: the device owns its address)."""

    name: str
    connection: str
    input: int | None = None
    output: int | None = None
    config: int | None = None
    config_data: bytes = b""
    path: bytes | None = None
    input_size: int | None = None
    output_size: int | None = None
    ot_run_idle: bool = True
    to_run_idle: bool = False
    layout: list[dict[str, Any]] | None = None
    output_layout: list[dict[str, Any]] | None = None
    rpi: float = 100
    otrpi: float | None = None
    slot: int | None = None

    @property
    def tag(self) -> str:
        """The consumer's name (what a tag's name is to a ``ConsumerHint``)."""
        return self.name

    def assembly_map(self) -> dict[str, Any]:
        """The ``assembly`` map of the worker's consumer definition (its keys are this hint's
        fields of the same names; bytes go as hex)."""
        m: dict[str, Any] = {}
        for key in MAP_KEYS:
            value = getattr(self, key)
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).hex() or None
            if value is not None:
                m[key] = value
        return m


@dataclass(frozen=True, slots=True)
class TagSample:
    """What a ``sample=True`` handler receives."""

    plc: str
    tag: str
    value: Any  # decoded: int/float/bool/str, lists for arrays, dicts for UDTs
    raw: bytes  # the tag bytes, as a seed handler receives them
    type_name: str | None
    cip_sequence: int
    gap: int  # datagrams missed on this connection so far
    time_ns: int  # wall-clock receive time, ns since the epoch
    monotonic_ns: int

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ns / 1e9, UTC)


# ---------------------------------------------------------------------------------------------
# The engine: an I/O worker subprocess per local address
# ---------------------------------------------------------------------------------------------


class _Worker:
    """One ``workers.io_worker`` subprocess and a control channel to it.

    Started by ``workers.process.spawn`` from whichever thread asks: SIGTERM when that thread's
    process dies (the worker then Forward_Closes its connections). It stays in our process group
    (as it always did), so a Ctrl-C in the terminal reaches it too.
    """

    def __init__(self, ctx: zmq.Context[Any], local_address: str, udp_port: int,
                 log_level: str, start_timeout: float, tcp_port: int = 44818) -> None:
        self.local_address = local_address
        self._ctx = ctx
        self._lock = threading.Lock()  # before anything can fail: stop()/kill() use it
        self._req: zmq.Socket[Any] | None = None
        cmd = [sys.executable, "-m", "pyconpro.workers.io_worker",
               "--local-address", local_address,
               "--udp-port", str(udp_port), "--pub", "tcp://127.0.0.1:0",
               "--control", "tcp://127.0.0.1:0", "--stats-interval", "0",
               "--name", f"api-{os.getpid()}-{local_address}", "--log-level", log_level,
               "--udp-port-hint", _UDP_PORT_HINT, "--recorder-log-level", "DEBUG",
               "--tcp-port", str(tcp_port)]  # its EtherNet/IP server, once it produces a tag
        try:
            # stderr is ours: the worker's error is on it, above the exception
            self.proc = spawn(cmd, ready=json_ready, ready_timeout_s=start_timeout,
                              process_group=False)
        except SpawnError as err:
            if err.returncode is not None and _udp_port_taken(local_address, udp_port):
                why = (f"cannot bind UDP {local_address}:{udp_port}: the port is taken (a "
                       f"`pyconpro run` or another consumer on this host?); {_UDP_PORT_HINT}")
            elif err.returncode is not None:
                why = (f"exited ({describe_status(err.returncode)}) before it was ready; its "
                       "error is on stderr above")
            elif err.first_line:
                why = f"printed an unexpected first line: {err.first_line!r}"
            else:
                why = f"did not start within {start_timeout:g} s"
            raise CommError(f"the I/O worker for {local_address} {why}") from None
        info = self.proc.ready
        self.pub = str(info["pub"])
        self.control_endpoint = str(info["control"])
        self.udp_port = int(info["udp_port"])

    def call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One control request; CommError if the worker does not answer."""
        with self._lock:
            if self._req is None:
                self._req = self._ctx.socket(zmq.REQ)
                self._req.setsockopt(zmq.LINGER, 0)
                self._req.setsockopt(zmq.SNDHWM, 16)  # one request at a time (REQ)
                self._req.setsockopt(zmq.RCVHWM, 16)
                self._req.setsockopt(zmq.RCVTIMEO, _CONTROL_TIMEOUT_MS)
                self._req.setsockopt(zmq.SNDTIMEO, _CONTROL_TIMEOUT_MS)
                self._req.connect(self.control_endpoint)
            try:
                self._req.send(msgpack.packb(dict(request), use_bin_type=True))
                reply = msgpack.unpackb(self._req.recv(), raw=False)
            except zmq.ZMQError as err:
                self._req.close()
                self._req = None  # a REQ socket is unusable after a timeout
                alive = self.proc.alive()
                raise CommError(f"the I/O worker for {self.local_address} "
                                f"{'does not answer' if alive else 'has exited'} ({err})") \
                    from None
        if not isinstance(reply, dict):
            raise CommError(f"malformed control reply from the I/O worker: {reply!r}")
        return reply

    def stop(self, timeout: float = 5.0) -> None:
        asked = False
        if self.proc.alive():
            try:
                self.call(control.StopRequest().to_map())
                asked = True
            except CommError:
                pass
        if asked:  # it is stopping already: give it the time, then kill
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
            self.proc.kill()
        else:
            self.proc.stop(timeout)  # SIGTERM, wait, SIGKILL
        self._close_sockets()

    def kill(self) -> None:
        self.proc.kill()
        self._close_sockets()

    def _close_sockets(self) -> None:
        with self._lock:
            if self._req is not None:
                self._req.close()
                self._req = None


class _Dispatcher(threading.Thread):
    """Owns the SUB socket (ZeroMQ sockets stay in one thread); calls the handlers."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        super().__init__(name="pyconpro-dispatch", daemon=True)
        self._ctx = ctx
        self._commands: queue.Queue[str] = queue.Queue()
        self._stop_event = threading.Event()
        self.routes: dict[bytes, Consumer] = {}
        self.events: dict[bytes, Consumer] = {}

    def connect(self, endpoint: str) -> None:
        self._commands.put(endpoint)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        # Everything our own workers publish, but stats: subscribed before connecting, so
        # nothing published after the connection is up can be missed.
        sub.setsockopt(zmq.SUBSCRIBE, wire.topic_prefix(wire.TopicKind.SAMPLE))
        sub.setsockopt(zmq.SUBSCRIBE, wire.topic_prefix(wire.TopicKind.EVENT))
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        try:
            while not self._stop_event.is_set():
                while not self._commands.empty():
                    sub.connect(self._commands.get_nowait())
                if not poller.poll(int(_POLL_S * 1000 * 5)):
                    continue
                for _ in range(1000):
                    try:
                        topic, body = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    except ValueError:
                        continue
                    self._deliver(topic, body)
        finally:
            sub.close()

    def _deliver(self, topic: bytes, body: bytes) -> None:
        consumer = self.routes.get(topic)
        if consumer is not None:
            try:
                sample = wire.Sample.decode(topic, body)
            except MalformedPacket:
                return
            consumer._on_sample(sample)
            return
        consumer = self.events.get(topic)
        if consumer is not None:
            try:
                consumer._on_event(wire.Event.decode(topic, body))
            except MalformedPacket:
                return


# ---------------------------------------------------------------------------------------------
# Public classes
# ---------------------------------------------------------------------------------------------


class Connection:
    """The engine: starts I/O workers (one per local interface) as needed, dispatches samples.

    ``udp_port`` is the local class-1 port the workers bind (2222 like a Logix consumer; 0 =
    any free port, useful next to another consumer on the same host). Environment variable
    ``PYCONPRO_UDP_PORT`` changes the default. ``local_address`` forces the interface (default:
    the one the OS routes each PLC through). ``tcp_port`` is where a worker that produces tags
    (``addProducer``) serves the consuming controllers' Forward_Opens (44818; 0 = any free port).
    """

    def __init__(self, *, udp_port: int | None = None, local_address: str | None = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT,
                 log_level: str = "WARNING", tcp_port: int = 44818) -> None:
        env_port = os.environ.get("PYCONPRO_UDP_PORT")
        self.udp_port = udp_port if udp_port is not None else int(env_port or 2222)
        self.tcp_port = tcp_port
        self.local_address = local_address or os.environ.get("PYCONPRO_LOCAL_ADDRESS") or None
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.plcs: list[PLC] = []
        self.producers: list[Producer] = []
        self._ctx: zmq.Context[Any] | None = None
        self._dispatcher: _Dispatcher | None = None
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    # -- seed API --------------------------------------------------------------------------

    def Start(self) -> None:
        with self._lock:
            if self._closed:
                raise CommError("this Connection is closed; make a new one")
            if self._dispatcher is not None:
                return
            self._ctx = zmq.Context()
            self._dispatcher = _Dispatcher(self._ctx)
            self._dispatcher.start()

    def addPLC(self, ip: str, slot: int | None = 0, *, port: int = 44818,
               udp_port: int = 2222, name: str | None = None) -> PLC:
        """A PLC at ``ip`` with its CPU in backplane ``slot`` (None: no backplane hop)."""
        plc = PLC(self, ip, slot, port=port, udp_port=udp_port, name=name)
        self.plcs.append(plc)
        return plc

    def addProducer(self, name: str, type: str, *, members: Sequence[tuple[str, str]] = (),
                    max_consumers: int = MAX_CONSUMERS_DEFAULT, rpi_min_ms: float = 1.0,
                    rpi_max_ms: float = RPI_MAX_US_DEFAULT / 1000,
                    consumer_address: str | None = None,
                    local_address: str | None = None) -> Producer:
        """Produce tag ``name`` for Logix controllers that consume it (docs/api.md "Producing
        tags"): served at once by the worker of the interface the consuming controller
        reaches (``consumer_address``; or ``local_address``, or the Connection's), zeros until
        the first ``set``. ``type``: ``DINT``, ``REAL[4]``, ``STRING``..., or with ``members``
        (``(name, type)`` pairs) the name of the UDT they lay out. Raises ``UsageError`` for a
        bad definition, ``CommError`` when the worker cannot serve it (e.g. the TCP port is
        taken: the message names it)."""
        if any(p.name.casefold() == name.casefold() for p in self.producers):
            raise UsageError(f"tag {name!r} is produced already; one producer per tag")
        spec = ProduceSpec(name, type, tuple((str(m), str(t)) for m, t in members),
                           max_consumers, round(rpi_min_ms * 1000), round(rpi_max_ms * 1000))
        local = local_address or self.local_address
        if local is None:
            if consumer_address is None:
                raise UsageError(f"produced tag {name!r}: give consumer_address (the consuming "
                                 "controller's address) or local_address (the PC's address "
                                 "it reaches)")
            from pyconpro.workers.io_worker import route_source

            local = route_source(consumer_address)
        producer = Producer(self, spec, local)
        producer._produce_on(self._worker_at(local))
        self.producers.append(producer)
        return producer

    def Join(self, timeout: float | None = None) -> None:
        """Wait until every consumer is stopped and its connection closed at the PLC."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for plc in self.plcs:
            for c in plc.consumers:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                c._wait_closed(left)

    def Close(self) -> None:
        """Stop every consumer and worker (Forward_Close each connection), stop dispatching."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for plc in self.plcs:
                for c in plc.consumers:
                    c._started = False
            _shutdown(self._workers)
            if self._dispatcher is not None:
                self._dispatcher.stop()
                self._dispatcher.join(5)
                self._dispatcher = None
            if self._ctx is not None:
                self._ctx.term()
                self._ctx = None

    # -- pythonic aliases ------------------------------------------------------------------

    start = Start
    add_plc = addPLC
    add_producer = addProducer
    join = Join
    close = Close

    def __enter__(self) -> Self:
        self.Start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.Close()

    # -- internals -------------------------------------------------------------------------

    def _worker_for(self, plc: PLC) -> _Worker:
        from pyconpro.workers.io_worker import route_source

        return self._worker_at(self.local_address or route_source(plc.ip))

    def _worker_at(self, local: str) -> _Worker:
        """The worker of local address ``local``, started when there is none (or it died)."""
        if self._dispatcher is None:
            raise CommError("call Connection.Start() before starting consumers or producers")
        with self._lock:
            w = self._workers.get(local)
            if w is not None and w.proc.poll() is not None:
                log.warning("I/O worker for %s exited (%s); starting a new one", local,
                            w.proc.returncode)
                w.kill()
                w = None
            if w is None:
                assert self._ctx is not None
                w = _Worker(self._ctx, local, self.udp_port, self.log_level, self.start_timeout,
                            self.tcp_port)
                self._workers[local] = w
                self._dispatcher.connect(w.pub)
                for p in self.producers:  # a replaced worker's produced tags, again
                    if p.local_address == local:
                        p._produce_on(w)
            return w


def _udp_port_taken(local_address: str, udp_port: int) -> bool:
    """Whether binding UDP ``local_address:udp_port`` fails because someone else has it."""
    if udp_port == 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((local_address, udp_port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def _shutdown(workers: dict[str, _Worker]) -> None:
    for w in list(workers.values()):
        w.stop()
    workers.clear()


class PLC:
    """One controller. ``addConsumer`` makes a consumer of one of its produced tags."""

    def __init__(self, connection: Connection, ip: str, slot: int | None = 0, *,
                 port: int = 44818, udp_port: int = 2222, name: str | None = None) -> None:
        self.connection = connection
        self.ip = ip
        self.slot = slot
        self.port = port
        self.udp_port = udp_port
        self.name = name or (ip if slot in (0, None) else f"{ip}-slot{slot}")
        self.consumers: list[Consumer] = []

    def addConsumer(self, hint: ConsumerHint, handler: Callable[..., Any],
                    args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None, *,
                    sample: bool = False) -> Consumer:
        """``handler(data, *args, **kwargs)`` gets the tag bytes for each sample (seed
        behaviour), or a ``TagSample`` when ``sample=True``."""
        if any(c.hint.tag.lower() == hint.tag.lower() for c in self.consumers):
            raise UsageError(f"PLC {self.name} already has a consumer of {hint.tag!r}; one "
                             "consumer per tag and PLC (give the handler more work instead)")
        c = Consumer(self, hint, handler, tuple(args), dict(kwargs or {}), sample)
        self.consumers.append(c)
        return c

    add_consumer = addConsumer

    def addAssembly(self, hint: AssemblyHint, handler: Callable[..., Any],
                    args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None, *,
                    sample: bool = False) -> AssemblyConsumer:
        """A consumer of a generic adapter's assemblies: ``handler`` gets the input image's
        bytes (or a ``TagSample`` whose value is the layout's fields); for an exclusive owner,
        ``set_output(image)`` gives the output image."""
        if any(c.hint.tag.lower() == hint.name.lower() for c in self.consumers):
            raise UsageError(f"PLC {self.name} already has a consumer named {hint.name!r}")
        c = AssemblyConsumer(self, hint, handler, tuple(args), dict(kwargs or {}), sample)
        self.consumers.append(c)
        return c

    add_assembly = addAssembly

    def catalog(self, timeout: float = 5.0) -> Any:
        """The controller's tag catalog (acquisition.discovery.TagCatalog), uploaded now."""
        from pyconpro.workers.explicit_client import ExplicitClient

        local = self.connection.local_address
        with ExplicitClient(self.ip, port=self.port, slot=self.slot, local_address=local,
                            timeout=timeout) as client:
            return client.discover(programs=False)


@dataclass
class _State:
    state: str = "IDLE"
    failure: str | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)


class Consumer:
    """One produced tag consumed from one PLC. ``Start()`` / ``Stop()`` as in the seed."""

    def __init__(self, plc: PLC, hint: ConsumerHint | AssemblyHint,
                 handler: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 sample: bool) -> None:
        self.plc = plc
        self.hint = hint
        self.handler = handler
        self.args = args
        self.kwargs = kwargs
        self.sample = sample
        self.samples = 0
        self.handler_errors = 0
        self._started = False
        self._status = _State()
        self._worker: _Worker | None = None
        self._key = f"{plc.name}/{hint.tag}"
        self._topic = wire.topic_for_sample(plc.name, hint.tag)
        self._event_topic = wire.topic_for_event(plc.name, hint.tag)

    @property
    def state(self) -> str:
        """The worker's connection state (OPENING, RUNNING, BACKOFF, CLOSED, FAILED, ...)."""
        return self._status.state

    @property
    def failure(self) -> str | None:
        return self._status.failure

    def Start(self) -> None:
        """Open the connection; returns once data flows. Raises CommError if the controller
        refuses for good (unknown or not produced tag, wrong type), DatasizeError for a wrong
        ``datasize``; transient trouble (PLC unreachable, restart too soon) is retried by the
        worker in the background after ``start_timeout`` seconds."""
        con = self.plc.connection
        spec = self._definition()
        worker = con._worker_for(self.plc)
        self._worker = worker
        assert con._dispatcher is not None
        con._dispatcher.routes[self._topic] = self
        con._dispatcher.events[self._event_topic] = self
        try:
            request = control.AddRequest(control.consumer_from_map(spec))
        except UsageError as err:  # the same text the worker would answer
            raise CommError(f"{self._key}: {err}") from None
        with self._status.changed:
            self._status.state, self._status.failure = "OPENING", None
        self._started = True
        deadline = time.monotonic() + con.start_timeout
        while True:
            reply = worker.call(request.to_map())
            if reply.get("ok"):
                break
            error = str(reply.get("error", "refused"))
            # Stop() then Start() right away: the previous connection is still closing at
            # the PLC (Forward_Close in flight); wait for it instead of failing.
            if "exists already" in error and time.monotonic() < deadline:
                time.sleep(_POLL_S)
                continue
            self._started = False
            raise CommError(f"{self._key}: {error}")
        self._wait_running(deadline)

    def _definition(self) -> dict[str, Any]:
        """The worker's consumer definition (its control socket's map)."""
        hint = self.hint
        assert isinstance(hint, ConsumerHint)
        size = self._checked_size(hint.datasize) if hint.datasize is not None else None
        spec = self._common(hint.rpi, hint.otrpi, self.plc.slot)
        if size is not None:
            spec["size"] = size
        return spec

    def _common(self, rpi: float, otrpi: float | None, slot: int | None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "plc": self.plc.name, "address": self.plc.ip, "port": self.plc.port,
            "udp_port": self.plc.udp_port, "tag": self.hint.tag, "rpi_ms": rpi,
            "slot": "none" if slot is None else slot,
        }
        if otrpi is not None:
            spec["ot_rpi_ms"] = otrpi
        return spec

    def _checked_size(self, datasize: int) -> int | None:
        """None when ``datasize`` is right (the worker then learns type and size itself, so
        samples are decoded); the size to give the worker when it cannot be checked now."""
        from pyconpro.acquisition.discovery import TagCatalog

        try:
            catalog: TagCatalog = self.plc.catalog()
        except (PyconproError, OSError) as err:
            # Not reachable now: hand the size to the worker, which checks it against the
            # type it learns (and the controller's 0x0109) and decodes the samples by it.
            log.info("%s: cannot check datasize now (%s)", self._key, err)
            return datasize - 2
        try:
            catalog.check_datasize(self.hint.tag, datasize)
            return None
        except KeyError as err:
            raise CommError(f"{self._key}: {err.args[0]}") from None
        except UsageError as err:
            if "wrong" in str(err):
                raise DatasizeError(f"{self._key}: {err}") from None
            raise CommError(f"{self._key}: {err}") from None

    def _wait_running(self, deadline: float) -> None:
        assert self._worker is not None
        while time.monotonic() < deadline:
            state, failure = self._poll_state()
            if state == "RUNNING":
                return
            if state == "FAILED":
                self._started = False
                raise CommError(f"{self._key}: {failure or 'the controller refused'}")
            time.sleep(_POLL_S)
        cause = self._cause() or self.state
        with self._status.changed:
            self._status.failure = cause
        log.warning("%s: not running after %.1f s (%s); the worker keeps trying", self._key,
                    self.plc.connection.start_timeout, cause)

    def _cause(self) -> str | None:
        """Why this consumer is not running yet, from the worker's status: its own failure or
        last CIP status, else its PLC session's last failure (unreachable, refused, ...)."""
        assert self._worker is not None
        try:
            status = self._worker.call(control.StatusRequest().to_map())
        except CommError as err:
            return str(err)
        for item in status.get("consumers", []):
            if item.get("key") == self._key and (item.get("failure") or item.get("last_status")):
                return str(item.get("failure") or item.get("last_status"))
        for link in status.get("plcs", []):
            if link.get("address") == self.plc.ip and link.get("last_failure"):
                return f"PLC {self.plc.ip}: {link['last_failure']}"
        return None

    def _poll_state(self) -> tuple[str, str | None]:
        assert self._worker is not None
        reply = self._worker.call(control.ListRequest().to_map())
        for item in reply.get("consumers", []):
            if item.get("key") == self._key:
                with self._status.changed:
                    self._status.state = state = str(item.get("state"))
                    # a retrying consumer keeps the cause Start() found until it runs
                    self._status.failure = item.get("failure") or (
                        None if state == "RUNNING" else self._status.failure)
                    self._status.changed.notify_all()
                return self._status.state, self._status.failure
        with self._status.changed:
            self._status.state = "CLOSED"
        return "CLOSED", self._status.failure

    def Stop(self) -> None:
        """Stop delivering and Forward_Close the connection (in the background)."""
        was = self._started
        self._started = False
        if not was or self._worker is None:
            return
        try:
            reply = self._worker.call(control.RemoveRequest(self._key).to_map())
        except CommError:
            return  # the worker is gone: nothing is left open at the PLC by us
        if not reply.get("ok") and "no consumer" not in str(reply.get("error", "")):
            raise CommError(f"{self._key}: {reply.get('error')}")

    def _wait_closed(self, timeout: float | None) -> None:
        if self._started or self._worker is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            try:
                state, _ = self._poll_state()
            except CommError:
                return
            if state in ("CLOSED", "FAILED") or self._started:
                return
            time.sleep(_POLL_S)

    # -- delivery (dispatcher thread) -------------------------------------------------------

    def _on_sample(self, s: wire.Sample) -> None:
        if not self._started:
            return
        self.samples += 1
        data: Any = s.raw
        if self.sample:
            data = TagSample(s.plc, s.tag, s.value, s.raw, s.type_name, s.cip_seq, s.gap,
                             s.t_wall_ns, s.t_mono_ns)
        try:
            self.handler(data, *self.args, **self.kwargs)
        except Exception:  # a handler bug must not stop the other consumers
            self.handler_errors += 1
            log.exception("%s: handler raised", self._key)

    def _on_event(self, ev: wire.Event) -> None:
        if ev.state_to:
            with self._status.changed:
                self._status.state = ev.state_to
                if ev.state_to == "FAILED":
                    self._status.failure = ev.message or ev.status_text
                self._status.changed.notify_all()

    start = Start
    stop = Stop


class AssemblyConsumer(Consumer):
    """One assembly connection to a generic adapter (``PLC.addAssembly``). ``Start()`` /
    ``Stop()`` as for a tag; an exclusive owner sends zeros in idle mode until
    ``set_output(image)`` gives it an output image, then that image in run mode at its RPI."""

    hint: AssemblyHint

    def _definition(self) -> dict[str, Any]:
        hint = self.hint
        spec = self._common(hint.rpi, hint.otrpi, hint.slot)
        spec["assembly"] = hint.assembly_map()
        return spec

    def set_output(self, image: bytes | Mapping[str, Any]) -> None:
        """The output image, sent from the next O->T datagram on (the latest one is repeated
        at the RPI): bytes, or with an ``output_layout`` a map of its fields
        (``{"speed": 1200, "run": True}``; the fields not named keep their value, zeros before
        the first image). ``CommError`` when the consumer is not started, is not an exclusive
        owner, or the image is not the output assembly's size or a field does not fit (the
        message names it and the fix; the previous image is still sent)."""
        if not self._started or self._worker is None:
            raise CommError(f"{self._key}: Start() it before setting its output")
        data = dict(image) if isinstance(image, Mapping) else bytes(image)
        reply = self._worker.call(control.OutputRequest(self._key, data).to_map())
        if not reply.get("ok"):
            raise CommError(str(reply.get("error", "output refused")))

    setOutput = set_output


class Producer:
    """A tag this PC produces for Logix consumers (``Connection.addProducer``). ``set(value)``
    replaces the value sent: each consuming controller gets the latest one at its RPI. Should
    the worker die, the next call starts a new one that produces the tag again, with the last
    value set."""

    def __init__(self, connection: Connection, spec: ProduceSpec, local_address: str) -> None:
        self.connection = connection
        self.spec = spec
        self.name = spec.name
        self.local_address = local_address
        self._last: dict[str, Any] | None = None  # the last accepted set request

    def set(self, value: Any) -> None:
        """The new value: as a sample would carry it (int, float, bool, str, a list for an
        array, a dict of members for a UDT; missing members are 0), or ``bytes``: the tag
        image, exactly its size. Raises ``UsageError`` when it does not fit the type (the
        previous value stays), ``CommError`` when the worker cannot be reached."""
        request = control.SetRequest(self.name, value).to_map()
        reply = self.connection._worker_at(self.local_address).call(request)
        if not reply.get("ok"):
            raise UsageError(str(reply.get("error")))
        self._last = request

    def status(self) -> dict[str, Any]:
        """The tag as the worker reports it (docs/worker.md "Producing tags"): ``fed``,
        ``updates``, ``rejected``, ``last_error``, ``consumers`` (peer, RPIs, heartbeats), ...,
        ``tcp_port``: where the consuming controllers connect, and ``udp_port``: the worker's
        class-1 port (where their heartbeats go)."""
        worker = self.connection._worker_at(self.local_address)
        full = worker.call(control.StatusRequest().to_map())
        st = full.get("produce") or {}
        tag = next((t for t in st.get("tags", [])
                    if str(t.get("name", "")).casefold() == self.name.casefold()), None)
        if tag is None:
            raise CommError(f"produced tag {self.name!r}: the worker for {self.local_address}"
                            " does not produce it")
        return {**tag, "tcp_port": st.get("tcp_port"), "udp_port": full.get("udp_port")}

    @property
    def tcp_port(self) -> int:
        """The TCP port the consuming controllers open their connection on."""
        return int(self.status()["tcp_port"])

    def _produce_on(self, worker: _Worker) -> None:
        """Produce this tag on ``worker`` (a new one), with the last value set."""
        for request in (control.ProduceRequest(self.spec).to_map(), self._last):
            if request is not None:
                reply = worker.call(request)
                if not reply.get("ok"):
                    raise CommError(f"produced tag {self.name!r}: {reply.get('error')}")

    Set = set
    Status = status

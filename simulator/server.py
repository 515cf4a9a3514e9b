"""The simulator's sockets: a thin single-threaded loop around the pure target role.

Owns (protocol.md 1, 2, 10.1):

* TCP (address, tcp_port, default 127.0.0.2:44818): the encapsulation server, many clients, one
  session per socket. NOP gets no reply; ListIdentity / ListServices / ListInterfaces are
  answered whatever the session handle; RegisterSession follows protocol.md 2.4 (version 1 and
  options 0 else 0x0069, a second one on the socket 0x0001 with the existing handle, no free
  session or the ``refuse_register`` fault 0x0002); UnRegisterSession closes the socket without
  a reply (unknown handle: 0x0064); SendRRData / SendUnitData need the socket's session (else a
  24-byte 0x0064 reply) and the right CPF layout (else 0x0003); anything else 0x0001. Error
  replies are 24 bytes (length 0).
* UDP (address, tcp_port): ListIdentity (after the random delay of protocol.md 2.5 unless
  disabled), ListServices, ListInterfaces; other commands 0x0001.
* UDP (address, udp_port, default 2222): O->T heartbeats in, T->O data out (P2P, or multicast
  with TTL 1 on the interface of ``address``). On request (``record_heartbeats``) every datagram
  that arrives there is also written to a file with its kernel receive time (``HEARTBEAT_RECORD``):
  how benchmarks measure an originator's heartbeat timing at the receiving end.

Dispatch of CIP requests: Forward_Open / Large_Forward_Open / Forward_Close to the Connection
Manager go to ``ProducerTarget.handle_cm`` (it needs the peer IP, session and CPF items);
everything else to the simulated controller's object model
(``acquisition.logix_controller.LogixController``: objects, tag
services, Unconnected_Send, whose embedded CM requests come back through ``cm_handler``).
SendUnitData on a class-3 connection goes through ``ProducerTarget.connected_request``.

The loop waits in ``selectors`` until the earliest deadline of the target (production,
watchdogs), the fault queue and its own timers, feeds what arrives to the core, and carries out
what the core's ``take_outputs()`` lists, in order (``_carry_out``: send a datagram through the
faults, close an originator's sessions, log an event). Protocol decisions stay in
``acquisition.target``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from pyconpro.acquisition import cpf, encap
from pyconpro.acquisition.encap import Command
from pyconpro.acquisition.encap_server import (
    Sessions,
    connection_manager_request,
    discovery_reply,
    embedded_cm_reply,
    reply,
)
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.logix_controller import UNCONNECTED_REPLY_LIMIT
from pyconpro.acquisition.status import EncapsulationStatus
from pyconpro.acquisition.target import (
    CloseSession,
    ProducerTarget,
    SendDatagram,
    TargetConnection,
    TargetEvent,
)
from pyconpro.simulator.consumed import ConsumedSpec, ConsumedTags
from pyconpro.simulator.faults import DatagramFaults, FaultSettings, endless_listing_reply

log = logging.getLogger("pyconpro.sim")

_RECV = 65536

#: One record per datagram received on the class-1 socket while recording
#: (``SimulatorServer.record_heartbeats``): kernel receive time (ns since the Unix epoch,
#: ``SO_TIMESTAMPNS``), connection id and 32-bit sequence number (both 0 when the datagram is too
#: short to carry them).
HEARTBEAT_RECORD = struct.Struct("<qII")
_IDS = struct.Struct("<6xII")  # class-1 prefix: item count, type, length, connection id, sequence
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux (asm-generic) value
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
_RECORD_RCVBUF = 4 * 1024 * 1024  # bytes asked while recording: no record lost to a short stall


class ControllerModel(Protocol):
    """What the server needs of ``acquisition.logix_controller.LogixController``."""

    requests: int  # requests it answered (status: ``controller_requests``)

    def handle(self, message: bytes, now: float, *, reply_limit: int | None = None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ServerConfig:
    address: str = "127.0.0.2"
    tcp_port: int = 44818  # 0 = any free port (tests); UDP ListIdentity uses the same number
    udp_port: int = 2222  # 0 = any free port; announced in the O->T sockaddr reply item
    #: SO_REUSEPORT on the class-1 socket: a load generator may send T->O data from its port
    share_udp_port: bool = False
    max_sessions: int = 64
    multicast_ttl: int = 1
    #: delay UDP ListIdentity replies randomly as protocol.md 2.5 describes.
    udp_identity_delay: bool = True


@dataclass(slots=True)
class ServerCounters:
    tcp_accepted: int = 0
    tcp_closed: int = 0
    sessions_registered: int = 0
    encap_requests: int = 0
    encap_errors: int = 0
    udp_requests: int = 0
    datagrams_received: int = 0
    datagrams_sent: int = 0
    send_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    peer: tuple[str, int]
    frames: encap.FrameBuffer = field(default_factory=encap.FrameBuffer)
    session: int = 0
    out: bytearray = field(default_factory=bytearray)
    closing: bool = False  # close once ``out`` is flushed


class SimulatorServer:
    """The socket side of the simulated controller (module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        store: Any,
        target: ProducerTarget,
        controller: ControllerModel,
        *,
        faults: DatagramFaults | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.target = target
        self.controller = controller
        self.faults = faults or DatagramFaults()
        self.clock = clock
        # ``stop_producing`` stops the target's production itself (nothing built, sequence
        # numbers held), not only the sending of what it built: a load source sending in its
        # place (`pyconpro bench`) then costs the simulator nothing but the heartbeats.
        target.set_producing(not self.faults.settings.stop_producing, clock())
        self.rng = rng or random.Random()
        self.counters = ServerCounters()
        self.selector = selectors.DefaultSelector()
        self._clients: dict[socket.socket, _Client] = {}
        self._sessions: Sessions[_Client] = Sessions(config.max_sessions,
                                                      self.rng.randrange(1, 0x7FFF_0000))
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._stop = False
        self._tcp: socket.socket | None = None
        self._udp_encap: socket.socket | None = None
        self._udp_io: socket.socket | None = None
        self._heartbeat_log: IO[bytes] | None = None
        self._heartbeat_records = 0
        self._rcvbuf_before = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.tcp_port = config.tcp_port
        self.udp_port = config.udp_port
        self.started_at = clock()
        # Tags this controller consumes from a producer (simulator/consumed.py), made by the
        # first ``consume``.
        self.consumed: ConsumedTags | None = None
        # Unconnected_Send may carry a Forward_Open; the controller model hands it back here.
        self._cm_context: tuple[str, int, float] = ("0.0.0.0", 0, 0.0)
        if hasattr(controller, "cm_handler"):
            controller.cm_handler = self._cm_from_controller

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> None:
        """Open every socket; ``tcp_port`` / ``udp_port`` then hold the real port numbers."""
        cfg = self.config
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((cfg.address, cfg.tcp_port))
        tcp.listen(64)
        tcp.setblocking(False)
        self._tcp = tcp
        self.tcp_port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((cfg.address, self.tcp_port))
        udp.setblocking(False)
        self._udp_encap = udp
        io = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if cfg.share_udp_port:
            # The first socket of the port's group: the native load source of `pyconpro
            # bench` joins it to send data as the controller does, from this port, and steers
            # whatever arrives at the port (the heartbeats) to the group's first socket.
            io.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        io.bind((cfg.address, cfg.udp_port))
        io.setblocking(False)
        # Multicast T->O leaves through the interface of our address, TTL 1 (protocol.md 6.7).
        io.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(cfg.address))
        io.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, cfg.multicast_ttl)
        io.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self._udp_io = io
        self.udp_port = io.getsockname()[1]
        self.selector.register(tcp, selectors.EVENT_READ, self._on_accept)
        self.selector.register(udp, selectors.EVENT_READ, self._on_udp_encap)
        self.selector.register(io, selectors.EVENT_READ, self._on_udp_io)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    def request_stop(self) -> None:
        """Safe from a signal handler or another thread: the loop ends at its next turn."""
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def serve_forever(self) -> None:
        while not self._stop:
            self.run_once()

    def run_once(self, max_wait: float = 1.0) -> None:
        now = self.clock()
        deadline = self.next_deadline()
        timeout = max_wait if deadline is None else min(max_wait, max(0.0, deadline - now))
        for key, mask in self.selector.select(timeout):
            key.data(mask)
        self.service_timers(self.clock())

    def close(self) -> None:
        self.record_heartbeats(None)
        if self.consumed is not None:
            self.consumed.close()
        for client in list(self._clients.values()):
            self._drop_client(client, "server stopping")
        for sock in (self._tcp, self._udp_encap, self._udp_io, self._wake_r, self._wake_w):
            if sock is not None:
                try:
                    self.selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
                sock.close()
        self.selector.close()

    # ------------------------------------------------------------------ timers

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (self.clock() + delay, next(self._timer_seq), callback))

    def next_deadline(self) -> float | None:
        times = [
            t for t in (self.target.next_deadline(), self.faults.next_deadline(),
                        self.consumed.next_deadline() if self.consumed else None)
            if t is not None
        ]
        if self._timers:
            times.append(self._timers[0][0])
        return min(times) if times else None

    def service_timers(self, now: float) -> None:
        if self.consumed is not None:
            self.consumed.on_timer(now)
        self.target.on_timer(now)
        self._carry_out(now)
        for dgram, dest in self.faults.due(now):
            self._send_datagram(dgram, dest)
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback()
        self._carry_out(now)

    def _carry_out(self, now: float) -> None:
        """Do what the target asked since the last call, in its order."""
        for out in self.target.take_outputs():
            match out:
                case SendDatagram():
                    for dgram, dest in self.faults.process([(out.data, out.address)], now):
                        self._send_datagram(dgram, dest)
                case CloseSession():
                    for client in [c for c in self._clients.values() if c.peer[0] == out.peer]:
                        self._drop_client(client, "originator's last I/O connection timed out")
                case TargetEvent():
                    log.info("%s", out)

    def _send_datagram(self, dgram: bytes, dest: tuple[str, int]) -> None:
        assert self._udp_io is not None
        try:
            self._udp_io.sendto(dgram, dest)
            self.counters.datagrams_sent += 1
        except OSError as e:
            self.counters.send_errors += 1
            if self.counters.send_errors in (1, 10, 100, 1000):
                log.warning(
                    "sending T->O data to %s:%d failed: %s (%d failures so far)",
                    dest[0],
                    dest[1],
                    e,
                    self.counters.send_errors,
                )

    def _on_wake(self, mask: int) -> None:
        try:
            self._wake_r.recv(4096)
        except OSError:
            pass

    # ------------------------------------------------------------------ UDP

    def _on_udp_io(self, mask: int) -> None:
        sock, log_file = self._udp_io, self._heartbeat_log
        assert sock is not None
        for _ in range(256):
            try:
                if log_file is None:
                    data, src = sock.recvfrom(_RECV)
                else:
                    data, ancillary, _flags, src = sock.recvmsg(_RECV, _ANCILLARY)
                    ids = _IDS.unpack_from(data) if len(data) >= _IDS.size else (0, 0)
                    log_file.write(HEARTBEAT_RECORD.pack(_receive_time_ns(ancillary), *ids))
                    self._heartbeat_records += 1
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ICMP port unreachable reported on a later recv
            self.counters.datagrams_received += 1
            if self.consumed is not None and self.consumed.on_datagram(data, src, self.clock()):
                continue  # T->O data of a tag this controller consumes
            self.target.on_datagram(data, src[0], self.clock())

    def record_heartbeats(self, path: str | None) -> int:
        """Write a ``HEARTBEAT_RECORD`` for every datagram the class-1 socket receives from now
        on to ``path`` (created or truncated), or stop recording (``None``). Returns how many
        records the recording that ended wrote (0 when none was running). The kernel stamps
        each datagram as it arrives, so the times do not depend on how busy this loop is; the
        socket's receive buffer is raised meanwhile so that a stall of the loop loses nothing."""
        sock = self._udp_io
        written, old = self._heartbeat_records, self._heartbeat_log
        if old is not None:
            self._heartbeat_log, self._heartbeat_records = None, 0
            old.close()
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf_before // 2)
            log.info("heartbeat recording stopped: %d records", written)
        if path is None:
            return written
        if sock is None:
            raise ValueError("the class-1 socket is not open yet")
        try:
            self._heartbeat_log = open(path, "wb")  # noqa: SIM115 - closed when recording stops
        except OSError as e:
            raise ValueError(f"cannot write heartbeat records to {path!r}: {e}") from None
        self._rcvbuf_before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECORD_RCVBUF)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        log.info("recording class-1 datagrams to %s", path)
        return written

    def _on_udp_encap(self, mask: int) -> None:
        assert self._udp_encap is not None
        for _ in range(64):
            try:
                data, src = self._udp_encap.recvfrom(_RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.counters.udp_requests += 1
            try:
                pkt = encap.EncapsulationPacket.decode(data)
            except MalformedPacket:
                continue
            answer = self._discovery_reply(pkt)
            if answer is None:
                answer = self._error(pkt, EncapsulationStatus.INVALID_COMMAND)
            if pkt.command == Command.LIST_IDENTITY and self.config.udp_identity_delay:
                # protocol.md 2.5: random delay in [0, max); max from the context, 0 = 2000 ms,
                # values 1..499 are raised to 500 ms.
                max_ms = pkt.context[0] | (pkt.context[1] << 8)
                max_ms = 2000 if max_ms == 0 else max(max_ms, 500)
                delay = self.rng.uniform(0, max_ms / 1000.0)
                self.call_later(delay, functools.partial(self._udp_reply, answer, src))
            else:
                self._udp_reply(answer, src)

    def _udp_reply(self, data: bytes, dest: tuple[str, int]) -> None:
        assert self._udp_encap is not None
        try:
            self._udp_encap.sendto(data, dest)
        except OSError:
            self.counters.send_errors += 1

    # ------------------------------------------------------------------ TCP

    def _on_accept(self, mask: int) -> None:
        assert self._tcp is not None
        for _ in range(64):
            try:
                sock, peer = self._tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("accept failed: %s", e)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, peer)
            self._clients[sock] = client
            self.selector.register(
                sock, selectors.EVENT_READ, lambda m, c=client: self._on_client(c, m)
            )
            self.counters.tcp_accepted += 1
            log.info("tcp connected peer=%s:%d", peer[0], peer[1])

    def _on_client(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(client)
        if not mask & selectors.EVENT_READ or client.sock not in self._clients:
            return
        try:
            data = client.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._drop_client(client, f"receive failed: {e}")
            return
        if not data:
            self._drop_client(client, "peer closed")
            return
        if self.faults.settings.stop_answering_tcp:
            return  # a hung communication module: bytes vanish, nothing comes back
        try:
            packets = client.frames.feed(data)
        except MalformedPacket as e:  # cannot happen for well-sized frames; be safe
            self._drop_client(client, f"bad frame: {e}")
            return
        now = self.clock()
        for pkt in packets:
            if client.closing:
                break
            self.counters.encap_requests += 1
            reply = self._handle_tcp(client, pkt, now)
            if reply is not None:
                self._write(client, reply)
        self._carry_out(now)

    def _write(self, client: _Client, data: bytes) -> None:
        client.out += data
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        if client.sock not in self._clients:
            return
        while client.out:
            try:
                n = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._drop_client(client, f"send failed: {e}")
                return
            del client.out[:n]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
        self.selector.modify(client.sock, events, lambda m, c=client: self._on_client(c, m))
        if client.closing and not client.out:
            self._drop_client(client, "unregistered")

    def _drop_client(self, client: _Client, why: str, reset: bool = False) -> None:
        if client.sock not in self._clients:
            return
        del self._clients[client.sock]
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        if reset:
            # SO_LINGER 0: close() sends RST instead of FIN (a reset TCP connection).
            try:
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        client.sock.close()
        self.counters.tcp_closed += 1
        if client.session:
            self._sessions.drop(client.session)
            self.target.session_closed(client.session, self.clock())
        log.info(
            "tcp closed peer=%s:%d session=%#x (%s)",
            client.peer[0],
            client.peer[1],
            client.session,
            why,
        )
        self._carry_out(self.clock())

    # ------------------------------------------------------------------ encapsulation

    def _error(self, pkt: encap.EncapsulationPacket, status: int) -> bytes:
        self.counters.encap_errors += 1
        return reply(pkt, status=status)

    def _identity_item(self) -> cpf.IdentityItem:
        ident = getattr(self.store, "identity", None)
        sockaddr = cpf.Sockaddr(self.config.address, self.tcp_port)
        if ident is not None and hasattr(ident, "item"):
            item = ident.item(sockaddr)
            assert isinstance(item, cpf.IdentityItem)
            return item
        return cpf.IdentityItem(
            1, 0x0E, 166, 33, 11, 0x3060, 0x00C0FFEE, "1756-L83E/B", 3, sockaddr
        )

    def _discovery_reply(self, pkt: encap.EncapsulationPacket) -> bytes | None:
        return discovery_reply(pkt, self._identity_item())

    def _handle_tcp(
        self, client: _Client, pkt: encap.EncapsulationPacket, now: float
    ) -> bytes | None:
        cmd = pkt.command
        if cmd == Command.NOP:
            return None
        discovery = self._discovery_reply(pkt)
        if discovery is not None:
            return discovery
        if cmd == Command.REGISTER_SESSION:
            return self._register(client, pkt)
        if cmd == Command.UNREGISTER_SESSION:
            if client.session and pkt.session == client.session:
                client.closing = True
                self._flush(client)
                return None
            return self._error(pkt, EncapsulationStatus.INVALID_SESSION_HANDLE)
        if cmd in (Command.SEND_RR_DATA, Command.SEND_UNIT_DATA):
            if not client.session or pkt.session != client.session:
                return self._error(pkt, EncapsulationStatus.INVALID_SESSION_HANDLE)
            try:
                send = encap.SendData.decode(pkt.data)
            except MalformedPacket:
                return self._error(pkt, EncapsulationStatus.INCORRECT_DATA)
            if cmd == Command.SEND_RR_DATA:
                return self._send_rr_data(client, pkt, send, now)
            return self._send_unit_data(client, pkt, send, now)
        return self._error(pkt, EncapsulationStatus.INVALID_COMMAND)

    def _register(self, client: _Client, pkt: encap.EncapsulationPacket) -> bytes:
        got = self._sessions.register(pkt, client.session, client,
                                      refuse=self.faults.settings.refuse_register)
        if got.error:
            self.counters.encap_errors += 1
        if got.refused:
            log.info("register refused peer=%s:%d", client.peer[0], client.peer[1])
        if got.session:
            client.session = got.session
            self.counters.sessions_registered += 1
            log.info("session registered peer=%s:%d session=%#x", client.peer[0],
                     client.peer[1], got.session)  # fmt: skip
        return got.answer

    def _send_rr_data(
        self, client: _Client, pkt: encap.EncapsulationPacket, send: encap.SendData, now: float
    ) -> bytes:
        try:
            message = send.unconnected()
        except MalformedPacket:
            return self._error(pkt, EncapsulationStatus.INCORRECT_DATA)
        items: tuple[cpf.Item, ...] = ()
        request = connection_manager_request(message)
        if request is not None:
            cm_reply, items = self.target.handle_cm(
                request, client.peer[0], client.session, now, send.items[2:]
            )
            answer = cm_reply.encode()
        else:
            self._cm_context = (client.peer[0], client.session, now)
            # Unconnected replies are limited like a Logix UCMM reply (about 500 bytes).
            answer = self._listing_fault(message) or self.controller.handle(
                message, now, reply_limit=UNCONNECTED_REPLY_LIMIT)
        return reply(pkt, encap.send_rr_data(answer, items))

    def _listing_fault(self, message: bytes) -> bytes | None:
        """The endless symbol listing (fault ``endless_listing``) in place of the controller's."""
        mode = self.faults.settings.endless_listing
        return endless_listing_reply(message, mode) if mode else None

    def _cm_from_controller(self, message: bytes) -> bytes:
        """A Connection Manager request that arrived inside Unconnected_Send."""
        peer, session, now = self._cm_context
        return embedded_cm_reply(self.target, message, peer, session, now)

    def _send_unit_data(
        self, client: _Client, pkt: encap.EncapsulationPacket, send: encap.SendData, now: float
    ) -> bytes:
        try:
            conn_id, seq, message = send.connected()
        except MalformedPacket:
            return self._error(pkt, EncapsulationStatus.INCORRECT_DATA)

        def handler(msg: bytes, when: float, conn: TargetConnection) -> bytes:
            # the connection size includes the 2-byte sequence count of the connected data item
            return self._listing_fault(msg) or self.controller.handle(
                msg, when, reply_limit=(conn.to_size - 2) if conn.to_size > 2 else None
            )

        result = self.target.connected_request(conn_id, client.session, seq, message, now, handler)
        if result is None:
            # No such class-3 connection on this session (closed, timed out, restarted).
            return self._error(pkt, EncapsulationStatus.INCORRECT_DATA)
        to_id, answer = result
        return reply(pkt, encap.send_unit_data(to_id, seq, answer))

    # ------------------------------------------------------------------ run-time control

    def set_faults(self, settings: FaultSettings) -> None:
        old = self.faults.settings
        self.faults.settings = settings
        if settings.stop_producing != old.stop_producing:
            self.target.set_producing(not settings.stop_producing, self.clock())
        if not (settings.delay_s or settings.reorder):
            for dgram, dest in self.faults.due(float("inf")):
                self._send_datagram(dgram, dest)
        log.info(
            "faults %s",
            " ".join(
                f"{k}={v}"
                for k, v in settings.as_dict().items()
                if v != getattr(FaultSettings(), k)
            )
            or "off",
        )
        if old.stop_answering_tcp and not settings.stop_answering_tcp:
            for client in self._clients.values():
                client.frames = encap.FrameBuffer()  # drop any half frame swallowed meanwhile

    def restart(self, close_tcp: bool = False) -> None:
        """Lose every CIP connection like a program download (optionally every TCP session)."""
        self.target.restart(self.clock())
        self.faults.clear()
        if close_tcp:
            for client in list(self._clients.values()):
                self._drop_client(client, "restart")
        self._carry_out(self.clock())

    def reset_tcp(self) -> int:
        """Reset (RST) every TCP connection; returns how many."""
        clients = list(self._clients.values())
        for client in clients:
            self._drop_client(client, "reset by fault injection", reset=True)
        return len(clients)

    def set_produced(self, tag_name: str, produced: bool | None = None) -> bool:
        tag = self.store.find(tag_name)
        if tag is None:
            raise ValueError(f"no tag {tag_name!r} in the simulator's tag database")
        tag.produced = (not tag.produced) if produced is None else bool(produced)
        log.info("tag %s produced=%s", tag.name, tag.produced)
        return bool(tag.produced)

    def consume(self, spec: ConsumedSpec) -> None:
        """Consume a tag from a producer: open and keep a class-1 connection to it."""
        if self.consumed is None:
            self.consumed = ConsumedTags(self.selector, self.config.address, self.udp_port,
                                         self._send_datagram, self.clock)
        self.consumed.add(spec, self.clock())

    def unconsume(self, key: str) -> None:
        found = self.consumed.tags.get(key) if self.consumed is not None else None
        if found is None:
            raise ValueError(f"no consumed tag {key!r} (keys are <address>/<tag>)")
        found.conn.stop(self.clock())
        assert self.consumed is not None
        self.consumed.pump(found, self.clock())

    def consumed_status(self, since: int = 0) -> list[dict[str, Any]]:
        return [] if self.consumed is None else self.consumed.status(since)

    def producers(self) -> list[dict[str, object]]:
        """Every T->O stream being produced (``Producer.summary``)."""
        return [p.summary() for p in self.target.producers()]

    def status(self) -> dict[str, Any]:
        snap = self.target.snapshot()
        return {
            "address": self.config.address,
            "tcp_port": self.tcp_port,
            "udp_port": self.udp_port,
            "uptime_s": round(self.clock() - self.started_at, 3),
            "sessions": len(self._sessions),
            "tcp_clients": len(self._clients),
            "incarnation": snap["incarnation"],
            "connections": snap["connections"],
            "target": snap["counters"],
            "server": self.counters.as_dict(),
            "faults": self.faults.settings.as_dict(),
            "fault_counters": self.faults.counters.as_dict(),
            # Requests the Logix object model answered (tag listing, templates, the clock...),
            # beside the Connection Manager's: what a generic adapter's client never asks.
            "controller_requests": self.controller.requests,
            **({"assemblies": snap["assemblies"]} if "assemblies" in snap else {}),
        }


def _receive_time_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The kernel's receive time of a datagram (``SCM_TIMESTAMPNS``), else the time now."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec) * 1_000_000_000 + int(nsec)
    return time.time_ns()

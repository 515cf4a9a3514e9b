"""The sockets of a producing I/O worker: a thin shell around ``acquisition.produce``.

Owns, for the worker's interface address (docs/worker.md "Producing tags"):

* a TCP listener on ``(local address, tcp_port)`` (44818 by default) and its clients: bytes in
  go to ``ProducerEndpoint.receive``, its ``SendTcp`` / ``CloseClient`` are carried out;
* a UDP socket on ``(local address, tcp_port)`` for ListIdentity / ListServices (protocol.md
  2.5), answered at once;
* nothing of class 1: the T->O datagrams the target produces (``SendDatagram``) leave through
  the worker's own UDP socket (its class-1 port, like a controller's 2222), and the consumers'
  O->T heartbeats arrive there too; the worker routes them here (``on_heartbeat``) through its
  demultiplexer, one route per open connection (``routes``).

The worker calls ``next_deadline`` / ``on_timer`` with its other timers, and ``readable`` for
the sockets it polls for us (``fds``). Protocol decisions stay in ``acquisition.produce`` and
``acquisition.target``.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from pyconpro.acquisition.produce import (
    CloseClient,
    ProducedTags,
    ProducerEndpoint,
    ProduceSpec,
    SendTcp,
)
from pyconpro.acquisition.target import CloseSession, SendDatagram, TargetEvent, TargetEventKind
from pyconpro.acquisition.target_options import TargetOptions

log = logging.getLogger("pyconpro.io_worker")

DEFAULT_TCP_PORT = 44818
_RECV = 65536
_CONN_ID = struct.Struct("<6xI")  # a class-1 datagram's connection id (protocol.md 6.1)
_WARN_EVENTS = (TargetEventKind.TIMED_OUT, TargetEventKind.REJECTED)


class ProduceServer:
    """``send_datagram(data, (ip, port))`` sends through the worker's class-1 socket."""

    def __init__(
        self,
        local_address: str,
        tcp_port: int,
        udp_port: int,
        send_datagram: Callable[[bytes, tuple[str, int]], None],
        clock: Callable[[], float],
        netmask: str | None = None,
    ) -> None:
        self.local_address = local_address
        self._send_datagram = send_datagram
        self._clock = clock
        # The interface's netmask (workers/netif.py): a multicast consumer from off this
        # subnet is refused with 0x0813 (TTL 1 keeps the data on the link; it must ask for
        # unicast). Unknown: believed on any subnet.
        self.netmask = netmask or "0.0.0.0"
        options = TargetOptions(address=local_address, netmask=self.netmask, udp_port=udp_port)
        self.endpoint = ProducerEndpoint(ProducedTags(), options, tcp_port=tcp_port)
        self._wanted_port = tcp_port
        self.tcp: socket.socket | None = None
        self.udp: socket.socket | None = None
        self._clients: dict[int, socket.socket] = {}  # fd -> socket
        self._out: dict[int, bytearray] = {}
        self._closing: set[int] = set()
        self.events: list[TargetEvent] = []  # the latest, for status
        self.timeouts = 0

    # ------------------------------------------------------------------ set-up

    def open(self) -> None:
        """Bind TCP and UDP ``tcp_port`` on the interface address; OSError names both."""
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((self.local_address, self._wanted_port))
            tcp.listen(32)
        except OSError as exc:
            tcp.close()
            raise OSError(
                exc.errno,
                f"cannot listen on TCP {self.local_address}:{self._wanted_port} for the tags"
                f" this worker produces (another EtherNet/IP server on this address? set"
                f" [worker] tcp_port): {exc.strerror}",
            ) from None
        tcp.setblocking(False)
        self.tcp = tcp
        port = tcp.getsockname()[1]
        self.endpoint.tcp_port = port
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind((self.local_address, port))
            udp.setblocking(False)
            self.udp = udp
        except OSError as exc:  # discovery only: producing works without it
            udp.close()
            log.warning("no UDP ListIdentity on %s:%d: %s", self.local_address, port, exc)
        log.info("producing tags on TCP %s:%d", self.local_address, port)

    def close(self) -> None:
        for fd in list(self._clients):
            self._drop(fd)
        for s in (self.tcp, self.udp):
            if s is not None:
                s.close()
        self.tcp = self.udp = None

    @property
    def tcp_port(self) -> int:
        return self.endpoint.tcp_port

    def fds(self) -> list[socket.socket]:
        """Every socket the worker polls for reading on our behalf."""
        out = [s for s in (self.tcp, self.udp) if s is not None]
        return out + list(self._clients.values())

    def wants_write(self, fd: int) -> bool:
        return bool(self._out.get(fd))

    def add(self, spec: ProduceSpec) -> None:
        self.endpoint.tags.add(spec)

    # ------------------------------------------------------------------ events

    def readable(self, fd: int, now: float) -> bool:
        """Handle what arrived on ``fd``; False when it is not one of ours."""
        if self.tcp is not None and fd == self.tcp.fileno():
            self._accept(now)
        elif self.udp is not None and fd == self.udp.fileno():
            self._udp()
        elif fd in self._clients:
            self._read(fd, now)
        else:
            return False
        self.pump(now)
        return True

    def writable(self, fd: int, now: float) -> None:
        self._flush(fd)

    def on_heartbeat(self, data: bytes, src_ip: str, now: float) -> None:
        self.endpoint.on_datagram(data, src_ip, now)

    @staticmethod
    def connection_id(data: bytes) -> int | None:
        return _CONN_ID.unpack_from(data)[0] if len(data) >= _CONN_ID.size else None

    def next_deadline(self) -> float | None:
        return self.endpoint.next_deadline()

    def on_timer(self, now: float) -> None:
        self.endpoint.on_timer(now)
        self.pump(now)

    def routes(self) -> set[tuple[tuple[str, int], int]]:
        """((originator ip, its class-1 port), O->T id) of every open class-1 connection: what
        the worker's demultiplexer must hand to ``on_heartbeat``. A P2P consumer's heartbeats
        come from where its data goes; a multicast one's from port 2222 (⚠️ unverified)."""
        out = set()
        for c in self.endpoint.connections():
            port = c.dest[1] if c.dest is not None and not c.multicast else 2222
            out.add(((c.peer_ip, port), c.ot_id))
        return out

    def pump(self, now: float) -> None:
        for out in self.endpoint.take_outputs():
            if isinstance(out, SendDatagram):
                self._send_datagram(out.data, out.address)
            elif isinstance(out, SendTcp):
                self._write(out.client, out.data)
            elif isinstance(out, CloseClient):
                self._closing.add(out.client)
                self._flush(out.client)
            elif isinstance(out, CloseSession):
                pass  # only with close_sessions_on_timeout, which a producing worker leaves off
            elif isinstance(out, TargetEvent):
                self._event(out)

    def _event(self, ev: TargetEvent) -> None:
        self.events = [*self.events[-19:], ev]
        if ev.kind is TargetEventKind.TIMED_OUT:
            self.timeouts += 1
        level = logging.WARNING if ev.kind in _WARN_EVENTS else logging.INFO
        log.log(level, "produce: %s", ev)

    def status(self, now: float) -> dict[str, Any]:
        st = self.endpoint.status(now)
        st["tcp_clients"] = len(self._clients)
        st["netmask"] = self.netmask  # multicast consumers accepted from this subnet
        st["events"] = [str(e) for e in self.events]
        return st

    # ------------------------------------------------------------------ sockets

    def _accept(self, now: float) -> None:
        assert self.tcp is not None
        for _ in range(16):
            try:
                sock, peer = self.tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("produce: accept failed: %s", exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fd = sock.fileno()
            self._clients[fd] = sock
            self._out[fd] = bytearray()
            self.endpoint.accepted(fd, peer[0], now)
            log.info("produce: TCP client %s:%d", peer[0], peer[1])

    def _udp(self) -> None:
        assert self.udp is not None
        for _ in range(16):
            try:
                data, src = self.udp.recvfrom(_RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            reply = self.endpoint.udp_request(data, self.local_address)
            if reply is not None:
                try:
                    self.udp.sendto(reply, src)
                except OSError:
                    pass

    def _read(self, fd: int, now: float) -> None:
        sock = self._clients[fd]
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        self.endpoint.receive(fd, data, now)

    def _write(self, fd: int, data: bytes) -> None:
        if fd in self._out:
            self._out[fd] += data
            self._flush(fd)

    def _flush(self, fd: int) -> None:
        sock, buf = self._clients.get(fd), self._out.get(fd)
        if sock is None or buf is None:
            return
        while buf:
            try:
                n = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(fd)
                return
            del buf[:n]
        if fd in self._closing:
            self._drop(fd)

    def _drop(self, fd: int) -> None:
        sock = self._clients.pop(fd, None)
        self._out.pop(fd, None)
        self._closing.discard(fd)
        if sock is not None:
            sock.close()
            self.endpoint.closed(fd, self._clock())

"""A small blocking EtherNet/IP explicit-messaging client, built on the sans-IO codec.

For one-shot tools (``pyconpro browse``, tag discovery before a consumer connects, tests): TCP
connect (optionally from a given local address, so the PLC sees the interface that will receive
its class-1 data), RegisterSession, unconnected SendRRData — wrapped in Unconnected_Send (0x52)
routed to the CPU slot when a slot or route is given (protocol.md 5.11) — or, optionally, a
class-3 connection (Forward_Open to the Message Router, SendUnitData; protocol.md 10.2 rows 4-5),
and UnRegisterSession on close.

A thin blocking shell over the sans-IO ``acquisition.session.Session``: each request is an input
to the session machine, whose ``Transmit`` actions are written to the socket, and the socket is
read (no longer than the machine's ``next_deadline()``) until the machine answers that request.
The machine does every check of a reply before use (protocol.md 7.7 step 3: encapsulation
command, status, length, session handle and sender context; CPF layout; CIP reply service; for
class 3 the connection id and echoed sequence count); this shell turns its failures into
exceptions. Requests are strictly one at a time.

Also here: ``list_identity`` — ListIdentity by UDP to a broadcast or unicast address, collecting
every reply until a timeout (protocol.md 2.5), and ``local_ipv4_interfaces``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pyconpro.acquisition import cip, cm, cpf, encap, epath
from pyconpro.acquisition.discovery import (
    CatalogBuilder,
    CatalogDone,
    CatalogFailed,
    CatalogRequest,
    TagCatalog,
)
from pyconpro.acquisition.errors import (
    CipError,
    EncapsulationError,
    MalformedPacket,
    PyconproError,
    UsageError,
)
from pyconpro.acquisition.logix_types import ReadTagType
from pyconpro.acquisition.session import (
    IdentityReceived,
    ReplyReceived,
    RequestFailed,
    Session,
    SessionFailed,
    SessionReady,
    Transmit,
)

ENIP_PORT = 44818
# Our own originator identity for class-3 connections (protocol.md 7.1: do not pose as vendor 1).
VENDOR_ID = 0x1A0F
CLASS3_RPI_US = 2_113_537  # what pycomm3 asks (protocol.md 10.2 row 4)
CLASS3_TIMEOUT_MULTIPLIER = 7  # x512: an idle browse session is not dropped
UNCONNECTED_SEND_TIMEOUT_TICKS = 0x05
# The most a fragmented Read Tag collects (a Logix tag holds at most a few MB): a controller
# that keeps answering "more follows" is given up here instead of filling memory.
READ_TAG_MAX_BYTES = 16 << 20


class ExplicitClientError(PyconproError):
    """The transport failed (connect refused, timeout, connection closed, garbage reply).

    The session is unusable afterwards; open a new client. CIP refusals are ``CipError``."""


@dataclass(frozen=True, slots=True)
class Class3Connection:
    ot_connection_id: int  # what we address our SendUnitData to (chosen by the target)
    to_connection_id: int  # what the target's replies carry (chosen by us)
    forward_open: cm.ForwardOpenRequest
    size: int


class ExplicitClient:
    """One encapsulation session with one controller; requests are strictly sequential.

    ``slot``: the CPU's backplane slot; requests are routed to it with Unconnected_Send
    (``01 <slot>``), or ``route`` gives a full padded-EPATH route. ``slot=None`` and no route
    sends requests straight to the device the TCP connection reaches (CompactLogix, simulator
    without routing). ``connected=True`` opens a class-3 connection at ``open()`` and sends
    every request through it (bigger replies, fewer round trips; a refusal falls back to
    unconnected messaging, see ``class3_refusal``).
    """

    def __init__(
        self,
        host: str,
        *,
        port: int = ENIP_PORT,
        slot: int | None = 0,
        route: bytes | None = None,
        local_address: str | None = None,
        timeout: float = 5.0,
        connected: bool = False,
        connection_size: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise UsageError("timeout must be positive seconds")
        if route is not None and len(route) % 2:
            raise UsageError("route must be a padded EPATH (an even number of bytes)")
        self.host = host
        self.port = port
        self.slot = slot
        self.route = route if route is not None else (
            epath.encode_path([epath.PortSegment.slot(slot)]) if slot is not None else b"")
        self.local_address = local_address
        self.timeout = timeout
        self.connected = connected
        self.connection_size = connection_size
        self._clock = clock
        self._sock: socket.socket | None = None
        self._session: Session | None = None  # the machine of the current TCP connection
        self._stale_before = 0  # unmatched replies of earlier sessions
        self.class3: Class3Connection | None = None
        self.class3_refusal: CipError | None = None
        self.requests = 0

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> Self:
        if self._sock is not None:
            return self
        source = (self.local_address, 0) if self.local_address else None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout,
                                            source_address=source)
        except OSError as err:
            raise ExplicitClientError(self._connect_hint(err)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._session = Session(request_timeout=self.timeout,
                                context_base=random.getrandbits(32) << 16)
        try:
            self.requests += 1
            self._session.start(self._clock())
            self._await(None)
            if self.connected:
                self._open_class3()
        except BaseException:
            self._abort()
            raise
        return self

    def _connect_hint(self, err: OSError) -> str:
        where = f"{self.host}:{self.port}"
        if self.local_address:
            where += f" from {self.local_address}"
        if isinstance(err, TimeoutError) or err.errno == errno.ETIMEDOUT:
            return f"no answer from {where} within {self.timeout:g} s: is the PLC reachable?"
        if err.errno == errno.ECONNREFUSED:
            return (f"{where} refused the TCP connection: nothing listens on port {self.port} "
                    "(wrong address, or not an EtherNet/IP device)")
        if err.errno == errno.EADDRNOTAVAIL:
            return (f"cannot connect to {where}: local address {self.local_address} is not an "
                    "address of this host")
        return f"cannot connect to {where}: {err}"

    def close(self) -> None:
        """Forward_Close the class-3 connection, UnRegisterSession, close TCP. Never raises."""
        if self._sock is None:
            return
        try:
            if self.class3 is not None:
                try:
                    self.send_rr_data(cm.forward_close_for(self.class3.forward_open).encode())
                except (PyconproError, OSError):
                    pass  # the target drops class-3 connections with the session anyway
                self.class3 = None
            session = self._session
            if session is not None:
                session.close(self._clock())  # UnRegisterSession when registered; no reply
                for out in session.take_outputs():
                    if isinstance(out, Transmit):
                        try:
                            self._sock.sendall(out.data)
                        except OSError:
                            pass
        finally:
            self._abort()

    def _abort(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        if self._session is not None:
            self._stale_before += self._session.unmatched_replies
        self._session = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    @property
    def session_handle(self) -> int:
        return self._session.handle if self._session is not None else 0

    @property
    def stale_replies(self) -> int:
        """Replies that answered no request (e.g. to one that timed out): skipped, never
        used. Counted over every session of this client."""
        current = self._session.unmatched_replies if self._session is not None else 0
        return self._stale_before + current

    @property
    def local_endpoint(self) -> tuple[str, int]:
        if self._sock is None:
            raise UsageError("client is not open")
        host, port = self._sock.getsockname()[:2]
        return host, port

    # -- requests --------------------------------------------------------------------------

    def request(self, message: bytes, *, check: bool = False, allow_partial: bool = False,
                timeout: float | None = None) -> cip.Reply:
        """Send one CIP request to the CPU (routed, or over the class-3 connection) and return
        its validated reply. ``check=True`` raises CipError for a non-zero status (0x06 too
        unless ``allow_partial``)."""
        if not message:
            raise UsageError("empty CIP message")
        service = message[0]
        if self.class3 is not None:
            reply = self._send_connected(message, timeout)
        elif self.route:
            wrapped = cip.Request(
                cip.Service.UNCONNECTED_SEND, epath.CONNECTION_MANAGER_PATH,
                cip.UnconnectedSend(message, self.route, 0x0A,
                                    UNCONNECTED_SEND_TIMEOUT_TICKS).encode(),
            ).encode()
            # The session accepts the embedded service's reply or Unconnected_Send's own.
            reply, _ = self._send_rr(wrapped, timeout=timeout)
            if reply.service == cip.Service.UNCONNECTED_SEND and service != reply.service:
                # the Connection Manager answered for the route itself (protocol.md 5.11)
                raise CipError(reply.status, reply.additional, reply.service,
                               f"routing to {self._route_text()} failed")
        else:
            reply, _ = self._send_rr(message, timeout=timeout)
        if check:
            reply.raise_for_status(allow_partial=allow_partial)
        return reply

    def send_rr_data(self, message: bytes, extra_items: tuple[cpf.Item, ...] = (),
                     timeout: float | None = None) -> tuple[cip.Reply, tuple[cpf.Item, ...]]:
        """One unconnected request straight to the device's message router (no routing): the
        Connection Manager services. Returns the reply and the CPF items after it."""
        if not message:
            raise UsageError("empty CIP message")
        return self._send_rr(message, extra_items=extra_items, timeout=timeout)

    def forward_open(self, request: cm.ForwardOpenRequest,
                     extra_items: tuple[cpf.Item, ...] = ()) -> tuple[
                         cm.ForwardOpenSuccess | cm.ConnectionFailure, tuple[cpf.Item, ...]]:
        reply, items = self.send_rr_data(request.encode(), extra_items)
        try:
            return cm.decode_forward_open_reply(reply), items
        except MalformedPacket as err:
            raise self._garbage(f"Forward_Open reply: {err}") from None

    def forward_close(self, request: cm.ForwardCloseRequest
                      ) -> cm.ForwardCloseSuccess | cm.ConnectionFailure:
        reply, _ = self.send_rr_data(request.encode())
        try:
            return cm.decode_forward_close_reply(reply)
        except MalformedPacket as err:
            raise self._garbage(f"Forward_Close reply: {err}") from None

    def list_identity(self) -> cpf.IdentityItem:
        """ListIdentity over this TCP session (what pycomm3 does at open)."""
        out = self._exchange(lambda s, now: s.list_identity(now))
        assert isinstance(out, IdentityReceived)
        return out.identity

    def read_tag(self, name: str, elements: int = 1,
                 max_bytes: int = READ_TAG_MAX_BYTES) -> tuple[ReadTagType, bytes]:
        """Read Tag (0x4C) of ``elements`` elements, continuing with Read Tag Fragmented
        (0x52) while the controller answers 0x06; returns the type header and the data. A
        read that goes on past ``max_bytes`` raises ExplicitClientError."""
        path = epath.encode_path(epath.tag_path(name))
        reply = self.request(cip.Request(cip.Service.READ_TAG, path,
                                         struct.pack("<H", elements)).encode())
        if reply.status not in (0, 0x06):
            raise reply.error(f"Read Tag {name}")
        try:
            header, start = ReadTagType.parse(reply.data)
        except MalformedPacket as err:
            raise self._garbage(f"Read Tag {name}: {err}") from None
        data = bytearray(reply.data[start:])
        while reply.status == 0x06:
            reply = self.request(cip.Request(0x52, path, struct.pack(
                "<HI", elements, len(data))).encode())
            if reply.status not in (0, 0x06):
                raise reply.error(f"Read Tag Fragmented {name} at byte {len(data)}")
            _, start = ReadTagType.parse(reply.data)
            chunk = reply.data[start:]
            if not chunk and reply.status == 0x06:
                raise self._garbage(f"Read Tag Fragmented {name}: 0x06 without data")
            data += chunk
            if len(data) > max_bytes:
                raise self._garbage(f"Read Tag Fragmented {name}: more than {max_bytes} bytes"
                                    " and the controller says more follows")
        return header, bytes(data)

    # -- tag discovery ---------------------------------------------------------------------

    def run(self, builder: CatalogBuilder) -> TagCatalog:
        """Drive a sans-IO discovery exchange to its end."""
        while outs := builder.take_outputs():
            for out in outs:
                match out:
                    case CatalogRequest(message):
                        builder.on_reply(self.request(message))
                    case CatalogDone(catalog):
                        return catalog
                    case CatalogFailed(error):
                        raise error
        return builder.result()

    def discover(self, **kwargs: object) -> TagCatalog:
        """Upload the tag list and templates (``CatalogBuilder`` keyword arguments), bounded by
        its ``ListingLimits``: a controller that never ends its listing raises DiscoveryError
        naming this PLC and the limit."""
        kwargs.setdefault("plc", f"{self.host}:{self.port}")
        return self.run(CatalogBuilder(**kwargs))  # type: ignore[arg-type]

    def has_changed(self, catalog: TagCatalog) -> bool:
        """True if the controller's tag table or a template changed since ``catalog`` (a
        download): symbols + template attributes only, no definition reads."""
        return self.run(catalog.probe()).shape_fingerprint != catalog.shape_fingerprint

    # -- class 3 ---------------------------------------------------------------------------

    def _open_class3(self) -> None:
        to_id = random.getrandbits(32) | 1
        path = self.route + epath.MESSAGE_ROUTER_PATH
        params = cm.NetworkParameters(cm.ConnectionType.POINT_TO_POINT, cm.Priority.LOW, True,
                                      self.connection_size)
        request = cm.ForwardOpenRequest(
            ot_connection_id=0, to_connection_id=to_id,
            connection_serial=random.getrandbits(16), vendor_id=VENDOR_ID,
            originator_serial=random.getrandbits(32),
            timeout_multiplier=CLASS3_TIMEOUT_MULTIPLIER,
            ot_rpi=CLASS3_RPI_US, ot_params=params, to_rpi=CLASS3_RPI_US, to_params=params,
            transport=cm.TransportTrigger(3, cm.ProductionTrigger.APPLICATION_OBJECT,
                                          True).to_byte(),
            path=path, priority_tick=0x0A, timeout_ticks=0x05,
        )
        result, _ = self.forward_open(request)
        if isinstance(result, cm.ConnectionFailure):
            self.class3_refusal = result.error("class-3 Forward_Open")
            return
        self.class3 = Class3Connection(result.ot_connection_id, result.to_connection_id,
                                       request, self.connection_size)

    def _send_connected(self, message: bytes, timeout: float | None) -> cip.Reply:
        c = self.class3
        assert c is not None
        out = self._exchange(lambda s, now: s.send_connected(
            message, now, ot_connection_id=c.ot_connection_id,
            to_connection_id=c.to_connection_id, timeout=timeout))
        assert isinstance(out, ReplyReceived)
        return out.reply

    # -- the blocking shell over Session ---------------------------------------------------

    def _send_rr(self, message: bytes, *, extra_items: tuple[cpf.Item, ...] = (),
                 timeout: float | None = None) -> tuple[cip.Reply, tuple[cpf.Item, ...]]:
        out = self._exchange(lambda s, now: s.send_rr(message, now, extra_items=extra_items,
                                                      timeout=timeout))
        assert isinstance(out, ReplyReceived)
        return out.reply, out.items

    def _exchange(self, submit: Callable[[Session, float], int]
                  ) -> ReplyReceived | IdentityReceived:
        """One request: ``submit`` queues it on the session machine; wait for its answer."""
        if self._sock is None or self._session is None:
            raise UsageError("client is not open: call open() or use it as a context manager")
        if self._session.handle == 0:
            raise UsageError("no session registered")
        self.requests += 1
        out = self._await(submit(self._session, self._clock()))
        assert not isinstance(out, SessionReady)
        return out

    def _await(self, handle: int | None
               ) -> SessionReady | ReplyReceived | IdentityReceived:
        """Write what the session wants written and read the socket until the session answers
        request ``handle`` (None: until it is registered). Any failure closes the client."""
        session, sock = self._session, self._sock
        assert session is not None and sock is not None
        cause = ""  # what the last input to the session was, to word its failure
        while True:
            answer: SessionReady | ReplyReceived | IdentityReceived | None = None
            refused: str | None = None
            for out in session.take_outputs():
                match out:
                    case Transmit(data):
                        self._write(sock, data)
                    case SessionReady() if handle is None:
                        answer = out
                    case ReplyReceived() | IdentityReceived() if out.handle == handle:
                        answer = out
                    case RequestFailed(h, reason) if h == handle:
                        refused = reason
                    case SessionFailed():
                        raise self._session_failed(out, cause)
            if refused is not None:
                raise self._garbage(refused)
            if answer is not None:
                return answer
            now = self._clock()
            deadline = session.next_deadline()
            if deadline is not None and now >= deadline:
                cause = "timer"
                session.on_timer(now)
                continue
            sock.settimeout(self.timeout if deadline is None else deadline - now)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as err:
                self._abort()
                raise ExplicitClientError(f"connection to {self.host}:{self.port} failed: "
                                          f"{err}") from None
            cause = "" if chunk else "eof"
            session.receive_data(chunk, self._clock())

    def _write(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError as err:
            self._abort()
            raise ExplicitClientError(f"sending to {self.host}:{self.port} failed: {err}") \
                from None

    def _session_failed(self, failed: SessionFailed, cause: str) -> PyconproError:
        """The exception for a session the machine ended (and close the client)."""
        self._abort()  # protocol.md 7.7 step 3: an encapsulation error ends the session
        where = f"{self.host}:{self.port}"
        if failed.encapsulation_status is not None:
            return EncapsulationError(failed.encapsulation_status,
                                      failed.encapsulation_command or 0)
        if cause == "timer":
            return ExplicitClientError(f"no reply from {where} within {self.timeout:g} s")
        if cause == "eof":
            return ExplicitClientError(f"{where} closed the TCP connection")
        return self._garbage(failed.reason)

    def _garbage(self, what: str) -> ExplicitClientError:
        self._abort()
        return ExplicitClientError(f"unusable reply from {self.host}:{self.port}: {what}; "
                                   "session closed")

    def _route_text(self) -> str:
        return f"slot {self.slot}" if self.slot is not None else f"route {self.route.hex(' ')}"


# ---------------------------------------------------------------------------------------------
# ListIdentity over UDP (discovery of devices)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    address: str
    broadcast: str | None


def subnet_broadcast(address: str, netmask: str) -> str | None:
    """The directed broadcast address of ``address``'s subnet (``10.1.2.3`` in
    ``255.255.255.0``: ``10.1.2.255``); None for /31 and /32, which have none."""
    try:
        net = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
    except ValueError:
        return None
    return None if net.prefixlen >= 31 else str(net.broadcast_address)


def local_ipv4_interfaces() -> list[Interface]:
    """Up IPv4 interfaces with their broadcast address (Linux: SIOCGIF*; elsewhere only the
    limited broadcast through the default interface). An interface that can broadcast but has
    no broadcast address set (``ip addr add 10.1.2.3/24`` without ``brd +``: the kernel then
    reports 0.0.0.0) gets the one its address and netmask imply."""
    out: list[Interface] = []
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux
        return [Interface("default", "0.0.0.0", "255.255.255.255")]
    siocgifaddr, siocgifbrdaddr, siocgifflags, siocgifnetmask = 0x8915, 0x8919, 0x8913, 0x891B
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            req = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), siocgifflags, req), 16)[0]
                if not flags & 0x1:  # IFF_UP
                    continue
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), siocgifaddr, req)[20:24])
            except OSError:
                continue  # no IPv4 address
            bcast: str | None = None
            if flags & 0x2:  # IFF_BROADCAST
                try:
                    bcast = socket.inet_ntoa(fcntl.ioctl(s.fileno(), siocgifbrdaddr, req)[20:24])
                except OSError:
                    bcast = None
                if bcast in (None, "0.0.0.0"):
                    try:
                        mask = socket.inet_ntoa(
                            fcntl.ioctl(s.fileno(), siocgifnetmask, req)[20:24]
                        )
                    except OSError:
                        mask = "255.255.255.255"
                    bcast = subnet_broadcast(addr, mask)
            out.append(Interface(name, addr, bcast))
    return out


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    address: str  # where the reply came from
    identity: cpf.IdentityItem
    via: str  # local address the request left from


def list_identity(
    targets: Iterable[tuple[str, str]],
    *,
    timeout: float = 2.0,
    port: int = ENIP_PORT,
    clock: Callable[[], float] = time.monotonic,
) -> list[DiscoveredDevice]:
    """Send ListIdentity (UDP) to each ``(local_address, destination)`` and collect every
    reply until ``timeout`` seconds have passed. Destinations may be broadcast addresses.

    The first two sender-context bytes carry the maximum reply delay in ms (protocol.md 2.5):
    we ask for at most half the timeout so that delayed replies still arrive in time.
    Malformed replies are skipped; one reply per (device address, serial).
    """
    delay_ms = max(1, min(0xFFFF, int(timeout * 500)))
    context = struct.pack("<H", delay_ms) + os.urandom(6)
    request = encap.EncapsulationPacket(encap.Command.LIST_IDENTITY, b"", 0, 0,
                                        context).encode()
    socks: list[tuple[socket.socket, str]] = []
    found: dict[tuple[str, int], DiscoveredDevice] = {}
    try:
        for local, dest in targets:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append((s, local))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            s.bind((local, 0))
            s.setblocking(False)
            try:
                s.sendto(request, (dest, port))
            except OSError:
                continue  # e.g. no route from that interface; other interfaces still count
        if not socks:
            return []
        with selectors.DefaultSelector() as sel:
            for s, local in socks:
                sel.register(s, selectors.EVENT_READ, local)
            deadline = clock() + timeout
            while (left := deadline - clock()) > 0:
                for key, _ in sel.select(left):
                    rs = key.fileobj
                    assert isinstance(rs, socket.socket)
                    try:
                        data, (src, _p) = rs.recvfrom(65536)
                    except OSError:
                        continue
                    item = _identity_from(data, context)
                    if item is not None:
                        found.setdefault((src, item.serial_number),
                                         DiscoveredDevice(src, item, key.data))
    finally:
        for s, _ in socks:
            s.close()
    return sorted(found.values(), key=lambda d: ipaddress.IPv4Address(d.address))


def _identity_from(data: bytes, context: bytes) -> cpf.IdentityItem | None:
    try:
        packet = encap.EncapsulationPacket.decode(data)
        if (packet.command != encap.Command.LIST_IDENTITY or packet.status != 0
                or packet.context != context):
            return None
        for item in cpf.decode_items(packet.data, 0, context="ListIdentity reply"):
            if isinstance(item, cpf.IdentityItem):
                return item
    except MalformedPacket:
        return None
    return None

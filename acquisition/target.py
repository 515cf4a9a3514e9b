"""The target role of a Logix controller: its Connection Manager and class-1 tag production.

Owns, for the simulator (and any test that needs a producer), with no I/O and time passed in:

* Forward_Open / Large_Forward_Open / Forward_Close handling (protocol.md 5.2-5.10) for class-1
  produced-tag connections and class-3 explicit connections to the message router, with every
  rejection of protocol.md 7.6 / 10.4 (validation order below);
* the connection table: triads, connection ids (``incarnation << 16 | counter``, 5.7), the
  consumer count per tag (7.4) and the global connection limit;
* production (10.4 items 9-10): one ``Producer`` per P2P connection and one per multicast tag
  (all multicast consumers share its T->O id, sequence numbers and datagrams, 5.7 / 6.7), at the
  granted RPI on absolute deadlines ``epoch + k * period`` so timing never drifts; 32-bit
  sequence +1 per datagram, 16-bit sequence +1 per datagram or only when the image changed
  (6.4);
* the O->T heartbeat watchdog (5.4, 6.6, 10.4 item 11): API x multiplier, the first period at
  least ``initial_watchdog_s`` (10 s in OpENer); a heartbeat counts only when it comes from the
  originator's IP with a 32-bit sequence newer than the last one; expiry stops production and
  frees the consumer slot;
* multicast group allocation (6.7): ``239.192.1.0 + 32 * ((host_id - 1) & 0x3FF)``;
* class-3 connected messaging bookkeeping: watchdog and the retransmission rule (a repeated
  16-bit sequence count gets the previous reply again, without executing the request twice).

Forward_Open checks, in this order (protocol.md 10.4): body size (0x13 / 0x15); connection path
(port segment: wrong port 0x0311, wrong slot 0x0312; electronic key 0x0114 / 0x0115 / 0x0116;
application path: message router -> class 3, ``91 <tag>`` or ``20 04 [24 cfg] 2C ot 2C to`` ->
class 1, unknown / not produced -> ``unknown_tag_error``, anything else 0x0315); transport class
and trigger (0x0103); network parameters (types 0x0123 / 0x0124; a multicast T->O from an
originator outside ``address``/``netmask`` 0x0813, 6.7; fixed/variable 0x011F / 0x0120, sizes
``size_error`` + the wanted size); duplicate triad (0x0100); consumers per tag
(0x031E); global connection limit (0x0113); RPI (0x0111, or 0x0112 + 5 words when the tag has a
default RPI; multicast RPI mismatch ``multicast_rpi_error``).

The machine has the one shape of ARCHITECTURE.md: inputs are method calls that take ``now``
(``on_datagram``, ``session_closed``, ``restart``, the CM requests); what the shell must do or may
log is drained in order with ``take_outputs()`` (``SendDatagram``, ``CloseSession``,
``TargetEvent``); the timer is ``next_deadline()`` + ``on_timer(now)``. One documented exception:
a Connection Manager request (``handle_cm``, ``forward_open``, ``forward_close``) and a class-3
connected request (``connected_request``) return their CIP reply, because the answer is
synchronous (it goes back in the encapsulation reply to that very request, and Unconnected_Send
embeds it in the controller's own reply); their events still come through ``take_outputs()``.

Codes that protocol.md marks uncertain are options (``TargetOptions``) defaulting to the most
probable Logix behaviour. ``large_forward_open=False`` plays a controller whose firmware predates
Large_Forward_Open: service 0x5B is answered with general status 0x08 and nothing else (7.6),
which is what makes pycomm3 and libplctag fall back to 0x54.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from pyconpro.acquisition import cip, class1, cm, cpf, epath
from pyconpro.acquisition.adapter import Adapter, AdapterReject, InputImage, OpenedAssembly
from pyconpro.acquisition.adapter import OfferedConnection as OfferedConnectionT
from pyconpro.acquisition.assembly import ConnectionKind as AssemblyKind
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.status import ExtendedStatus, GeneralStatus
from pyconpro.acquisition.target_options import (
    ProducibleTag,
    Seq16Mode,
    TagSource,
    TargetOptions,
    multicast_group,
)

#: "Acceptable RPI type" bytes of the 0x0112 additional status (CIP Vol 1 table 3-5.33 as
#: remembered, protocol.md 5.9 marks it unverified): 0 = the requested value was fine,
#: 1 = use the returned value, 2 = returned value is the minimum, 3 = the maximum,
#: 4 = the value the data is already produced at (shared multicast).
RPI_OK, RPI_USE_THIS, RPI_MINIMUM, RPI_MAXIMUM, RPI_SHARED = 0, 1, 2, 3, 4


# --------------------------------------------------------------------------- records


class ConnectionKind(str, Enum):
    CLASS1 = "class1"
    CLASS3 = "class3"
    ASSEMBLY = "assembly"  # class 1 to an adapter's assemblies (``acquisition.adapter``)


@dataclass(frozen=True, slots=True)
class KindRules:
    """What tells the two kinds of connection apart once open, as data (``KIND_RULES``)."""

    udp_heartbeats: bool  # O->T class-1 datagrams refresh its watchdog (10.4 item 11)
    connected_requests: bool  # SendUnitData requests of its session refresh it and get answers
    ends_with_session: bool  # the end of its TCP session closes it (protocol.md 2.4)
    ends_sessions_on_timeout: bool  # its timeout may close the originator's sessions (6.6)


KIND_RULES: Mapping[ConnectionKind, KindRules] = {
    ConnectionKind.CLASS1: KindRules(
        udp_heartbeats=True, connected_requests=False, ends_with_session=False,
        ends_sessions_on_timeout=True,
    ),
    ConnectionKind.CLASS3: KindRules(
        udp_heartbeats=False, connected_requests=True, ends_with_session=True,
        ends_sessions_on_timeout=False,
    ),
    ConnectionKind.ASSEMBLY: KindRules(
        udp_heartbeats=True, connected_requests=False, ends_with_session=False,
        ends_sessions_on_timeout=True,
    ),
}


class TargetEventKind(str, Enum):
    OPENED = "opened"
    REJECTED = "rejected"
    CLOSED = "closed"
    CLOSE_REJECTED = "close_rejected"
    TIMED_OUT = "timed_out"
    SESSION_CLOSED = "session_closed"
    RESTARTED = "restarted"


@dataclass(frozen=True, slots=True)
class TargetEvent:
    """Something a log line or a test wants to know about."""

    kind: TargetEventKind
    time: float
    triad: cm.Triad | None = None
    tag: str | None = None
    peer: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        parts = [self.kind.value]
        if self.tag:
            parts.append(f"tag={self.tag}")
        if self.peer:
            parts.append(f"peer={self.peer}")
        if self.triad:
            t = self.triad
            parts.append(
                f"triad={t.connection_serial:#06x}/{t.vendor_id:#06x}/{t.originator_serial:#010x}"
            )
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send one T->O class-1 datagram to ``address`` (ip, port): P2P or a multicast group."""

    data: bytes
    address: tuple[str, int]


@dataclass(frozen=True, slots=True)
class CloseSession:
    """Close every TCP session from ``peer`` (``close_sessions_on_timeout``, protocol.md 6.6)."""

    peer: str


TargetOutput = SendDatagram | CloseSession | TargetEvent
"""What ``ProducerTarget.take_outputs()`` returns: actions for the shell, and events to log."""


@dataclass(slots=True)
class TargetCounters:
    forward_opens: int = 0
    rejects: int = 0
    forward_closes: int = 0
    close_rejects: int = 0
    timeouts: int = 0
    datagrams_sent: int = 0
    production_slots_missed: int = 0
    heartbeats: int = 0
    heartbeats_stale: int = 0
    heartbeats_foreign: int = 0
    heartbeats_unknown: int = 0
    datagrams_malformed: int = 0
    connected_requests: int = 0
    connected_retransmits: int = 0
    reject_codes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        out["reject_codes"] = dict(self.reject_codes)
        return out


@dataclass(slots=True, eq=False)
class TargetConnection:
    """One open connection (class 1 produced tag, or class 3 explicit)."""

    kind: ConnectionKind
    triad: cm.Triad
    ot_id: int
    to_id: int
    peer_ip: str
    session_id: int
    ot_api_us: int
    to_api_us: int
    multiplier: int  # factor 4..512
    timeout_s: float
    deadline: float
    opened_at: float
    path: bytes
    tag: str | None = None
    multicast: bool = False
    dest: tuple[str, int] | None = None
    last_seq32: int | None = None
    heartbeats: int = 0
    last_seq16: int | None = None
    last_reply: bytes | None = None
    to_size: int = 0  # T->O connection size (class 3: the largest reply the originator takes)

    def summary(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "tag": self.tag,
            "peer": self.peer_ip,
            "session": self.session_id,
            "serial": self.triad.connection_serial,
            "vendor": self.triad.vendor_id,
            "originator_serial": self.triad.originator_serial,
            "ot_id": self.ot_id,
            "to_id": self.to_id,
            "ot_api_us": self.ot_api_us,
            "to_api_us": self.to_api_us,
            "multiplier": self.multiplier,
            "multicast": self.multicast,
            "dest": list(self.dest) if self.dest else None,
            "heartbeats": self.heartbeats,
        }


@dataclass(slots=True, eq=False)
class Producer:
    """One stream of T->O datagrams: a P2P connection, or a multicast tag shared by consumers."""

    tag_name: str
    tag: ProducibleTag
    to_id: int
    dest: tuple[str, int]
    rpi_us: int
    epoch: float
    multicast: bool
    consumers: list[TargetConnection]
    slot: int = 1  # index of the next production slot: due at epoch + slot * period
    seq32: int = 0
    seq16: int = 0
    last_image: bytes | None = None
    order: int = 0  # creation order: producers due at once send in it

    @property
    def period_s(self) -> float:
        return self.rpi_us / 1e6

    @property
    def next_due(self) -> float:
        return self.epoch + self.slot * self.period_s

    def summary(self) -> dict[str, object]:
        """What a load generator needs to produce this stream's datagrams in its place (the
        simulator's ``producers`` control command): the T->O id and destination, the sequence
        numbers of the last datagram produced, and the tag image that is sent now."""
        return {
            "tag": self.tag_name,
            "to_id": self.to_id,
            "dest": list(self.dest),
            "rpi_us": self.rpi_us,
            "multicast": self.multicast,
            "consumers": len(self.consumers),
            "seq32": self.seq32,
            "seq16": self.seq16,
            "image": self.tag.image().hex(),
        }


def _producer_key(p: Producer) -> int:
    """A producer's key in ``ProducerTarget._producers``: a multicast stream is shared by its
    T->O id, a point-to-point one is its consumer's own."""
    return p.to_id if p.multicast else id(p)


class _Reject(Exception):
    """Internal: a Forward_Open refusal (general status + additional words)."""

    def __init__(self, extended: int | None, *extra: int,
                 general: int = GeneralStatus.CONNECTION_FAILURE):
        self.general = int(general)
        self.additional = (() if extended is None else (int(extended),)) + tuple(extra)
        super().__init__(self.additional)


@dataclass(frozen=True, slots=True)
class _AppPath:
    kind: ConnectionKind
    tag_name: str | None = None
    tag: ProducibleTag | None = None
    # An adapter's assembly path: O->T point, T->O point, config instance, config data.
    points: tuple[int, int, int | None, bytes | None] | None = None


@dataclass(frozen=True, slots=True)
class _Opening:
    """A Forward_Open that passed the path check, on its way to an opener (``_OPENERS``):
    the request, what its path names, who sent it and when, and the T->O sockaddr item the
    originator added (class 1: the port it wants the data on)."""

    request: cm.ForwardOpenRequest
    app: _AppPath
    peer_ip: str
    session_id: int
    now: float
    to_sockaddr: cpf.Sockaddr | None


def _check_transport(request: cm.ForwardOpenRequest, transport_class: int, *, cyclic: bool,
                     to_multicast: bool = False) -> bool:
    """The checks every opener starts with, in OpENer's and Logix's order: the transport
    class (and a cyclic trigger), O->T point to point, T->O point to point (or multicast,
    where it may be). Returns whether T->O is multicast."""
    tt = request.transport_trigger
    if tt.transport_class != transport_class or (
            cyclic and tt.trigger != cm.ProductionTrigger.CYCLIC):
        raise _Reject(ExtendedStatus.TRANSPORT_TRIGGER_NOT_SUPPORTED)
    if request.ot_params.connection_type != cm.ConnectionType.POINT_TO_POINT:
        raise _Reject(ExtendedStatus.INVALID_OT_CONNECTION_TYPE)
    to_type = request.to_params.connection_type
    multicast = to_multicast and to_type == cm.ConnectionType.MULTICAST
    if not multicast and to_type != cm.ConnectionType.POINT_TO_POINT:
        raise _Reject(ExtendedStatus.INVALID_TO_CONNECTION_TYPE)
    return multicast


# --------------------------------------------------------------------------- the target


_FO_FIXED = 36
_LFO_FIXED = 40
_FC_FIXED = 12


class ProducerTarget:
    """Connection Manager + class-1 production of a simulated controller (module docstring).

    Inputs return None, except the request/response ones (``handle_cm``, ``forward_open``,
    ``forward_close``, ``connected_request``), which return the CIP reply to their request;
    everything else leaves through ``take_outputs()``.
    """

    def __init__(self, store: TagSource, options: TargetOptions | None = None,
                 adapter: Adapter | None = None) -> None:
        self.store = store
        #: a generic adapter's assemblies served beside the tags (``acquisition.adapter``)
        self.adapter = adapter
        self._assemblies: dict[int, OpenedAssembly] = {}  # id(connection) -> what it opened
        self.options = options or TargetOptions()
        self.counters = TargetCounters()
        self._outputs: list[TargetOutput] = []
        self._by_triad: dict[cm.Triad, TargetConnection] = {}
        self._by_ot_id: dict[int, TargetConnection] = {}
        self._producers: dict[int, Producer] = {}  # by T->O id
        # (next_due, order, slot, producer) of every live producer; an entry whose slot is no
        # longer its producer's, or whose producer was removed, is stale and skipped.
        self._schedule: list[tuple[float, int, int, Producer]] = []
        self._orders = itertools.count(1)
        self._conn_producer: dict[int, Producer] = {}  # id(connection) -> producer
        self._multicast: dict[str, Producer] = {}  # tag name (folded) -> producer
        self._groups: dict[str, str] = {}  # tag name (folded) -> multicast group
        self._incarnation = int(store.incarnation) & 0xFFFF or 1
        self._counter = 0
        self._producing = True  # False: class-1 production stopped (``set_producing``)
        # No watchdog expires before this (a lower bound of the connections' deadlines, kept
        # up in O(1) as heartbeats move them): the timers scan the connections only when it
        # is reached, not at every datagram.
        self._watchdog_floor = math.inf

    # ------------------------------------------------------------------ views

    @property
    def incarnation(self) -> int:
        return self._incarnation

    def connections(self) -> list[TargetConnection]:
        return list(self._by_triad.values())

    def producers(self) -> list[Producer]:
        return list(self._producers.values())

    def consumers_of(self, tag_name: str) -> int:
        key = tag_name.casefold()
        return sum(1 for c in self._by_triad.values() if c.tag and c.tag.casefold() == key)

    def take_outputs(self) -> list[TargetOutput]:
        """Everything to do or to know since the last call, in order (and forget it):
        ``SendDatagram``, ``CloseSession`` and ``TargetEvent`` values."""
        out, self._outputs = self._outputs, []
        return out

    def snapshot(self) -> dict[str, object]:
        return {
            "incarnation": self._incarnation,
            "connections": [c.summary() for c in self._by_triad.values()],
            "counters": self.counters.as_dict(),
            **({"assemblies": self.adapter.snapshot()} if self.adapter is not None else {}),
        }

    # ------------------------------------------------------------------ CM dispatch

    def handle_cm(
        self,
        request: cip.Request,
        peer_ip: str,
        session_id: int,
        now: float,
        items: tuple[cpf.Item, ...] = (),
    ) -> tuple[cip.Reply, tuple[cpf.Item, ...]]:
        """One unconnected request addressed to the Connection Manager (``20 06 24 01``).

        ``items`` are the SendRRData CPF items after the unconnected data item (a T->O sockaddr
        item there sets the P2P destination port). Never raises on bad input.
        """
        service = request.service
        if service == cip.Service.LARGE_FORWARD_OPEN and not self.options.large_forward_open:
            return self._unsupported(service, peer_ip, now), ()
        if service in (cip.Service.FORWARD_OPEN, cip.Service.LARGE_FORWARD_OPEN):
            large = service == cip.Service.LARGE_FORWARD_OPEN
            try:
                fo = cm.ForwardOpenRequest.decode_body(request.data, large=large)
            except MalformedPacket:
                fixed = _LFO_FIXED if large else _FO_FIXED
                return self._malformed(service, request.data, fixed, 10, now), ()
            to_item = next(
                (
                    i
                    for i in items
                    if isinstance(i, cpf.SockaddrInfo) and i.direction == cpf.ItemId.SOCKADDR_T2O
                ),
                None,
            )
            return self.forward_open(
                fo, peer_ip, session_id, now, to_item.sockaddr if to_item else None
            )
        if service == cip.Service.FORWARD_CLOSE:
            try:
                fc = cm.ForwardCloseRequest.decode_body(request.data)
            except MalformedPacket:
                return self._malformed(service, request.data, _FC_FIXED, 2, now), ()
            return self.forward_close(fc, peer_ip, now), ()
        return cip.Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED), ()

    def _unsupported(self, service: int, peer_ip: str, now: float) -> cip.Reply:
        """0x08 with no data, as a CIP object answers a service it does not implement (an old
        Logix for 0x5B): no triad is echoed, the body is not even parsed."""
        self.counters.rejects += 1
        self._count_code(f"0x{GeneralStatus.SERVICE_NOT_SUPPORTED:02X}")
        self._event(
            TargetEventKind.REJECTED,
            now,
            peer=peer_ip,
            detail=f"0x{GeneralStatus.SERVICE_NOT_SUPPORTED:02X} service 0x{service:02X}"
            " not supported (large_forward_open off)",
        )
        return cip.Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)

    def _malformed(
        self, service: int, data: bytes, fixed: int, triad_at: int, now: float
    ) -> cip.Reply:
        """0x13 when the body is shorter than its fixed part + path, 0x15 when longer."""
        size_at = fixed - 2 if fixed == _FC_FIXED else fixed - 1
        if len(data) < fixed or len(data) < fixed + 2 * data[size_at]:
            general = GeneralStatus.NOT_ENOUGH_DATA
        else:
            general = GeneralStatus.TOO_MUCH_DATA
        self.counters.rejects += 1
        self._count_code(f"0x{general:02X}")
        self._event(
            TargetEventKind.REJECTED, now, detail=f"malformed body: general 0x{general:02X}"
        )
        if len(data) >= triad_at + 8:
            serial, vendor, oserial = cm._TRIAD.unpack_from(data, triad_at)
            return cm.ConnectionFailure(general, (), serial, vendor, oserial, 0).to_reply(service)
        return cip.Reply(service, general)

    # ------------------------------------------------------------------ Forward_Open

    def forward_open(
        self,
        request: cm.ForwardOpenRequest,
        peer_ip: str,
        session_id: int,
        now: float,
        to_sockaddr: cpf.Sockaddr | None = None,
    ) -> tuple[cip.Reply, tuple[cpf.Item, ...]]:
        """Validate and open; the reply and the CPF items to append after the unconnected data
        item (O->T / T->O sockaddr items for class 1, none for class 3)."""
        self.counters.forward_opens += 1
        if request.large and not self.options.large_forward_open:
            return self._unsupported(request.service, peer_ip, now), ()
        try:
            app = self._walk_path(request.path)
            conn, items = _OPENERS[app.kind](
                self, _Opening(request, app, peer_ip, session_id, now, to_sockaddr)
            )
        except _Reject as r:
            self.counters.rejects += 1
            code = f"0x{r.general:02X}" + (f"/0x{r.additional[0]:04X}" if r.additional else "")
            self._count_code(code)
            tag = None
            try:
                tag = self._tag_name_of(request.path)
            except Exception:  # noqa: BLE001 - only for the log line
                tag = None
            self._event(
                TargetEventKind.REJECTED,
                now,
                request.triad,
                tag,
                peer_ip,
                f"{code} {' '.join(f'{w:#06x}' for w in r.additional[1:])}".strip(),
            )
            failure = cm.ConnectionFailure(
                r.general,
                r.additional,
                request.connection_serial,
                request.vendor_id,
                request.originator_serial,
                0,
            )
            return failure.to_reply(request.service), ()
        success = cm.ForwardOpenSuccess(
            conn.ot_id,
            conn.to_id,
            request.connection_serial,
            request.vendor_id,
            request.originator_serial,
            conn.ot_api_us,
            conn.to_api_us,
        )
        self._event(
            TargetEventKind.OPENED,
            now,
            conn.triad,
            conn.tag,
            peer_ip,
            f"{conn.kind.value} ot_id={conn.ot_id:#010x} to_id={conn.to_id:#010x}"
            f" rpi={conn.to_api_us}us ot_rpi={conn.ot_api_us}us x{conn.multiplier}"
            + (f" dest={conn.dest[0]}:{conn.dest[1]}" if conn.dest else "")
            + (" multicast" if conn.multicast else ""),
        )
        return success.to_reply(request.large), items

    def _tag_name_of(self, path: bytes) -> str | None:
        for seg in epath.decode_path(path):
            if isinstance(seg, epath.SymbolicSegment):
                return seg.name
        return None

    def _walk_path(self, path: bytes) -> _AppPath:
        """Connection path -> what is being opened (protocol.md 4.2, 4.3, 10.4 item 2)."""
        try:
            segments = list(epath.decode_path(path))
        except MalformedPacket:
            raise _Reject(ExtendedStatus.INVALID_SEGMENT_IN_PATH) from None
        i = 0
        if i < len(segments) and isinstance(segments[i], epath.PortSegment):
            port = segments[i]
            assert isinstance(port, epath.PortSegment)
            if port.port != 1:
                raise _Reject(ExtendedStatus.PORT_NOT_AVAILABLE)
            if len(port.link) != 1 or port.link[0] != self.options.slot:
                raise _Reject(ExtendedStatus.LINK_ADDRESS_NOT_VALID)
            i += 1
        # Further hops would leave the CPU: it has no other ports.
        if any(isinstance(s, epath.PortSegment) for s in segments[i:]):
            raise _Reject(ExtendedStatus.PORT_NOT_AVAILABLE)
        while i < len(segments) and isinstance(
            segments[i], (epath.ElectronicKey, epath.NetworkSegment)
        ):
            seg = segments[i]
            if isinstance(seg, epath.ElectronicKey):
                self._check_key(seg)
            i += 1
        rest = segments[i:]
        lt = epath.LogicalType
        if (
            len(rest) == 2
            and isinstance(rest[0], epath.LogicalSegment)
            and rest[0].kind == lt.CLASS_ID
            and rest[0].value == 0x02
            and isinstance(rest[1], epath.LogicalSegment)
            and rest[1].kind == lt.INSTANCE_ID
            and rest[1].value == 0x01
        ):
            return _AppPath(ConnectionKind.CLASS3)
        if len(rest) == 1 and isinstance(rest[0], epath.SymbolicSegment):
            return self._produced(rest[0].name, self.store.find(rest[0].name))
        if rest and all(isinstance(s, epath.SymbolicSegment) for s in rest):
            # Program-scoped or dotted: not a controller-scoped produced tag (protocol.md 4.2).
            raise _Reject(self.options.unknown_tag_error)
        if (
            rest
            and isinstance(rest[0], epath.LogicalSegment)
            and rest[0].kind == lt.CLASS_ID
            and rest[0].value == 0x04
        ):
            return self._assembly(rest[1:])
        raise _Reject(ExtendedStatus.INVALID_SEGMENT_IN_PATH)

    def _assembly(self, rest: list[epath.Segment]) -> _AppPath:
        """``20 04 [24 cfg] 2C <O->T point> 2C <T->O point> [80 data]``: the last connection
        point is the produced one (protocol.md 4.3); the O->T point is a heartbeat."""
        lt = epath.LogicalType
        j = 0
        config: int | None = None
        if (
            j < len(rest)
            and isinstance(rest[j], epath.LogicalSegment)
            and rest[j].kind == lt.INSTANCE_ID  # type: ignore[union-attr]
        ):
            config = rest[j].value  # type: ignore[union-attr]
            j += 1
        points: list[int] = []
        while (
            j < len(rest)
            and isinstance(rest[j], epath.LogicalSegment)
            and rest[j].kind == lt.CONNECTION_POINT  # type: ignore[union-attr]
        ):
            points.append(rest[j].value)  # type: ignore[union-attr]
            j += 1
        data: bytes | None = None
        while j < len(rest) and isinstance(rest[j], epath.DataSegment):
            data = (data or b"") + rest[j].data  # type: ignore[union-attr]
            j += 1  # configuration data: nothing to configure on a produced tag
        if j != len(rest) or not 1 <= len(points) <= 2:
            raise _Reject(ExtendedStatus.INVALID_SEGMENT_IN_PATH)
        if self.adapter is not None and len(points) == 2 and self.adapter.produces(points[1]):
            return _AppPath(ConnectionKind.ASSEMBLY, f"assembly {points[1]}",
                            points=(points[0], points[1], config, data))
        point = points[-1]
        if self.options.assemblies is not None:
            name = self.options.assemblies.get(point)
            tag = self.store.find(name) if name is not None else None
        else:
            tag = self.store.by_instance(point)
            name = tag.name if tag is not None else None
        return self._produced(name or f"<connection point {point}>", tag)

    def _produced(self, name: str, tag: ProducibleTag | None) -> _AppPath:
        if tag is None or not tag.produced:
            raise _Reject(self.options.unknown_tag_error)
        return _AppPath(ConnectionKind.CLASS1, tag.name, tag)

    def _check_key(self, key: epath.ElectronicKey) -> None:
        """OpENer's rules (protocol.md 4.1): zero fields are wildcards."""
        me = self.options.identity
        if (key.vendor_id and key.vendor_id != me.vendor_id) or (
            key.product_code and key.product_code != me.product_code
        ):
            raise _Reject(ExtendedStatus.VENDOR_OR_PRODUCT_MISMATCH)
        if key.device_type and key.device_type != me.device_type:
            raise _Reject(ExtendedStatus.DEVICE_TYPE_MISMATCH)
        if key.major_revision == 0 and not key.compatibility:
            return
        if key.major_revision != me.major_revision:
            raise _Reject(ExtendedStatus.REVISION_MISMATCH)
        if key.compatibility:
            if key.minor_revision > me.minor_revision:
                raise _Reject(ExtendedStatus.REVISION_MISMATCH)
        elif key.minor_revision and key.minor_revision != me.minor_revision:
            raise _Reject(ExtendedStatus.REVISION_MISMATCH)

    def _on_subnet(self, peer_ip: str) -> bool:
        """OpENer's test: ``(originator & mask) == (our address & mask)``."""
        net = ipaddress.IPv4Network(f"{self.options.address}/{self.options.netmask}", strict=False)
        try:
            return ipaddress.IPv4Address(peer_ip) in net
        except ValueError:  # not an IPv4 peer: certainly not on our subnet
            return False

    def _size_codes(self) -> tuple[int, int]:
        return _SIZE_CODES[ExtendedStatus(self.options.size_error)]

    def _check_pool(self) -> None:
        if len(self._by_triad) >= self.options.max_connections:
            raise _Reject(ExtendedStatus.OUT_OF_CONNECTIONS)

    def _new_connection(self, kind: ConnectionKind, o: _Opening, to_id: int, *, to_size: int,
                        tag: str | None = None, multicast: bool = False) -> TargetConnection:
        """An accepted Forward_Open's connection: a new O->T id, the RPIs it asked for as APIs,
        and its O->T watchdog (API x the multiplier's factor, the first period at least
        ``initial_watchdog_s``)."""
        request, now = o.request, o.now
        factor = 4 << (request.timeout_multiplier & 0x07)
        timeout = request.ot_rpi * factor / 1e6
        return TargetConnection(
            kind,
            request.triad,
            self._new_id(),
            to_id,
            o.peer_ip,
            o.session_id,
            request.ot_rpi,
            request.to_rpi,
            factor,
            timeout,
            now + max(timeout, self.options.initial_watchdog_s),
            now,
            request.path,
            tag=tag,
            multicast=multicast,
            to_size=to_size,
        )

    def _open_class3(
        self, o: _Opening
    ) -> tuple[TargetConnection, tuple[cpf.Item, ...]]:
        """A class-3 connection to the message router: no sockaddr items in the reply."""
        request = o.request
        _check_transport(request, 3, cyclic=False)
        ot, to = request.ot_params, request.to_params
        ot_code, to_code = self._size_codes()
        limit = self.options.class3_max_size if request.large else 0x1FF
        if ot.size > limit:
            raise _Reject(ot_code, limit)
        if to.size > limit:
            raise _Reject(to_code, limit)
        if request.triad in self._by_triad:
            raise _Reject(ExtendedStatus.CONNECTION_IN_USE)
        self._check_pool()
        if request.ot_rpi == 0 or request.to_rpi == 0:
            raise _Reject(ExtendedStatus.RPI_NOT_SUPPORTED)
        conn = self._new_connection(ConnectionKind.CLASS3, o, request.to_connection_id,
                                    to_size=to.size)
        self._add(conn)
        return conn, ()

    def _open_class1(
        self, o: _Opening
    ) -> tuple[TargetConnection, tuple[cpf.Item, ...]]:
        request, peer_ip, now = o.request, o.peer_ip, o.now
        assert o.app.tag is not None and o.app.tag_name is not None
        tag, name = o.app.tag, o.app.tag_name
        opt = self.options
        multicast = _check_transport(request, 1, cyclic=True, to_multicast=True)
        if not multicast and not tag.unicast_allowed:
            raise _Reject(ExtendedStatus.INVALID_TO_CONNECTION_TYPE)
        ot, to = request.ot_params, request.to_params
        if multicast and not self._on_subnet(peer_ip):
            # TTL 1 (TCP/IP attribute 8): the data could never reach the originator (6.7).
            raise _Reject(ExtendedStatus.NOT_CONFIGURED_FOR_OFF_SUBNET_MULTICAST)
        if ot.variable:
            raise _Reject(ExtendedStatus.INVALID_OT_FIXED_VARIABLE)
        if to.variable:
            raise _Reject(ExtendedStatus.INVALID_TO_FIXED_VARIABLE)
        ot_code, to_code = self._size_codes()
        if ot.size != cm.HEARTBEAT_SIZE:
            raise _Reject(ot_code, cm.HEARTBEAT_SIZE)
        wanted = tag.size() + cm.CLASS1_SEQUENCE_SIZE
        if to.size != wanted:
            raise _Reject(to_code, wanted)
        if request.triad in self._by_triad:
            raise _Reject(ExtendedStatus.CONNECTION_IN_USE)
        if self.consumers_of(name) >= tag.max_consumers:
            raise _Reject(ExtendedStatus.NO_CONSUMER_RESOURCES_AVAILABLE)
        self._check_pool()
        self._check_rpi(request, tag, name, multicast)

        conn = self._new_connection(ConnectionKind.CLASS1, o, 0, to_size=to.size, tag=name,
                                    multicast=multicast)
        items: list[cpf.Item] = []
        if opt.reply_ot_sockaddr:
            items.append(
                cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_O2T, cpf.Sockaddr("0.0.0.0", opt.udp_port))
            )
        if multicast:
            key = name.casefold()
            producer = self._multicast.get(key)
            if producer is None:
                group = self._groups.get(key)
                if group is None:
                    group = multicast_group(opt.address, opt.netmask, len(self._groups))
                    self._groups[key] = group
                producer = Producer(
                    name,
                    tag,
                    self._new_id(),
                    (group, opt.multicast_port),
                    request.to_rpi,
                    now,
                    True,
                    [],
                )
                self._multicast[key] = producer
                self._producers[producer.to_id] = producer
                self._schedule_producer(producer)
            conn.to_id = producer.to_id
            conn.dest = producer.dest
            producer.consumers.append(conn)
            items.append(
                cpf.SockaddrInfo(
                    cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr(producer.dest[0], producer.dest[1])
                )
            )
        else:
            port = (
                o.to_sockaddr.port
                if o.to_sockaddr is not None and o.to_sockaddr.port
                else opt.consumer_port
            )
            conn.to_id = request.to_connection_id
            conn.dest = (peer_ip, port)
            producer = Producer(
                name, tag, conn.to_id, conn.dest, request.to_rpi, now, False, [conn]
            )
            # Two P2P consumers may pick the same T->O id (they choose it): key producers by
            # connection, not by id, so they stay independent.
            self._producers[id(producer)] = producer
            self._schedule_producer(producer)
        self._conn_producer[id(conn)] = producer
        self._add(conn)
        return conn, tuple(items)

    # ------------------------------------------------------------------ adapter assemblies

    def _open_assembly(
        self, o: _Opening
    ) -> tuple[TargetConnection, tuple[cpf.Item, ...]]:
        """A class-1 connection to the adapter's assemblies (``acquisition.adapter``: OpENer's
        rules, in its order: which offered connection, ownership, listen only, sizes, config
        data), produced P2P at the requested RPI."""
        adapter, request = self.adapter, o.request
        assert adapter is not None and o.app.points is not None
        ot_point, to_point, config, data = o.app.points
        _check_transport(request, 1, cyclic=True)
        ot, to = request.ot_params, request.to_params
        try:
            offered = adapter.match(ot_point, to_point, config)
            self._check_assembly_use(offered)
            ot_code, to_code = self._size_codes()
            ot_size, to_size = adapter.expected_sizes(offered)
            if ot.size != ot_size:
                raise _Reject(ot_code, ot_size)
            if to.size != to_size:
                raise _Reject(to_code, to_size)
            if request.triad in self._by_triad:
                raise _Reject(ExtendedStatus.CONNECTION_IN_USE)
            self._check_pool()
            image = InputImage(adapter, to_point)
            self._check_rpi(request, image, image.name, False)
            adapter.check_config(offered, data, {
                o.offered.config: bytes(adapter.assemblies[o.offered.config].data)
                for o in self._assemblies.values() if o.offered.config is not None})
        except AdapterReject as r:
            raise _Reject(*r.additional) from None
        conn = self._new_connection(ConnectionKind.ASSEMBLY, o, request.to_connection_id,
                                    to_size=to.size, tag=image.name)
        port = (o.to_sockaddr.port if o.to_sockaddr is not None and o.to_sockaddr.port
                else self.options.consumer_port)
        conn.dest = (o.peer_ip, port)
        producer = Producer(image.name, image, conn.to_id, conn.dest, request.to_rpi, o.now,
                            False, [conn])
        self._producers[id(producer)] = producer
        self._schedule_producer(producer)
        self._conn_producer[id(conn)] = producer
        owner = offered.kind is AssemblyKind.EXCLUSIVE_OWNER
        self._assemblies[id(conn)] = OpenedAssembly(
            offered, adapter.assemblies[ot_point] if owner else None,
            adapter.assemblies[to_point])
        self._add(conn)
        items: list[cpf.Item] = []
        if self.options.reply_ot_sockaddr:
            items.append(cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_O2T,
                                          cpf.Sockaddr("0.0.0.0", self.options.udp_port)))
        return conn, tuple(items)

    def _check_assembly_use(self, offered: OfferedConnectionT) -> None:
        """One exclusive owner per output assembly (0x0106); a listen-only connection only
        while another connection produces its input assembly (0x0119)."""
        opened = list(self._assemblies.values())
        if offered.kind is AssemblyKind.EXCLUSIVE_OWNER and any(
                o.offered.kind is AssemblyKind.EXCLUSIVE_OWNER
                and o.offered.output == offered.output for o in opened):
            raise _Reject(ExtendedStatus.OWNERSHIP_CONFLICT)
        if offered.kind is AssemblyKind.LISTEN_ONLY and not any(
                o.offered.kind is not AssemblyKind.LISTEN_ONLY
                and o.offered.input == offered.input for o in opened):
            raise _Reject(ExtendedStatus.NON_LISTEN_ONLY_NOT_OPENED)

    def _remove_assembly(self, conn: TargetConnection) -> None:
        """Forget an assembly connection; when the last connection that is not listen-only
        on an input assembly goes, its listen-only connections go too (OpENer closes them)."""
        opened = self._assemblies.pop(id(conn), None)
        if opened is None or opened.offered.kind is AssemblyKind.LISTEN_ONLY:
            return
        point = opened.input.instance
        rest = [(c, o) for c in self._by_triad.values()
                if c is not conn and (o := self._assemblies.get(id(c))) is not None
                and o.input.instance == point]
        if any(o.offered.kind is not AssemblyKind.LISTEN_ONLY for _, o in rest):
            return
        for c, _ in rest:
            self._remove(c)
            self._outputs.append(TargetEvent(TargetEventKind.CLOSED, conn.opened_at, c.triad,
                                             c.tag, c.peer_ip, "listen only: its owner is gone"))

    def _check_rpi(
        self, request: cm.ForwardOpenRequest, tag: ProducibleTag, name: str, multicast: bool
    ) -> None:
        opt = self.options
        ot_ok = opt.ot_rpi_min_us <= request.ot_rpi <= opt.ot_rpi_max_us
        to_ok = tag.rpi_min_us <= request.to_rpi <= tag.rpi_max_us
        if not (ot_ok and to_ok):
            default = tag.default_rpi_us
            if default is None:
                raise _Reject(ExtendedStatus.RPI_NOT_SUPPORTED)
            ot_rpi = min(max(request.ot_rpi, opt.ot_rpi_min_us), opt.ot_rpi_max_us)
            ot_type = (
                RPI_OK
                if ot_ok
                else (RPI_MINIMUM if request.ot_rpi < opt.ot_rpi_min_us else RPI_MAXIMUM)
            )
            to_type = RPI_OK if to_ok else RPI_USE_THIS
            to_rpi = request.to_rpi if to_ok else default
            raise _Reject(
                ExtendedStatus.RPI_NOT_ACCEPTABLE, *_rpi_words(ot_type, to_type, ot_rpi, to_rpi)
            )
        if multicast:
            producer = self._multicast.get(name.casefold())
            if producer is not None and producer.rpi_us != request.to_rpi:
                code = ExtendedStatus(opt.multicast_rpi_error)
                raise _Reject(code, *_MULTICAST_RPI_WORDS[code](request.ot_rpi, producer.rpi_us))

    def _new_id(self) -> int:
        """``incarnation << 16 | counter``, non-zero and not in use (protocol.md 5.7)."""
        used = set(self._by_ot_id) | {p.to_id for p in self._producers.values()}
        while True:
            self._counter = (self._counter + 1) & 0xFFFF
            cid = (self._incarnation << 16) | self._counter
            if cid and cid not in used:
                return cid

    def _add(self, conn: TargetConnection) -> None:
        self._by_triad[conn.triad] = conn
        self._by_ot_id[conn.ot_id] = conn
        self._watchdog_floor = min(self._watchdog_floor, conn.deadline)

    def _refresh(self, conn: TargetConnection, now: float) -> None:
        """The connection's watchdog starts again at ``now``."""
        conn.deadline = deadline = now + conn.timeout_s
        if deadline < self._watchdog_floor:  # a first period shorter than the initial one
            self._watchdog_floor = deadline

    def _remove(self, conn: TargetConnection) -> None:
        self._remove_assembly(conn)
        self._by_triad.pop(conn.triad, None)
        self._by_ot_id.pop(conn.ot_id, None)
        producer = self._conn_producer.pop(id(conn), None)
        if producer is not None:
            producer.consumers.remove(conn)
            if not producer.consumers:
                self._producers.pop(_producer_key(producer), None)
                if producer.multicast:
                    self._multicast.pop(producer.tag_name.casefold(), None)

    # ------------------------------------------------------------------ Forward_Close

    def forward_close(self, request: cm.ForwardCloseRequest, peer_ip: str, now: float) -> cip.Reply:
        """Close by triad; the closer must be the originator's IP (OpENer answers 0x0F)."""
        self.counters.forward_closes += 1
        conn = self._by_triad.get(request.triad)
        if conn is None or conn.peer_ip != peer_ip:
            refusal = CloseRefusal.NOT_FOUND if conn is None else CloseRefusal.NOT_ORIGINATOR
            general, additional = _CLOSE_REFUSALS[refusal]
            self.counters.close_rejects += 1
            self._event(
                TargetEventKind.CLOSE_REJECTED,
                now,
                request.triad,
                conn.tag if conn else None,
                peer_ip,
                refusal.value + (f" {conn.peer_ip}" if conn else ""),
            )
            return cm.ConnectionFailure(
                int(general),
                tuple(int(a) for a in additional),
                request.connection_serial,
                request.vendor_id,
                request.originator_serial,
                0,
            ).to_reply(cip.Service.FORWARD_CLOSE)
        self._remove(conn)
        self._event(TargetEventKind.CLOSED, now, conn.triad, conn.tag, peer_ip, conn.kind.value)
        return cm.ForwardCloseSuccess(
            request.connection_serial, request.vendor_id, request.originator_serial
        ).to_reply()

    # ------------------------------------------------------------------ class-1 datagrams

    def on_datagram(self, data: bytes, src_ip: str, now: float) -> None:
        """An O->T datagram (heartbeat) arrived on the class-1 socket (protocol.md 10.4 item 11)."""
        try:
            dgram = class1.Class1Datagram.decode(data)
        except MalformedPacket:
            self.counters.datagrams_malformed += 1
            return
        conn = self._by_ot_id.get(dgram.connection_id)
        if conn is None or not KIND_RULES[conn.kind].udp_heartbeats:
            self.counters.heartbeats_unknown += 1
            return
        if src_ip != conn.peer_ip:
            self.counters.heartbeats_foreign += 1
            return
        if conn.last_seq32 is not None and not class1.seq32_newer(dgram.sequence, conn.last_seq32):
            self.counters.heartbeats_stale += 1
            return
        conn.last_seq32 = dgram.sequence
        conn.heartbeats += 1
        self._refresh(conn, now)
        self.counters.heartbeats += 1
        opened = self._assemblies.get(id(conn))
        if opened is not None and opened.output is not None and self.adapter is not None:
            try:
                self.adapter.consumed(opened.output.instance, data)
            except MalformedPacket:
                self.counters.datagrams_malformed += 1

    # ------------------------------------------------------------------ class-3 messaging

    def connected_request(
        self,
        connection_id: int,
        session_id: int,
        sequence: int,
        message: bytes,
        now: float,
        handler: Callable[[bytes, float, TargetConnection], bytes],
    ) -> tuple[int, bytes] | None:
        """A SendUnitData on a class-3 connection: (T->O id for the reply, CIP reply), or None
        when no class-3 connection of this session has that O->T id. A repeated sequence count
        is a retransmission: the previous reply is returned and ``handler`` is not called."""
        conn = self._by_ot_id.get(connection_id)
        if (
            conn is None
            or not KIND_RULES[conn.kind].connected_requests
            or conn.session_id != session_id
        ):
            return None
        self._refresh(conn, now)
        self.counters.connected_requests += 1
        if conn.last_seq16 == sequence and conn.last_reply is not None:
            self.counters.connected_retransmits += 1
            return conn.to_id, conn.last_reply
        reply = handler(message, now, conn)
        conn.last_seq16, conn.last_reply = sequence, reply
        return conn.to_id, reply

    def session_closed(self, session_id: int, now: float) -> None:
        """The TCP session ended: its class-3 connections go, class-1 ones stay
        (protocol.md 2.4)."""
        for conn in [c for c in self._by_triad.values() if c.session_id == session_id]:
            if KIND_RULES[conn.kind].ends_with_session:
                self._remove(conn)
                self._event(
                    TargetEventKind.SESSION_CLOSED,
                    now,
                    conn.triad,
                    None,
                    conn.peer_ip,
                    f"class3 closed with session {session_id:#x}",
                )

    def restart(self, now: float) -> None:
        """Lose every connection, as a program download does: the tag database restarts too
        (initial values, new incarnation) and new connection ids use the new incarnation."""
        lost = len(self._by_triad)
        self._by_triad.clear()
        self._by_ot_id.clear()
        self._producers.clear()
        self._schedule.clear()
        self._conn_producer.clear()
        self._multicast.clear()
        self._assemblies.clear()
        if self.adapter is not None:
            self.adapter.restart()
        self.store.restart(now)
        new = int(self.store.incarnation) & 0xFFFF
        # Ids of the old incarnation may still sit in consumers' tables: never reuse the prefix.
        self._incarnation = (
            new if new not in (0, self._incarnation) else self._incarnation % 0xFFFF + 1
        )
        self._counter = 0
        self._event(
            TargetEventKind.RESTARTED,
            now,
            detail=f"lost {lost} connections, incarnation {self._incarnation}",
        )

    # ------------------------------------------------------------------ timers

    def set_producing(self, producing: bool, now: float) -> None:
        """Stop or resume class-1 production (the simulator's ``stop_producing`` fault).

        Stopped, no datagram is built and no production slot is due, so a stopped target costs
        only its watchdogs and the heartbeats it receives; its connections stay open and each
        stream's sequence numbers stay those of its last datagram, which a load source sending
        in its place continues. Resumed, each stream's next slot is its first one after ``now``
        (the stopped slots are not counted as missed)."""
        if producing and not self._producing:
            for p in self._producers.values():
                if p.next_due <= now:
                    p.slot = math.floor((now - p.epoch) / p.period_s) + 1
                    self._schedule_producer(p)
        self._producing = producing

    @property
    def producing(self) -> bool:
        return self._producing

    def next_deadline(self) -> float | None:
        """When ``on_timer`` is due next: the next production slot or watchdog. Without
        production it may be earlier than any watchdog (the lower bound ``_watchdog_floor``,
        which heartbeats moved on since): ``on_timer`` then finds nothing to expire, and this
        call, made at every datagram a stopped simulator receives, does not look at every
        connection."""
        due = self._next_slot() if self._producing else None
        if due is not None:
            if self._watchdog_floor < due:
                self._watchdog_floor = self._earliest_watchdog()
            return min(due, self._watchdog_floor)
        return self._watchdog_floor if self._by_triad else None

    def _schedule_producer(self, p: Producer) -> None:
        if not p.order:
            p.order = next(self._orders)
        heapq.heappush(self._schedule, (p.next_due, p.order, p.slot, p))

    def _live(self, entry: tuple[float, int, int, Producer]) -> bool:
        p = entry[3]
        return entry[2] == p.slot and self._producers.get(_producer_key(p)) is p

    def _next_slot(self) -> float | None:
        """The next production slot of any stream (stale entries on top are dropped)."""
        schedule = self._schedule
        while schedule and not self._live(schedule[0]):
            heapq.heappop(schedule)
        return schedule[0][0] if schedule else None

    def _earliest_watchdog(self) -> float:
        return min((c.deadline for c in self._by_triad.values()), default=math.inf)

    def on_timer(self, now: float) -> None:
        """Expire watchdogs, then produce every datagram due at ``now`` (``SendDatagram``)."""
        if now >= self._watchdog_floor:
            self._expire(now)
        if not self._producing:
            return
        self._produce(now)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._by_triad.values() if c.deadline <= now]:
            self._remove(conn)
            self.counters.timeouts += 1
            self._event(
                TargetEventKind.TIMED_OUT,
                now,
                conn.triad,
                conn.tag,
                conn.peer_ip,
                f"{conn.kind.value} no heartbeat for {conn.timeout_s:g}s"
                f" ({conn.ot_api_us}us x{conn.multiplier})",
            )
            if (
                self.options.close_sessions_on_timeout
                and KIND_RULES[conn.kind].ends_sessions_on_timeout
                and not any(
                    (c.triad.vendor_id, c.triad.originator_serial)
                    == (conn.triad.vendor_id, conn.triad.originator_serial)
                    for c in self._by_triad.values()
                )
                and CloseSession(conn.peer_ip) not in self._outputs
            ):
                self._outputs.append(CloseSession(conn.peer_ip))
        self._watchdog_floor = self._earliest_watchdog()

    def _produce(self, now: float) -> None:
        schedule, due = self._schedule, []
        while schedule and schedule[0][0] <= now:
            entry = heapq.heappop(schedule)
            if self._live(entry):
                due.append(entry[3])
        if not due:
            return
        due.sort(key=lambda p: p.order)
        self.store.tick(now)
        if self.adapter is not None:
            self.adapter.tick(now)
        for p in due:
            image = p.tag.image()
            p.seq32 = (p.seq32 + 1) & 0xFFFFFFFF
            if self.options.seq16_mode is Seq16Mode.EVERY_PACKET or image != p.last_image:
                p.seq16 = (p.seq16 + 1) & 0xFFFF
            p.last_image = image
            data = class1.Class1Datagram(p.to_id, p.seq32, p.seq16, image).encode()
            self._outputs.append(SendDatagram(data, p.dest))
            # Absolute schedule: the next slot after ``now``; slots missed while the caller was
            # late are skipped (counted) rather than sent in a burst.
            nxt = p.slot + 1
            if p.epoch + nxt * p.period_s <= now:
                behind = math.floor((now - p.epoch) / p.period_s) + 1
                self.counters.production_slots_missed += behind - nxt
                nxt = behind
            p.slot = nxt
            self._schedule_producer(p)
        self.counters.datagrams_sent += len(due)

    # ------------------------------------------------------------------ helpers

    def _event(
        self,
        kind: TargetEventKind,
        now: float,
        triad: cm.Triad | None = None,
        tag: str | None = None,
        peer: str | None = None,
        detail: str = "",
    ) -> None:
        self._outputs.append(TargetEvent(kind, now, triad, tag, peer, detail))

    def _count_code(self, code: str) -> None:
        self.counters.reject_codes[code] = self.counters.reject_codes.get(code, 0) + 1


def _rpi_words(ot_type: int, to_type: int, ot_rpi: int, to_rpi: int) -> tuple[int, ...]:
    """The 5 words after 0x0112 (protocol.md 5.9): types, O->T RPI lo/hi, T->O RPI lo/hi."""
    return (
        (ot_type & 0xFF) | ((to_type & 0xFF) << 8),
        ot_rpi & 0xFFFF,
        (ot_rpi >> 16) & 0xFFFF,
        to_rpi & 0xFFFF,
        (to_rpi >> 16) & 0xFFFF,
    )


# --------------------------------------------------------------------------- choices as data

_Opener = Callable[[ProducerTarget, _Opening], tuple[TargetConnection, tuple[cpf.Item, ...]]]

#: How a Forward_Open that passed the path check opens, by what the path names.
_OPENERS: Mapping[ConnectionKind, _Opener] = {
    ConnectionKind.CLASS1: ProducerTarget._open_class1,
    ConnectionKind.CLASS3: ProducerTarget._open_class3,
    ConnectionKind.ASSEMBLY: ProducerTarget._open_assembly,
}

#: The (O->T, T->O) size reject codes, by ``TargetOptions.size_error``: Logix's 0x0109 for
#: both, or the CIP pair (protocol.md 5.9, 7.6).
_SIZE_CODES: Mapping[ExtendedStatus, tuple[int, int]] = {
    ExtendedStatus.INVALID_CONNECTION_SIZE: (
        ExtendedStatus.INVALID_CONNECTION_SIZE,
        ExtendedStatus.INVALID_CONNECTION_SIZE,
    ),
    ExtendedStatus.INVALID_TO_SIZE: (
        ExtendedStatus.INVALID_OT_SIZE,
        ExtendedStatus.INVALID_TO_SIZE,
    ),
}

#: The words after a multicast RPI mismatch code, by ``TargetOptions.multicast_rpi_error``
#: (arguments: the requested O->T RPI and the running production's RPI, us).
_MULTICAST_RPI_WORDS: Mapping[ExtendedStatus, Callable[[int, int], tuple[int, ...]]] = {
    ExtendedStatus.RPI_NOT_ACCEPTABLE: lambda ot_rpi, to_rpi: _rpi_words(
        RPI_OK, RPI_SHARED, ot_rpi, to_rpi
    ),
    ExtendedStatus.INCOMPATIBLE_MULTICAST_RPI: lambda ot_rpi, to_rpi: (),
}


class CloseRefusal(Enum):
    """Why a Forward_Close is refused."""

    NOT_FOUND = "connection not found"  # no connection has that triad
    NOT_ORIGINATOR = "closer is not the originator"  # OpENer answers 0x0F


_CLOSE_REFUSALS: Mapping[CloseRefusal, tuple[int, tuple[int, ...]]] = {
    CloseRefusal.NOT_FOUND: (
        GeneralStatus.CONNECTION_FAILURE,
        (ExtendedStatus.CONNECTION_NOT_FOUND,),
    ),
    CloseRefusal.NOT_ORIGINATOR: (GeneralStatus.PRIVILEGE_VIOLATION, ()),
}

"""Explicit-message object services of a simulated Logix controller (the target role), pure.

Owns what a Logix CPU answers to one CIP request, as bytes in / bytes out with no I/O:

* Identity (class 0x01) Get_Attributes_All / Get_Attribute_Single (protocol.md 10.2 row 3);
* the controller's program name (class 0x64, protocol.md 10.2 row 5);
* Symbol object (class 0x6B): Get_Instance_Attribute_List 0x55 with continuation, for the
  controller and ``Program:<name>`` scopes (protocol.md 9.2, 10.2 rows 6-7);
* Template object (class 0x6C): Get_Attribute_List 0x03 of attributes 1-5 and Read 0x4C with
  continuation, up to 4 x attribute 4 - 20 bytes (protocol.md 9.3, 10.2 rows 8-9);
* the Logix tag services Read Tag 0x4C, Read Tag Fragmented 0x52, Write Tag 0x4D, Write Tag
  Fragmented 0x53, Read-Modify-Write 0x4E on symbolic (``91 ...``, members, ``28`` element
  segments) and symbol-instance (``20 6B 25 00 <id>``) paths (protocol.md 4.1, 10.2 row 10);
* Multiple Service Packet 0x0A on the Message Router (protocol.md 3);
* Unconnected_Send 0x52 to the Connection Manager: the route is checked against the CPU slot
  and the embedded request answered here (protocol.md 5.11); every other Connection Manager
  service is handed to an optional ``cm_handler`` (the ``ProducerTarget`` of acquisition.target);
* TCP/IP Interface object (class 0xF5) attributes 1-6, 8, 9, 13 (protocol.md 6.7, 10.3);
* Wall Clock Time object (class 0x8B): the controller's clock, ``wall_clock``
  (acquisition.logix_clock, protocol.md 10.5).

``LogixController.handle`` never raises on bad input: a request that does not parse becomes the
CIP error reply a Logix would send (protocol.md 8.1, 8.3). Status choices, and the evidence:

| situation                                      | reply                        | source      |
|------------------------------------------------|------------------------------|-------------|
| unknown tag / member / program, bad segment    | 0x04 + ext 0x0000            | PM020 0x04  |
| unknown class / instance, index beyond dims    | 0x05 + ext 0x0000            | PM020 0x05  |
| unknown service for the object                 | 0x08                         | CIP         |
| request data too short / too long              | 0x13 / 0x15                  | PM020       |
| Write Tag data beyond the elements written     | ignored (pycomm3 sends it)   | pycomm3     |
| path size beyond the message                   | 0x26                         | PM020       |
| elements beyond the end of the tag             | 0xFF + 0x2105                | PM020       |
| fragment offset beyond the end                 | 0xFF + 0x2104                | PM020       |
| template read at or beyond its end             | 0xFF + 0x2104                | pylogix     |
| write/RMW type differs from the tag            | 0xFF + 0x2107                | PM020       |
| reply larger than the connection allows        | 0x06 with what fits          | PM020       |
| an embedded service of a 0x0A packet failed    | 0x1E                         | CIP         |
| write to a read-only tag (external access 2)   | 0x0F (assumed, unverified)   | CIP         |

Successful replies carry no additional-status words (pycomm3 reads at fixed offsets,
protocol.md 10.2).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.cip import REPLY_FLAG, Reply, Service
from pyconpro.acquisition.epath import (
    LogicalSegment,
    LogicalType,
    PortSegment,
    Segment,
    SymbolicSegment,
    decode_path,
)
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_clock import WallClock, wall_clock_service
from pyconpro.acquisition.logix_objects import (
    TEMPLATE_READ_AREA_OVERHEAD,
    AttributeResult,
    ExternalAccess,
    SymbolInstance,
    TemplateAttribute,
    TemplateAttributes,
    TemplateReadRequest,
    encode_attribute_results,
    encode_symbol_instances,
    encode_template_definition,
    parse_attribute_ids,
    template_read_area,
)
from pyconpro.acquisition.logix_requests import (
    Identity,
    Location,
    PathError,
    ReadModifyWriteRequest,
    ReadTagFragmentedRequest,
    ReadTagRequest,
    Selector,
    WriteTagRequest,
    locate,
    logix_error,
    no_destination,
    path_not_found,
)
from pyconpro.acquisition.logix_types import (
    AtomicType,
    DataTypeCode,
    LogixType,
    ReadTagType,
    StructType,
    byte_size,
)
from pyconpro.acquisition.status import ExtendedStatus, GeneralStatus


class ObjectClass(IntEnum):
    """CIP object classes a Logix CPU answers (protocol.md 10.3)."""

    IDENTITY = 0x01
    MESSAGE_ROUTER = 0x02
    CONNECTION_MANAGER = 0x06
    PROGRAM_NAME = 0x64  # Rockwell KB 23341
    SYMBOL = 0x6B
    TEMPLATE = 0x6C
    WALL_CLOCK = 0x8B
    TCPIP_INTERFACE = 0xF5


class LogixExtendedStatus(IntEnum):
    """Extended status words after general status 0xFF (protocol.md 8.3, 1756-RM003)."""

    PRIVILEGE_FAILURE = 0x2100
    ADDRESS_OUT_OF_RANGE = 0x2104  # fragment offset beyond the end of the tag
    BEYOND_END_OF_OBJECT = 0x2105  # element count reaches past the end of the tag
    TYPE_MISMATCH = 0x2107  # data type in the request does not match the tag


# Attribute ids of the Identity object (CIP Vol 1 5-2) used by Get_Attribute_Single.
class IdentityAttribute(IntEnum):
    VENDOR_ID = 1
    DEVICE_TYPE = 2
    PRODUCT_CODE = 3
    REVISION = 4
    STATUS = 5
    SERIAL_NUMBER = 6
    PRODUCT_NAME = 7


class TcpIpAttribute(IntEnum):
    """TCP/IP Interface object (class 0xF5) instance attributes served here."""

    STATUS = 1
    CONFIGURATION_CAPABILITY = 2
    CONFIGURATION_CONTROL = 3
    PHYSICAL_LINK_OBJECT = 4
    INTERFACE_CONFIGURATION = 5
    HOST_NAME = 6
    TTL_VALUE = 8
    MULTICAST_CONFIG = 9
    ENCAPSULATION_INACTIVITY_TIMEOUT = 13


# Largest CIP reply (header included) that fits the 4000-byte class-3 connection pycomm3 opens
# with Large_Forward_Open, minus the 2-byte sequence count of connected data. Servers pass the
# real connection size (or 504 for unconnected SendRRData, the Logix unconnected buffer).
DEFAULT_REPLY_LIMIT = 3998
UNCONNECTED_REPLY_LIMIT = 504

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_REPLY_HEADER = 4  # service, reserved, general status, additional size (no additional words)

# ---------------------------------------------------------------------------------------------
# What the target needs from the tag database (simulator.tags.TagStore implements it)
# ---------------------------------------------------------------------------------------------


class TagLike(Protocol):
    name: str
    type: LogixType
    external_access: int
    instance_id: int

    @property
    def program(self) -> str | None: ...

    def image(self) -> bytes: ...

    def write(self, data: bytes, offset: int = 0) -> None: ...


class TagDatabase(Protocol):
    identity: Identity
    program_name: str

    def tick(self, now: float) -> None: ...

    def find(self, name: str) -> TagLike | None: ...

    def by_instance(self, instance_id: int) -> TagLike | None: ...

    def listing(self, program: str | None) -> Sequence[SymbolInstance] | None: ...

    def templates(self) -> Mapping[int, StructType]: ...


@dataclass(frozen=True, slots=True)
class TcpIpSettings:
    """Values of the TCP/IP Interface object (protocol.md 6.7, 10.1)."""

    address: str = "127.0.0.2"
    netmask: str = "255.0.0.0"
    gateway: str = "0.0.0.0"
    host_name: str = "pyconpro-sim"
    ttl: int = 1
    multicast_count: int = 32
    multicast_start: str | None = None  # None = the CIP default allocation below
    inactivity_timeout_s: int = 120

    def first_multicast_group(self) -> str:
        """CIP Vol 2 3-5.3 default: 239.192.1.0 + 32 x (((ip & ~mask) - 1) & 0x3FF)."""
        if self.multicast_start is not None:
            return self.multicast_start
        ip = int(ipaddress.IPv4Address(self.address))
        mask = int(ipaddress.IPv4Address(self.netmask))
        host_id = ((ip & ~mask & 0xFFFFFFFF) - 1) & 0x3FF
        return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("239.192.1.0")) + 32 * host_id))


def _ip_udint(text: str) -> bytes:
    # The TCP/IP object carries addresses as UDINTs (little-endian), as Wireshark dissects them.
    return _U32.pack(int(ipaddress.IPv4Address(text)))


def _cip_string(text: str, pad: bool = True) -> bytes:
    raw = text.encode("ascii")
    out = _U16.pack(len(raw)) + raw
    return out + b"\x00" if pad and len(raw) % 2 else out


# ---------------------------------------------------------------------------------------------
# The target
# ---------------------------------------------------------------------------------------------

_TAG_SERVICES = frozenset({0x4C, 0x52, 0x4D, 0x53, 0x4E})
_MULTI_SERVICES = 0x0A


class LogixController:
    """Answers explicit CIP requests like a Logix CPU in ``slot``.

    ``store`` is the tag database (``simulator.tags.TagStore``); ``cm_handler`` receives every
    Connection Manager request except Unconnected_Send (e.g. Forward_Open) and returns the
    encoded reply; without it those get 0x08. ``reply_limit`` is the largest reply (CIP header
    included) before Read Tag / listings answer 0x06; ``handle`` can override it per call with
    the size of the connection the request came on. ``wall_clock`` runs with the ``now`` of
    each request; its owner sets it (``WallClock.set_utc``), as the simulator does at start.
    """

    def __init__(
        self,
        store: TagDatabase,
        slot: int = 0,
        *,
        tcpip: TcpIpSettings | None = None,
        cm_handler: Callable[[bytes], bytes] | None = None,
        reply_limit: int = DEFAULT_REPLY_LIMIT,
        wall_clock: WallClock | None = None,
    ) -> None:
        self.store = store
        self.slot = slot
        self.tcpip = tcpip or TcpIpSettings()
        # Until set (the simulator sets it from the host's clock), 1970 at now = 0.
        self.wall_clock = wall_clock or WallClock()
        self.cm_handler = cm_handler
        self.reply_limit = reply_limit
        self._template_cache: dict[int, bytes] = {}
        self.requests = 0  # counters for logs and tests
        self.errors = 0

    # -- entry point -------------------------------------------------------------------------

    def handle(self, message: bytes, now: float, *, reply_limit: int | None = None) -> bytes:
        """One CIP request in, one CIP reply out (never raises on bad input)."""
        self.requests += 1
        self.store.tick(now)
        limit = max(reply_limit if reply_limit is not None else self.reply_limit, 8)
        reply = self._handle(bytes(message), limit, 0, now)
        if reply.status not in (0, GeneralStatus.PARTIAL_TRANSFER):
            self.errors += 1
        return reply.encode()

    def _handle(self, message: bytes, limit: int, depth: int, now: float) -> Reply:
        if not message:
            return Reply(0, GeneralStatus.NOT_ENOUGH_DATA)
        service = message[0] & 0x7F
        if message[0] & REPLY_FLAG:
            # A reply code where a request belongs: nothing to serve.
            return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)
        if len(message) < 2:
            return Reply(service, GeneralStatus.NOT_ENOUGH_DATA)
        path_end = 2 + 2 * message[1]
        if path_end > len(message):
            return Reply(service, GeneralStatus.PATH_SIZE_INVALID)
        path, data = message[2:path_end], message[path_end:]
        try:
            segments = decode_path(path)
            return self._dispatch(service, segments, data, message, limit, depth, now)
        except PathError as err:
            return Reply(service, err.status, err.additional)
        except MalformedPacket:
            return Reply(service, GeneralStatus.PATH_SEGMENT_ERROR, (0,))

    # -- routing by path ---------------------------------------------------------------------

    def _dispatch(self, service: int, segs: tuple[Segment, ...], data: bytes, message: bytes,
                  limit: int, depth: int, now: float) -> Reply:
        if not segs:
            raise path_not_found("empty request path")
        first = segs[0]
        if isinstance(first, SymbolicSegment):
            return self._symbolic(service, segs, data, limit)
        if not (isinstance(first, LogicalSegment) and first.kind == LogicalType.CLASS_ID):
            raise path_not_found("a request path starts with a class or a tag name")
        cls = first.value
        instance, rest = self._instance(segs[1:])
        if cls == ObjectClass.CONNECTION_MANAGER:
            return self._connection_manager(service, instance, rest, data, message, limit,
                                            depth, now)
        if cls == ObjectClass.SYMBOL:
            return self._symbol_class(service, None, instance, rest, data, limit)
        if cls == ObjectClass.TEMPLATE:
            return self._template(service, instance, rest, data, limit)
        if cls == ObjectClass.IDENTITY:
            return self._identity(service, instance, rest, data)
        if cls == ObjectClass.PROGRAM_NAME:
            return self._program_name(service, instance, rest, data)
        if cls == ObjectClass.MESSAGE_ROUTER:
            return self._router(service, instance, rest, data, limit, depth, now)
        if cls == ObjectClass.TCPIP_INTERFACE:
            return self._tcpip(service, instance, rest, data)
        if cls == ObjectClass.WALL_CLOCK:
            if instance != 1:
                raise no_destination("the Wall Clock Time object has instance 1 only")
            return wall_clock_service(self.wall_clock, service, self._attribute(rest), data,
                                      now)
        raise no_destination(f"class 0x{cls:02X} is not implemented by this controller")

    @staticmethod
    def _instance(segs: Sequence[Segment]) -> tuple[int | None, tuple[Segment, ...]]:
        if segs and isinstance(segs[0], LogicalSegment) \
                and segs[0].kind == LogicalType.INSTANCE_ID:
            return segs[0].value, tuple(segs[1:])
        return None, tuple(segs)

    @staticmethod
    def _attribute(rest: Sequence[Segment]) -> int | None:
        if len(rest) == 1 and isinstance(rest[0], LogicalSegment) \
                and rest[0].kind == LogicalType.ATTRIBUTE_ID:
            return rest[0].value
        if rest:
            raise path_not_found("unexpected segments after the instance")
        return None

    # -- simple objects ----------------------------------------------------------------------

    def _identity(self, service: int, instance: int | None, rest: tuple[Segment, ...],
                  data: bytes) -> Reply:
        attr = self._attribute(rest)
        if instance != 1:
            raise no_destination("the Identity object has instance 1 only")
        if data:
            return Reply(service, GeneralStatus.TOO_MUCH_DATA)
        identity = self.store.identity
        if service == Service.GET_ATTRIBUTES_ALL and attr is None:
            return Reply(service, data=identity.encode())
        if service == Service.GET_ATTRIBUTE_SINGLE:
            if attr is None:
                raise path_not_found("Get_Attribute_Single needs an attribute segment (0x30)")
            value = identity.attribute(attr)
            if value is None:
                return Reply(service, GeneralStatus.ATTRIBUTE_NOT_SUPPORTED)
            return Reply(service, data=value)
        return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)

    def _program_name(self, service: int, instance: int | None, rest: tuple[Segment, ...],
                      data: bytes) -> Reply:
        self._attribute(rest)
        if instance != 1:
            raise no_destination("the program-name object has instance 1 only")
        if service != Service.GET_ATTRIBUTES_ALL:
            return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)
        if data:
            return Reply(service, GeneralStatus.TOO_MUCH_DATA)
        return Reply(service, data=_cip_string(self.store.program_name, pad=False))

    def _tcpip(self, service: int, instance: int | None, rest: tuple[Segment, ...],
               data: bytes) -> Reply:
        attr = self._attribute(rest)
        if instance != 1:
            raise no_destination("the TCP/IP Interface object has instance 1 only")
        if service != Service.GET_ATTRIBUTE_SINGLE:
            return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)
        if attr is None:
            raise path_not_found("Get_Attribute_Single needs an attribute segment (0x30)")
        if data:
            return Reply(service, GeneralStatus.TOO_MUCH_DATA)
        s = self.tcpip
        values: dict[int, bytes] = {
            TcpIpAttribute.STATUS: _U32.pack(1),  # valid configuration
            TcpIpAttribute.CONFIGURATION_CAPABILITY: _U32.pack(0x14),  # DHCP, settable
            TcpIpAttribute.CONFIGURATION_CONTROL: _U32.pack(0),  # static address
            TcpIpAttribute.PHYSICAL_LINK_OBJECT: _U16.pack(2) + b"\x20\xF6\x24\x01",
            TcpIpAttribute.INTERFACE_CONFIGURATION: (
                _ip_udint(s.address) + _ip_udint(s.netmask) + _ip_udint(s.gateway)
                + _ip_udint("0.0.0.0") + _ip_udint("0.0.0.0") + _cip_string("")
            ),
            TcpIpAttribute.HOST_NAME: _cip_string(s.host_name),
            TcpIpAttribute.TTL_VALUE: bytes([s.ttl]),
            TcpIpAttribute.MULTICAST_CONFIG: (
                bytes([0, 0]) + _U16.pack(s.multicast_count)
                + _ip_udint(s.first_multicast_group())
            ),
            TcpIpAttribute.ENCAPSULATION_INACTIVITY_TIMEOUT: _U16.pack(s.inactivity_timeout_s),
        }
        value = values.get(attr)
        if value is None:
            return Reply(service, GeneralStatus.ATTRIBUTE_NOT_SUPPORTED)
        return Reply(service, data=value)

    # -- Connection Manager: Unconnected_Send ------------------------------------------------

    def _connection_manager(self, service: int, instance: int | None,
                            rest: tuple[Segment, ...], data: bytes, message: bytes,
                            limit: int, depth: int, now: float) -> Reply:
        if instance != 1 or rest:
            raise no_destination("the Connection Manager has instance 1 only")
        if service != Service.UNCONNECTED_SEND:
            if self.cm_handler is None:
                return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)
            return Reply.decode(self.cm_handler(message))
        return self._unconnected_send(data, limit, depth, now)

    def _unconnected_send(self, data: bytes, limit: int, depth: int, now: float) -> Reply:
        # Layout in acquisition.cip.UnconnectedSend; parsed by hand here so that a short
        # message (0x13) and trailing bytes (0x15) get different answers.
        svc = Service.UNCONNECTED_SEND
        r = Reader(data, context="Unconnected_Send")
        try:
            r.skip(2, "priority/tick and timeout ticks")
            n = r.u16("embedded message length")
            embedded = r.take(n, "embedded message")
            if n % 2:
                r.skip(1, "pad byte")
            words = r.u8("route path size")
            r.skip(1, "reserved byte")
            route = r.take(2 * words, "route path")
        except MalformedPacket:
            return Reply(svc, GeneralStatus.NOT_ENOUGH_DATA)
        if r.remaining():
            return Reply(svc, GeneralStatus.TOO_MUCH_DATA)
        failure = self._check_route(route)
        if failure is not None:
            # Routing failure: 0x01 + extended status, then the remaining route path size.
            return Reply(svc, GeneralStatus.CONNECTION_FAILURE, (failure,), bytes([words]))
        return self._handle(embedded, limit, depth, now)

    def _check_route(self, route: bytes) -> int | None:
        """None when the route ends at this CPU, else the CM extended status (protocol.md
        5.11): an empty route, or one port-1 hop to our slot, is local."""
        try:
            segs = decode_path(route)
        except MalformedPacket:
            return ExtendedStatus.INVALID_SEGMENT_IN_PATH
        if not segs:
            return None
        if len(segs) != 1 or not isinstance(segs[0], PortSegment):
            return ExtendedStatus.INVALID_SEGMENT_IN_PATH
        port = segs[0]
        if port.port != 1:
            return ExtendedStatus.PORT_NOT_AVAILABLE
        if port.link != bytes([self.slot]):
            return ExtendedStatus.LINK_ADDRESS_NOT_VALID
        return None

    # -- Message Router: Multiple Service Packet ---------------------------------------------

    def _router(self, service: int, instance: int | None, rest: tuple[Segment, ...],
                data: bytes, limit: int, depth: int, now: float) -> Reply:
        self._attribute(rest)
        if instance != 1:
            raise no_destination("the Message Router has instance 1 only")
        if service != _MULTI_SERVICES or depth > 0:
            return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)
        r = Reader(data, context="Multiple Service Packet")
        try:
            count = r.u16("service count")
            offsets = [r.u16(f"offset {i}") for i in range(count)]
        except MalformedPacket:
            return Reply(service, GeneralStatus.NOT_ENOUGH_DATA)
        table_end = 2 + 2 * count
        bounds = offsets + [len(data)]
        if any(not table_end <= bounds[i] <= bounds[i + 1] for i in range(count)):
            return Reply(service, GeneralStatus.INVALID_PARAMETER)
        budget = limit - _REPLY_HEADER - table_end
        replies: list[bytes] = []
        failed = False
        for i in range(count):
            # Keep 4 bytes for each later reply so that a 0x11 answer always fits.
            room = budget - _REPLY_HEADER * (count - i - 1)
            sub = self._handle(data[bounds[i]:bounds[i + 1]], max(room, 8), depth + 1, now)
            encoded = sub.encode()
            if len(encoded) > room:
                encoded = Reply(sub.service, GeneralStatus.REPLY_DATA_TOO_LARGE).encode()
                sub = Reply(sub.service, GeneralStatus.REPLY_DATA_TOO_LARGE)
            budget -= len(encoded)
            failed |= sub.status not in (0, GeneralStatus.PARTIAL_TRANSFER)
            replies.append(encoded)
        body = _U16.pack(count)
        pos = table_end
        for rep in replies:
            body += _U16.pack(pos)
            pos += len(rep)
        status = GeneralStatus.EMBEDDED_SERVICE_ERROR if failed else 0
        return Reply(service, status, data=body + b"".join(replies))

    # -- Symbol object -----------------------------------------------------------------------

    def _symbolic(self, service: int, segs: tuple[Segment, ...], data: bytes,
                  limit: int) -> Reply:
        first = segs[0]
        assert isinstance(first, SymbolicSegment)
        if first.name.lower().startswith("program:"):
            program = self._program(first.name[len("program:"):])
            rest = segs[1:]
            if rest and isinstance(rest[0], LogicalSegment) \
                    and rest[0].kind == LogicalType.CLASS_ID:
                if rest[0].value != ObjectClass.SYMBOL:
                    raise no_destination("only the Symbol class lives inside a program")
                instance, after = self._instance(rest[1:])
                return self._symbol_class(service, program, instance, after, data, limit)
            if not rest or not isinstance(rest[0], SymbolicSegment):
                raise path_not_found(f"Program:{program} is a program, not a tag")
            tag = self.store.find(f"Program:{program}.{rest[0].name}")
            selectors = self._selectors(rest[1:])
            where = f"Program:{program}.{rest[0].name}"
        else:
            tag = self.store.find(first.name)
            selectors = self._selectors(segs[1:])
            where = first.name
        if tag is None or tag.external_access == ExternalAccess.NONE:
            raise path_not_found(f"no tag {where!r}")
        return self._tag_service(service, tag, selectors, data, limit)

    def _program(self, name: str) -> str:
        if self.store.listing(name) is None:
            raise path_not_found(f"no program {name!r}")
        return name

    @staticmethod
    def _selectors(segs: Sequence[Segment]) -> list[Selector]:
        out: list[Selector] = []
        indices: list[int] = []
        for seg in segs:
            if isinstance(seg, LogicalSegment) and seg.kind == LogicalType.MEMBER_ID:
                indices.append(seg.value)
                continue
            if indices:
                out.append(tuple(indices))
                indices = []
            if isinstance(seg, SymbolicSegment):
                out.append(seg.name)
            else:
                raise path_not_found(f"segment {seg!r} in a tag path")
        if indices:
            out.append(tuple(indices))
        return out

    def _symbol_class(self, service: int, program: str | None, instance: int | None,
                      rest: tuple[Segment, ...], data: bytes, limit: int) -> Reply:
        if instance is None:
            raise path_not_found("the Symbol class needs an instance segment")
        if service == Service.GET_INSTANCE_ATTRIBUTE_LIST:
            if rest:
                raise path_not_found("unexpected segments after the symbol instance")
            return self._list_symbols(program, instance, data, limit)
        if service not in _TAG_SERVICES:
            return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)
        tag = self.store.by_instance(instance)
        if tag is None or tag.program != program \
                or tag.external_access == ExternalAccess.NONE:
            raise no_destination(f"no symbol instance {instance}")
        return self._tag_service(service, tag, self._selectors(rest), data, limit)

    def _list_symbols(self, program: str | None, start: int, data: bytes,
                      limit: int) -> Reply:
        svc = Service.GET_INSTANCE_ATTRIBUTE_LIST
        try:
            attrs = parse_attribute_ids(data)
        except MalformedPacket:
            r = Reader(data)
            n = r.u16("count") if len(data) >= 2 else None
            too_long = n is not None and len(data) > 2 + 2 * n
            return Reply(svc, GeneralStatus.TOO_MUCH_DATA if too_long
                         else GeneralStatus.NOT_ENOUGH_DATA)
        listing = self.store.listing(program)
        if listing is None:
            raise path_not_found(f"no program {program!r}")
        budget = limit - _REPLY_HEADER
        out = bytearray()
        pending = [s for s in listing if s.instance_id >= start]
        for n, sym in enumerate(pending):
            try:
                entry = encode_symbol_instances((sym,), attrs)
            except UsageError:
                return Reply(svc, GeneralStatus.ATTRIBUTE_NOT_SUPPORTED)
            if len(out) + len(entry) > budget:
                if n == 0:
                    return Reply(svc, GeneralStatus.REPLY_DATA_TOO_LARGE)
                return Reply(svc, GeneralStatus.PARTIAL_TRANSFER, data=bytes(out))
            out += entry
        return Reply(svc, data=bytes(out))

    # -- Template object ---------------------------------------------------------------------

    def _template(self, service: int, instance: int | None, rest: tuple[Segment, ...],
                  data: bytes, limit: int) -> Reply:
        self._attribute(rest)
        st = self.store.templates().get(instance) if instance is not None else None
        if st is None:
            raise no_destination(f"no template instance {instance}")
        if service == Service.GET_ATTRIBUTE_LIST:
            try:
                attrs = parse_attribute_ids(data)
            except MalformedPacket:
                return Reply(service, GeneralStatus.NOT_ENOUGH_DATA
                             if len(data) < 2 or len(data) < 2 + 2 * _U16.unpack_from(data)[0]
                             else GeneralStatus.TOO_MUCH_DATA)
            values = TemplateAttributes(
                self._definition_words(st), st.size, len(st.members), st.handle)
            results = []
            for a in attrs:
                if a in TemplateAttribute._value2member_map_:
                    results.append(AttributeResult(a, 0, values.value(a)))
                else:
                    results.append(AttributeResult(a, GeneralStatus.ATTRIBUTE_NOT_SUPPORTED,
                                                   None))
            ok = all(res.status == 0 for res in results)
            return Reply(service, 0 if ok else GeneralStatus.ATTRIBUTE_LIST_ERROR,
                         data=encode_attribute_results(results))
        if service == Service.READ_TAG:
            try:
                req = TemplateReadRequest.parse(data)
            except MalformedPacket:
                return Reply(service, GeneralStatus.NOT_ENOUGH_DATA if len(data) < 6
                             else GeneralStatus.TOO_MUCH_DATA)
            area = self._definition(st)
            if req.offset >= len(area):
                # Nothing is left there: an error, so that no client asks again forever
                # (pylogix repeats a read until it has the bytes it asked for).
                raise logix_error(LogixExtendedStatus.ADDRESS_OUT_OF_RANGE,
                                   "template read offset at or beyond the end")
            wanted = area[req.offset:req.offset + req.length]
            room = _room(limit)
            if len(wanted) > room:
                return Reply(service, GeneralStatus.PARTIAL_TRANSFER, data=wanted[:room])
            return Reply(service, data=wanted)
        return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)

    def _definition(self, st: StructType) -> bytes:
        """What Template Reads of ``st`` return: its definition and the bytes after it."""
        cached = self._template_cache.get(st.instance_id)
        if cached is None:
            cached = template_read_area(encode_template_definition(st))
            self._template_cache[st.instance_id] = cached
        return cached

    def _definition_words(self, st: StructType) -> int:
        return (len(self._definition(st)) + TEMPLATE_READ_AREA_OVERHEAD) // 4

    # -- tag services ------------------------------------------------------------------------

    def _tag_service(self, service: int, tag: TagLike, selectors: list[Selector], data: bytes,
                     limit: int) -> Reply:
        if service not in _TAG_SERVICES:
            return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)
        loc = locate(tag.type, selectors, tag.name)
        if service == Service.READ_TAG:
            try:
                req = ReadTagRequest.parse(data)
            except MalformedPacket:
                return Reply(service, _length_status(data, 2))
            return self._read(service, tag, loc, req.elements, 0, limit)
        if service == 0x52:  # Read Tag Fragmented
            try:
                freq = ReadTagFragmentedRequest.parse(data)
            except MalformedPacket:
                return Reply(service, _length_status(data, 6))
            return self._read(service, tag, loc, freq.elements, freq.offset, limit)
        if service in (Service.WRITE_TAG, Service.WRITE_TAG_FRAGMENTED):
            try:
                wreq = WriteTagRequest.parse(
                    data, fragmented=service == Service.WRITE_TAG_FRAGMENTED)
            except MalformedPacket:
                return Reply(service, GeneralStatus.NOT_ENOUGH_DATA)
            return self._write(service, tag, loc, wreq)
        try:
            rmw = ReadModifyWriteRequest.parse(data)
        except MalformedPacket:
            return Reply(service, GeneralStatus.NOT_ENOUGH_DATA)
        return self._read_modify_write(service, tag, loc, rmw)

    @staticmethod
    def _check_count(loc: Location, elements: int) -> int:
        if elements < 1 or elements > loc.available:
            raise logix_error(LogixExtendedStatus.BEYOND_END_OF_OBJECT,
                               f"{elements} elements, {loc.available} available")
        return elements * loc.element_size

    def _value_bytes(self, tag: TagLike, loc: Location, total: int) -> bytes:
        image = tag.image()
        if loc.bit is not None:
            return bytes([(image[loc.offset] >> loc.bit) & 1])
        return image[loc.offset:loc.offset + total]

    def _read(self, service: int, tag: TagLike, loc: Location, elements: int, offset: int,
              limit: int) -> Reply:
        total = self._check_count(loc, elements)
        if offset >= total and not (offset == 0 and total == 0):
            raise logix_error(LogixExtendedStatus.ADDRESS_OUT_OF_RANGE,
                               f"fragment offset {offset} beyond {total} bytes")
        header = ReadTagType.for_type(loc.element).encode()
        value = self._value_bytes(tag, loc, total)[offset:]
        room = _room(limit - len(header))
        if len(value) > room:
            return Reply(service, GeneralStatus.PARTIAL_TRANSFER, data=header + value[:room])
        return Reply(service, data=header + value)

    @staticmethod
    def _check_type(loc: Location, t: ReadTagType) -> None:
        expected = ReadTagType.for_type(loc.element)
        if t != expected:
            raise logix_error(LogixExtendedStatus.TYPE_MISMATCH,
                               f"request type {t} but the tag holds {expected}")

    def _check_writable(self, service: int, tag: TagLike) -> Reply | None:
        if tag.external_access == ExternalAccess.READ_ONLY:
            return Reply(service, GeneralStatus.PRIVILEGE_VIOLATION)
        return None

    def _write(self, service: int, tag: TagLike, loc: Location, req: WriteTagRequest) -> Reply:
        self._check_type(loc, req.type)
        total = self._check_count(loc, req.elements)
        offset = req.offset or 0
        if req.offset is not None and offset >= total:
            raise logix_error(LogixExtendedStatus.ADDRESS_OUT_OF_RANGE,
                               f"fragment offset {offset} beyond {total} bytes")
        data = req.data
        if req.offset is None:
            if len(data) < total:
                return Reply(service, GeneralStatus.NOT_ENOUGH_DATA)
            # Bytes after the elements' data are ignored: pycomm3 1.2's single-tag write sends
            # its request twice in one message (build_message runs twice) and works on real
            # controllers, so a Logix evidently ignores the surplus.
            data = data[:total]
        elif offset + len(data) > total:
            return Reply(service, GeneralStatus.TOO_MUCH_DATA)
        denied = self._check_writable(service, tag)
        if denied is not None:
            return denied
        if loc.bit is not None:
            host = tag.image()[loc.offset]
            mask = 1 << loc.bit
            host = host | mask if req.data[0] else host & ~mask
            tag.write(bytes([host]), loc.offset)
        elif data:
            tag.write(data, loc.offset + offset)
        return Reply(service)

    def _read_modify_write(self, service: int, tag: TagLike, loc: Location,
                           req: ReadModifyWriteRequest) -> Reply:
        size = len(req.or_mask)
        el = loc.element
        integer = isinstance(el, AtomicType) and el.code not in (
            DataTypeCode.REAL, DataTypeCode.LREAL, DataTypeCode.BOOL)
        if loc.bit is not None or not integer or size != byte_size(el):
            raise logix_error(LogixExtendedStatus.TYPE_MISMATCH,
                               f"{size}-byte masks on a {getattr(el, 'name', el)} value")
        denied = self._check_writable(service, tag)
        if denied is not None:
            return denied
        old = int.from_bytes(tag.image()[loc.offset:loc.offset + size], "little")
        new = (old | int.from_bytes(req.or_mask, "little")) \
            & int.from_bytes(req.and_mask, "little")
        tag.write(new.to_bytes(size, "little"), loc.offset)
        return Reply(service)


def _room(limit: int) -> int:
    """Data bytes that fit a reply of ``limit`` bytes, in whole 4-byte words like Logix."""
    room = limit - _REPLY_HEADER
    return max(room - room % 4, 4)


def _length_status(data: bytes, needed: int) -> int:
    return GeneralStatus.NOT_ENOUGH_DATA if len(data) < needed else GeneralStatus.TOO_MUCH_DATA


__all__ = [
    "DEFAULT_REPLY_LIMIT",
    "UNCONNECTED_REPLY_LIMIT",
    "LogixController",
    "IdentityAttribute",
    "LogixExtendedStatus",
    "ObjectClass",
    "TagDatabase",
    "TagLike",
    "TcpIpAttribute",
    "TcpIpSettings",
]

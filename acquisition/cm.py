"""Connection Manager (class 0x06): Forward_Open, Large_Forward_Open, Forward_Close.

Implements protocol.md 5.2 (Forward_Open request, 16- and 32-bit NCP forms), 5.3 (triad),
5.4 (timeout multiplier), 5.5 (network connection parameters), 5.6 (transport class/trigger),
5.8 (success reply), 5.9 (failure reply with additional status words), 5.10 (Forward_Close),
7.1 (the produced-tag Forward_Open a Logix controller accepts).

Bodies here are the service data *after* the message-router header (service + CM path); wrap
them with ``cip.Request(service, epath.CONNECTION_MANAGER_PATH, body)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from pyconpro.acquisition import cip, epath
from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.errors import CipError, MalformedPacket, UsageError


class ConnectionType(IntEnum):
    NULL = 0
    MULTICAST = 1
    POINT_TO_POINT = 2
    RESERVED = 3


class Priority(IntEnum):
    LOW = 0
    HIGH = 1
    SCHEDULED = 2
    URGENT = 3


class TransportClass(IntEnum):
    CLASS_0 = 0
    CLASS_1 = 1
    CLASS_2 = 2
    CLASS_3 = 3


class ProductionTrigger(IntEnum):
    CYCLIC = 0
    CHANGE_OF_STATE = 1
    APPLICATION_OBJECT = 2


def multiplier_factor(code: int) -> int:
    """Timeout multiplier byte 0..7 -> factor 4, 8, ..., 512 (protocol.md 5.4)."""
    if not 0 <= code <= 7:
        raise UsageError(f"timeout multiplier code {code} out of range 0..7 (x4..x512)")
    return 4 << code


def multiplier_code(factor: int) -> int:
    """Factor 4..512 (a power of two) -> multiplier byte."""
    for code in range(8):
        if 4 << code == factor:
            return code
    raise UsageError(f"timeout multiplier x{factor} is not one of 4, 8, 16, ..., 512")


_RESERVED16 = 0x1000
_RESERVED32 = 0x1000_0000 | 0x01FF_0000


@dataclass(frozen=True, slots=True)
class NetworkParameters:
    """Network connection parameters (protocol.md 5.5).

    16-bit: bit 15 redundant owner, 14-13 type, 11-10 priority, 9 variable, 8-0 size.
    32-bit: bit 31 owner, 30-29 type, 27-26 priority, 25 variable, 15-0 size.
    """

    connection_type: ConnectionType = ConnectionType.POINT_TO_POINT
    priority: Priority = Priority.SCHEDULED
    variable: bool = False
    size: int = 0
    redundant_owner: bool = False
    reserved_bits: int = 0  # reserved bits as received (16-bit: bit 12; 32-bit: 28, 24-16)

    def to_word16(self) -> int:
        if not 0 <= self.size <= 0x1FF:
            raise UsageError(
                f"connection size {self.size} does not fit a Forward_Open (max 511);"
                " use Large_Forward_Open"
            )
        return (
            (int(self.redundant_owner) << 15)
            | (int(self.connection_type) << 13)
            | (int(self.priority) << 10)
            | (int(self.variable) << 9)
            | (self.reserved_bits & _RESERVED16)
            | self.size
        )

    def to_word32(self) -> int:
        if not 0 <= self.size <= 0xFFFF:
            raise UsageError(f"connection size {self.size} out of range 0..65535")
        return (
            (int(self.redundant_owner) << 31)
            | (int(self.connection_type) << 29)
            | (int(self.priority) << 26)
            | (int(self.variable) << 25)
            | (self.reserved_bits & _RESERVED32)
            | self.size
        )

    @classmethod
    def from_word16(cls, word: int) -> NetworkParameters:
        return cls(
            ConnectionType((word >> 13) & 3),
            Priority((word >> 10) & 3),
            bool(word & 0x0200),
            word & 0x01FF,
            bool(word & 0x8000),
            word & _RESERVED16,
        )

    @classmethod
    def from_word32(cls, word: int) -> NetworkParameters:
        return cls(
            ConnectionType((word >> 29) & 3),
            Priority((word >> 26) & 3),
            bool(word & 0x0200_0000),
            word & 0xFFFF,
            bool(word & 0x8000_0000),
            word & _RESERVED32,
        )


@dataclass(frozen=True, slots=True)
class TransportTrigger:
    """Transport class / trigger byte (protocol.md 5.6): bit 7 direction (1 = server),
    bits 6-4 production trigger, bits 3-0 transport class."""

    transport_class: int = 1
    trigger: int = ProductionTrigger.CYCLIC
    server: bool = True

    def to_byte(self) -> int:
        if not (0 <= self.transport_class <= 15 and 0 <= self.trigger <= 7):
            raise UsageError("transport class must be 0..15 and trigger 0..7")
        return (int(self.server) << 7) | (self.trigger << 4) | self.transport_class

    @classmethod
    def from_byte(cls, b: int) -> TransportTrigger:
        return cls(b & 0x0F, (b >> 4) & 0x07, bool(b & 0x80))


# Forward_Open request body (protocol.md 5.2), 36 bytes before the path:
#  0 priority/tick:USINT  1 timeout ticks:USINT  2 O->T id:UDINT  6 T->O id:UDINT
# 10 connection serial:UINT 12 vendor:UINT 14 originator serial:UDINT 18 multiplier:USINT
# 19 reserved[3] 22 O->T RPI:UDINT 26 O->T NCP:WORD 28 T->O RPI:UDINT 32 T->O NCP:WORD
# 34 transport/trigger:USINT 35 path size:USINT (words), 36 path
_FO = struct.Struct("<BBIIHHIB3sIHIHBB")
# Large_Forward_Open: both NCPs are DWORD; 40 bytes before the path.
_LFO = struct.Struct("<BBIIHHIB3sIIIIBB")


@dataclass(frozen=True, slots=True)
class Triad:
    connection_serial: int
    vendor_id: int
    originator_serial: int


@dataclass(frozen=True, slots=True)
class ForwardOpenRequest:
    ot_connection_id: int
    to_connection_id: int
    connection_serial: int
    vendor_id: int
    originator_serial: int
    timeout_multiplier: int
    ot_rpi: int
    ot_params: NetworkParameters
    to_rpi: int
    to_params: NetworkParameters
    transport: int
    path: bytes
    priority_tick: int = 0x0A
    timeout_ticks: int = 0x0E
    large: bool = False
    reserved: bytes = bytes(3)

    @property
    def service(self) -> int:
        return cip.Service.LARGE_FORWARD_OPEN if self.large else cip.Service.FORWARD_OPEN

    @property
    def triad(self) -> Triad:
        return Triad(self.connection_serial, self.vendor_id, self.originator_serial)

    @property
    def transport_trigger(self) -> TransportTrigger:
        return TransportTrigger.from_byte(self.transport)

    def encode_body(self) -> bytes:
        if len(self.path) % 2 or len(self.path) > MAX_CONNECTION_PATH_BYTES:
            raise UsageError("connection path must be an even number of bytes, at most 510")
        st = _LFO if self.large else _FO
        ot = self.ot_params.to_word32() if self.large else self.ot_params.to_word16()
        to = self.to_params.to_word32() if self.large else self.to_params.to_word16()
        return (
            st.pack(
                self.priority_tick,
                self.timeout_ticks,
                self.ot_connection_id,
                self.to_connection_id,
                self.connection_serial,
                self.vendor_id,
                self.originator_serial,
                self.timeout_multiplier,
                self.reserved,
                self.ot_rpi,
                ot,
                self.to_rpi,
                to,
                self.transport,
                len(self.path) // 2,
            )
            + self.path
        )

    def encode(self, cm_path: bytes = epath.CONNECTION_MANAGER_PATH) -> bytes:
        """The full CIP message (service, CM path, body)."""
        return cip.Request(self.service, cm_path, self.encode_body()).encode()

    @classmethod
    def decode_body(cls, data: bytes, large: bool = False) -> ForwardOpenRequest:
        name = "Large_Forward_Open" if large else "Forward_Open"
        r = Reader(data, context=name)
        st = _LFO if large else _FO
        (tick, ticks, ot_id, to_id, serial, vendor, oserial, mult, reserved, ot_rpi, ot, to_rpi, to,
         transport, words) = r.unpack(st, f"{st.size}-byte {name} fixed fields")
        path = r.take(2 * words, f"connection path of {words} words")
        r.expect_end(name)
        conv = NetworkParameters.from_word32 if large else NetworkParameters.from_word16
        return cls(ot_id, to_id, serial, vendor, oserial, mult, ot_rpi, conv(ot), to_rpi, conv(to),
                   transport, path, tick, ticks, large, reserved)

    @classmethod
    def from_request(cls, request: cip.Request) -> ForwardOpenRequest:
        if request.service == cip.Service.FORWARD_OPEN:
            return cls.decode_body(request.data, large=False)
        if request.service == cip.Service.LARGE_FORWARD_OPEN:
            return cls.decode_body(request.data, large=True)
        raise MalformedPacket("Forward_Open (0x54) or Large_Forward_Open (0x5B) service", 0, "CM")


# Success reply data (protocol.md 5.8): 0 O->T id:UDINT 4 T->O id:UDINT 8 serial:UINT
# 10 vendor:UINT 12 originator serial:UDINT 16 O->T API:UDINT 20 T->O API:UDINT
# 24 application reply size:USINT (words) 25 reserved:USINT 26 application reply
_FO_OK = struct.Struct("<IIHHIIIBB")
# Failure reply data after the additional status words (protocol.md 5.9):
# serial:UINT vendor:UINT originator serial:UDINT [remaining path size:USINT reserved:USINT]
_TRIAD = struct.Struct("<HHI")


@dataclass(frozen=True, slots=True)
class ForwardOpenSuccess:
    ot_connection_id: int
    to_connection_id: int
    connection_serial: int
    vendor_id: int
    originator_serial: int
    ot_api: int
    to_api: int
    application_reply: bytes = b""
    reserved: int = 0

    @property
    def triad(self) -> Triad:
        return Triad(self.connection_serial, self.vendor_id, self.originator_serial)

    def encode_body(self) -> bytes:
        if len(self.application_reply) % 2:
            raise UsageError("application reply must be an even number of bytes")
        return (
            _FO_OK.pack(self.ot_connection_id, self.to_connection_id, self.connection_serial,
                        self.vendor_id, self.originator_serial, self.ot_api, self.to_api,
                        len(self.application_reply) // 2, self.reserved)
            + self.application_reply
        )

    def to_reply(self, large: bool = False) -> cip.Reply:
        service = cip.Service.LARGE_FORWARD_OPEN if large else cip.Service.FORWARD_OPEN
        return cip.Reply(service, 0, (), self.encode_body())

    @classmethod
    def decode_body(cls, data: bytes) -> ForwardOpenSuccess:
        r = Reader(data, context="Forward_Open reply")
        ot, to, serial, vendor, oserial, ot_api, to_api, words, reserved = r.unpack(
            _FO_OK, "26-byte Forward_Open success reply"
        )
        app = r.take(2 * words, f"application reply of {words} words")
        r.expect_end("Forward_Open success reply")
        return cls(ot, to, serial, vendor, oserial, ot_api, to_api, app, reserved)


@dataclass(frozen=True, slots=True)
class ConnectionFailure:
    """Failure reply of Forward_Open / Large_Forward_Open / Forward_Close (protocol.md 5.9, 5.10).

    ``remaining_path_size`` is None when the target omitted the last two bytes.
    """

    general_status: int
    additional: tuple[int, ...]
    connection_serial: int
    vendor_id: int
    originator_serial: int
    remaining_path_size: int | None = 0
    reserved: int = 0

    @property
    def extended_status(self) -> int | None:
        return self.additional[0] if self.additional else None

    @property
    def triad(self) -> Triad:
        return Triad(self.connection_serial, self.vendor_id, self.originator_serial)

    def error(self, context: str = "") -> CipError:
        return CipError(self.general_status, self.additional, None, context)

    def encode_body(self) -> bytes:
        rps = self.remaining_path_size
        tail = b"" if rps is None else bytes([rps, self.reserved])
        return _TRIAD.pack(self.connection_serial, self.vendor_id, self.originator_serial) + tail

    def to_reply(self, service: int) -> cip.Reply:
        return cip.Reply(service, self.general_status, self.additional, self.encode_body())

    @classmethod
    def from_reply(cls, reply: cip.Reply) -> ConnectionFailure:
        r = Reader(reply.data, context="connection failure reply")
        serial, vendor, oserial = r.unpack(_TRIAD, "triad (8 bytes) after the additional status")
        if r.remaining() == 0:
            return cls(reply.status, reply.additional, serial, vendor, oserial, None, 0)
        size, reserved = r.u8("remaining path size"), r.u8("reserved byte")
        r.expect_end("connection failure reply")
        return cls(reply.status, reply.additional, serial, vendor, oserial, size, reserved)


def decode_forward_open_reply(reply: cip.Reply) -> ForwardOpenSuccess | ConnectionFailure:
    if reply.service not in (cip.Service.FORWARD_OPEN, cip.Service.LARGE_FORWARD_OPEN):
        raise MalformedPacket(
            f"a Forward_Open reply (0xD4/0xDB), got service 0x{reply.service | 0x80:02X}", 0, "CM"
        )
    if reply.status == 0:
        return ForwardOpenSuccess.decode_body(reply.data)
    return ConnectionFailure.from_reply(reply)


# Forward_Close request body (protocol.md 5.10): 0 priority/tick 1 timeout ticks 2 serial:UINT
# 4 vendor:UINT 6 originator serial:UDINT 10 path size:USINT (words) 11 reserved:USINT 12 path
_FC = struct.Struct("<BBHHIBB")
# Forward_Close success reply: serial, vendor, originator serial, app reply size (words), reserved
_FC_OK = struct.Struct("<HHIBB")


@dataclass(frozen=True, slots=True)
class ForwardCloseRequest:
    connection_serial: int
    vendor_id: int
    originator_serial: int
    path: bytes
    priority_tick: int = 0x0A
    timeout_ticks: int = 0x0E
    reserved: int = 0

    @property
    def triad(self) -> Triad:
        return Triad(self.connection_serial, self.vendor_id, self.originator_serial)

    def encode_body(self) -> bytes:
        if len(self.path) % 2 or len(self.path) > MAX_CONNECTION_PATH_BYTES:
            raise UsageError("connection path must be an even number of bytes, at most 510")
        return (
            _FC.pack(
                self.priority_tick,
                self.timeout_ticks,
                self.connection_serial,
                self.vendor_id,
                self.originator_serial,
                len(self.path) // 2,
                self.reserved,
            )
            + self.path
        )

    def encode(self, cm_path: bytes = epath.CONNECTION_MANAGER_PATH) -> bytes:
        return cip.Request(cip.Service.FORWARD_CLOSE, cm_path, self.encode_body()).encode()

    @classmethod
    def decode_body(cls, data: bytes) -> ForwardCloseRequest:
        r = Reader(data, context="Forward_Close")
        tick, ticks, serial, vendor, oserial, words, reserved = r.unpack(
            _FC, "12-byte Forward_Close fixed fields"
        )
        path = r.take(2 * words, f"connection path of {words} words")
        r.expect_end("Forward_Close")
        return cls(serial, vendor, oserial, path, tick, ticks, reserved)


@dataclass(frozen=True, slots=True)
class ForwardCloseSuccess:
    connection_serial: int
    vendor_id: int
    originator_serial: int
    application_reply: bytes = b""
    reserved: int = 0

    def encode_body(self) -> bytes:
        if len(self.application_reply) % 2:
            raise UsageError("application reply must be an even number of bytes")
        return (
            _FC_OK.pack(
                self.connection_serial,
                self.vendor_id,
                self.originator_serial,
                len(self.application_reply) // 2,
                self.reserved,
            )
            + self.application_reply
        )

    def to_reply(self) -> cip.Reply:
        return cip.Reply(cip.Service.FORWARD_CLOSE, 0, (), self.encode_body())

    @classmethod
    def decode_body(cls, data: bytes) -> ForwardCloseSuccess:
        r = Reader(data, context="Forward_Close reply")
        serial, vendor, oserial, words, reserved = r.unpack(_FC_OK, "10-byte Forward_Close reply")
        app = r.take(2 * words, f"application reply of {words} words")
        r.expect_end("Forward_Close success reply")
        return cls(serial, vendor, oserial, app, reserved)


def decode_forward_close_reply(reply: cip.Reply) -> ForwardCloseSuccess | ConnectionFailure:
    if reply.service != cip.Service.FORWARD_CLOSE:
        raise MalformedPacket(
            f"a Forward_Close reply (0xCE), got service 0x{reply.service | 0x80:02X}", 0, "CM"
        )
    if reply.status == 0:
        return ForwardCloseSuccess.decode_body(reply.data)
    return ConnectionFailure.from_reply(reply)


# ------------------------------------------------------------------- produced-tag Forward_Open

HEARTBEAT_SIZE = 2  # O->T class-1 connection carrying only the 16-bit sequence count
CLASS1_SEQUENCE_SIZE = 2
MAX_PRODUCED_TAG_BYTES = 500
MAX_CONNECTION_PATH_BYTES = 510  # the path size is a USINT of 16-bit words (protocol.md 5.2)


def check_timing(to_rpi_us: int, ot_rpi_us: int, timeout_multiplier: int) -> None:
    """RPIs that fit a Forward_Open's UDINT microseconds and a multiplier code 0..7."""
    for name, value in (("T->O RPI", to_rpi_us), ("O->T RPI", ot_rpi_us)):
        if not 0 < value <= 0xFFFFFFFF:
            raise UsageError(f"{name} {value} us out of range")
    multiplier_factor(timeout_multiplier)


def produced_tag_forward_open(
    *,
    tag: str,
    tag_bytes: int,
    to_rpi_us: int,
    ot_rpi_us: int,
    connection_serial: int,
    vendor_id: int,
    originator_serial: int,
    to_connection_id: int,
    ot_connection_id: int = 0,
    multicast: bool = False,
    timeout_multiplier: int = 1,
    slot: int | None = 0,
    key: epath.ElectronicKey | None = epath.NO_KEY,
) -> ForwardOpenRequest:
    """The Forward_Open a Logix controller accepts for a produced tag (protocol.md 7.1):
    O->T P2P scheduled fixed size 2 (heartbeat), T->O P2P or multicast of tag bytes + 2,
    transport 0x81 (server, cyclic, class 1), path ``01 <slot> [key] 91 <tag>``."""
    if not 0 < tag_bytes <= 0x1FF - CLASS1_SEQUENCE_SIZE:
        raise UsageError(f"tag size {tag_bytes} bytes cannot be carried by a Forward_Open (1..509)")
    return class1_forward_open(
        ot_size=HEARTBEAT_SIZE, to_size=tag_bytes + CLASS1_SEQUENCE_SIZE, server=True,
        to_type=ConnectionType.MULTICAST if multicast else ConnectionType.POINT_TO_POINT,
        path=epath.produced_tag_connection_path(tag, slot, key), to_rpi_us=to_rpi_us,
        ot_rpi_us=ot_rpi_us, timeout_multiplier=timeout_multiplier,
        connection_serial=connection_serial, vendor_id=vendor_id,
        originator_serial=originator_serial, to_connection_id=to_connection_id,
        ot_connection_id=ot_connection_id,
    )


def class1_forward_open(
    *, ot_size: int, to_size: int, server: bool, path: bytes, to_rpi_us: int, ot_rpi_us: int,
    connection_serial: int, vendor_id: int, originator_serial: int, to_connection_id: int,
    ot_connection_id: int = 0, timeout_multiplier: int = 1,
    to_type: ConnectionType = ConnectionType.POINT_TO_POINT,
) -> ForwardOpenRequest:
    """A cyclic class-1 Forward_Open (protocol.md 5.2, 5.5, 5.6): both directions scheduled
    and of fixed size (``ot_size`` / ``to_size``: sequence count, header and data), O->T point
    to point, T->O ``to_type``. ``server``: the transport's direction bit, set for a produced
    tag (0x81, protocol.md 7.1), clear for a scanner's connection to an adapter (0x01)."""
    check_timing(to_rpi_us, ot_rpi_us, timeout_multiplier)
    return ForwardOpenRequest(
        ot_connection_id=ot_connection_id,
        to_connection_id=to_connection_id,
        connection_serial=connection_serial,
        vendor_id=vendor_id,
        originator_serial=originator_serial,
        timeout_multiplier=timeout_multiplier,
        ot_rpi=ot_rpi_us,
        ot_params=NetworkParameters(
            ConnectionType.POINT_TO_POINT, Priority.SCHEDULED, False, ot_size
        ),
        to_rpi=to_rpi_us,
        to_params=NetworkParameters(to_type, Priority.SCHEDULED, False, to_size),
        transport=TransportTrigger(1, ProductionTrigger.CYCLIC, server).to_byte(),
        path=path,
    )


def forward_close_for(request: ForwardOpenRequest) -> ForwardCloseRequest:
    """The Forward_Close matching an open connection (same triad and connection path)."""
    return ForwardCloseRequest(
        request.connection_serial,
        request.vendor_id,
        request.originator_serial,
        request.path,
        request.priority_tick,
        request.timeout_ticks,
    )

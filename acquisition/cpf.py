"""Common Packet Format (CPF) items: the payload of SendRRData, SendUnitData, ListIdentity /
ListServices replies and class-1 UDP datagrams.

Implements protocol.md 2.5 (identity item), 2.6 (list-services item), 2.8 (items and the
big-endian sockaddr body). CPF = ``item_count:UINT`` followed by items ``type:UINT,
length:UINT, data[length]``. Unknown item types decode to ``UnknownItem`` (a value, not an
error): the length field makes them skippable.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.errors import MalformedPacket, UsageError


class ItemId(IntEnum):
    NULL_ADDRESS = 0x0000
    LIST_IDENTITY = 0x000C
    CONNECTED_ADDRESS = 0x00A1
    CONNECTED_DATA = 0x00B1
    UNCONNECTED_DATA = 0x00B2
    LIST_SERVICES = 0x0100
    SOCKADDR_O2T = 0x8000
    SOCKADDR_T2O = 0x8001
    SEQUENCED_ADDRESS = 0x8002


# Item header: off 0 type:UINT, off 2 length:UINT (protocol.md 2.8)
_ITEM_HEADER = struct.Struct("<HH")
_COUNT = struct.Struct("<H")
# Sequenced address body: off 0 connection id:UDINT, off 4 encapsulation sequence:UDINT
_SEQ_ADDR = struct.Struct("<II")
_CONN_ADDR = struct.Struct("<I")
# Sockaddr body, BIG-endian: off 0 sin_family, off 2 sin_port, off 4 sin_addr, off 8 sin_zero[8]
_SOCKADDR = struct.Struct(">HH4s8s")
# Identity item body (protocol.md 2.5), little-endian except the embedded sockaddr:
# off 0 protocol version:UINT, off 2 sockaddr (16, BE), off 18 vendor:UINT, off 20 device type:UINT,
# off 22 product code:UINT, off 24 rev major:USINT, off 25 rev minor:USINT, off 26 status:WORD,
# off 28 serial:UDINT, off 32 product name SHORT_STRING (1+N), then state:USINT
_IDENTITY_FIXED = struct.Struct("<HHHBBHI")
# List-services item body (protocol.md 2.6): version:UINT, capability flags:UINT, name[16]
_SERVICES = struct.Struct("<HH16s")


@dataclass(frozen=True, slots=True)
class NullAddress:
    type_id = ItemId.NULL_ADDRESS

    def body(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class ConnectedAddress:
    connection_id: int
    type_id = ItemId.CONNECTED_ADDRESS

    def body(self) -> bytes:
        return _CONN_ADDR.pack(self.connection_id)


@dataclass(frozen=True, slots=True)
class SequencedAddress:
    connection_id: int
    sequence: int
    type_id = ItemId.SEQUENCED_ADDRESS

    def body(self) -> bytes:
        return _SEQ_ADDR.pack(self.connection_id, self.sequence)


@dataclass(frozen=True, slots=True)
class UnconnectedData:
    data: bytes
    type_id = ItemId.UNCONNECTED_DATA

    def body(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class ConnectedData:
    """Connected data; for class 1/3 its first two bytes are the 16-bit sequence count."""

    data: bytes
    type_id = ItemId.CONNECTED_DATA

    def body(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class Sockaddr:
    """A sockaddr_in as carried (big-endian) in sockaddr info and identity items."""

    address: str = "0.0.0.0"
    port: int = 2222
    family: int = 2
    zero: bytes = bytes(8)

    def encode(self) -> bytes:
        try:
            packed = ipaddress.IPv4Address(self.address).packed
        except ValueError as e:
            raise UsageError(f"sockaddr address {self.address!r} is not an IPv4 address") from e
        if len(self.zero) != 8:
            raise UsageError("sockaddr sin_zero must be 8 bytes")
        return _SOCKADDR.pack(self.family, self.port, packed, self.zero)

    @classmethod
    def decode(cls, r: Reader) -> Sockaddr:
        family, port, addr, zero = r.unpack(_SOCKADDR, "sockaddr (16 bytes, big-endian)")
        return cls(str(ipaddress.IPv4Address(addr)), port, family, zero)


@dataclass(frozen=True, slots=True)
class SockaddrInfo:
    """Sockaddr info item: 0x8000 (O->T) or 0x8001 (T->O)."""

    direction: ItemId
    sockaddr: Sockaddr

    @property
    def type_id(self) -> ItemId:
        return self.direction

    def body(self) -> bytes:
        return self.sockaddr.encode()


@dataclass(frozen=True, slots=True)
class IdentityItem:
    """CIP identity item of a ListIdentity reply (protocol.md 2.5)."""

    vendor_id: int
    device_type: int
    product_code: int
    revision_major: int
    revision_minor: int
    status: int
    serial_number: int
    product_name: str
    state: int
    sockaddr: Sockaddr = Sockaddr("0.0.0.0", 44818)
    protocol_version: int = 1
    type_id = ItemId.LIST_IDENTITY

    def body(self) -> bytes:
        name = self.product_name.encode("latin-1")
        if len(name) > 255:
            raise UsageError("identity product name longer than 255 bytes")
        return b"".join(
            (
                _COUNT.pack(self.protocol_version),
                self.sockaddr.encode(),
                _IDENTITY_FIXED.pack(
                    self.vendor_id,
                    self.device_type,
                    self.product_code,
                    self.revision_major,
                    self.revision_minor,
                    self.status,
                    self.serial_number,
                ),
                bytes([len(name)]),
                name,
                bytes([self.state]),
            )
        )

    @classmethod
    def decode_body(cls, r: Reader) -> IdentityItem:
        version = r.u16("identity protocol version")
        sockaddr = Sockaddr.decode(r)
        vendor, dtype, pcode, major, minor, status, serial = r.unpack(
            _IDENTITY_FIXED, "identity vendor..serial fields"
        )
        n = r.u8("product name length")
        name = r.take(n, "product name").decode("latin-1")
        state = r.u8("identity state")
        r.expect_end("identity item")
        return cls(vendor, dtype, pcode, major, minor, status, serial, name, state, sockaddr,
                   version)


@dataclass(frozen=True, slots=True)
class ServicesItem:
    """List-services reply item (protocol.md 2.6)."""

    version: int = 1
    capabilities: int = 0x0120
    name: bytes = b"Communications\x00\x00"
    type_id = ItemId.LIST_SERVICES

    def body(self) -> bytes:
        if len(self.name) > 16:
            raise UsageError("list-services name longer than 16 bytes")
        return _SERVICES.pack(self.version, self.capabilities, self.name)

    @classmethod
    def decode_body(cls, r: Reader) -> ServicesItem:
        version, caps, name = r.unpack(_SERVICES, "list-services item (20 bytes)")
        r.expect_end("list-services item")
        return cls(version, caps, name)


@dataclass(frozen=True, slots=True)
class UnknownItem:
    """An item whose type we do not interpret; kept so it can be re-encoded."""

    item_type: int
    data: bytes

    @property
    def type_id(self) -> int:
        return self.item_type

    def body(self) -> bytes:
        return self.data


Item = (
    NullAddress
    | ConnectedAddress
    | SequencedAddress
    | UnconnectedData
    | ConnectedData
    | SockaddrInfo
    | IdentityItem
    | ServicesItem
    | UnknownItem
)


def encode_items(items: tuple[Item, ...] | list[Item]) -> bytes:
    """CPF: item count followed by each item's header and body."""
    parts = [_COUNT.pack(len(items))]
    for item in items:
        body = item.body()
        if len(body) > 0xFFFF:
            raise UsageError(f"CPF item 0x{int(item.type_id):04X} body exceeds 65535 bytes")
        parts.append(_ITEM_HEADER.pack(int(item.type_id), len(body)))
        parts.append(body)
    return b"".join(parts)


def _decode_item(type_id: int, r: Reader) -> Item:
    n = r.remaining()
    if type_id == ItemId.NULL_ADDRESS:
        r.expect_end("null address item (length 0)")
        return NullAddress()
    if type_id == ItemId.CONNECTED_ADDRESS:
        if n != 4:
            raise r.fail(f"connected address item of length 4, got {n}")
        return ConnectedAddress(r.u32("connection id"))
    if type_id == ItemId.SEQUENCED_ADDRESS:
        if n != 8:
            raise r.fail(f"sequenced address item of length 8, got {n}")
        cid, seq = r.unpack(_SEQ_ADDR, "sequenced address")
        return SequencedAddress(cid, seq)
    if type_id == ItemId.UNCONNECTED_DATA:
        return UnconnectedData(r.rest())
    if type_id == ItemId.CONNECTED_DATA:
        return ConnectedData(r.rest())
    if type_id in (ItemId.SOCKADDR_O2T, ItemId.SOCKADDR_T2O):
        if n != 16:
            raise r.fail(f"sockaddr info item of length 16, got {n}")
        return SockaddrInfo(ItemId(type_id), Sockaddr.decode(r))
    if type_id == ItemId.LIST_IDENTITY:
        return IdentityItem.decode_body(r)
    if type_id == ItemId.LIST_SERVICES:
        return ServicesItem.decode_body(r)
    return UnknownItem(type_id, r.rest())


def decode_items(data: bytes, start: int = 0, context: str = "CPF") -> tuple[Item, ...]:
    """Decode a complete CPF block occupying ``data[start:]`` exactly."""
    r = Reader(data, start, context=context)
    count = r.u16("CPF item count")
    items: list[Item] = []
    for i in range(count):
        type_id, length = r.unpack(_ITEM_HEADER, f"CPF item {i} header")
        items.append(_decode_item(type_id, r.sub(length, f"CPF item {i} body ({length} bytes)")))
    r.expect_end("CPF items")
    return tuple(items)


def find_item(items: tuple[Item, ...], cls: type) -> Item | None:
    for item in items:
        if isinstance(item, cls):
            return item
    return None


def require_layout(items: tuple[Item, ...], *classes: type, context: str = "CPF") -> None:
    """Check that the first items have the given classes (e.g. a SendRRData must carry a null
    address then unconnected data); raises MalformedPacket naming what was found."""
    if len(items) < len(classes):
        raise MalformedPacket(
            f"{len(classes)} CPF items ({', '.join(c.__name__ for c in classes)}),"
            f" got {len(items)}",
            0,
            context,
        )
    for i, cls in enumerate(classes):
        if not isinstance(items[i], cls):
            raise MalformedPacket(
                f"CPF item {i} to be {cls.__name__}, got {type(items[i]).__name__}", 0, context
            )

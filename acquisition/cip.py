"""CIP message-router framing: requests, replies, Multiple Service Packet, Unconnected_Send.

Implements protocol.md 3 (message-router request/reply, Multiple Service Packet) and 5.11
(Unconnected_Send). The request path is kept as raw padded-EPATH bytes (decode it with
``epath.decode_path`` when its meaning matters) so frames re-encode byte for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.errors import CipError, MalformedPacket, UsageError


class Service(IntEnum):
    """CIP common and object-specific service codes used by pyconpro.

    Several Logix codes reuse Connection Manager numbers (0x4E, 0x52): the object addressed by
    the path decides the meaning (protocol.md 5.1). Aliases are listed separately below.
    """

    GET_ATTRIBUTES_ALL = 0x01
    SET_ATTRIBUTES_ALL = 0x02
    GET_ATTRIBUTE_LIST = 0x03
    SET_ATTRIBUTE_LIST = 0x04
    RESET = 0x05
    MULTIPLE_SERVICE_PACKET = 0x0A
    GET_ATTRIBUTE_SINGLE = 0x0E
    SET_ATTRIBUTE_SINGLE = 0x10
    READ_TAG = 0x4C  # Logix tag service; also Template object Read
    WRITE_TAG = 0x4D
    FORWARD_CLOSE = 0x4E  # Connection Manager; Logix Read-Modify-Write on a tag path
    UNCONNECTED_SEND = 0x52  # Connection Manager; Logix Read Tag Fragmented on a tag path
    WRITE_TAG_FRAGMENTED = 0x53
    FORWARD_OPEN = 0x54
    GET_INSTANCE_ATTRIBUTE_LIST = 0x55
    GET_CONNECTION_DATA = 0x56
    SEARCH_CONNECTION_DATA = 0x57
    GET_CONNECTION_OWNER = 0x5A
    LARGE_FORWARD_OPEN = 0x5B


READ_MODIFY_WRITE_TAG = 0x4E
READ_TAG_FRAGMENTED = 0x52
REPLY_FLAG = 0x80

# Request: service:USINT, path size:USINT (words), path, data
_REQ_HEAD = struct.Struct("<BB")
# Reply: service|0x80:USINT, reserved:USINT, general status:USINT, additional size:USINT (words)
_REPLY_HEAD = struct.Struct("<BBBB")


@dataclass(frozen=True, slots=True)
class Request:
    service: int
    path: bytes
    data: bytes = b""

    def encode(self) -> bytes:
        if len(self.path) % 2 or len(self.path) > 510:
            raise UsageError("request path must be an even number of bytes, at most 510")
        if not 0 <= self.service < REPLY_FLAG:
            raise UsageError(f"service 0x{self.service:02X} has the reply bit set")
        return _REQ_HEAD.pack(self.service, len(self.path) // 2) + self.path + self.data

    @classmethod
    def decode(cls, message: bytes) -> Request:
        r = Reader(message, context="CIP request")
        service, words = r.unpack(_REQ_HEAD, "service and path size")
        if service & REPLY_FLAG:
            raise MalformedPacket(
                f"a request service (got reply code 0x{service:02X})", 0, "CIP request"
            )
        path = r.take(2 * words, f"request path of {words} words")
        return cls(service, path, r.rest())


@dataclass(frozen=True, slots=True)
class Reply:
    """A message-router reply; ``service`` is the request service (the reply bit is implied)."""

    service: int
    status: int = 0
    additional: tuple[int, ...] = ()
    data: bytes = b""
    reserved: int = 0

    def encode(self) -> bytes:
        if len(self.additional) > 255:
            raise UsageError("at most 255 additional status words")
        return (
            _REPLY_HEAD.pack(
                self.service | REPLY_FLAG, self.reserved, self.status, len(self.additional)
            )
            + struct.pack(f"<{len(self.additional)}H", *self.additional)
            + self.data
        )

    @classmethod
    def decode(cls, message: bytes) -> Reply:
        r = Reader(message, context="CIP reply")
        service, reserved, status, n = r.unpack(_REPLY_HEAD, "reply service, status and size")
        if not service & REPLY_FLAG:
            raise MalformedPacket(
                f"a reply service code (bit 7 set), got 0x{service:02X}", 0, "CIP reply"
            )
        additional = r.unpack(struct.Struct(f"<{n}H"), f"{n} additional status words")
        return cls(service & 0x7F, status, tuple(additional), r.rest(), reserved)

    @property
    def ok(self) -> bool:
        return self.status == 0

    def error(self, context: str = "") -> CipError:
        return CipError(self.status, self.additional, self.service, context)

    def raise_for_status(self, context: str = "", allow_partial: bool = False) -> None:
        if self.status == 0 or (allow_partial and self.status == 0x06):
            return
        raise self.error(context)


# Multiple Service Packet data (protocol.md 3): count:UINT, offsets:UINT[count] (from the count
# field), then the embedded messages. Requests and replies share the layout.
def encode_multiple(messages: list[bytes] | tuple[bytes, ...]) -> bytes:
    count = len(messages)
    offset = 2 + 2 * count
    offsets = []
    for m in messages:
        offsets.append(offset)
        offset += len(m)
    if offset > 0xFFFF:
        raise UsageError("Multiple Service Packet larger than 65535 bytes")
    return struct.pack(f"<H{count}H", count, *offsets) + b"".join(messages)


def decode_multiple(data: bytes) -> tuple[bytes, ...]:
    r = Reader(data, context="Multiple Service Packet")
    count = r.u16("service count")
    offsets = r.unpack(struct.Struct(f"<{count}H"), f"{count} offsets")
    out = []
    table_end = 2 + 2 * count
    for i, off in enumerate(offsets):
        end = offsets[i + 1] if i + 1 < count else len(data)
        if not table_end <= off <= end <= len(data):
            raise MalformedPacket(
                f"offset {i} within the packet and increasing, got {off}", 2 + 2 * i, r.context
            )
        out.append(bytes(data[off:end]))
    return tuple(out)


# Unconnected_Send data (protocol.md 5.11): priority/tick:USINT, timeout ticks:USINT,
# message length:UINT, message, [pad if odd], route path size:USINT (words), reserved:USINT, route
_US_HEAD = struct.Struct("<BBH")


@dataclass(frozen=True, slots=True)
class UnconnectedSend:
    message: bytes
    route_path: bytes
    priority_tick: int = 0x0A
    timeout_ticks: int = 0x05
    reserved: int = 0

    def encode(self) -> bytes:
        if len(self.route_path) % 2:
            raise UsageError("route path must be an even number of bytes")
        pad = b"\x00" if len(self.message) % 2 else b""
        return (
            _US_HEAD.pack(self.priority_tick, self.timeout_ticks, len(self.message))
            + self.message
            + pad
            + bytes([len(self.route_path) // 2, self.reserved])
            + self.route_path
        )

    @classmethod
    def decode(cls, data: bytes) -> UnconnectedSend:
        r = Reader(data, context="Unconnected_Send")
        tick, ticks, n = r.unpack(_US_HEAD, "priority, timeout and message length")
        message = r.take(n, f"embedded message of {n} bytes")
        if n % 2:
            r.pad("pad byte after odd-length message")
        words = r.u8("route path size")
        reserved = r.u8("reserved byte")
        route = r.take(2 * words, f"route path of {words} words")
        r.expect_end("Unconnected_Send")
        return cls(message, route, tick, ticks, reserved)

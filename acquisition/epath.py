"""EPATH segments (padded form, as Logix uses), connection paths and Logix tag names.

Implements protocol.md 4.1 (segment encodings), 4.2 (produced-tag connection path), 4.3 (other
connection paths), 5.1 (Connection Manager path). Encoding and decoding are exact inverses for
the padded EPATH: ``encode_path(decode_path(b)) == b`` for every path we accept.

Tag names (``Tag``, ``Tag[3]``, ``Tag[1,2]``, ``Udt.Member``, ``Program:Main.Tag``) are parsed by
``parse_tag_name`` and turned into symbolic + member segments by ``tag_path``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.errors import MalformedPacket, UsageError


class LogicalType(IntEnum):
    """Bits 4..2 of a logical segment byte (0x20 | type << 2 | format)."""

    CLASS_ID = 0
    INSTANCE_ID = 1
    MEMBER_ID = 2
    CONNECTION_POINT = 3
    ATTRIBUTE_ID = 4
    SPECIAL = 5
    SERVICE_ID = 6


_LOGICAL_WIDTHS = {0: 8, 1: 16, 2: 32}


@dataclass(frozen=True, slots=True)
class PortSegment:
    """Port segment: port number and link address (slot byte, or e.g. ASCII IP for port 2)."""

    port: int
    link: bytes

    @classmethod
    def slot(cls, slot: int, port: int = 1) -> PortSegment:
        if not 0 <= slot <= 255:
            raise UsageError(f"slot {slot} out of range 0..255")
        return cls(port, bytes([slot]))

    def encode(self) -> bytes:
        if not 0 <= self.port <= 0xFFFF or self.port == 0:
            raise UsageError(f"port {self.port} out of range 1..65535")
        if not 1 <= len(self.link) <= 255:
            raise UsageError("port segment link address must be 1..255 bytes")
        extended_link = len(self.link) > 1
        extended_port = self.port >= 15
        first = (0x0F if extended_port else self.port) | (0x10 if extended_link else 0)
        out = bytearray([first])
        if extended_link:
            out.append(len(self.link))
        if extended_port:
            out += struct.pack("<H", self.port)
        out += self.link
        if len(out) % 2:
            out.append(0)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class LogicalSegment:
    """Class / instance / member / connection point / attribute id with an explicit width."""

    kind: LogicalType
    value: int
    width: int = 0  # 8, 16 or 32; 0 = smallest that fits

    def encode(self) -> bytes:
        width = self.width or (8 if self.value <= 0xFF else 16 if self.value <= 0xFFFF else 32)
        if width not in (8, 16, 32) or not 0 <= self.value < (1 << width):
            raise UsageError(f"logical {self.kind.name} {self.value} does not fit {width} bits")
        if width == 32 and self.kind not in (
            LogicalType.INSTANCE_ID,
            LogicalType.MEMBER_ID,
            LogicalType.CONNECTION_POINT,
        ):
            raise UsageError(f"32-bit {self.kind.name} segments are not defined by CIP")
        fmt = {8: 0, 16: 1, 32: 2}[width]
        head = 0x20 | (int(self.kind) << 2) | fmt
        if width == 8:
            return bytes([head, self.value])
        if width == 16:
            return bytes([head, 0]) + struct.pack("<H", self.value)
        return bytes([head, 0]) + struct.pack("<I", self.value)


def class_id(value: int, width: int = 0) -> LogicalSegment:
    return LogicalSegment(LogicalType.CLASS_ID, value, width)


def instance_id(value: int, width: int = 0) -> LogicalSegment:
    return LogicalSegment(LogicalType.INSTANCE_ID, value, width)


def attribute_id(value: int, width: int = 0) -> LogicalSegment:
    return LogicalSegment(LogicalType.ATTRIBUTE_ID, value, width)


def connection_point(value: int, width: int = 0) -> LogicalSegment:
    return LogicalSegment(LogicalType.CONNECTION_POINT, value, width)


def member_id(value: int, width: int = 0) -> LogicalSegment:
    return LogicalSegment(LogicalType.MEMBER_ID, value, width)


# Electronic key (protocol.md 4.1): 0x34, key format 0x04, vendor:UINT, device type:UINT,
# product code:UINT, major revision:USINT (bit 7 = compatibility), minor revision:USINT
_KEY = struct.Struct("<HHHBB")


@dataclass(frozen=True, slots=True)
class ElectronicKey:
    vendor_id: int = 0
    device_type: int = 0
    product_code: int = 0
    major_revision: int = 0
    minor_revision: int = 0
    compatibility: bool = False

    def is_wildcard(self) -> bool:
        return not (self.vendor_id or self.device_type or self.product_code or self.major_revision)

    def encode(self) -> bytes:
        if not 0 <= self.major_revision <= 0x7F:
            raise UsageError("electronic key major revision must be 0..127")
        major = self.major_revision | (0x80 if self.compatibility else 0)
        return b"\x34\x04" + _KEY.pack(
            self.vendor_id, self.device_type, self.product_code, major, self.minor_revision
        )


NO_KEY = ElectronicKey()


@dataclass(frozen=True, slots=True)
class SymbolicSegment:
    """ANSI extended symbolic segment 0x91: a tag or program name."""

    name: str

    def encode(self) -> bytes:
        raw = self.name.encode("ascii", errors="strict") if self.name.isascii() else None
        if raw is None:
            raise UsageError(f"symbol {self.name!r} is not ASCII")
        if not 1 <= len(raw) <= 255:
            raise UsageError(f"symbol {self.name!r} must be 1..255 bytes long")
        out = b"\x91" + bytes([len(raw)]) + raw
        return out + b"\x00" if len(raw) % 2 else out


@dataclass(frozen=True, slots=True)
class DataSegment:
    """Simple data segment 0x80 (length in words), e.g. configuration data in an I/O path."""

    data: bytes

    def encode(self) -> bytes:
        if len(self.data) % 2 or len(self.data) > 510:
            raise UsageError("simple data segment needs an even length up to 510 bytes")
        return bytes([0x80, len(self.data) // 2]) + self.data


@dataclass(frozen=True, slots=True)
class NetworkSegment:
    """Network segment 0x40..0x5F; 0x43 = production inhibit time in ms (1 byte);
    0x50 = extended (length in words then data)."""

    subtype: int
    data: bytes

    def encode(self) -> bytes:
        if self.subtype == 0x50:
            if len(self.data) % 2:
                raise UsageError("extended network segment needs an even length")
            return bytes([0x50, len(self.data) // 2]) + self.data
        if len(self.data) != 1:
            raise UsageError("network segment 0x41..0x4F carries exactly one byte")
        return bytes([self.subtype, self.data[0]])


Segment = (
    PortSegment
    | LogicalSegment
    | ElectronicKey
    | SymbolicSegment
    | DataSegment
    | NetworkSegment
)


def encode_path(segments: tuple[Segment, ...] | list[Segment]) -> bytes:
    return b"".join(s.encode() for s in segments)


def _decode_port(r: Reader, first: int, start: int) -> Segment:
    extended_link = bool(first & 0x10)
    port = first & 0x0F
    if port == 0:
        raise MalformedPacket("port segment with a port number (0 is reserved)", start, r.context)
    link_len = r.u8("port segment link address size") if extended_link else 1
    if extended_link and link_len < 2:
        # A 0- or 1-byte link is encoded without the extended-link flag; accepting this
        # form would not re-encode to the same bytes.
        raise MalformedPacket("extended link address of at least 2 bytes", start + 1, r.context)
    if port == 0x0F:
        port = r.u16("extended port number")
        if port < 15:
            raise MalformedPacket("extended port number >= 15 (smaller ports fit the segment"
                                  " byte)", r.pos - 2, r.context)  # fmt: skip
    link = r.take(link_len, "port segment link address")
    if (r.pos - start) % 2:
        r.pad("port segment pad byte")
    return PortSegment(port, link)


def _decode_key(r: Reader, first: int, start: int) -> Segment:
    if first != 0x34:
        raise MalformedPacket("electronic key segment 0x34", start, r.context)
    key_format = r.u8("electronic key format")
    if key_format != 0x04:
        raise MalformedPacket(f"electronic key format 4, got {key_format}", start, r.context)
    vendor, dtype, pcode, major, minor = r.unpack(_KEY, "electronic key body (8 bytes)")
    return ElectronicKey(vendor, dtype, pcode, major & 0x7F, minor, bool(major & 0x80))


def _decode_logical(r: Reader, first: int, start: int) -> Segment:
    kind = (first >> 2) & 0x07
    fmt = first & 0x03
    if kind == LogicalType.SPECIAL:
        return _decode_key(r, first, start)
    if kind == 7 or fmt == 3:
        raise MalformedPacket(f"a defined logical segment, got 0x{first:02X}", start, r.context)
    if kind == LogicalType.SERVICE_ID:
        raise MalformedPacket("no service-id logical segment (unsupported)", start, r.context)
    width = _LOGICAL_WIDTHS[fmt]
    if width == 32 and kind not in _LOGICAL_32_BIT:
        raise MalformedPacket(f"8- or 16-bit {LogicalType(kind).name} (32-bit is reserved)",
                              start, r.context)  # fmt: skip
    if width == 8:
        value = r.u8("8-bit logical value")
    else:
        r.pad("logical segment pad byte")
        value = r.u16("16-bit logical value") if width == 16 else r.u32("32-bit logical value")
    return LogicalSegment(LogicalType(kind), value, width)


def _decode_network(r: Reader, first: int, start: int) -> Segment:
    if first == 0x50:
        words = r.u8("extended network segment length")
        return NetworkSegment(0x50, r.take(2 * words, "extended network segment data"))
    if 0x41 <= first <= 0x4F:
        return NetworkSegment(first, r.take(1, "network segment data byte"))
    raise MalformedPacket(f"a known network segment, got 0x{first:02X}", start, r.context)


def _decode_symbol(r: Reader, start: int) -> Segment:
    n = r.u8("symbol length")
    if n == 0:
        raise MalformedPacket("a symbol of 1..255 characters", start + 1, r.context)
    raw = r.take(n, "symbol characters")
    if n % 2 and r.u8("symbol pad byte") != 0:
        raise MalformedPacket("zero pad byte after odd-length symbol", r.pos - 1, r.context)
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedPacket("ASCII symbol characters", start + 2, r.context) from None
    return SymbolicSegment(name)


def _decode_data(r: Reader, first: int, start: int) -> Segment:
    if first == 0x80:
        words = r.u8("simple data segment length")
        return DataSegment(r.take(2 * words, "simple data segment data"))
    if first == 0x91:
        return _decode_symbol(r, start)
    raise MalformedPacket(f"a known data segment, got 0x{first:02X}", start, r.context)


_LOGICAL_32_BIT = (LogicalType.INSTANCE_ID, LogicalType.MEMBER_ID, LogicalType.CONNECTION_POINT)
#: Segment type (the top three bits of the first byte) -> its decoder.
_SEGMENT_DECODERS: dict[int, Callable[[Reader, int, int], Segment]] = {
    0x00: _decode_port,
    0x20: _decode_logical,
    0x40: _decode_network,
    0x80: _decode_data,
}


def _decode_segment(r: Reader) -> Segment:
    start = r.pos
    first = r.u8("segment type byte")
    decoder = _SEGMENT_DECODERS.get(first & 0xE0)
    if decoder is None:
        raise MalformedPacket(f"a known segment type, got 0x{first:02X}", start, r.context)
    return decoder(r, first, start)


def decode_path(data: bytes, start: int = 0, end: int | None = None) -> tuple[Segment, ...]:
    """Walk a padded EPATH occupying ``data[start:end]`` into typed segments."""
    r = Reader(data, start, end, context="EPATH")
    segments: list[Segment] = []
    while r.remaining():
        segments.append(_decode_segment(r))
    return tuple(segments)


# Connection Manager, instance 1: 20 06 24 01 (protocol.md 5.1)
CONNECTION_MANAGER_PATH = encode_path((class_id(0x06), instance_id(0x01)))
# Message router, instance 1: 20 02 24 01 (class-3 explicit connection end point)
MESSAGE_ROUTER_PATH = encode_path((class_id(0x02), instance_id(0x01)))


# ---------------------------------------------------------------------------------- tag names

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PART = re.compile(rf"({_IDENT})(?:\[\s*(\d+)\s*(?:,\s*(\d+)\s*)?(?:,\s*(\d+)\s*)?\])?")
_PROGRAM = re.compile(rf"Program:({_IDENT})\.", re.IGNORECASE)
MAX_IDENTIFIER = 40


@dataclass(frozen=True, slots=True)
class TagPart:
    name: str
    indices: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TagName:
    """A parsed Logix tag reference: optional program scope, then dotted parts with indices."""

    parts: tuple[TagPart, ...]
    program: str | None = None

    @property
    def base(self) -> str:
        return self.parts[0].name

    def is_plain(self) -> bool:
        """A whole controller-scoped tag (what a produced-tag connection can name)."""
        return self.program is None and len(self.parts) == 1 and not self.parts[0].indices

    def __str__(self) -> str:
        text = ".".join(
            p.name + (f"[{','.join(map(str, p.indices))}]" if p.indices else "") for p in self.parts
        )
        return f"Program:{self.program}.{text}" if self.program else text


def parse_tag_name(name: str) -> TagName:
    """Parse ``Tag``, ``Tag[3]``, ``Tag[1,2]``, ``Udt.Member``, ``Program:Main.Tag``.

    Raises UsageError naming the position and what is wrong.
    """
    if not isinstance(name, str) or not name:
        raise UsageError("tag name is empty; give a Logix tag name such as 'MyTag'")
    pos = 0
    program = None
    m = _PROGRAM.match(name)
    if m:
        program = m.group(1)
        pos = m.end()
    elif name.lower().startswith("program:"):
        raise UsageError(
            f"tag name {name!r}: a program-scoped name is 'Program:<program>.<tag>'"
        )
    parts: list[TagPart] = []
    while True:
        m = _PART.match(name, pos)
        if not m:
            bad = name[pos : pos + 1] or "end of name"
            raise UsageError(
                f"tag name {name!r}: unexpected {bad!r} at position {pos};"
                " identifiers start with a letter or '_' and contain letters, digits and '_'"
            )
        ident = m.group(1)
        if len(ident) > MAX_IDENTIFIER:
            raise UsageError(
                f"tag name {name!r}: {ident!r} is {len(ident)} characters; Logix allows"
                f" {MAX_IDENTIFIER}"
            )
        if "__" in ident or ident.endswith("_"):
            raise UsageError(
                f"tag name {name!r}: {ident!r} is not a valid Logix identifier"
                " (no double underscores, no trailing underscore)"
            )
        indices = tuple(int(g) for g in m.groups()[1:] if g is not None)
        parts.append(TagPart(ident, indices))
        pos = m.end()
        if pos == len(name):
            break
        if name[pos] != ".":
            raise UsageError(
                f"tag name {name!r}: unexpected {name[pos]!r} at position {pos};"
                " use '.' between members and '[i]' or '[i,j]' for array elements"
            )
        pos += 1
    return TagName(tuple(parts), program)


def _index_segment(index: int) -> LogicalSegment:
    return member_id(index)


def tag_path(name: str | TagName) -> tuple[Segment, ...]:
    """Symbolic request path for a tag reference (Read Tag and friends, and connection paths)."""
    tag = parse_tag_name(name) if isinstance(name, str) else name
    segments: list[Segment] = []
    if tag.program:
        segments.append(SymbolicSegment(f"Program:{tag.program}"))
    for part in tag.parts:
        segments.append(SymbolicSegment(part.name))
        segments.extend(_index_segment(i) for i in part.indices)
    return tuple(segments)


def produced_tag_connection_path(
    tag: str, slot: int | None = 0, key: ElectronicKey | None = NO_KEY
) -> bytes:
    """Connection path of a produced-tag Forward_Open (protocol.md 4.2): ``01 <slot>``, optional
    electronic key (all zero = no keying), ``91 <len> <name> [00]``.

    Produced tags are whole controller-scoped tags, so members, elements and program scope are
    refused here with the reason.
    """
    parsed = parse_tag_name(tag)
    if not parsed.is_plain():
        raise UsageError(
            f"tag {tag!r}: a produced tag is a whole controller-scoped tag; consume {parsed.base!r}"
            " (or produce the member/element as its own tag in the controller)"
            if parsed.program is None
            else f"tag {tag!r}: produced tags are controller-scoped; move it out of the program"
        )
    segments: list[Segment] = []
    if slot is not None:
        segments.append(PortSegment.slot(slot))
    if key is not None:
        segments.append(key)
    segments.append(SymbolicSegment(parsed.base))
    return encode_path(segments)

"""Logix explicit-message request codecs and the member locator, pure.

The request bodies a Logix CPU parses (Identity's attribute layout, Read Tag 0x4C, Read Tag
Fragmented 0x52, Write Tag 0x4D / 0x53, Read-Modify-Write 0x4E; protocol.md 4.1, 10.2) and
``locate``, which finds a member or an element inside a tag image. The simulated controller
(``acquisition.logix_controller.LogixController``) answers requests with them; they are also
what a client encodes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pyconpro.acquisition import cpf
from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_types import (
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    ReadTagType,
    StructType,
    byte_size,
)
from pyconpro.acquisition.status import GeneralStatus

# Identity status word giving pycomm3's keyswitch text "REMOTE RUN": low byte 0x60, high 0x30
# (protocol.md 10.2 row 3, pycomm3 status_info.KEYSWITCH).
STATUS_REMOTE_RUN = 0x3060
STATUS_REMOTE_PROG = 0x3070
STATE_OPERATIONAL = 3  # ListIdentity state byte

# ---------------------------------------------------------------------------------------------
# Identity object attributes (Get_Attributes_All reply data, protocol.md 10.2 row 3)
# ---------------------------------------------------------------------------------------------
#
# | offset | size  | field                                             |
# |--------|-------|---------------------------------------------------|
# | 0      | 2     | UINT vendor id (1 = Rockwell)                     |
# | 2      | 2     | UINT device type (0x0E = programmable controller) |
# | 4      | 2     | UINT product code                                 |
# | 6      | 1     | USINT major revision                              |
# | 7      | 1     | USINT minor revision                              |
# | 8      | 2     | WORD status (keyswitch in bits 4-7 / 12-13)       |
# | 10     | 4     | UDINT serial number                               |
# | 14     | 1 + n | SHORT_STRING product name                         |

_IDENTITY = struct.Struct("<HHHBBHI")

__all__ = [
    "STATE_OPERATIONAL",
    "STATUS_REMOTE_PROG",
    "STATUS_REMOTE_RUN",
    "Identity",
    "Location",
    "PathError",
    "ReadModifyWriteRequest",
    "ReadTagFragmentedRequest",
    "ReadTagRequest",
    "Selector",
    "WriteTagRequest",
    "locate",
    "logix_error",
    "no_destination",
    "path_not_found",
]


@dataclass(frozen=True, slots=True)
class Identity:
    """The simulated controller's identity (also the ListIdentity item fields)."""

    vendor_id: int = 1
    device_type: int = 0x0E
    product_code: int = 166  # 1756-L8x family
    revision_major: int = 33  # >= 21: pycomm3 addresses tags by symbol instance
    revision_minor: int = 11
    status: int = STATUS_REMOTE_RUN
    serial_number: int = 0x00C0FFEE
    product_name: str = "1756-L83E/B"
    state: int = STATE_OPERATIONAL

    def encode(self) -> bytes:
        """Get_Attributes_All reply data."""
        name = self.product_name.encode("ascii")
        if len(name) > 32:
            raise UsageError(f"product name {self.product_name!r}: at most 32 ASCII characters")
        try:
            head = _IDENTITY.pack(self.vendor_id, self.device_type, self.product_code,
                                  self.revision_major, self.revision_minor, self.status,
                                  self.serial_number)
        except struct.error:
            raise UsageError(f"identity {self!r}: a field does not fit its CIP type") from None
        return head + bytes([len(name)]) + name

    @classmethod
    def decode(cls, data: bytes) -> Identity:
        r = Reader(data, context="Identity attributes")
        vendor, dtype, pcode, major, minor, status, serial = r.unpack(_IDENTITY, "identity")
        n = r.u8("product name length")
        name = r.take(n, "product name").decode("latin-1")
        r.expect_end("Identity attributes")
        return cls(vendor, dtype, pcode, major, minor, status, serial, name)

    def attribute(self, attr: int) -> bytes | None:
        """Get_Attribute_Single value of attribute ``attr`` (None = not supported)."""
        full = self.encode()
        spans = {1: (0, 2), 2: (2, 4), 3: (4, 6), 4: (6, 8), 5: (8, 10), 6: (10, 14),
                 7: (14, len(full))}
        span = spans.get(attr)
        return None if span is None else full[span[0]:span[1]]

    def item(self, sockaddr: cpf.Sockaddr) -> cpf.IdentityItem:
        """The ListIdentity item a server sends for this controller."""
        return cpf.IdentityItem(self.vendor_id, self.device_type, self.product_code,
                                self.revision_major, self.revision_minor, self.status,
                                self.serial_number, self.product_name, self.state, sockaddr)


# ---------------------------------------------------------------------------------------------
# Tag-service request data (after the request path), 1756-PM020, protocol.md 10.2 row 10
# ---------------------------------------------------------------------------------------------
#
# Read Tag 0x4C:            | 0 | 2 | UINT elements |
# Read Tag Fragmented 0x52: | 0 | 2 | UINT elements | 2 | 4 | UDINT byte offset |
# Write Tag 0x4D:           | 0 | 2 | UINT type (or 0x02A0) | [2 | 2 | UINT structure handle]
#                           | +0 | 2 | UINT elements | +2 | n | data |
# Write Tag Fragmented 0x53: as Write Tag with a UDINT byte offset between elements and data
# Read-Modify-Write 0x4E:   | 0 | 2 | UINT mask size n | 2 | n | OR mask | 2+n | n | AND mask |
# Replies: Read = type header (2 or 4 bytes, ReadTagType) + data; Write/RMW = no data.

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_READ_FRAGMENTED = struct.Struct("<HI")
_STRUCT_TYPE = 0x02A0


def _parse_type(r: Reader) -> ReadTagType:
    code = r.u16("data type")
    if code == _STRUCT_TYPE:
        return ReadTagType(code, r.u16("structure handle"))
    return ReadTagType(code)


@dataclass(frozen=True, slots=True)
class ReadTagRequest:
    elements: int = 1

    def encode(self) -> bytes:
        return _U16.pack(self.elements)

    @classmethod
    def parse(cls, data: bytes) -> ReadTagRequest:
        r = Reader(data, context="Read Tag request")
        elements = r.u16("element count")
        r.expect_end("Read Tag request")
        return cls(elements)


@dataclass(frozen=True, slots=True)
class ReadTagFragmentedRequest:
    elements: int
    offset: int

    def encode(self) -> bytes:
        return _READ_FRAGMENTED.pack(self.elements, self.offset)

    @classmethod
    def parse(cls, data: bytes) -> ReadTagFragmentedRequest:
        r = Reader(data, context="Read Tag Fragmented request")
        elements, offset = r.unpack(_READ_FRAGMENTED, "element count and byte offset")
        r.expect_end("Read Tag Fragmented request")
        return cls(elements, offset)


@dataclass(frozen=True, slots=True)
class WriteTagRequest:
    type: ReadTagType
    elements: int
    data: bytes
    offset: int | None = None  # set for Write Tag Fragmented (0x53)

    def encode(self) -> bytes:
        out = self.type.encode() + _U16.pack(self.elements)
        if self.offset is not None:
            out += _U32.pack(self.offset)
        return out + self.data

    @classmethod
    def parse(cls, data: bytes, *, fragmented: bool = False) -> WriteTagRequest:
        what = "Write Tag Fragmented request" if fragmented else "Write Tag request"
        r = Reader(data, context=what)
        t = _parse_type(r)
        elements = r.u16("element count")
        offset = r.u32("byte offset") if fragmented else None
        return cls(t, elements, r.rest(), offset)


@dataclass(frozen=True, slots=True)
class ReadModifyWriteRequest:
    or_mask: bytes
    and_mask: bytes

    def encode(self) -> bytes:
        if len(self.or_mask) != len(self.and_mask):
            raise UsageError("Read-Modify-Write OR and AND masks must have the same size")
        return _U16.pack(len(self.or_mask)) + self.or_mask + self.and_mask

    @classmethod
    def parse(cls, data: bytes) -> ReadModifyWriteRequest:
        r = Reader(data, context="Read-Modify-Write request")
        n = r.u16("mask size")
        or_mask = r.take(n, "OR mask")
        and_mask = r.take(n, "AND mask")
        # pycomm3 1.2 always sends an 8-byte AND mask (``ULINT.encode(mask)[:mask]`` slices by
        # the mask value, not its size) and its bit writes work on real controllers, so bytes
        # after the AND mask are ignored rather than refused with 0x15.
        return cls(or_mask, and_mask)


# ---------------------------------------------------------------------------------------------
# Locating a member / element inside a tag image
# ---------------------------------------------------------------------------------------------

Selector = str | tuple[int, ...]  # a member name, or the indices of one element


class PathError(Exception):
    """Internal: a path or request cannot be served; carries the CIP status to reply with."""

    def __init__(self, status: int, additional: tuple[int, ...] = (), why: str = "") -> None:
        super().__init__(why or f"status 0x{status:02X}")
        self.status = status
        self.additional = additional
        self.why = why


def path_not_found(why: str) -> PathError:
    return PathError(GeneralStatus.PATH_SEGMENT_ERROR, (0,), why)


def no_destination(why: str) -> PathError:
    return PathError(GeneralStatus.PATH_DESTINATION_UNKNOWN, (0,), why)


def logix_error(ext: int, why: str) -> PathError:
    return PathError(GeneralStatus.GENERAL_ERROR, (ext,), why)


_DWORD = AtomicType(DataTypeCode.DWORD)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a path lands in a tag image.

    ``element`` is the type of one element the tag services count in (BOOL arrays count
    DWORDs, as Logix and pycomm3 do); ``available`` elements follow ``offset`` (the rest of the
    array when the path named an element, the whole array when it named the array, else 1).
    ``bit`` is set for a BOOL member aliasing a bit of a hidden host byte.
    """

    offset: int
    element: LogixType
    available: int = 1
    bit: int | None = None

    @property
    def element_size(self) -> int:
        return 1 if self.bit is not None else byte_size(self.element)


def _array_elements(t: ArrayType) -> tuple[LogixType, int]:
    if t.is_bool_array:
        return _DWORD, t.dims[0] // 32
    return t.element, t.count


def _flat_index(t: ArrayType, indices: tuple[int, ...], where: str) -> int:
    dims = (t.dims[0] // 32,) if t.is_bool_array else t.dims
    if len(indices) != len(dims):
        raise path_not_found(f"{where}: {len(indices)} indices for a {len(dims)}-dimensional array")
    flat = 0
    for i, d in zip(indices, dims):
        if not 0 <= i < d:
            raise no_destination(f"{where}: index {i} outside 0..{d - 1}")
        flat = flat * d + i
    return flat


def locate(t: LogixType, selectors: Sequence[Selector], where: str = "tag") -> Location:
    """Resolve member names and element indices against type ``t`` (offset 0 = tag start).

    Raises PathError (0x04 unknown member / wrong number of indices, 0x05 index out of range).
    Member names compare case-insensitively, as Logix does.
    """
    offset = 0
    current: LogixType = t
    available = 1
    bit: int | None = None
    indexed = False
    for sel in selectors:
        if bit is not None:
            raise path_not_found(f"{where}: a BOOL member has no members or elements")
        if isinstance(sel, tuple):
            if not isinstance(current, ArrayType) or indexed:
                raise path_not_found(f"{where}: [{','.join(map(str, sel))}] on a non-array")
            elem, count = _array_elements(current)
            flat = _flat_index(current, sel, where)
            offset += flat * byte_size(elem)
            available = count - flat
            current = elem
            indexed = True
            where = f"{where}[{','.join(map(str, sel))}]"
            continue
        if isinstance(current, ArrayType) or not isinstance(current, StructType):
            raise path_not_found(f"{where}: .{sel} on a value that has no members")
        for m in current.members:
            if m.name.lower() == sel.lower() and not m.hidden:
                break
        else:
            raise path_not_found(f"{where}: no member {sel!r} in {current.name}")
        offset += m.offset
        current = m.type
        bit = m.bit
        available = 1
        indexed = False
        where = f"{where}.{m.name}"
    if isinstance(current, ArrayType) and not indexed:
        elem, count = _array_elements(current)
        return Location(offset, elem, count)
    return Location(offset, current, available, bit)

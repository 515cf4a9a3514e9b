"""Logix data types: the type model, sizes, type words.

Owns everything about *what the bytes of a Logix tag mean*, with no I/O:

* ``DataTypeCode`` — the atomic type codes (protocol.md 9.1) and their sizes;
* the type model ``AtomicType`` / ``ArrayType`` / ``StructType`` (+ ``Member``), with
  ``StructType.build`` laying out a UDT the way Logix does (rules below);
* ``byte_size``, ``tag_bytes``, ``produced_connection_size`` (protocol.md 7.3, 9.4);
* the 16-bit symbol type word (protocol.md 9.2) and the Read Tag reply type header
  (protocol.md 10.2 row 10).

The Symbol and Template *objects* (class 0x6B / 0x6C services) live in ``logix_objects``; the
compiled decoders and encoders of tag images in ``logix_codec``.

UDT layout rules implemented by ``StructType.build``
------------------------------------------------------
Source: Rockwell 1756-RM100F "Standard Application Conversion" (memory map tables 15-17: BOOLs
packed into a hidden SINT, REAL[3] starting at the next 4-byte boundary, an INT followed by two
pad bytes, LINT at an 8-byte boundary, structure size padded to a multiple of 8 when it holds an
8-byte member) and 1756-RM010C p.55 ("align LINT members and 8-byte UDTs on 8-byte boundaries";
"UDTs with status start with a 4-byte element"), plus the ASCIISTRING82 size of 88 bytes
(protocol.md 9.1). These are the v27+ rules; projects of v26 and earlier did not 8-byte-align.

* every atomic member is aligned to its own size (SINT/USINT/BYTE 1, INT 2, DINT/REAL 4,
  LINT/LREAL/ULINT/LWORD 8); arrays align like their element; BOOL arrays (DWORDs) to 4;
* consecutive BOOL members share one hidden SINT host (``ZZZZZZZZZZ<udt><n>``), bits 0..7;
  a ninth BOOL, or a BOOL after any other member, opens a new host;
* nested structures align to 4, or to 8 if they contain an 8-byte member (at any depth);
* the structure size is rounded up to its alignment (4, or 8 as above); never 0.

CONNECTION_STATUS
-----------------
protocol.md 7.2 / 11.2 leave its layout open. When a template reports members ``RunMode`` and
``ConnectionFaulted`` their offsets/bits are used as reported (the generic struct decoder does
that). ``CONNECTION_STATUS`` below, and any template of that name that does not expose those two
members, use the ASSUMED layout: 4 bytes (RM010C p.55 calls the status element "4-byte"),
RunMode = bit 0 and ConnectionFaulted = bit 1 of byte 0. One third-party Logix-compatible IDE
(ICS Studio predefined types, found by code search) instead declares 8 bytes with
ConnectionFaulted at byte 1 bit 0 — unverified either way; check against a real template.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.errors import MalformedPacket, UsageError

# ---------------------------------------------------------------------------------------------
# Atomic type codes (protocol.md 9.1)
# ---------------------------------------------------------------------------------------------


class DataTypeCode(IntEnum):
    """CIP elementary data type codes as Logix uses them (protocol.md 9.1)."""

    BOOL = 0xC1
    SINT = 0xC2
    INT = 0xC3
    DINT = 0xC4
    LINT = 0xC5
    USINT = 0xC6
    UINT = 0xC7
    UDINT = 0xC8
    ULINT = 0xC9
    REAL = 0xCA
    LREAL = 0xCB
    STIME = 0xCC
    DATE = 0xCD
    TIME_OF_DAY = 0xCE
    DATE_AND_TIME = 0xCF
    STRING = 0xD0  # CIP STRING (UINT length + chars), variable size: not a tag member type
    BYTE = 0xD1
    WORD = 0xD2
    DWORD = 0xD3
    LWORD = 0xD4
    SHORT_STRING = 0xDA  # USINT length + chars, variable size: not a tag member type

    @property
    def size(self) -> int | None:
        """Bytes of one value; None for the variable-length CIP string codes."""
        return ATOMIC_FORMATS[self][1] if self in ATOMIC_FORMATS else None


# code -> (struct format char, size). BOOL is a byte (0 = False) when it is a whole tag;
# DATE_AND_TIME is carried as one unsigned 64-bit integer.
ATOMIC_FORMATS: dict[int, tuple[str, int]] = {
    DataTypeCode.BOOL: ("B", 1),
    DataTypeCode.SINT: ("b", 1),
    DataTypeCode.INT: ("h", 2),
    DataTypeCode.DINT: ("i", 4),
    DataTypeCode.LINT: ("q", 8),
    DataTypeCode.USINT: ("B", 1),
    DataTypeCode.UINT: ("H", 2),
    DataTypeCode.UDINT: ("I", 4),
    DataTypeCode.ULINT: ("Q", 8),
    DataTypeCode.REAL: ("f", 4),
    DataTypeCode.LREAL: ("d", 8),
    DataTypeCode.STIME: ("i", 4),
    DataTypeCode.DATE: ("H", 2),
    DataTypeCode.TIME_OF_DAY: ("I", 4),
    DataTypeCode.DATE_AND_TIME: ("Q", 8),
    DataTypeCode.BYTE: ("B", 1),
    DataTypeCode.WORD: ("H", 2),
    DataTypeCode.DWORD: ("I", 4),
    DataTypeCode.LWORD: ("Q", 8),
}


# Standard (non-safety) produced tags carry at most 500 bytes (protocol.md 7.3).
PRODUCED_TAG_MAX_BYTES = 500
# The 16-bit CIP sequence count in front of class-1 data counts toward the size (protocol.md 6.2).
SEQUENCE_COUNT_BYTES = 2

HIDDEN_HOST_PREFIX = "ZZZZZZZZZZ"
PRIVATE_PREFIX = "__"


# ---------------------------------------------------------------------------------------------
# Type model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AtomicType:
    """One elementary value (fixed-size codes only)."""

    code: DataTypeCode

    def __post_init__(self) -> None:
        if self.code not in ATOMIC_FORMATS:
            raise UsageError(
                f"{DataTypeCode(self.code).name} has no fixed size and cannot be a tag type"
            )

    @property
    def name(self) -> str:
        return self.code.name

    @property
    def size(self) -> int:
        return ATOMIC_FORMATS[self.code][1]


@dataclass(frozen=True, slots=True)
class ArrayType:
    """An array of 1 to 3 dimensions of an atomic or structure element.

    BOOL arrays are one-dimensional, a multiple of 32 long, and stored as DWORDs
    (protocol.md 9.1); ``dims`` counts bits for them, not DWORDs.
    """

    element: AtomicType | StructType
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.dims) <= 3 or any(d < 1 for d in self.dims):
            raise UsageError(f"array dims {self.dims!r}: give 1 to 3 dimensions, each >= 1")
        if self.is_bool_array and (len(self.dims) != 1 or self.dims[0] % 32):
            raise UsageError(
                f"BOOL array dims {self.dims!r}: Logix BOOL arrays are one-dimensional "
                "and a multiple of 32 long (they are stored as DWORDs)"
            )

    @property
    def count(self) -> int:
        return math.prod(self.dims)

    @property
    def is_bool_array(self) -> bool:
        return isinstance(self.element, AtomicType) and self.element.code == DataTypeCode.BOOL

    @property
    def name(self) -> str:
        return f"{self.element.name}[{','.join(str(d) for d in self.dims)}]"


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a structure, as a template lists it.

    ``bit`` is set for BOOL members that alias a bit of a host member at ``offset`` (bit number
    counted from that byte; Logix uses 0..7 in SINT hosts, predefined types up to 31 in DINTs).
    ``hidden`` members (BOOL hosts ``ZZZZZZZZZZ...``, ``__...`` private members, unnamed ones)
    are laid out but never appear in decoded values.
    """

    name: str
    type: LogixType
    offset: int
    bit: int | None = None
    hidden: bool = False

    @property
    def dims(self) -> tuple[int, ...]:
        return self.type.dims if isinstance(self.type, ArrayType) else ()


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}\Z")



@dataclass(frozen=True, slots=True)
class StructType:
    """A UDT or predefined structure: template instance id, structure handle, size, members."""

    name: str
    instance_id: int
    handle: int
    size: int
    members: tuple[Member, ...] = field(default=())

    @property
    def visible_members(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.hidden)

    @property
    def string_capacity(self) -> int | None:
        """n if this is string-like (visible ``LEN`` DINT + ``DATA`` SINT[n]), else None."""
        vis = self.visible_members
        if len(vis) != 2 or [m.name for m in vis] != ["LEN", "DATA"]:
            return None
        length, data = vis
        if length.type != AtomicType(DataTypeCode.DINT) or length.bit is not None:
            return None
        t = data.type
        if (
            isinstance(t, ArrayType)
            and len(t.dims) == 1
            and t.element == AtomicType(DataTypeCode.SINT)
        ):
            return t.dims[0]
        return None

    @property
    def alignment(self) -> int:
        """4, or 8 when any member (at any depth) is an 8-byte value (RM010C p.55)."""
        return max([4] + [alignment(m.type) for m in self.members])

    @classmethod
    def build(
        cls,
        name: str,
        members: Sequence[MemberSpec],
        *,
        types: Mapping[str, StructType] | None = None,
        instance_id: int | None = None,
        handle: int | None = None,
    ) -> StructType:
        """Lay out a UDT from ``(member_name, type_or_name[, dims])`` with Logix rules.

        ``type_or_name`` is a type object, an atomic code name (``"DINT"``), ``"STRING"`` or a
        name found in ``types``. ``dims`` is an int (array length) or a sequence; UDT members
        may only be one-dimensional arrays. ``instance_id`` (template instance, 0x100..0xEFF for
        user types) and ``handle`` default to values derived from a CRC of the layout, so the
        same declaration always gets the same ids; give them explicitly to avoid collisions.
        """
        if not _NAME_RE.match(name):
            raise UsageError(f"UDT name {name!r}: use 1-40 letters, digits or _, not starting "
                             "with a digit")
        if not members:
            raise UsageError(f"UDT {name}: declare at least one member")
        out: list[Member] = []
        seen: set[str] = set()
        offset = 0
        host_offset = -1
        next_bit = 8  # forces a new host for the first BOOL
        hosts = 0
        for spec in members:
            mname, t, dims = _member_spec(name, spec, seen, types)
            if dims == () and t == AtomicType(DataTypeCode.BOOL):
                if next_bit >= 8:
                    host_offset = offset
                    out.append(Member(f"{HIDDEN_HOST_PREFIX}{name}{hosts}",
                                      AtomicType(DataTypeCode.SINT), offset, hidden=True))
                    hosts += 1
                    offset += 1
                    next_bit = 0
                out.append(Member(mname, t, host_offset, bit=next_bit))
                next_bit += 1
                continue
            next_bit = 8
            full: LogixType = ArrayType(t, dims) if dims else t
            offset = _round_up(offset, alignment(full))
            out.append(Member(mname, full, offset, hidden=mname.startswith(PRIVATE_PREFIX)))
            offset += byte_size(full)
        align = max([4] + [alignment(m.type) for m in out])
        size = _round_up(offset, align)
        members_t = tuple(out)
        crc = zlib.crc32(repr((name, size, members_t)).encode())
        if instance_id is None:
            instance_id = 0x100 + crc % 0xE00
        if handle is None:
            handle = (crc >> 12) & 0xFFFF
        if not 0 < instance_id <= 0xFFF:
            raise UsageError(f"UDT {name}: template instance id {instance_id} must be 1..0xFFF "
                             "(it lives in 12 bits of the symbol type word)")
        if not 0 <= handle <= 0xFFFF:
            raise UsageError(f"UDT {name}: structure handle {handle} must fit in 16 bits")
        return cls(name, instance_id, handle, size, members_t)


LogixType = AtomicType | ArrayType | StructType
# ``StructType.build`` member declarations: (name, type_or_name) or (name, type_or_name, dims).
MemberSpec = (
    tuple[str, LogixType | str] | tuple[str, LogixType | str, int | Sequence[int] | None]
)


def _member_spec(udt: str, spec: MemberSpec, seen: set[str],
                 types: Mapping[str, StructType] | None,
                 ) -> tuple[str, AtomicType | StructType, tuple[int, ...]]:
    """One ``StructType.build`` member declaration checked: (name, element type, dims)."""
    if len(spec) == 2:
        mname, mtype = spec
        mdims: int | Sequence[int] | None = None
    elif len(spec) == 3:
        mname, mtype, mdims = spec
    else:
        raise UsageError(f"UDT {udt}: member spec {spec!r} is not (name, type[, dims])")
    if not isinstance(mname, str) or not _NAME_RE.match(mname):
        raise UsageError(f"UDT {udt}: member name {mname!r} is not a Logix identifier")
    if mname.upper() in seen:
        raise UsageError(f"UDT {udt}: member {mname!r} declared twice")
    seen.add(mname.upper())
    t = resolve_type(mtype, types, context=f"UDT {udt} member {mname}")
    dims = _normalize_dims(mdims, context=f"UDT {udt} member {mname}")
    if len(dims) > 1:
        raise UsageError(f"UDT {udt} member {mname}: UDT members can only be "
                         "one-dimensional arrays")
    if isinstance(t, ArrayType):
        if dims:
            raise UsageError(f"UDT {udt} member {mname}: give dims once")
        return mname, t.element, t.dims
    return mname, t, dims



def resolve_type(
    spec: LogixType | str,
    types: Mapping[str, StructType] | None = None,
    *,
    context: str = "type",
) -> LogixType:
    """A type object, an atomic code name, ``STRING``, ``CONNECTION_STATUS`` or a UDT name."""
    if isinstance(spec, (AtomicType, ArrayType, StructType)):
        return spec
    if isinstance(spec, str):
        if types and spec in types:
            return types[spec]
        key = spec.upper()
        if key == "STRING":
            return STRING
        if key == "CONNECTION_STATUS":
            return CONNECTION_STATUS
        if key in DataTypeCode.__members__ and DataTypeCode[key] in ATOMIC_FORMATS:
            return AtomicType(DataTypeCode[key])
    known = sorted(n for n, c in DataTypeCode.__members__.items() if c in ATOMIC_FORMATS)
    raise UsageError(
        f"{context}: unknown type {spec!r}; use one of {', '.join(known)}, STRING, "
        f"CONNECTION_STATUS{', ' + ', '.join(sorted(types)) if types else ''} or declare the UDT "
        "before using it"
    )


#: A type as text: ``NAME`` or ``NAME[d1]`` / ``NAME[d1,d2]`` / ``NAME[d1,d2,d3]``.
TYPE_TEXT_RE = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*(\d+(?:\s*,\s*\d+){0,2})\s*\])?\s*\Z")


def parse_type(spec: str, types: Mapping[str, StructType]) -> LogixType:
    """``DINT``, ``DINT[10]``, ``INT[2,3]``, ``STRING``, ``<UDT>[n]`` -> a type object (the
    simulator's tag files and the ``[[produce]]`` entries of a config write types so)."""
    m = TYPE_TEXT_RE.match(spec) if isinstance(spec, str) else None
    if m is None:
        raise UsageError(f"type {spec!r}: write NAME or NAME[d1] / NAME[d1,d2] / NAME[d1,d2,d3]")
    name = m.group(1)
    if name.upper() in DataTypeCode.__members__ or name.upper() == "STRING":
        name = name.upper()
    base = resolve_type(name, types, context=f"type {spec!r}")
    if m.group(2) is None:
        return base
    dims = tuple(int(d) for d in m.group(2).split(","))
    assert not isinstance(base, ArrayType)
    return ArrayType(base, dims)


def _normalize_dims(dims: int | Sequence[int] | None, *, context: str) -> tuple[int, ...]:
    if dims is None or dims == 0:
        return ()
    if isinstance(dims, int):
        dims = (dims,)
    out = tuple(int(d) for d in dims if d != 0)
    if any(d < 0 for d in out) or len(out) > 3:
        raise UsageError(f"{context}: dims {dims!r} must be up to 3 positive integers")
    return out


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


def alignment(t: LogixType) -> int:
    """Alignment of a member of this type inside a UDT (module docstring)."""
    if isinstance(t, AtomicType):
        return t.size
    if isinstance(t, ArrayType):
        return 4 if t.is_bool_array else alignment(t.element)
    return t.alignment


def byte_size(t: LogixType) -> int:
    """Bytes of the tag image of one value of ``t``."""
    if isinstance(t, AtomicType):
        return t.size
    if isinstance(t, ArrayType):
        if t.is_bool_array:
            return t.dims[0] // 8
        return byte_size(t.element) * t.count
    return t.size


BOOL = AtomicType(DataTypeCode.BOOL)
SINT = AtomicType(DataTypeCode.SINT)
INT = AtomicType(DataTypeCode.INT)
DINT = AtomicType(DataTypeCode.DINT)
LINT = AtomicType(DataTypeCode.LINT)
REAL = AtomicType(DataTypeCode.REAL)
LREAL = AtomicType(DataTypeCode.LREAL)

# Logix STRING: template "ASCIISTRING82", DINT LEN + SINT[82] DATA, 88 bytes (protocol.md 9.1).
# 0x0FCE is the template id / handle commonly seen for STRING (symbol type 0x8FCE) 🔶.
STRING = StructType.build("STRING", [("LEN", "DINT"), ("DATA", "SINT", 82)],
                          instance_id=0x0FCE, handle=0x0FCE)

# Assumed layout, see the module docstring. Ids are placeholders in the predefined range
# (outside 0x100..0xEFF, as pycomm3 expects for predefined types) for the simulator.
CONNECTION_STATUS = StructType.build(
    "CONNECTION_STATUS", [("RunMode", "BOOL"), ("ConnectionFaulted", "BOOL")],
    instance_id=0x0FC0, handle=0x0FC0,
)
CONNECTION_STATUS_FLAGS = ("RunMode", "ConnectionFaulted")

# Template names the controller uses for predefined types we expose under another name.
TEMPLATE_NAME_ALIASES = {"ASCIISTRING82": "STRING"}


def tag_bytes(element_size: int, dims: Sequence[int] = ()) -> int:
    """Tag image size from one element's size and the used dimensions (protocol.md 9.4)."""
    if element_size < 0 or any(d < 0 for d in dims):
        raise UsageError(f"element size {element_size} / dims {tuple(dims)} must be >= 0")
    return element_size * math.prod(d for d in dims if d)


def produced_connection_size(tag_size: int, *, limit: int = PRODUCED_TAG_MAX_BYTES) -> int:
    """T->O connection size for a produced tag of ``tag_size`` bytes: tag bytes + 2.

    Raises UsageError when the tag is larger than a standard produced tag may be (500 bytes,
    protocol.md 7.3) or empty.
    """
    if tag_size <= 0:
        raise UsageError(f"produced tag size {tag_size} bytes: a produced tag holds at least "
                         "one byte; check the tag's type and dimensions")
    if tag_size > limit:
        raise UsageError(
            f"produced tag is {tag_size} bytes but Logix limits standard produced tags to "
            f"{limit} bytes (README: Configuring the produced tag in Studio 5000): split the"
            " data into several produced tags"
        )
    return tag_size + SEQUENCE_COUNT_BYTES


# ---------------------------------------------------------------------------------------------
# Symbol type word (protocol.md 9.2, attribute 2 of the Symbol object)
# ---------------------------------------------------------------------------------------------
#
# | bits  | meaning                                                     |
# |-------|-------------------------------------------------------------|
# | 15    | 1 = structure, 0 = atomic                                   |
# | 14-13 | number of array dimensions (0-3)                            |
# | 12    | system / reserved flag (pycomm3 skips such symbols)         |
# | 11-0  | structure: template instance id                            |
# | 10-8  | atomic BOOL: bit position                                   |
# | 7-0   | atomic: type code (protocol.md 9.1)                         |

_STRUCT_BIT = 0x8000
_DIMS_SHIFT = 13
_SYSTEM_BIT = 0x1000


@dataclass(frozen=True, slots=True)
class SymbolType:
    """The decoded 16-bit symbol type word. ``code`` is a raw int: unknown codes are values."""

    is_struct: bool
    dims: int = 0
    system: bool = False
    template_id: int = 0  # structures only
    code: int = 0  # atomic only
    bit: int = 0  # atomic BOOL only

    @classmethod
    def decode(cls, word: int) -> SymbolType:
        if not 0 <= word <= 0xFFFF:
            raise MalformedPacket(f"a 16-bit symbol type word, got {word}")
        is_struct = bool(word & _STRUCT_BIT)
        dims = (word >> _DIMS_SHIFT) & 3
        system = bool(word & _SYSTEM_BIT)
        if is_struct:
            return cls(True, dims, system, template_id=word & 0x0FFF)
        code = word & 0xFF
        bit = (word >> 8) & 7 if code == DataTypeCode.BOOL else 0
        return cls(False, dims, system, code=code, bit=bit)

    def encode(self) -> int:
        if not 0 <= self.dims <= 3:
            raise UsageError(f"symbol type: {self.dims} array dimensions, Logix allows 0..3")
        word = (self.dims << _DIMS_SHIFT) | (_SYSTEM_BIT if self.system else 0)
        if self.is_struct:
            if not 0 <= self.template_id <= 0x0FFF:
                raise UsageError(f"template id {self.template_id:#x} does not fit 12 bits")
            return word | _STRUCT_BIT | self.template_id
        if not 0 <= self.code <= 0xFF or not 0 <= self.bit <= 7:
            raise UsageError(f"atomic code {self.code:#x} / bit {self.bit} out of range")
        if self.bit and self.code != DataTypeCode.BOOL:
            raise UsageError("a bit position is only meaningful for BOOL symbols")
        return word | (self.bit << 8) | self.code

    @classmethod
    def for_type(cls, t: LogixType, *, system: bool = False, bit: int = 0) -> SymbolType:
        """The type word a controller reports for a tag of type ``t``.

        BOOL arrays are reported as one-dimensional DWORD arrays (protocol.md 9.1).
        """
        dims = 0
        if isinstance(t, ArrayType):
            dims = len(t.dims)
            if t.is_bool_array:
                return cls(False, 1, system, code=DataTypeCode.DWORD)
            elem: AtomicType | StructType = t.element
        else:
            elem = t
        if isinstance(elem, StructType):
            return cls(True, dims, system, template_id=elem.instance_id)
        return cls(
            False, dims, system, code=elem.code, bit=bit if elem.code == DataTypeCode.BOOL else 0
        )


def symbol_dims(t: LogixType) -> tuple[int, int, int]:
    """Attribute 8 (3 x UDINT) for a tag of type ``t``; BOOL arrays count DWORDs."""
    if not isinstance(t, ArrayType):
        return (0, 0, 0)
    dims = (t.dims[0] // 32,) if t.is_bool_array else t.dims
    return (tuple(dims) + (0, 0, 0))[:3]  # type: ignore[return-value]


def element_size(t: LogixType) -> int:
    """Attribute 7: bytes of one element (a DWORD for BOOL arrays)."""
    if isinstance(t, ArrayType):
        return 4 if t.is_bool_array else byte_size(t.element)
    return byte_size(t)


# ---------------------------------------------------------------------------------------------
# Read Tag reply type header (protocol.md 9.1 last row, 10.2 row 10)
# ---------------------------------------------------------------------------------------------
#
# | offset | size | field                                                     |
# |--------|------|-----------------------------------------------------------|
# | 0      | 2    | UINT atomic type code, or 0x02A0 (bytes A0 02) = structure |
# | 2      | 2    | UINT structure handle (template attribute 1), structures only |

STRUCTURE_TYPE_TAG = 0x02A0
_U16 = struct.Struct("<H")
_STRUCT_HEADER = struct.Struct("<HH")


@dataclass(frozen=True, slots=True)
class ReadTagType:
    """Type header of a Read Tag reply: atomic ``code`` or structure ``handle``."""

    code: int  # atomic code, or STRUCTURE_TYPE_TAG
    handle: int | None = None

    @property
    def is_struct(self) -> bool:
        return self.code == STRUCTURE_TYPE_TAG

    def encode(self) -> bytes:
        if self.is_struct:
            if self.handle is None or not 0 <= self.handle <= 0xFFFF:
                raise UsageError("a structure Read Tag header needs a 16-bit structure handle")
            return _STRUCT_HEADER.pack(STRUCTURE_TYPE_TAG, self.handle)
        if self.handle is not None:
            raise UsageError("an atomic Read Tag header carries no structure handle")
        if not 0 <= self.code <= 0xFFFF:
            raise UsageError(f"type code {self.code} does not fit 16 bits")
        return _U16.pack(self.code)

    @classmethod
    def for_type(cls, t: LogixType) -> ReadTagType:
        if isinstance(t, ArrayType):
            if t.is_bool_array:
                return cls(DataTypeCode.DWORD)
            elem: AtomicType | StructType = t.element
        else:
            elem = t
        if isinstance(elem, StructType):
            return cls(STRUCTURE_TYPE_TAG, elem.handle)
        return cls(elem.code)

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> tuple[ReadTagType, int]:
        """Parse the header at ``offset``; returns it and the offset of the tag data."""
        r = Reader(data, offset, context="Read Tag reply type")
        code = r.u16("type code")
        if code == STRUCTURE_TYPE_TAG:
            return cls(code, r.u16("structure handle")), r.pos
        return cls(code), r.pos

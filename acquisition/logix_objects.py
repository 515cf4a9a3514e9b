"""Logix Symbol (0x6B) and Template (0x6C) object payloads, both directions.

Implements protocol.md 9.2 (Symbol object Get_Instance_Attribute_List), 9.3 (Template object
Get_Attribute_List and Read of the definition), 9.4 (a tag's full type and byte size) and the
payload halves of 10.2 rows 6-9 / 10.3. Only the *service data* lives here (after the CIP
service/path, before nothing): message-router framing and EPATHs belong to other modules.
Encoders exist because the simulator answers pycomm3 with exactly these bytes; parsers are what
our own tag browser uses.

Bytes accepted by pycomm3 are the reference (tests feed our encodings to pycomm3's own parsers):
``LogixDriver._parse_instance_attribute_list``, ``StructTemplateAttributes``,
``LogixDriver._parse_template_data``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_types import (
    HIDDEN_HOST_PREFIX,
    PRIVATE_PREFIX,
    TEMPLATE_NAME_ALIASES,
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    Member,
    StructType,
    SymbolType,
    byte_size,
    element_size,
    symbol_dims,
)

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

# ---------------------------------------------------------------------------------------------
# Symbol object: Get_Instance_Attribute_List (0x55), protocol.md 9.2
# ---------------------------------------------------------------------------------------------
#
# Request data:
# | offset | size | field                                  |
# |--------|------|----------------------------------------|
# | 0      | 2    | UINT attribute count n                 |
# | 2      | 2n   | UINT attribute ids, in reply order     |
#
# Reply data (general status 0x00 = done, 0x06 = more: ask again from last instance + 1):
# per instance, UDINT instance id then each requested attribute's value in request order
# (no ids, no per-attribute status), with widths:
# | attr | width                 | meaning                                         |
# |------|-----------------------|-------------------------------------------------|
# | 1    | UINT len + len chars  | symbol name                                     |
# | 2    | UINT                  | symbol type word (logix_types.SymbolType)       |
# | 3    | UDINT                 | symbol address                                  |
# | 5    | UDINT                 | symbol object address                           |
# | 6    | UDINT                 | software control (bit 26 set = base tag)        |
# | 7    | UINT                  | bytes of one element                            |
# | 8    | 3 x UDINT             | array dimensions (0 = unused)                   |
# | 10   | USINT                 | external access (0 R/W, 2 read-only, 3 none)    |


class SymbolAttribute(IntEnum):
    """Symbol object (class 0x6B) instance attributes (protocol.md 9.2)."""

    NAME = 1
    TYPE = 2
    ADDRESS = 3
    OBJECT_ADDRESS = 5
    SOFTWARE_CONTROL = 6
    ELEMENT_SIZE = 7
    DIMENSIONS = 8
    EXTERNAL_ACCESS = 10


class ExternalAccess(IntEnum):
    READ_WRITE = 0
    READ_ONLY = 2
    NONE = 3


# What pycomm3 asks for (plus 10 from firmware 18) and what libplctag asks for (protocol.md 9.2).
PYCOMM3_SYMBOL_ATTRIBUTES = (1, 2, 3, 5, 6, 8, 10)
LIBPLCTAG_SYMBOL_ATTRIBUTES = (2, 7, 8, 1)

BASE_TAG_BIT = 1 << 26  # software control: set = base tag, clear = alias (pycomm3)

_SYMBOL_FIELDS = {
    SymbolAttribute.NAME: "name",
    SymbolAttribute.TYPE: "type_word",
    SymbolAttribute.ADDRESS: "address",
    SymbolAttribute.OBJECT_ADDRESS: "object_address",
    SymbolAttribute.SOFTWARE_CONTROL: "software_control",
    SymbolAttribute.ELEMENT_SIZE: "element_size",
    SymbolAttribute.DIMENSIONS: "dims",
    SymbolAttribute.EXTERNAL_ACCESS: "external_access",
}


def encode_attribute_ids(attrs: Sequence[int]) -> bytes:
    """Request data of Get_Instance_Attribute_List / Get_Attribute_List: count + ids."""
    if not attrs or len(attrs) > 0xFFFF or any(not 0 <= a <= 0xFFFF for a in attrs):
        raise UsageError(f"attribute ids {tuple(attrs)!r}: give 1..65535 ids of 16 bits each")
    return _U16.pack(len(attrs)) + b"".join(_U16.pack(a) for a in attrs)


def parse_attribute_ids(data: bytes) -> tuple[int, ...]:
    """Inverse of ``encode_attribute_ids``; ids are returned as plain ints (unknown ids too)."""
    r = Reader(data, context="attribute id list")
    count = r.u16("attribute count")
    ids = tuple(r.u16(f"attribute id {i + 1} of {count}") for i in range(count))
    r.expect_end("attribute id list")
    return ids


def _check_symbol_attrs(attrs: Sequence[int]) -> None:
    unknown = [a for a in attrs if a not in _SYMBOL_FIELDS]
    if unknown:
        raise UsageError(
            f"symbol attribute(s) {unknown} not supported: their widths are unknown "
            f"(supported: {', '.join(str(int(a)) for a in _SYMBOL_FIELDS)})"
        )


@dataclass(frozen=True, slots=True)
class SymbolInstance:
    """One Symbol object instance as listed by 0x55; attributes not requested are None."""

    instance_id: int
    name: str | None = None
    type_word: int | None = None
    address: int | None = None
    object_address: int | None = None
    software_control: int | None = None
    element_size: int | None = None
    dims: tuple[int, int, int] | None = None
    external_access: int | None = None

    @property
    def symbol_type(self) -> SymbolType:
        if self.type_word is None:
            raise UsageError(f"symbol {self.name!r}: attribute 2 (type) was not requested")
        return SymbolType.decode(self.type_word)

    @property
    def is_user_tag(self) -> bool:
        """Controller/program data tag, as pycomm3 filters them (protocol.md 9.2 attr 1)."""
        name = self.name or ""
        return not (
            ":" in name
            or name.startswith(PRIVATE_PREFIX)
            or (self.type_word is not None and self.symbol_type.system)
        )

    @classmethod
    def for_tag(
        cls,
        instance_id: int,
        name: str,
        t: LogixType,
        *,
        address: int = 0,
        object_address: int = 0,
        software_control: int = BASE_TAG_BIT,
        external_access: int = ExternalAccess.READ_WRITE,
        system: bool = False,
    ) -> SymbolInstance:
        """All attributes of a tag of type ``t`` as a controller would report them."""
        return cls(
            instance_id=instance_id,
            name=name,
            type_word=SymbolType.for_type(t, system=system).encode(),
            address=address,
            object_address=object_address,
            software_control=software_control,
            element_size=element_size(t),
            dims=symbol_dims(t),
            external_access=external_access,
        )


def encode_symbol_instances(instances: Iterable[SymbolInstance], attrs: Sequence[int]) -> bytes:
    """Reply data of 0x55 for ``instances``, each carrying ``attrs`` in request order."""
    _check_symbol_attrs(attrs)
    out = bytearray()
    for inst in instances:
        if not 0 <= inst.instance_id <= 0xFFFFFFFF:
            raise UsageError(f"symbol instance id {inst.instance_id} does not fit a UDINT")
        out += _U32.pack(inst.instance_id)
        for a in attrs:
            field_name = _SYMBOL_FIELDS[SymbolAttribute(a)]
            value = getattr(inst, field_name)
            if value is None:
                raise UsageError(
                    f"symbol instance {inst.instance_id} ({inst.name!r}) has no {field_name} "
                    f"but attribute {a} was requested: fill it in (SymbolInstance.for_tag does)"
                )
            try:
                out += _encode_symbol_value(a, value)
            except (struct.error, UnicodeEncodeError):
                raise UsageError(
                    f"symbol instance {inst.instance_id}: {field_name}={value!r} does not fit "
                    f"attribute {a}"
                ) from None
    return bytes(out)


def _encode_symbol_value(attr: int, value: object) -> bytes:
    if attr == SymbolAttribute.NAME:
        assert isinstance(value, str)
        raw = value.encode("ascii")
        return _U16.pack(len(raw)) + raw
    if attr in (SymbolAttribute.TYPE, SymbolAttribute.ELEMENT_SIZE):
        return _U16.pack(value)
    if attr == SymbolAttribute.DIMENSIONS:
        assert isinstance(value, tuple)
        return struct.pack("<3I", *value)
    if attr == SymbolAttribute.EXTERNAL_ACCESS:
        return struct.pack("<B", value)
    return _U32.pack(value)


def parse_symbol_instances(data: bytes, attrs: Sequence[int]) -> tuple[SymbolInstance, ...]:
    """Parse 0x55 reply data listing instances with ``attrs`` (those of the request)."""
    _check_symbol_attrs(attrs)
    r = Reader(data, context="symbol instance list")
    out: list[SymbolInstance] = []
    while r.remaining():
        fields: dict[str, object] = {"instance_id": r.u32("symbol instance id")}
        for a in attrs:
            key = _SYMBOL_FIELDS[SymbolAttribute(a)]
            if a == SymbolAttribute.NAME:
                n = r.u16("symbol name length")
                fields[key] = r.take(n, "symbol name").decode("latin-1")
            elif a in (SymbolAttribute.TYPE, SymbolAttribute.ELEMENT_SIZE):
                fields[key] = r.u16(key)
            elif a == SymbolAttribute.DIMENSIONS:
                fields[key] = (r.u32("dim 1"), r.u32("dim 2"), r.u32("dim 3"))
            elif a == SymbolAttribute.EXTERNAL_ACCESS:
                fields[key] = r.u8(key)
            else:
                fields[key] = r.u32(key)
        out.append(SymbolInstance(**fields))  # type: ignore[arg-type]
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Get_Attribute_List (0x03) / Set_Attribute_List (0x04) data, CIP Vol 1
# ---------------------------------------------------------------------------------------------
#
# | data                         | layout                                                    |
# |------------------------------|-----------------------------------------------------------|
# | Get_Attribute_List request   | UINT count, count x UINT id (encode_attribute_ids)        |
# | Get_Attribute_List reply     | UINT count, per attribute UINT id, UINT status, value     |
# | Set_Attribute_List request   | UINT count, per attribute UINT id, value                  |
# | Set_Attribute_List reply     | UINT count, per attribute UINT id, UINT status            |
#
# A value follows only a status of 0; its width is the attribute's, known to both sides (the
# lists carry no sizes), so the parsers take a table of widths.

_ENTRY_HEAD = struct.Struct("<HH")


def encode_attribute_list(entries: Sequence[tuple[int, int, bytes]]) -> bytes:
    """Get_Attribute_List reply data from (id, status, value) entries (the value is left out
    when the status is not 0)."""
    out = bytearray(_U16.pack(len(entries)))
    for attr, status, value in entries:
        out += _ENTRY_HEAD.pack(attr, status)
        if status == 0:
            out += value
    return bytes(out)


def parse_attribute_list(data: bytes, widths: Mapping[int, int],
                         context: str = "Get_Attribute_List reply") -> tuple[
                             tuple[int, int, bytes], ...]:
    """Inverse of ``encode_attribute_list``: (id, status, value) with the value's width from
    ``widths`` (an attribute of unknown width with status 0 cannot be delimited: malformed)."""
    r = Reader(data, context=context)
    count = r.u16("attribute count")
    out = []
    for _ in range(count):
        attr, status = r.unpack(_ENTRY_HEAD, "attribute id and status")
        value = b""
        if status == 0:
            width = widths.get(attr)
            if width is None:
                raise r.fail(f"an attribute of known width ({', '.join(map(str, widths))}), "
                             f"got {attr}")
            value = r.take(width, f"attribute {attr} value")
        out.append((attr, status, value))
    r.expect_end(context)
    return tuple(out)


def encode_attribute_values(entries: Sequence[tuple[int, bytes]]) -> bytes:
    """Set_Attribute_List request data from (id, value) entries."""
    out = bytearray(_U16.pack(len(entries)))
    for attr, value in entries:
        out += _U16.pack(attr) + value
    return bytes(out)


def encode_attribute_statuses(entries: Sequence[tuple[int, int]]) -> bytes:
    """Set_Attribute_List reply data from (id, status) entries."""
    return _U16.pack(len(entries)) + b"".join(_ENTRY_HEAD.pack(a, s) for a, s in entries)


def parse_attribute_statuses(data: bytes) -> tuple[tuple[int, int], ...]:
    """Inverse of ``encode_attribute_statuses``."""
    r = Reader(data, context="Set_Attribute_List reply")
    count = r.u16("attribute count")
    out = tuple(r.unpack(_ENTRY_HEAD, f"attribute {i + 1} of {count}") for i in range(count))
    r.expect_end("Set_Attribute_List reply")
    return out


# ---------------------------------------------------------------------------------------------
# Template object: Get_Attribute_List (0x03), protocol.md 9.3 step 1
# ---------------------------------------------------------------------------------------------
#
# Request data: UINT count + UINT ids (pycomm3 sends 4, 5, 2, 1, pylogix 4, 3, 2, 1) —
# encode_attribute_ids. Reply data: the Get_Attribute_List layout above, with the value widths
# of pycomm3's StructTemplateAttributes: 4 UDINT definition size in 32-bit words, 5 UDINT
# structure size in bytes, 2 UINT member count, 1 UINT structure handle; and 3 a UINT of
# undocumented meaning (pylogix reads the member count at a fixed offset that is right only
# when attribute 3 takes 2 bytes; protocol.md 9.3).


class TemplateAttribute(IntEnum):
    """Template object (class 0x6C) instance attributes (protocol.md 9.3)."""

    HANDLE = 1
    MEMBER_COUNT = 2
    UNDOCUMENTED_3 = 3
    DEFINITION_SIZE = 4
    STRUCTURE_SIZE = 5


PYCOMM3_TEMPLATE_ATTRIBUTES = (4, 5, 2, 1)
PYLOGIX_TEMPLATE_ATTRIBUTES = (4, 3, 2, 1)
_TEMPLATE_WIDTHS = {1: _U16, 2: _U16, 3: _U16, 4: _U32, 5: _U32}
TEMPLATE_ATTRIBUTE_3 = 0  # what the simulator answers for attribute 3 (value unknown)

# pycomm3 reads 4 * definition_size - 21 bytes of definition, libplctag and pylogix
# 4 * size - 23 rounded up to 4 bytes, i.e. 4 * size - 20 (protocol.md 9.3, 11.10). A Logix
# defines size = ceil((len + 23) / 4) (pylogix issue #45: 63 definition bytes, 22 words) and a
# read returns 4 * size - 20 bytes: the definition, then 3 to 6 more bytes.
TEMPLATE_DEFINITION_OVERHEAD = 23
TEMPLATE_READ_AREA_OVERHEAD = 20


@dataclass(frozen=True, slots=True)
class AttributeResult:
    """One entry of a Get_Attribute_List reply; ``value`` is None when ``status`` != 0."""

    attribute: int
    status: int
    value: int | None


@dataclass(frozen=True, slots=True)
class TemplateAttributes:
    definition_size: int  # 32-bit words (attribute 4)
    structure_size: int  # bytes of one value (attribute 5)
    member_count: int  # attribute 2
    handle: int  # attribute 1, follows A0 02 in Read Tag replies

    @classmethod
    def for_struct(cls, st: StructType) -> TemplateAttributes:
        return cls(
            definition_size_words(len(encode_template_definition(st))),
            st.size,
            len(st.members),
            st.handle,
        )

    def results(self) -> tuple[AttributeResult, ...]:
        return tuple(
            AttributeResult(a, 0, self.value(a)) for a in PYCOMM3_TEMPLATE_ATTRIBUTES
        )

    def value(self, attr: int) -> int:
        return {
            1: self.handle,
            2: self.member_count,
            3: TEMPLATE_ATTRIBUTE_3,
            4: self.definition_size,
            5: self.structure_size,
        }[attr]

    @classmethod
    def from_results(cls, results: Sequence[AttributeResult]) -> TemplateAttributes:
        """Requires attributes 1, 2, 4, 5 each with status 0 (MalformedPacket otherwise)."""
        got = {r.attribute: r for r in results}
        values: dict[int, int] = {}
        for a in (4, 5, 2, 1):
            res = got.get(a)
            if res is None or res.status != 0 or res.value is None:
                state = "missing" if res is None else f"status 0x{res.status:02X}"
                raise MalformedPacket(
                    f"template attribute {a} ({TemplateAttribute(a).name}) with status 0, "
                    f"got {state}"
                )
            values[a] = res.value
        return cls(values[4], values[5], values[2], values[1])


def definition_size_words(definition_len: int) -> int:
    """Template attribute 4 for a definition of ``definition_len`` bytes (see overhead note)."""
    return math.ceil((definition_len + TEMPLATE_DEFINITION_OVERHEAD) / 4)


def encode_attribute_results(results: Sequence[AttributeResult]) -> bytes:
    """Get_Attribute_List reply data for template attributes."""
    entries = []
    for res in results:
        value = b""
        if res.status == 0:
            st = _TEMPLATE_WIDTHS.get(res.attribute)
            if st is None or res.value is None:
                raise UsageError(f"template attribute {res.attribute}: unknown width or no "
                                 "value; supported attributes are 1, 2, 3, 4, 5")
            try:
                value = st.pack(res.value)
            except struct.error:
                raise UsageError(f"template attribute {res.attribute} value {res.value} does "
                                 f"not fit {st.size} bytes") from None
        entries.append((res.attribute, res.status, value))
    return encode_attribute_list(entries)


def parse_attribute_results(data: bytes) -> tuple[AttributeResult, ...]:
    entries = parse_attribute_list(data, {a: st.size for a, st in _TEMPLATE_WIDTHS.items()},
                                   "template Get_Attribute_List reply")
    return tuple(
        AttributeResult(attr, status,
                        _TEMPLATE_WIDTHS[attr].unpack(value)[0] if status == 0 else None)
        for attr, status, value in entries
    )


def template_read_area(definition: bytes) -> bytes:
    """What Template Reads return for a definition: the definition, then zeros up to
    4 x attribute 4 - 20 bytes (a Logix returns unspecified bytes there; pylogix and libplctag
    ask for exactly that many, protocol.md 9.3)."""
    size = 4 * definition_size_words(len(definition)) - TEMPLATE_READ_AREA_OVERHEAD
    return definition + bytes(size - len(definition))


# ---------------------------------------------------------------------------------------------
# Template object: Read (0x4C) of the definition, protocol.md 9.3 step 2-3
# ---------------------------------------------------------------------------------------------
#
# Request data: UDINT offset, UINT byte count.
# Reply data (status 0x06 while more follows): a slice of the definition, which is
# | offset  | size | field                                                          |
# |---------|------|----------------------------------------------------------------|
# | 8k      | 2    | UINT info: array length (0 = scalar) or, for BOOL, bit number   |
# | 8k + 2  | 2    | UINT type: atomic code, or 0x8000 | template id; 0x2000 = array |
# | 8k + 4  | 4    | UDINT member offset in bytes                                    |
# | 8n      | ...  | NUL-terminated strings: "<name>;n<2 letters per member>", then  |
# |         |      | each member name                                               |
#
# Predefined types may give their name as the first string without ';' (pycomm3 handles that).
# BOOL arrays are members of type DWORD whose info counts DWORDs. A Logix puts two letters per
# member after ";n" ("my_UDT;nHAEA" for a REAL then a DINT, pylogix issue #45); pylogix reads
# them as (Scope0, Scope1) and takes Scope1 & 3 == 0 for an internal member, so it fails on a
# template name without them. Our reading, unverified (protocol.md 9.3 ⚠️): 'A' + the member's
# display radix (0 none, 4 Decimal, 7 Float), then 'A' + its external access (0 read/write,
# 3 none for hidden members: 'D' & 3 == 0).

_TEMPLATE_RECORD = struct.Struct("<HHI")
_TEMPLATE_READ_REQUEST = struct.Struct("<IH")
_ARRAY_FLAG = 0x2000
_STRUCT_FLAG = 0x8000
TEMPLATE_NAME_SUFFIX = ";n"  # what follows the name; pycomm3/libplctag keep text before ';'
_RADIX_NONE, _RADIX_DECIMAL, _RADIX_FLOAT = 0, 4, 7
_ACCESS_READ_WRITE, _ACCESS_NONE = 0, 3


@dataclass(frozen=True, slots=True)
class TemplateReadRequest:
    offset: int
    length: int

    def encode(self) -> bytes:
        try:
            return _TEMPLATE_READ_REQUEST.pack(self.offset, self.length)
        except struct.error:
            raise UsageError(f"template read offset {self.offset} / length {self.length} out "
                             "of range (UDINT / UINT)") from None

    @classmethod
    def parse(cls, data: bytes) -> TemplateReadRequest:
        r = Reader(data, context="template read request")
        offset, length = r.unpack(_TEMPLATE_READ_REQUEST, "offset and byte count")
        r.expect_end("template read request")
        return cls(offset, length)


@dataclass(frozen=True, slots=True)
class TemplateMemberRecord:
    """One raw 8-byte member record of a template definition."""

    info: int
    type_word: int
    offset: int

    @property
    def template_id(self) -> int | None:
        return self.type_word & 0x0FFF if self.type_word & _STRUCT_FLAG else None


_EMPTY_NAME = "__unknown"


def _template_name_for(st: StructType) -> str:
    for wire, ours in TEMPLATE_NAME_ALIASES.items():
        if ours == st.name:
            return wire
    return st.name


def _member_record(m: Member) -> TemplateMemberRecord:
    t = m.type
    if m.bit is not None:
        return TemplateMemberRecord(m.bit, DataTypeCode.BOOL, m.offset)
    info, flag = 0, 0
    if isinstance(t, ArrayType):
        if len(t.dims) != 1:
            raise UsageError(f"member {m.name}: template members hold 1-dimensional arrays only")
        flag = _ARRAY_FLAG
        if t.is_bool_array:
            return TemplateMemberRecord(t.dims[0] // 32, flag | DataTypeCode.DWORD, m.offset)
        info = t.dims[0]
        t = t.element
    if isinstance(t, StructType):
        return TemplateMemberRecord(info, flag | _STRUCT_FLAG | t.instance_id, m.offset)
    return TemplateMemberRecord(info, flag | t.code, m.offset)


def _member_letters(m: Member) -> str:
    """The two letters a template name carries for member ``m`` (see the layout above)."""
    t = m.type.element if isinstance(m.type, ArrayType) else m.type
    if isinstance(t, StructType):
        radix = _RADIX_NONE
    elif t.code in (DataTypeCode.REAL, DataTypeCode.LREAL):
        radix = _RADIX_FLOAT
    else:
        radix = _RADIX_DECIMAL
    access = _ACCESS_NONE if m.hidden else _ACCESS_READ_WRITE
    return chr(ord("A") + radix) + chr(ord("A") + access)


def encode_template_definition(st: StructType) -> bytes:
    """The bytes a Template Read returns for ``st``: member records, then names."""
    out = bytearray()
    for m in st.members:
        rec = _member_record(m)
        try:
            out += _TEMPLATE_RECORD.pack(rec.info, rec.type_word, rec.offset)
        except struct.error:
            raise UsageError(f"{st.name}.{m.name}: template record {rec} out of range") from None
    suffix = TEMPLATE_NAME_SUFFIX + "".join(_member_letters(m) for m in st.members)
    names = [_template_name_for(st) + suffix] + [m.name for m in st.members]
    try:
        out += b"".join(n.encode("ascii") + b"\x00" for n in names)
    except UnicodeEncodeError:
        raise UsageError(f"{st.name}: template and member names must be ASCII") from None
    return bytes(out)


def parse_template_records(data: bytes, member_count: int) -> tuple[TemplateMemberRecord, ...]:
    """The member records at the start of a template definition."""
    r = Reader(data, context="template definition")
    return tuple(
        TemplateMemberRecord(*r.unpack(_TEMPLATE_RECORD, f"member record {i + 1} of "
                                                         f"{member_count}"))
        for i in range(member_count)
    )


def template_dependencies(data: bytes, member_count: int) -> frozenset[int]:
    """Template ids of structure members: fetch these before ``parse_template_definition``."""
    return frozenset(
        tid for rec in parse_template_records(data, member_count)
        if (tid := rec.template_id) is not None
    )


def parse_template_definition(
    data: bytes,
    attributes: TemplateAttributes,
    *,
    instance_id: int,
    lookup: Callable[[int], StructType],
) -> StructType:
    """Build the StructType of template ``instance_id`` from its definition bytes.

    ``lookup(template_id)`` returns already parsed nested structures (see
    ``template_dependencies``); if it raises LookupError the definition is reported as
    MalformedPacket naming the missing id.
    """
    count = attributes.member_count
    records = parse_template_records(data, count)
    # Only NUL-terminated strings count: bytes after the last NUL are padding or truncation.
    strings = data[_TEMPLATE_RECORD.size * count:].split(b"\x00")[:-1]
    template_name: str | None = None
    names: list[str] = []
    for raw in strings:
        text = raw.decode("latin-1")
        if template_name is None and ";" in text:
            template_name = text.split(";", 1)[0]
        else:
            names.append(text)
    if template_name is None:  # predefined types: the name is the first string (pycomm3)
        if not names or not names[0]:
            raise MalformedPacket("a template name string", _TEMPLATE_RECORD.size * count,
                                  "template definition")
        template_name = names.pop(0)
    if len(names) < count:
        raise MalformedPacket(f"{count} NUL-terminated member names, got {len(names)}",
                              len(data), "template definition")
    template_name = TEMPLATE_NAME_ALIASES.get(template_name, template_name)
    members: list[Member] = []
    unknown = 0
    for rec, name in zip(records, names):
        if not name:
            name = f"{_EMPTY_NAME}{unknown}"
            unknown += 1
        t = _record_type(rec, name, lookup)
        bit = rec.info if rec.type_word & 0xFF == DataTypeCode.BOOL and not rec.type_word & (
            _STRUCT_FLAG | _ARRAY_FLAG) else None
        end = rec.offset + (bit // 8 + 1 if bit is not None else byte_size(t))
        if end > attributes.structure_size:
            raise MalformedPacket(
                f"member {name} within the {attributes.structure_size}-byte structure "
                f"(it ends at {end})", 0, "template definition"
            )
        hidden = name.startswith((HIDDEN_HOST_PREFIX, PRIVATE_PREFIX))
        members.append(Member(name, t, rec.offset, bit=bit, hidden=hidden))
    return StructType(template_name, instance_id, attributes.handle, attributes.structure_size,
                      tuple(members))


def _record_type(
    rec: TemplateMemberRecord, name: str, lookup: Callable[[int], StructType]
) -> LogixType:
    tid = rec.template_id
    elem: AtomicType | StructType
    if tid is not None:
        try:
            elem = lookup(tid)
        except LookupError:
            raise MalformedPacket(f"member {name}: template 0x{tid:03X} known (fetch and parse "
                                  "it first, see template_dependencies)", 0,
                                  "template definition") from None
    else:
        code = rec.type_word & 0xFF
        if code not in DataTypeCode._value2member_map_ or DataTypeCode(code).size is None:
            raise MalformedPacket(f"member {name}: a fixed-size atomic type code, got "
                                  f"0x{code:02X}", 0, "template definition")
        elem = AtomicType(DataTypeCode(code))
        if elem.code == DataTypeCode.BOOL and not rec.type_word & _ARRAY_FLAG:
            return elem  # a bit member: info is the bit number
        if elem.code == DataTypeCode.DWORD and rec.info:
            return ArrayType(AtomicType(DataTypeCode.BOOL), (32 * rec.info,))
    if rec.info:
        try:
            return ArrayType(elem, (rec.info,))
        except UsageError as err:
            raise MalformedPacket(f"member {name}: a valid array ({err})", 0,
                                  "template definition") from None
    return elem


# ---------------------------------------------------------------------------------------------
# A tag's full type and size, protocol.md 9.4
# ---------------------------------------------------------------------------------------------


def tag_type(sym: SymbolInstance, lookup: Callable[[int], StructType]) -> LogixType:
    """The full type of a listed tag (needs attributes 2 and, for arrays, 8).

    BOOL arrays (DWORD symbols) become BOOL[32 * n]; a structure comes from ``lookup``.
    LookupError from ``lookup`` propagates (the caller fetches the template and retries).
    """
    st = sym.symbol_type
    elem: AtomicType | StructType
    if st.is_struct:
        elem = lookup(st.template_id)
    else:
        try:
            elem = AtomicType(DataTypeCode(st.code))
        except (ValueError, UsageError):
            raise MalformedPacket(f"symbol {sym.name!r}: a fixed-size atomic type code, got "
                                  f"0x{st.code:02X}", 0, "symbol type") from None
    if not st.dims:
        return elem
    if sym.dims is None:
        raise UsageError(f"symbol {sym.name!r} is an array: request attribute 8 (dimensions)")
    dims = tuple(sym.dims[: st.dims])
    if any(d == 0 for d in dims):
        raise MalformedPacket(f"symbol {sym.name!r}: {st.dims} non-zero dimensions, got "
                              f"{sym.dims}", 0, "symbol dimensions")
    if isinstance(elem, AtomicType) and elem.code == DataTypeCode.DWORD:
        if len(dims) != 1:
            raise MalformedPacket(f"symbol {sym.name!r}: a 1-D BOOL (DWORD) array", 0,
                                  "symbol dimensions")
        return ArrayType(AtomicType(DataTypeCode.BOOL), (32 * dims[0],))
    return ArrayType(elem, dims)


def tag_byte_size(
    sym: SymbolInstance, structure_size: Callable[[int], int] | None = None
) -> int:
    """Tag image bytes per protocol.md 9.4: element size x product of the used dims.

    Element size is attribute 7 if listed, else the atomic size, else ``structure_size(id)``
    (template attribute 5).
    """
    st = sym.symbol_type
    if sym.element_size is not None:
        size = sym.element_size
    elif st.is_struct:
        if structure_size is None:
            raise UsageError(f"symbol {sym.name!r} is a structure: pass structure_size or "
                             "request attribute 7")
        size = structure_size(st.template_id)
    else:
        code_size = (DataTypeCode(st.code).size
                     if st.code in DataTypeCode._value2member_map_ else None)
        if code_size is None:
            raise MalformedPacket(f"symbol {sym.name!r}: a fixed-size atomic type code, got "
                                  f"0x{st.code:02X}", 0, "symbol type")
        size = code_size
    if st.dims:
        if sym.dims is None:
            raise UsageError(f"symbol {sym.name!r} is an array: request attribute 8")
        return size * math.prod(sym.dims[: st.dims])
    return size

"""A Logix type's decoded value as MessagePack, compiled into a small program, pure.

The compiled receive path (workers/_fastpath.c) publishes samples without building Python
values: it runs this program over the tag image and writes the MessagePack of the value that
``logix_codec.compile_decoder(t)`` would return, byte for byte as ``msgpack.packb`` packs that
value (ints in their shortest form, floats as float 64, strings as UTF-8 ``str``, lists as
arrays, dicts as maps in member order). tests/workers/test_fastpath.py holds the two to it on
every kind of type and on random images.

The program is a byte string of instructions, each an opcode byte and little-endian operands;
offsets are into the tag image. ``compile_value_plan`` returns None for a type it cannot
express (the worker then publishes that consumer's samples from Python).

  NIL                             the value nil (no type known: a given size opened it)
  ATOM  kind:u8 off:u16           one atomic value (``Kind``)
  ATOMS kind:u8 off:u16 n:u16     an array of n atomic values, consecutive from ``off``
  BITS  off:u16 n:u16             an array of n bools: bit i of byte off + i // 8
  ARRAY n:u32                     an array header; its n elements follow as instructions
  MAP   n:u32                     a map header; n (key, value) pairs follow
  CONST len:u16 bytes             MessagePack bytes as they are (a map key)
  BIT   off:u16 mask:u8           one bool: byte off & mask
  STRING len_off:u16 data_off:u16 capacity:u16
                                  a Logix string: LEN (DINT, clamped to 0..capacity)
                                  ISO-8859-1 characters at data_off, as a UTF-8 str
"""

from __future__ import annotations

import enum
import math
import struct

import msgpack
from pyconpro.acquisition.logix_codec import uses_assumed_connection_status
from pyconpro.acquisition.logix_types import (
    ATOMIC_FORMATS,
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    Member,
    StructType,
    byte_size,
)

__all__ = ["Kind", "Op", "compile_value_plan"]


class Op(enum.IntEnum):
    NIL = 1
    ATOM = 2
    ATOMS = 3
    BITS = 4
    ARRAY = 5
    MAP = 6
    CONST = 7
    BIT = 8
    STRING = 9


class Kind(enum.IntEnum):
    """How an atomic value is read and packed (the struct format of ``ATOMIC_FORMATS``)."""

    BOOL = 0  # a byte, != 0
    I8 = 1
    I16 = 2
    I32 = 3
    I64 = 4
    U8 = 5
    U16 = 6
    U32 = 7
    U64 = 8
    F32 = 9  # packed as float 64, like the Python float it decodes to
    F64 = 10


_KIND_BY_FORMAT = {"b": Kind.I8, "h": Kind.I16, "i": Kind.I32, "q": Kind.I64, "B": Kind.U8,
                   "H": Kind.U16, "I": Kind.U32, "Q": Kind.U64, "f": Kind.F32, "d": Kind.F64}
_KIND_SIZE = {Kind.BOOL: 1, Kind.I8: 1, Kind.I16: 2, Kind.I32: 4, Kind.I64: 8, Kind.U8: 1,
              Kind.U16: 2, Kind.U32: 4, Kind.U64: 8, Kind.F32: 4, Kind.F64: 8}
_U16 = 0xFFFF


class _Unsupported(Exception):
    """The type has something the program cannot say (the caller falls back to Python)."""


def compile_value_plan(t: LogixType | None) -> bytes | None:
    """The program that packs a value of type ``t`` (None: the nil of a consumer whose type
    could not be learned), or None when ``t`` cannot be expressed (then the worker publishes
    from Python)."""
    if t is None:
        return bytes([Op.NIL])
    out = bytearray()
    try:
        if byte_size(t) > _U16:
            raise _Unsupported("image too large")
        _emit(out, t, 0)
    except _Unsupported:
        return None
    return bytes(out)


def _kind(t: AtomicType) -> Kind:
    if t.code == DataTypeCode.BOOL:
        return Kind.BOOL
    return _KIND_BY_FORMAT[ATOMIC_FORMATS[t.code][0]]


def _u16(value: int) -> int:
    if not 0 <= value <= _U16:
        raise _Unsupported(f"{value} does not fit the program's 16-bit operands")
    return value


def _emit(out: bytearray, t: LogixType, off: int) -> None:
    if isinstance(t, AtomicType):
        out += struct.pack("<BBH", Op.ATOM, _kind(t), _u16(off))
    elif isinstance(t, ArrayType):
        _emit_array(out, t, off)
    else:
        _emit_struct(out, t, off)


def _emit_array(out: bytearray, t: ArrayType, off: int) -> None:
    if t.is_bool_array:
        out += struct.pack("<BHH", Op.BITS, _u16(off), _u16(t.count))
        return
    dims = t.dims
    elem = t.element
    if isinstance(elem, AtomicType):
        # Nested lists for 2 and 3 dimensions, the last index fastest (logix_codec._reshape):
        # the last dimension's lists are rows of consecutive values.
        kind = _kind(elem)
        step = _KIND_SIZE[kind] * dims[-1]
        for row in range(math.prod(dims[:-1])):
            _open_lists(out, dims, len(dims) - 1, row)
            out += struct.pack("<BBHH", Op.ATOMS, kind, _u16(off + row * step), _u16(dims[-1]))
        return
    for index in range(t.count):
        _open_lists(out, dims, len(dims), index)
        _emit(out, elem, off + index * elem.size)


def _open_lists(out: bytearray, dims: tuple[int, ...], walked: int, index: int) -> None:
    """The array headers that open before item ``index`` of a walk over the first ``walked``
    dimensions of ``dims`` (the list at depth k has dims[k] items)."""
    for k in range(walked):
        if index % math.prod(dims[k:walked]) == 0:
            out += struct.pack("<BI", Op.ARRAY, dims[k])


def _emit_struct(out: bytearray, t: StructType, off: int) -> None:
    capacity = t.string_capacity
    if capacity is not None:
        len_member, data_member = t.visible_members
        out += struct.pack("<BHHH", Op.STRING, _u16(off + len_member.offset),
                           _u16(off + data_member.offset), _u16(capacity))
        return
    if uses_assumed_connection_status(t):
        out += struct.pack("<BI", Op.MAP, 2)
        for name, mask in (("RunMode", 1), ("ConnectionFaulted", 2)):
            _const(out, msgpack.packb(name, use_bin_type=True))
            out += struct.pack("<BHB", Op.BIT, _u16(off), mask)
        return
    members = t.visible_members
    if len({m.name for m in members}) != len(members):
        raise _Unsupported("duplicate member names")  # a dict would merge them
    out += struct.pack("<BI", Op.MAP, len(members))
    for m in members:
        _const(out, msgpack.packb(m.name, use_bin_type=True))
        _emit_member(out, m, off)


def _emit_member(out: bytearray, m: Member, off: int) -> None:
    if m.bit is not None:
        out += struct.pack("<BHB", Op.BIT, _u16(off + m.offset + m.bit // 8), 1 << (m.bit % 8))
    else:
        _emit(out, m.type, off + m.offset)


def _const(out: bytearray, packed: bytes) -> None:
    out += struct.pack("<BH", Op.CONST, _u16(len(packed))) + packed

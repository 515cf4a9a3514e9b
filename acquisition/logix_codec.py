"""Tag images <-> values: ``compile_decoder`` / ``compile_encoder`` for a Logix type, pure.

Each is compiled once per type (and cached), so decoding a sample runs only precomputed
closures (protocol.md 7.2). The types themselves are ``acquisition.logix_types``.

Values produced by decoders
---------------------------
int for integer codes, float for REAL/LREAL, bool for BOOL (scalar tags and UDT bit members),
str for Logix STRING and any "string-like" UDT (visible members exactly ``LEN`` DINT +
``DATA`` SINT[n]; characters are ISO-8859-1, as pycomm3 decodes them; ``LEN`` is clamped to
0..n because a PLC-side LEN outside that range shows as a truncated string in Logix too),
list for arrays (nested lists, first dimension outermost, for 2- and 3-dimensional arrays;
Logix stores arrays row-major with the last index fastest), dict for structures (visible
members only, in declaration order). BOOL arrays travel as DWORDs (32 bits per element, bit
``i`` of DWORD ``k`` is element ``32k + i``) and decode to a list of bool.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_types import (
    ATOMIC_FORMATS,
    CONNECTION_STATUS_FLAGS,
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    Member,
    StructType,
    byte_size,
)

_FLOAT_CODES = frozenset({DataTypeCode.REAL, DataTypeCode.LREAL})


# ---------------------------------------------------------------------------------------------
# Compiled decoders (bytes -> value)
# ---------------------------------------------------------------------------------------------

_Unpack = Callable[[bytes, int], Any]  # (buffer, offset) -> value
_Pack = Callable[[bytearray, int, Any], None]  # (buffer, offset, value)


def compile_decoder(t: LogixType) -> Callable[[bytes], Any]:
    """A function decoding exactly ``byte_size(t)`` bytes of tag image into a value.

    Built once per type (and cached): every struct.Struct format, member offset and sub-decoder
    is fixed here; decoding a sample only runs these closures. Wrong-length input raises
    MalformedPacket naming the expected size.
    """
    return _compile_decoder_cached(t)


@lru_cache(maxsize=256)
def _compile_decoder_cached(t: LogixType) -> Callable[[bytes], Any]:
    size = byte_size(t)
    unpack = _compile_unpack(t)
    what = f"{size} bytes of {t.name} tag data"

    def decode(data: bytes) -> Any:
        if len(data) != size:
            raise MalformedPacket(f"{what}, got {len(data)}", min(len(data), size), "tag data")
        return unpack(data, 0)

    return decode


def _reshape(flat: list[Any], dims: tuple[int, ...]) -> list[Any]:
    if len(dims) == 1:
        return flat
    inner = math.prod(dims[1:])
    return [_reshape(flat[i * inner:(i + 1) * inner], dims[1:]) for i in range(dims[0])]


def _compile_unpack(t: LogixType) -> _Unpack:
    if isinstance(t, AtomicType):
        fmt = ATOMIC_FORMATS[t.code][0]
        if t.code == DataTypeCode.BOOL:
            return lambda buf, off: buf[off] != 0
        st_unpack = struct.Struct("<" + fmt).unpack_from
        return lambda buf, off: st_unpack(buf, off)[0]
    if isinstance(t, ArrayType):
        return _compile_array_unpack(t)
    return _compile_struct_unpack(t)


def _compile_array_unpack(t: ArrayType) -> _Unpack:
    dims = t.dims
    count = t.count
    if t.is_bool_array:
        nbytes = count // 8
        bits = range(count)

        def unpack_bools(buf: bytes, off: int) -> list[bool]:
            word = int.from_bytes(buf[off:off + nbytes], "little")
            return [(word >> i) & 1 == 1 for i in bits]

        return unpack_bools
    elem = t.element
    if isinstance(elem, AtomicType):
        st_unpack = struct.Struct(f"<{count}{ATOMIC_FORMATS[elem.code][0]}").unpack_from
        if len(dims) == 1:
            return lambda buf, off: list(st_unpack(buf, off))
        return lambda buf, off: _reshape(list(st_unpack(buf, off)), dims)
    elem_unpack = _compile_unpack(elem)
    step = elem.size
    starts = tuple(i * step for i in range(count))
    if len(dims) == 1:
        return lambda buf, off: [elem_unpack(buf, off + s) for s in starts]
    return lambda buf, off: _reshape([elem_unpack(buf, off + s) for s in starts], dims)


def _member_getter(m: Member) -> _Unpack:
    moff = m.offset
    if m.bit is not None:
        byte = moff + m.bit // 8
        mask = 1 << (m.bit % 8)
        return lambda buf, off: buf[off + byte] & mask != 0
    if isinstance(m.type, AtomicType) and m.type.code != DataTypeCode.BOOL:
        st_unpack = struct.Struct("<" + ATOMIC_FORMATS[m.type.code][0]).unpack_from
        return lambda buf, off: st_unpack(buf, off + moff)[0]
    sub = _compile_unpack(m.type)
    return lambda buf, off: sub(buf, off + moff)


def _compile_struct_unpack(t: StructType) -> _Unpack:
    capacity = t.string_capacity
    if capacity is not None:
        len_off = t.visible_members[0].offset
        data_off = t.visible_members[1].offset
        len_unpack = struct.Struct("<i").unpack_from

        def unpack_string(buf: bytes, off: int) -> str:
            n = min(max(len_unpack(buf, off + len_off)[0], 0), capacity)
            start = off + data_off
            return bytes(buf[start:start + n]).decode("latin-1")

        return unpack_string
    if uses_assumed_connection_status(t):
        def unpack_status(buf: bytes, off: int) -> dict[str, bool]:
            b = buf[off]
            return {"RunMode": b & 1 != 0, "ConnectionFaulted": b & 2 != 0}

        return unpack_status
    plan = tuple((m.name, _member_getter(m)) for m in t.visible_members)

    def unpack_struct(buf: bytes, off: int) -> dict[str, Any]:
        return {name: get(buf, off) for name, get in plan}

    return unpack_struct


def uses_assumed_connection_status(t: StructType) -> bool:
    """A CONNECTION_STATUS whose template does not name its flags: decoded as the two flags
    Logix puts in its first byte (RunMode, ConnectionFaulted)."""
    names = {m.name for m in t.visible_members}
    return t.name == "CONNECTION_STATUS" and not set(CONNECTION_STATUS_FLAGS) <= names


# ---------------------------------------------------------------------------------------------
# Compiled encoders (value -> bytes), used by the simulator to build tag images
# ---------------------------------------------------------------------------------------------


class _BadValue(Exception):
    """Internal: a value cannot be encoded; ``where`` collects the member path on the way up."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.where: list[str] = []


def compile_encoder(t: LogixType) -> Callable[[Any], bytes]:
    """A function encoding a value (as ``compile_decoder`` returns them) into the tag image.

    Round-trips with the decoder. A value that does not fit raises UsageError naming the member
    path (``Motor.Speeds[3]: 3000000000 does not fit DINT``). Hidden members and padding are 0.
    """
    return _compile_encoder_cached(t)


@lru_cache(maxsize=256)
def _compile_encoder_cached(t: LogixType) -> Callable[[Any], bytes]:
    size = byte_size(t)
    pack = _compile_pack(t)
    root = t.name

    def encode(value: Any) -> bytes:
        buf = bytearray(size)
        try:
            pack(buf, 0, value)
        except _BadValue as err:
            raise UsageError(f"{root}{''.join(reversed(err.where))}: {err.message}") from None
        return bytes(buf)

    return encode


def _compile_pack(t: LogixType) -> _Pack:
    if isinstance(t, AtomicType):
        return _compile_atomic_pack(t)
    if isinstance(t, ArrayType):
        return _compile_array_pack(t)
    return _compile_struct_pack(t)


def _check_bool(value: Any) -> bool:
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise _BadValue(f"{value!r} is not a BOOL (use True/False)")


def _compile_atomic_pack(t: AtomicType) -> _Pack:
    if t.code == DataTypeCode.BOOL:
        def pack_bool(buf: bytearray, off: int, value: Any) -> None:
            buf[off] = 1 if _check_bool(value) else 0

        return pack_bool
    st = struct.Struct("<" + ATOMIC_FORMATS[t.code][0])
    name = t.name
    is_float = t.code in _FLOAT_CODES

    def pack_atomic(buf: bytearray, off: int, value: Any) -> None:
        if is_float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise _BadValue(f"{value!r} is not a {name} ({'number' if is_float else 'int'})")
        try:
            st.pack_into(buf, off, value)
        except (struct.error, OverflowError):
            raise _BadValue(f"{value!r} does not fit {name}") from None

    return pack_atomic


def _flatten(value: Any, dims: tuple[int, ...], out: list[Any]) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != dims[0]:
        got = f"{len(value)} elements" if isinstance(value, (list, tuple)) else repr(value)
        raise _BadValue(f"expected a list of {dims[0]} elements, got {got}")
    if len(dims) == 1:
        out.extend(value)
        return
    for i, sub in enumerate(value):
        try:
            _flatten(sub, dims[1:], out)
        except _BadValue as err:
            err.where.append(f"[{i}]")
            raise


def _compile_array_pack(t: ArrayType) -> _Pack:
    dims = t.dims
    if t.is_bool_array:
        nbytes = t.count // 8

        def pack_bools(buf: bytearray, off: int, value: Any) -> None:
            flat: list[Any] = []
            _flatten(value, dims, flat)
            word = 0
            for i, v in enumerate(flat):
                try:
                    if _check_bool(v):
                        word |= 1 << i
                except _BadValue as err:
                    err.where.append(f"[{i}]")
                    raise
            buf[off:off + nbytes] = word.to_bytes(nbytes, "little")

        return pack_bools
    elem_pack = _compile_pack(t.element)
    step = byte_size(t.element)

    def pack_array(buf: bytearray, off: int, value: Any) -> None:
        flat: list[Any] = []
        _flatten(value, dims, flat)
        for i, v in enumerate(flat):
            try:
                elem_pack(buf, off + i * step, v)
            except _BadValue as err:
                err.where.append(_index_text(i, dims))
                raise

    return pack_array


def _index_text(flat_index: int, dims: tuple[int, ...]) -> str:
    idx = []
    for d in reversed(dims):
        idx.append(flat_index % d)
        flat_index //= d
    return "[" + ",".join(str(i) for i in reversed(idx)) + "]"


def _compile_struct_pack(t: StructType) -> _Pack:
    if t.string_capacity is not None:
        return _compile_string_pack(t, t.string_capacity)
    if uses_assumed_connection_status(t):
        return _pack_connection_status
    plan: list[tuple[str, int, int | None, _Pack | None]] = []
    for m in t.visible_members:
        if m.bit is not None:
            plan.append((m.name, m.offset + m.bit // 8, 1 << (m.bit % 8), None))
        else:
            plan.append((m.name, m.offset, None, _compile_pack(m.type)))
    names = tuple(p[0] for p in plan)

    def pack_struct(buf: bytearray, off: int, value: Any) -> None:
        _check_keys(value, names)
        for name, moff, mask, sub in plan:
            try:
                if sub is not None:
                    sub(buf, off + moff, value[name])
                elif mask is not None and _check_bool(value[name]):
                    buf[off + moff] |= mask
            except _BadValue as err:
                err.where.append(f".{name}")
                raise

    return pack_struct


def _compile_string_pack(t: StructType, capacity: int) -> _Pack:
    len_off = t.visible_members[0].offset
    data_off = t.visible_members[1].offset

    def pack_string(buf: bytearray, off: int, value: Any) -> None:
        if not isinstance(value, str):
            raise _BadValue(f"{value!r} is not a str")
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raise _BadValue(f"{value!r} has characters outside ISO-8859-1") from None
        if len(raw) > capacity:
            raise _BadValue(f"string of {len(raw)} characters exceeds {capacity}")
        struct.pack_into("<i", buf, off + len_off, len(raw))
        buf[off + data_off:off + data_off + len(raw)] = raw

    return pack_string


def _pack_connection_status(buf: bytearray, off: int, value: Any) -> None:
    _check_keys(value, CONNECTION_STATUS_FLAGS)
    b = 0
    for i, name in enumerate(CONNECTION_STATUS_FLAGS):
        try:
            if _check_bool(value[name]):
                b |= 1 << i
        except _BadValue as err:
            err.where.append(f".{name}")
            raise
    buf[off] = b


def _check_keys(value: Any, names: Sequence[str]) -> None:
    if not isinstance(value, Mapping):
        raise _BadValue(f"{value!r} is not a mapping of member names to values")
    missing = [n for n in names if n not in value]
    extra = [k for k in value if k not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing member(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown member(s) {', '.join(map(str, extra))}")
        raise _BadValue("; ".join(parts) + f" (members are {', '.join(names)})")

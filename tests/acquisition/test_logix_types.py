"""Tests of acquisition.logix_types: type model, UDT layout, compiled decoders/encoders.

Independent references: pycomm3's own data type classes (``pycomm3.cip.data_types``, its
``StructTag`` / ``FixedSizeString``), Rockwell 1756-RM100F table 16 (a published UDT memory map)
and protocol.md 9.1 / 9.2.
"""

from __future__ import annotations

import struct
from typing import Any

import hypothesis.strategies as st
import msgpack
import pyconpro.acquisition.logix_codec as codec
import pyconpro.acquisition.logix_types as lt
import pytest
from hypothesis import given, settings
from pycomm3.cip import data_types as p3
from pycomm3.custom_types import FixedSizeString
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_codec import compile_decoder, compile_encoder
from pyconpro.acquisition.logix_types import (
    BOOL,
    CONNECTION_STATUS,
    DINT,
    INT,
    LINT,
    REAL,
    STRING,
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    ReadTagType,
    StructType,
    SymbolType,
    byte_size,
    element_size,
    produced_connection_size,
    symbol_dims,
    tag_bytes,
)

from tests.acquisition.codec_helpers import assert_prefixes_malformed

FIXED_CODES = [c for c in DataTypeCode if c.size is not None]

# ---------------------------------------------------------------------------------------------
# Strategies (also used by test_logix_objects)
# ---------------------------------------------------------------------------------------------

_INT_RANGES = {
    "b": (-(2**7), 2**7 - 1), "B": (0, 2**8 - 1), "h": (-(2**15), 2**15 - 1),
    "H": (0, 2**16 - 1), "i": (-(2**31), 2**31 - 1), "I": (0, 2**32 - 1),
    "q": (-(2**63), 2**63 - 1), "Q": (0, 2**64 - 1),
}
_member_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True)
_scalar_codes = st.sampled_from(
    [c for c in FIXED_CODES if c not in (DataTypeCode.BOOL, DataTypeCode.DWORD)]
)


@st.composite
def struct_types(
    draw: st.DrawFn, depth: int = 2, codes: st.SearchStrategy[DataTypeCode] = _scalar_codes
) -> StructType:
    """Random UDTs: atomics, BOOL members, 1-D arrays, BOOL arrays, STRING, nested UDTs."""
    n = draw(st.integers(1, 6))
    names = draw(st.lists(_member_names, min_size=n, max_size=n,
                          unique_by=lambda s: s.upper()))
    specs: list[Any] = []
    for name in names:
        kind = draw(st.sampled_from(["atomic", "bool", "array", "boolarray", "string", "struct"]
                                    if depth else ["atomic", "bool", "array", "boolarray"]))
        if kind == "atomic":
            specs.append((name, AtomicType(draw(codes))))
        elif kind == "bool":
            specs.append((name, "BOOL"))
        elif kind == "array":
            specs.append((name, AtomicType(draw(codes)), draw(st.integers(1, 4))))
        elif kind == "boolarray":
            specs.append((name, "BOOL", 32 * draw(st.integers(1, 2))))
        elif kind == "string":
            specs.append((name, "STRING"))
        else:
            inner = draw(struct_types(depth - 1, codes))
            dims = draw(st.sampled_from([None, 2]))
            specs.append((name, inner, dims))
    udt_name = "T" + draw(st.from_regex(r"[A-Za-z0-9_]{0,10}", fullmatch=True))
    return StructType.build(udt_name, specs)


def has_unique_template_ids(t: LogixType) -> bool:
    """True when no two different structs in ``t`` share a template instance id.

    ``StructType.build`` derives ids from a 12-bit hash of the layout, so random trees can
    collide; a controller gives every template its own id, so tests that look templates up by
    id ``assume()`` this."""
    seen: dict[int, StructType] = {}
    pending: list[LogixType] = [t]
    while pending:
        x = pending.pop()
        if isinstance(x, ArrayType):
            pending.append(x.element)
        elif isinstance(x, StructType):
            if seen.setdefault(x.instance_id, x) != x:
                return False
            pending.extend(m.type for m in x.members)
    return True


def logix_types(depth: int = 2) -> st.SearchStrategy[LogixType]:
    atomic = st.sampled_from(FIXED_CODES).map(AtomicType)
    arrays = st.builds(
        ArrayType, _scalar_codes.map(AtomicType),
        st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
    )
    bool_arrays = st.integers(1, 3).map(lambda k: ArrayType(BOOL, (32 * k,)))
    structs = struct_types(depth)
    struct_arrays = st.builds(lambda s, d: ArrayType(s, d), struct_types(1),
                              st.lists(st.integers(1, 2), min_size=1, max_size=2).map(tuple))
    return st.one_of(atomic, arrays, bool_arrays, structs, struct_arrays)


def values_for(t: LogixType) -> st.SearchStrategy[Any]:
    """Values the decoder can produce for ``t``."""
    if isinstance(t, AtomicType):
        if t.code == DataTypeCode.BOOL:
            return st.booleans()
        fmt = lt.ATOMIC_FORMATS[t.code][0]
        if fmt == "f":
            return st.floats(width=32, allow_nan=False)
        if fmt == "d":
            return st.floats(allow_nan=False)
        lo, hi = _INT_RANGES[fmt]
        return st.integers(lo, hi)
    if isinstance(t, ArrayType):
        if t.is_bool_array:
            return st.lists(st.booleans(), min_size=t.dims[0], max_size=t.dims[0])
        inner = values_for(t.element)
        for d in reversed(t.dims):
            inner = st.lists(inner, min_size=d, max_size=d)
        return inner
    cap = t.string_capacity
    if cap is not None:
        return st.text(st.characters(max_codepoint=255), max_size=cap)
    return st.fixed_dictionaries({m.name: (st.booleans() if m.bit is not None
                                           else values_for(m.type))
                                  for m in t.visible_members})


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[LogixType, Any]:
    t = draw(logix_types())
    return t, draw(values_for(t))


# ---------------------------------------------------------------------------------------------
# Codes and sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", FIXED_CODES, ids=lambda c: c.name)
def test_code_and_size_match_pycomm3(code: DataTypeCode) -> None:
    cls = getattr(p3, code.name)
    assert cls.code == code or code == DataTypeCode.STIME  # pycomm3 reuses 0xCC for LDT
    assert cls.size == code.size == byte_size(AtomicType(code))


def test_variable_length_codes_are_not_tag_types() -> None:
    assert int(DataTypeCode.STRING) == 0xD0 and int(DataTypeCode.SHORT_STRING) == 0xDA
    assert DataTypeCode.STRING.size is None
    with pytest.raises(UsageError, match="no fixed size"):
        AtomicType(DataTypeCode.SHORT_STRING)


# ---------------------------------------------------------------------------------------------
# Atomic decode/encode against pycomm3's classes
# ---------------------------------------------------------------------------------------------

_P3_NUMERIC = ["SINT", "INT", "DINT", "LINT", "USINT", "UINT", "UDINT", "ULINT"]


@pytest.mark.parametrize("name", _P3_NUMERIC)
@given(data=st.data())
def test_integer_codec_agrees_with_pycomm3(name: str, data: st.DataObject) -> None:
    t = AtomicType(DataTypeCode[name])
    v = data.draw(values_for(t))
    p3_bytes = getattr(p3, name).encode(v)
    assert compile_encoder(t)(v) == p3_bytes
    assert compile_decoder(t)(p3_bytes) == v == getattr(p3, name).decode(p3_bytes)


@given(st.floats(width=32, allow_nan=False))
def test_real_agrees_with_pycomm3(v: float) -> None:
    assert compile_encoder(REAL)(v) == p3.REAL.encode(v)
    assert compile_decoder(REAL)(p3.REAL.encode(v)) == p3.REAL.decode(p3.REAL.encode(v)) == v


def test_golden_atomics() -> None:
    # Hand-written little-endian images (protocol.md conventions).
    assert compile_decoder(DINT)(bytes.fromhex("2a000000")) == 42
    assert compile_decoder(DINT)(bytes.fromhex("feffffff")) == -2
    assert compile_decoder(REAL)(bytes.fromhex("0000c03f")) == 1.5
    assert compile_decoder(INT)(bytes.fromhex("ff7f")) == 32767
    assert compile_encoder(LINT)(-1) == b"\xff" * 8
    assert compile_decoder(BOOL)(b"\x00") is False
    assert compile_decoder(BOOL)(b"\xff") is True  # pycomm3 writes 0xFF for True
    assert compile_decoder(BOOL)(p3.BOOL.encode(True)) is True


def test_bool_array_agrees_with_pycomm3_dword_array() -> None:
    bits = [(i * 7) % 5 == 0 for i in range(64)]
    p3_type = p3.Array(2, p3.DWORD)
    p3_bytes = p3_type.encode(bits)
    t = ArrayType(BOOL, (64,))
    assert compile_encoder(t)(bits) == p3_bytes
    assert compile_decoder(t)(p3_bytes) == bits == p3_type.decode(p3_bytes)
    # bit i of DWORD k is element 32k + i
    assert compile_decoder(t)(bytes.fromhex("01000080" "02000000")) == (
        [True] + [False] * 30 + [True] + [False, True] + [False] * 30
    )


def test_multidimensional_arrays_are_nested_row_major() -> None:
    t = ArrayType(DINT, (2, 3))
    raw = struct.pack("<6i", 0, 1, 2, 10, 11, 12)
    assert compile_decoder(t)(raw) == [[0, 1, 2], [10, 11, 12]]
    assert compile_encoder(t)([[0, 1, 2], [10, 11, 12]]) == raw
    t3 = ArrayType(INT, (2, 2, 2))
    assert compile_decoder(t3)(struct.pack("<8h", *range(8))) == [
        [[0, 1], [2, 3]], [[4, 5], [6, 7]]]


# ---------------------------------------------------------------------------------------------
# UDT layout
# ---------------------------------------------------------------------------------------------


def test_layout_matches_rockwell_rm100f_table16() -> None:
    # 1756-RM100F table 16 (v27+): LimitA, LimitB in a hidden SINT at byte 0; Profile REAL[3]
    # at word 1; Interlock INT at word 4 (two pad bytes); padding word 5; MyLint at word 6;
    # Speed REAL at word 8; padding word 9 -> 40 bytes.
    u = StructType.build("Sample", [
        ("LimitA", "BOOL"), ("LimitB", "BOOL"), ("Profile", "REAL", 3), ("Interlock", "INT"),
        ("MyLint", "LINT"), ("Speed", "REAL"),
    ])
    offsets = {m.name: (m.offset, m.bit) for m in u.members}
    assert offsets == {
        "ZZZZZZZZZZSample0": (0, None), "LimitA": (0, 0), "LimitB": (0, 1),
        "Profile": (4, None), "Interlock": (16, None), "MyLint": (24, None),
        "Speed": (32, None),
    }
    assert u.size == 40 and u.alignment == 8
    assert [m.name for m in u.visible_members] == [
        "LimitA", "LimitB", "Profile", "Interlock", "MyLint", "Speed"]


def test_layout_rules() -> None:
    # RM100F table 17 variant: an extra DINT before the LINT removes the padding.
    u = StructType.build("S17", [
        ("A", "BOOL"), ("P", "REAL", 3), ("I", "INT"), ("U1", "DINT"), ("L", "LINT"),
        ("S", "REAL"), ("U2", "DINT"),
    ])
    assert [m.offset for m in u.members] == [0, 0, 4, 16, 20, 24, 32, 36]
    assert u.size == 40
    # nine BOOLs need two hosts; a BOOL after another member opens a new host
    b = StructType.build("B", [(f"b{i}", "BOOL") for i in range(9)] + [("x", "SINT"),
                                                                       ("y", "BOOL")])
    hosts = [m for m in b.members if m.hidden]
    assert [h.offset for h in hosts] == [0, 1, 3] and b.size == 4
    assert [m.bit for m in b.members if m.name == "b8" or m.name == "y"] == [0, 0]
    # one BOOL alone is 4 bytes; a struct without 8-byte members aligns to 4
    assert StructType.build("One", [("b", "BOOL")]).size == 4
    inner = StructType.build("In", [("s", "SINT")])
    outer = StructType.build("Out", [("c", "SINT"), ("n", inner), ("d", "SINT")])
    assert [m.offset for m in outer.members] == [0, 4, 8] and outer.size == 12
    inner8 = StructType.build("In8", [("l", "LREAL")])
    outer8 = StructType.build("Out8", [("c", "SINT"), ("n", inner8)])
    assert [m.offset for m in outer8.members] == [0, 8] and outer8.size == 16
    # BOOL arrays are DWORD aligned; SINT arrays byte aligned
    ba = StructType.build("BA", [("c", "SINT"), ("s", "SINT", 3), ("bits", "BOOL", 32)])
    assert [m.offset for m in ba.members] == [0, 1, 4] and ba.size == 8


def test_string_and_connection_status_definitions() -> None:
    assert STRING.size == 88 and STRING.string_capacity == 82
    assert (STRING.instance_id, STRING.handle) == (0x0FCE, 0x0FCE)
    assert CONNECTION_STATUS.size == 4
    assert [(m.name, m.offset, m.bit) for m in CONNECTION_STATUS.visible_members] == [
        ("RunMode", 0, 0), ("ConnectionFaulted", 0, 1)]


def test_build_rejects_bad_declarations() -> None:
    with pytest.raises(UsageError, match="declared twice"):
        StructType.build("X", [("a", "DINT"), ("A", "INT")])
    with pytest.raises(UsageError, match="unknown type 'FOO'"):
        StructType.build("X", [("a", "FOO")])
    with pytest.raises(UsageError, match="one-dimensional"):
        StructType.build("X", [("a", "DINT", (2, 2))])
    with pytest.raises(UsageError, match="multiple of 32"):
        StructType.build("X", [("a", "BOOL", 8)])
    with pytest.raises(UsageError, match="at least one member"):
        StructType.build("X", [])
    with pytest.raises(UsageError, match="identifier"):
        StructType.build("X", [("1a", "DINT")])
    # UDTs declared earlier are found by name
    inner = StructType.build("Inner", [("v", "DINT")])
    outer = StructType.build("Outer", [("i", "Inner", 2)], types={"Inner": inner})
    assert outer.members[0].type == ArrayType(inner, (2,)) and outer.size == 8


def test_build_is_deterministic_and_ids_are_in_user_range() -> None:
    a = StructType.build("Same", [("x", "DINT")])
    assert a == StructType.build("Same", [("x", "DINT")])
    assert 0x100 <= a.instance_id <= 0xEFF


# ---------------------------------------------------------------------------------------------
# Structures against pycomm3's StructTag / FixedSizeString
# ---------------------------------------------------------------------------------------------


def test_logix_string_agrees_with_pycomm3_fixed_size_string() -> None:
    p3_string = FixedSizeString(84)  # pycomm3 uses structure_size - 4 for the data part
    raw = bytes(p3_string.encode("Hello, PLC"))
    assert len(raw) == 88
    assert compile_decoder(STRING)(raw) == "Hello, PLC"
    ours = compile_encoder(STRING)("Hello, PLC")
    assert p3_string.decode(ours) == "Hello, PLC"
    assert ours == raw  # both zero-fill after the characters
    assert ours[:4] == b"\x0a\x00\x00\x00"


def test_string_like_udt_and_length_clamp() -> None:
    s20 = StructType.build("STRING20", [("LEN", "DINT"), ("DATA", "SINT", 20)])
    assert s20.string_capacity == 20 and s20.size == 24
    raw = struct.pack("<i", 99) + b"x" * 20
    assert compile_decoder(s20)(raw) == "x" * 20  # LEN beyond capacity is clamped
    assert compile_decoder(s20)(struct.pack("<i", -5) + b"x" * 20) == ""
    with pytest.raises(UsageError, match="exceeds 20"):
        compile_encoder(s20)("y" * 21)
    not_string = StructType.build("NS", [("LEN", "DINT"), ("DATA", "INT", 20)])
    assert not_string.string_capacity is None


def test_connection_status_first_member_decodes_to_flags() -> None:
    u = StructType.build("WithStatus", [("Status", "CONNECTION_STATUS"), ("Value", "DINT")])
    assert [m.offset for m in u.visible_members] == [0, 4]
    raw = bytes([0b01, 0, 0, 0]) + struct.pack("<i", 7)
    assert compile_decoder(u)(raw) == {
        "Status": {"RunMode": True, "ConnectionFaulted": False}, "Value": 7}
    raw = bytes([0b10, 0, 0, 0]) + struct.pack("<i", 7)
    assert compile_decoder(u)(raw)["Status"] == {"RunMode": False, "ConnectionFaulted": True}


def test_opaque_connection_status_template_uses_assumed_layout() -> None:
    # A controller template of that name exposing no flag members: the documented assumption.
    opaque = StructType("CONNECTION_STATUS", 0xF00, 0x1234, 4,
                        (lt.Member("__raw", DINT, 0, hidden=True),))
    assert compile_decoder(opaque)(b"\x03\x00\x00\x00") == {
        "RunMode": True, "ConnectionFaulted": True}
    assert compile_encoder(opaque)({"RunMode": False, "ConnectionFaulted": True}) == (
        b"\x02\x00\x00\x00")


def test_bits_above_7_of_a_dint_host() -> None:
    # Predefined types alias bits of DINT hosts (e.g. TIMER.EN is bit 31 of CTL).
    timer_like = StructType("TIMERISH", 0xF01, 0x1, 12, (
        lt.Member("CTL", DINT, 0, hidden=True), lt.Member("PRE", DINT, 4),
        lt.Member("ACC", DINT, 8), lt.Member("EN", BOOL, 0, bit=31),
        lt.Member("DN", BOOL, 0, bit=29)))
    raw = struct.pack("<Iii", 1 << 31, 1000, 5)
    assert compile_decoder(timer_like)(raw) == {"PRE": 1000, "ACC": 5, "EN": True, "DN": False}
    assert compile_encoder(timer_like)({"PRE": 1000, "ACC": 5, "EN": True, "DN": False}) == raw


# ---------------------------------------------------------------------------------------------
# Length checks, truncation, compiled-ness, encoder errors
# ---------------------------------------------------------------------------------------------


def test_wrong_length_names_expected_size() -> None:
    with pytest.raises(MalformedPacket, match="88 bytes of STRING tag data, got 87"):
        compile_decoder(STRING)(bytes(87))
    with pytest.raises(MalformedPacket, match="4 bytes of DINT tag data, got 5"):
        compile_decoder(DINT)(bytes(5))


@settings(max_examples=60)
@given(typed_values())
def test_every_truncated_prefix_is_malformed(tv: tuple[LogixType, Any]) -> None:
    t, v = tv
    raw = compile_encoder(t)(v)
    assert_prefixes_malformed(compile_decoder(t), raw)
    with pytest.raises(MalformedPacket):
        compile_decoder(t)(raw + b"\x00")


@settings(max_examples=300)
@given(typed_values())
def test_round_trip(tv: tuple[LogixType, Any]) -> None:
    t, v = tv
    raw = compile_encoder(t)(v)
    assert len(raw) == byte_size(t)
    decoded = compile_decoder(t)(raw)
    assert decoded == v
    assert compile_encoder(t)(decoded) == raw
    # msgpack-native: survives the bus serialization unchanged (ARCHITECTURE.md wire contract)
    assert msgpack.unpackb(msgpack.packb(decoded)) == decoded


def test_decoder_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = codec._compile_unpack

    def counting(t: LogixType) -> Any:
        calls["n"] += 1
        return real(t)

    monkeypatch.setattr(codec, "_compile_unpack", counting)
    u = StructType.build("Compiled", [("a", "BOOL"), ("s", "STRING"), ("v", "REAL", 4),
                                      ("n", StructType.build("N", [("x", "DINT")]), 2)])
    decode = compile_decoder(u)
    compiled = calls["n"]
    assert compiled >= 4  # the struct, the string, the nested array and its element
    raw = compile_encoder(u)({"a": True, "s": "x", "v": [1.0] * 4,
                              "n": [{"x": 1}, {"x": 2}]})
    for _ in range(50):
        assert decode(raw)["n"] == [{"x": 1}, {"x": 2}]
    assert calls["n"] == compiled  # decoding never went back to the type tree
    assert compile_decoder(u) is decode  # cached per type
    assert calls["n"] == compiled


@pytest.mark.parametrize(("value", "message"), [
    ({"Speed": 1.0, "Count": 2**31, "Flags": [True] * 32, "On": True},
     r"Motor\.Count: 2147483648 does not fit DINT"),
    ({"Speed": "fast", "Count": 1, "Flags": [True] * 32, "On": True},
     r"Motor\.Speed: 'fast' is not a REAL"),
    ({"Speed": 1.0, "Count": 1, "Flags": [True] * 31, "On": True},
     r"Motor\.Flags: expected a list of 32 elements, got 31"),
    ({"Speed": 1.0, "Count": 1, "Flags": [True] * 31 + [2], "On": True},
     r"Motor\.Flags\[31\]: 2 is not a BOOL"),
    ({"Speed": 1.0, "Count": 1, "Flags": [True] * 32, "On": "yes"},
     r"Motor\.On: 'yes' is not a BOOL"),
    ({"Speed": 1.0, "Count": 1, "Flags": [True] * 32},
     r"Motor: missing member\(s\) On"),
    ({"Speed": 1.0, "Count": 1, "Flags": [True] * 32, "On": True, "Extra": 1},
     r"Motor: unknown member\(s\) Extra"),
    ({"Speed": 1e39, "Count": 1, "Flags": [True] * 32, "On": True},
     r"Motor\.Speed: 1e\+39 does not fit REAL"),
])
def test_encoder_errors_name_the_member(value: dict[str, Any], message: str) -> None:
    motor = StructType.build("Motor", [("Speed", "REAL"), ("Count", "DINT"),
                                       ("Flags", "BOOL", 32), ("On", "BOOL")])
    with pytest.raises(UsageError, match=message):
        compile_encoder(motor)(value)


def test_encoder_errors_in_nested_arrays() -> None:
    inner = StructType.build("Pt", [("x", "INT")])
    outer = StructType.build("Path", [("pts", inner, 3)])
    with pytest.raises(UsageError, match=r"Path\.pts\[1\]\.x: 40000 does not fit INT"):
        compile_encoder(outer)({"pts": [{"x": 1}, {"x": 40000}, {"x": 3}]})
    with pytest.raises(UsageError, match=r"DINT\[2,2\]\[1\]: expected a list of 2"):
        compile_encoder(ArrayType(DINT, (2, 2)))([[1, 2], [3]])
    with pytest.raises(UsageError, match=r"ISO-8859-1"):
        compile_encoder(STRING)("\u20ac")


# ---------------------------------------------------------------------------------------------
# Sizes and the produced-tag limit
# ---------------------------------------------------------------------------------------------


def test_tag_bytes_and_connection_size() -> None:
    assert tag_bytes(4, (10, 0, 0)) == 40
    assert tag_bytes(88) == 88
    assert tag_bytes(2, (2, 3, 4)) == 48
    assert produced_connection_size(6) == 8  # rconpro README tag of 6 bytes -> size 8
    assert produced_connection_size(500) == 502
    with pytest.raises(UsageError, match="501 bytes.*500 bytes.*split"):
        produced_connection_size(501)
    with pytest.raises(UsageError, match="at least one byte"):
        produced_connection_size(0)
    assert byte_size(ArrayType(BOOL, (96,))) == 12
    assert byte_size(ArrayType(STRING, (2,))) == 176
    assert element_size(ArrayType(BOOL, (96,))) == 4 and symbol_dims(ArrayType(BOOL, (96,))) == (
        3, 0, 0)


# ---------------------------------------------------------------------------------------------
# Symbol type word (protocol.md 9.2) and Read Tag type header
# ---------------------------------------------------------------------------------------------


def _pycomm3_view(word: int) -> dict[str, int]:
    # The bit arithmetic pycomm3's LogixDriver._create_tag / _isolate_user_tags applies.
    out = {"dim": (word & 0b0110000000000000) >> 13, "system": word & 0x1000}
    if word & 0x8000:
        out["template"] = word & 0x0FFF
    else:
        out["code"] = word & 0xFF
        if out["code"] == 0xC1:
            out["bit"] = (word & 0x0700) >> 8
    return out


@pytest.mark.parametrize(("t", "word"), [
    (DINT, 0x00C4),
    (ArrayType(REAL, (10,)), 0x20CA),
    (ArrayType(INT, (2, 3, 4)), 0x60C3),
    (ArrayType(BOOL, (64,)), 0x20D3),  # BOOL arrays are DWORD arrays
    (STRING, 0x8FCE),
    (ArrayType(STRING, (5, 2)), 0xCFCE),
])
def test_symbol_type_word_golden(t: LogixType, word: int) -> None:
    sym = SymbolType.for_type(t)
    assert sym.encode() == word
    assert SymbolType.decode(word) == sym
    view = _pycomm3_view(word)
    assert view["dim"] == sym.dims
    if sym.is_struct:
        assert view["template"] == sym.template_id
    else:
        assert view["code"] == sym.code


@given(st.integers(0, 0xFFFF))
def test_symbol_type_word_round_trip(word: int) -> None:
    sym = SymbolType.decode(word)
    view = _pycomm3_view(word)
    assert sym.dims == view["dim"] and sym.system == bool(view["system"])
    assert sym.is_struct == ("template" in view)
    if not sym.is_struct and sym.code == DataTypeCode.BOOL:
        assert sym.bit == view["bit"]
        assert sym.encode() == word & ~0x0800  # bit 11 carries nothing for BOOL
    elif not sym.is_struct:
        assert sym.encode() == word & ~0x0F00  # bits 11-8 carry nothing for other atomics
    else:
        assert sym.encode() == word


def test_bool_bit_position_and_system_flag() -> None:
    word = SymbolType(False, code=DataTypeCode.BOOL, bit=5, system=True).encode()
    assert word == 0x15C1 and _pycomm3_view(word)["bit"] == 5
    with pytest.raises(UsageError):
        SymbolType(False, 4, code=0xC4).encode()
    with pytest.raises(UsageError):
        SymbolType(True, template_id=0x1000).encode()


@pytest.mark.parametrize(("t", "raw"), [
    (DINT, b"\xc4\x00"),
    (BOOL, b"\xc1\x00"),
    (ArrayType(BOOL, (32,)), b"\xd3\x00"),
    (STRING, b"\xa0\x02\xce\x0f"),
    (ArrayType(STRING, (3,)), b"\xa0\x02\xce\x0f"),
])
def test_read_tag_type_header_golden(t: LogixType, raw: bytes) -> None:
    header = ReadTagType.for_type(t)
    assert header.encode() == raw
    assert ReadTagType.parse(raw + b"payload") == (header, len(raw))
    assert (raw[:2] == b"\xa0\x02") == header.is_struct  # pycomm3 STRUCTURE_READ_REPLY test
    assert_prefixes_malformed(lambda b: ReadTagType.parse(b), raw)


@given(st.one_of(
    st.integers(0, 0xFFFF).filter(lambda c: c != lt.STRUCTURE_TYPE_TAG).map(ReadTagType),
    st.integers(0, 0xFFFF).map(lambda h: ReadTagType(lt.STRUCTURE_TYPE_TAG, h)),
))
def test_read_tag_type_round_trip(header: ReadTagType) -> None:
    raw = header.encode()
    assert ReadTagType.parse(raw) == (header, len(raw))


"""Tests of acquisition.logix_objects: Symbol 0x55 lists, Template attributes and definitions.

Independent references: request bytes quoted in protocol.md 10.2 (rows 6 and 8), hand-built
golden bytes from the field tables of protocol.md 9.2 / 9.3, and pycomm3's own parsers
(``LogixDriver._parse_instance_attribute_list``, ``_isolate_user_tags``/``_create_tag``,
``StructTemplateAttributes``, ``_parse_template_data``) fed with our encodings: the simulator
must satisfy exactly those.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, assume, given, settings
from pycomm3 import LogixDriver
from pycomm3 import cip as p3_cip
from pycomm3.cip import DINT as P3_DINT
from pycomm3.cip import UINT as P3_UINT
from pycomm3.custom_types import StructTemplateAttributes
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_codec import compile_decoder, compile_encoder
from pyconpro.acquisition.logix_objects import (
    _SYMBOL_FIELDS,
    LIBPLCTAG_SYMBOL_ATTRIBUTES,
    PYCOMM3_SYMBOL_ATTRIBUTES,
    PYCOMM3_TEMPLATE_ATTRIBUTES,
    PYLOGIX_TEMPLATE_ATTRIBUTES,
    AttributeResult,
    SymbolAttribute,
    SymbolInstance,
    TemplateAttributes,
    TemplateReadRequest,
    definition_size_words,
    encode_attribute_ids,
    encode_attribute_list,
    encode_attribute_results,
    encode_attribute_statuses,
    encode_attribute_values,
    encode_symbol_instances,
    encode_template_definition,
    parse_attribute_ids,
    parse_attribute_list,
    parse_attribute_results,
    parse_attribute_statuses,
    parse_symbol_instances,
    parse_template_definition,
    tag_byte_size,
    tag_type,
    template_dependencies,
    template_read_area,
)
from pyconpro.acquisition.logix_types import (
    BOOL,
    CONNECTION_STATUS,
    DINT,
    REAL,
    STRING,
    ArrayType,
    DataTypeCode,
    LogixType,
    StructType,
    byte_size,
)

from tests.acquisition.codec_helpers import assert_prefixes_malformed
from tests.acquisition.test_logix_types import has_unique_template_ids, struct_types, values_for

# ---------------------------------------------------------------------------------------------
# Helpers: every struct reachable from a type; a pycomm3 driver whose template I/O is ours
# ---------------------------------------------------------------------------------------------

#: A template lookup for types that name no structure.
NO_STRUCTS: dict[int, StructType] = {}


def all_structs(t: LogixType, out: dict[int, StructType] | None = None) -> dict[int, StructType]:
    out = {} if out is None else out
    if isinstance(t, ArrayType):
        return all_structs(t.element, out)
    if isinstance(t, StructType):
        out[t.instance_id] = t
        for m in t.members:
            all_structs(m.type, out)
    return out


class TemplatesFromOurBytes(LogixDriver):
    """pycomm3's LogixDriver with the two network calls of a template upload replaced by our
    encoders; pycomm3's own parsing (StructTemplateAttributes, _parse_template_data,
    _create_tag) runs unchanged on the bytes."""

    def __init__(self, structs: dict[int, StructType], revision: int = 20) -> None:
        super().__init__("127.0.0.1")
        self.structs = structs
        self._info = {"revision": {"major": revision, "minor": 0}, "programs": {}, "tasks": {},
                      "modules": {}}
        # pycomm3 declares the cache None until it connects; its template parsing needs it set.
        self._cache = {  # type: ignore[assignment]
            "tag_name:id": {}, "id:struct": {}, "handle:id": {}, "id:udt": {}}
        self.definition_reads: list[tuple[int, int]] = []

    def _get_structure_makeup(self, instance_id: int) -> dict[str, int]:
        raw = encode_attribute_results(
            TemplateAttributes.for_struct(self.structs[instance_id]).results())
        v = StructTemplateAttributes.decode(raw)
        return {  # what pycomm3's _parse_structure_makeup_attributes extracts
            "object_definition_size": v["object_definition_size"]["size"],
            "structure_size": v["structure_size"]["size"],
            "member_count": v["member_count"]["count"],
            "structure_handle": v["structure_handle"]["handle"],
        }

    def _read_template(self, instance_id: int, object_definition_size: int) -> bytes:
        data = encode_template_definition(self.structs[instance_id])
        requested = object_definition_size * 4 - 21  # pycomm3's request length
        self.definition_reads.append((requested, len(data)))
        return data[:requested]

    def upload(self, syms: list[SymbolInstance]) -> list[dict[str, Any]]:
        raw = encode_symbol_instances(syms, PYCOMM3_SYMBOL_ATTRIBUTES)
        tag_list: list[dict[str, Any]] = []
        last = self._parse_instance_attribute_list(
            SimpleNamespace(data=raw, service_status=0), tag_list)
        assert last == -1
        return list(self._isolate_user_tags(tag_list))


# ---------------------------------------------------------------------------------------------
# Attribute id lists (request data of 0x55 and 0x03)
# ---------------------------------------------------------------------------------------------

PYCOMM3_SYMBOL_REQUEST = bytes.fromhex("0700 0100 0200 0300 0500 0600 0800 0a00")  # 10.2 row 6
PYCOMM3_TEMPLATE_REQUEST = bytes.fromhex("0400 0400 0500 0200 0100")  # 10.2 row 8


def test_attribute_id_lists_golden() -> None:
    assert parse_attribute_ids(PYCOMM3_SYMBOL_REQUEST) == PYCOMM3_SYMBOL_ATTRIBUTES
    assert encode_attribute_ids(PYCOMM3_SYMBOL_ATTRIBUTES) == PYCOMM3_SYMBOL_REQUEST
    assert parse_attribute_ids(PYCOMM3_TEMPLATE_REQUEST) == PYCOMM3_TEMPLATE_ATTRIBUTES
    assert encode_attribute_ids(PYCOMM3_TEMPLATE_ATTRIBUTES) == PYCOMM3_TEMPLATE_REQUEST
    assert_prefixes_malformed(parse_attribute_ids, PYCOMM3_SYMBOL_REQUEST)
    with pytest.raises(MalformedPacket, match="trailing"):
        parse_attribute_ids(PYCOMM3_TEMPLATE_REQUEST + b"\x00")
    with pytest.raises(UsageError):
        encode_attribute_ids([])


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20))
def test_attribute_id_list_round_trip(ids: list[int]) -> None:
    assert parse_attribute_ids(encode_attribute_ids(ids)) == tuple(ids)


# ---------------------------------------------------------------------------------------------
# Symbol instance lists (reply data of 0x55)
# ---------------------------------------------------------------------------------------------

# Hand-built from the protocol.md 9.2 table: instance 0x1A, name "Tank", DINT[10], addresses,
# software control with the base-tag bit, dims 10/0/0, access read-only.
GOLDEN_SYMBOL = bytes.fromhex(
    "1a000000" "0400" "54616e6b" "c420" "00100000" "00200000" "00000004"
    "0a000000" "00000000" "00000000" "02"
)
GOLDEN_SYMBOL_VALUE = SymbolInstance(
    instance_id=0x1A, name="Tank", type_word=0x20C4, address=0x1000, object_address=0x2000,
    software_control=1 << 26, dims=(10, 0, 0), external_access=2,
)


def test_symbol_list_golden() -> None:
    assert parse_symbol_instances(GOLDEN_SYMBOL, PYCOMM3_SYMBOL_ATTRIBUTES) == (
        GOLDEN_SYMBOL_VALUE,)
    assert encode_symbol_instances([GOLDEN_SYMBOL_VALUE], PYCOMM3_SYMBOL_ATTRIBUTES) == (
        GOLDEN_SYMBOL)
    built = SymbolInstance.for_tag(0x1A, "Tank", ArrayType(DINT, (10,)), address=0x1000,
                                   object_address=0x2000, external_access=2)
    assert built.element_size == 4
    assert _fields(built) == {**_fields(GOLDEN_SYMBOL_VALUE), "element_size": 4}


def _fields(s: SymbolInstance) -> dict[str, Any]:
    return {k: getattr(s, k) for k in SymbolInstance.__slots__}


def test_symbol_list_truncations_are_malformed() -> None:
    two = GOLDEN_SYMBOL + GOLDEN_SYMBOL
    for n in range(1, len(two)):
        if n == len(GOLDEN_SYMBOL):
            assert len(parse_symbol_instances(two[:n], PYCOMM3_SYMBOL_ATTRIBUTES)) == 1
            continue
        with pytest.raises(MalformedPacket):
            parse_symbol_instances(two[:n], PYCOMM3_SYMBOL_ATTRIBUTES)


def test_pycomm3_parses_our_symbol_list() -> None:
    drv = TemplatesFromOurBytes({})
    syms = [GOLDEN_SYMBOL_VALUE,
            SymbolInstance.for_tag(0x300, "Program:Main", DINT, system=False),
            SymbolInstance.for_tag(0x301, "__hidden", DINT),
            SymbolInstance.for_tag(0x302, "Sys", DINT, system=True)]
    raw = encode_symbol_instances(syms, PYCOMM3_SYMBOL_ATTRIBUTES)
    tag_list: list[dict[str, Any]] = []
    drv._parse_instance_attribute_list(SimpleNamespace(data=raw, service_status=0), tag_list)
    assert [(t["instance_id"], t["tag_name"], t["symbol_type"], t["dimensions"])
            for t in tag_list] == [(s.instance_id, s.name, s.type_word, list(s.dims or ()))
                                   for s in syms]
    assert tag_list[0]["external_access"] == "Read Only"
    assert tag_list[0]["software_control"] == 1 << 26
    # pycomm3 keeps only the user tag; our filter agrees
    user = drv._isolate_user_tags(tag_list)
    assert [t["tag_name"] for t in user] == ["Tank"]
    assert [s.name for s in syms if s.is_user_tag] == ["Tank"]
    assert user[0]["dim"] == 1 and user[0]["alias"] is False


def test_pycomm3_parses_list_without_attribute_10_before_v18() -> None:
    drv = TemplatesFromOurBytes({}, revision=17)
    attrs = PYCOMM3_SYMBOL_ATTRIBUTES[:-1]
    raw = encode_symbol_instances([GOLDEN_SYMBOL_VALUE], attrs)
    assert raw == GOLDEN_SYMBOL[:-1]
    tag_list: list[dict[str, Any]] = []
    drv._parse_instance_attribute_list(SimpleNamespace(data=raw, service_status=0), tag_list)
    assert tag_list[0]["tag_name"] == "Tank"
    assert parse_symbol_instances(raw, attrs)[0].external_access is None


def test_libplctag_attribute_set() -> None:
    s = SymbolInstance.for_tag(5, "Str", STRING)
    raw = encode_symbol_instances([s], LIBPLCTAG_SYMBOL_ATTRIBUTES)
    # instance, type 0x8FCE, element size 88, dims 0/0/0, name
    assert raw == bytes.fromhex("05000000" "ce8f" "5800" + "00" * 12 + "0300" "537472")
    got = parse_symbol_instances(raw, LIBPLCTAG_SYMBOL_ATTRIBUTES)[0]
    assert got == SymbolInstance(5, name="Str", type_word=0x8FCE, element_size=88,
                                 dims=(0, 0, 0))


def test_symbol_encoder_usage_errors() -> None:
    with pytest.raises(UsageError, match="attribute 2 was requested"):
        encode_symbol_instances([SymbolInstance(1, name="x")], [1, 2])
    with pytest.raises(UsageError, match=r"attribute\(s\) \[4\] not supported"):
        encode_symbol_instances([SymbolInstance(1, name="x")], [1, 4])
    with pytest.raises(UsageError, match="not supported"):
        parse_symbol_instances(b"", [9])


_u32 = st.integers(0, 0xFFFFFFFF)
symbol_instances = st.builds(
    SymbolInstance,
    instance_id=_u32,
    name=st.text(st.characters(max_codepoint=127), max_size=40),
    type_word=st.integers(0, 0xFFFF),
    address=_u32, object_address=_u32, software_control=_u32,
    element_size=st.integers(0, 0xFFFF),
    dims=st.tuples(_u32, _u32, _u32),
    external_access=st.integers(0, 255),
)


@given(st.lists(symbol_instances, max_size=5),
       st.permutations([1, 2, 3, 5, 6, 7, 8, 10]), st.integers(1, 8))
def test_symbol_list_round_trip(insts: list[SymbolInstance], order: list[int], k: int) -> None:
    attrs = order[:k]
    raw = encode_symbol_instances(insts, attrs)
    got = parse_symbol_instances(raw, attrs)
    kept = {_field_of(a) for a in attrs} | {"instance_id"}
    expected: list[dict[str, Any]] = [
        {f: (v if f in kept else None) for f, v in _fields(i).items()} for i in insts]
    assert got == tuple(SymbolInstance(**fields) for fields in expected)
    assert encode_symbol_instances(got, attrs) == raw


def _field_of(attr: int) -> str:
    return _SYMBOL_FIELDS[SymbolAttribute(attr)]


# ---------------------------------------------------------------------------------------------
# Get_Attribute_List / Set_Attribute_List data (any object: attribute widths are a parameter)
# ---------------------------------------------------------------------------------------------

_LIST_WIDTHS = {1: 2, 3: 2, 6: 8, 10: 1}


def test_set_attribute_list_request_golden_from_pycomm3_encoder() -> None:
    # pycomm3 set_plc_time: Struct(UINT, UINT, ULINT).encode([1, 6, microseconds])
    golden = bytes(p3_cip.Struct(P3_UINT, P3_UINT, p3_cip.ULINT).encode([1, 6, 123456789]))
    assert encode_attribute_values([(6, struct.pack("<Q", 123456789))]) == golden


def test_attribute_list_reply_golden() -> None:
    golden = bytes.fromhex("0300" "0100 0000 3412" "0300 1400" "0a00 0000 01")
    entries = ((1, 0, b"\x34\x12"), (3, 0x14, b""), (10, 0, b"\x01"))
    assert encode_attribute_list(entries) == golden
    assert parse_attribute_list(golden, _LIST_WIDTHS) == entries
    assert_prefixes_malformed(lambda b: parse_attribute_list(b, _LIST_WIDTHS), golden)
    with pytest.raises(MalformedPacket, match="known width"):
        parse_attribute_list(bytes.fromhex("0100 0700 0000 00"), _LIST_WIDTHS)
    with pytest.raises(MalformedPacket, match="end"):
        parse_attribute_list(golden + b"\x00", _LIST_WIDTHS)


def test_set_attribute_list_reply_golden() -> None:
    golden = bytes.fromhex("0200" "0600 0000" "0a00 0900")
    assert encode_attribute_statuses([(6, 0), (10, 9)]) == golden
    assert parse_attribute_statuses(golden) == ((6, 0), (10, 9))
    assert_prefixes_malformed(parse_attribute_statuses, golden)


_ENTRY = st.sampled_from(sorted(_LIST_WIDTHS)).flatmap(
    lambda a: st.tuples(st.just(a), st.sampled_from([0, 0x09, 0x14]),
                        st.binary(min_size=_LIST_WIDTHS[a], max_size=_LIST_WIDTHS[a])))


@given(st.lists(_ENTRY, max_size=6))
def test_attribute_list_round_trip(entries: list[tuple[int, int, bytes]]) -> None:
    expected = tuple((a, s, v if s == 0 else b"") for a, s, v in entries)
    assert parse_attribute_list(encode_attribute_list(entries), _LIST_WIDTHS) == expected
    statuses = [(a, s) for a, s, _ in entries]
    assert parse_attribute_statuses(encode_attribute_statuses(statuses)) == tuple(statuses)


# ---------------------------------------------------------------------------------------------
# Template Get_Attribute_List reply
# ---------------------------------------------------------------------------------------------


def test_template_attributes_golden_from_pycomm3_encoder() -> None:
    attrs = TemplateAttributes(definition_size=30, structure_size=88, member_count=2,
                               handle=0x0FCE)
    golden = bytes(StructTemplateAttributes.encode({
        "count": 4,
        "object_definition_size": {"attr_num": 4, "status": 0, "size": 30},
        "structure_size": {"attr_num": 5, "status": 0, "size": 88},
        "member_count": {"attr_num": 2, "status": 0, "count": 2},
        "structure_handle": {"attr_num": 1, "status": 0, "handle": 0x0FCE},
    }))
    assert golden == bytes.fromhex("0400" "04000000" "1e000000" "05000000" "58000000"
                                   "02000000" "0200" "01000000" "ce0f")
    assert encode_attribute_results(attrs.results()) == golden
    assert TemplateAttributes.from_results(parse_attribute_results(golden)) == attrs
    assert_prefixes_malformed(parse_attribute_results, golden)


@given(st.builds(TemplateAttributes, _u32, _u32, st.integers(0, 0xFFFF),
                 st.integers(0, 0xFFFF)))
def test_template_attributes_round_trip(attrs: TemplateAttributes) -> None:
    raw = encode_attribute_results(attrs.results())
    assert TemplateAttributes.from_results(parse_attribute_results(raw)) == attrs
    assert StructTemplateAttributes.decode(raw)["structure_size"]["size"] == attrs.structure_size


def test_template_attribute_errors() -> None:
    failed = (AttributeResult(4, 0, 10), AttributeResult(5, 0x14, None),
              AttributeResult(2, 0, 1), AttributeResult(1, 0, 1))
    raw = encode_attribute_results(failed)
    assert parse_attribute_results(raw) == failed  # a failed attribute carries no value
    with pytest.raises(MalformedPacket, match="attribute 5 .*status 0x14"):
        TemplateAttributes.from_results(failed)
    with pytest.raises(MalformedPacket, match="known width"):
        parse_attribute_results(bytes.fromhex("0100" "0700" "0000" "00"))


def test_template_attribute_3_is_a_uint_where_pylogix_expects_it() -> None:
    attrs = TemplateAttributes(definition_size=22, structure_size=8, member_count=2, handle=7)
    raw = encode_attribute_results(
        [AttributeResult(a, 0, attrs.value(a)) for a in PYLOGIX_TEMPLATE_ATTRIBUTES])
    # pylogix (eip.py _get_udt): attribute 4 at 10, member count at 24 of the reply from 46,
    # i.e. 6 and 20 bytes into the reply data.
    assert struct.unpack_from("<I", raw, 6)[0] == 22
    assert struct.unpack_from("<H", raw, 20)[0] == 2
    assert [r.attribute for r in parse_attribute_results(raw)] == [4, 3, 2, 1]


# ---------------------------------------------------------------------------------------------
# Template definition (Read 0x4C)
# ---------------------------------------------------------------------------------------------

# STRING: LEN DINT @0, DATA SINT[82] @4 (array flag 0x2000), names after "ASCIISTRING82;n" and
# two letters per member (decimal, read/write: "EA").
GOLDEN_STRING_DEFINITION = (
    bytes.fromhex("0000" "c400" "00000000" "5200" "c220" "04000000")
    + b"ASCIISTRING82;nEAEA\x00LEN\x00DATA\x00"
)
# Pair: hidden SINT host @0 (access none: "ED"), BOOL a = bit 0 of it, DINT v @4; 8 bytes.
PAIR = StructType.build("Pair", [("a", "BOOL"), ("v", "DINT")], instance_id=0x234,
                        handle=0xBEEF)
GOLDEN_PAIR_DEFINITION = (
    bytes.fromhex("0000" "c200" "00000000" "0000" "c100" "00000000" "0000" "c400" "04000000")
    + b"Pair;nEDEAEA\x00ZZZZZZZZZZPair0\x00a\x00v\x00"
)
# What a 1756-L75 (firmware 32) returned for a UDT of a REAL and a DINT, as printed in pylogix
# issue #45 (protocol.md 9.3): 63 definition bytes, attribute 4 = 22 words (pylogix asked for
# 68 bytes and got them: the definition and 5 more).
MY_UDT = StructType.build("my_UDT", [("udt_member1_real", "REAL"), ("udt_member2_dint", "DINT")])
GOLDEN_L75_DEFINITION = (
    bytes.fromhex("0000" "ca00" "00000000" "0000" "c400" "04000000")
    + b"my_UDT;nHAEA\x00udt_member1_real\x00udt_member2_dint\x00"
)


@pytest.mark.parametrize(("struct_type", "golden"), [
    (STRING, GOLDEN_STRING_DEFINITION), (PAIR, GOLDEN_PAIR_DEFINITION),
    (MY_UDT, GOLDEN_L75_DEFINITION)])
def test_template_definition_golden(struct_type: StructType, golden: bytes) -> None:
    assert encode_template_definition(struct_type) == golden
    attrs = TemplateAttributes.for_struct(struct_type)
    assert attrs.definition_size == definition_size_words(len(golden))
    parsed = parse_template_definition(golden, attrs, instance_id=struct_type.instance_id,
                                       lookup=NO_STRUCTS.__getitem__)
    assert parsed == struct_type
    assert_prefixes_malformed(
        lambda b: parse_template_definition(b, attrs, instance_id=struct_type.instance_id,
                                            lookup=NO_STRUCTS.__getitem__), golden)


def test_definition_size_lets_pycomm3_and_libplctag_read_everything() -> None:
    for n in range(64):
        words = definition_size_words(n)
        assert 4 * words - 23 >= n and 4 * words - 21 >= n  # libplctag / pycomm3
        assert 4 * (words - 1) - 23 < n  # and it is the smallest such size
    assert definition_size_words(len(GOLDEN_L75_DEFINITION)) == 22  # as the L75 said


def test_template_read_area_is_what_pylogix_and_libplctag_ask_for() -> None:
    for n in range(64):
        definition = bytes(range(1, n + 1))
        area = template_read_area(definition)
        words = definition_size_words(n)
        # pylogix / libplctag: 4 * words - 23 rounded up to 4 bytes; pycomm3 asks one less.
        assert len(area) == -(-(4 * words - 23) // 4) * 4 == 4 * words - 20
        assert area.startswith(definition) and area[n:] == bytes(len(area) - n)
        assert 3 <= len(area) - n <= 6
    assert len(template_read_area(GOLDEN_L75_DEFINITION)) == 68


def test_template_read_request_matches_pycomm3() -> None:
    raw = P3_DINT.encode(0) + P3_UINT.encode(30 * 4 - 21)  # what _read_template sends
    assert TemplateReadRequest(0, 99).encode() == raw
    assert TemplateReadRequest.parse(raw) == TemplateReadRequest(0, 99)
    assert_prefixes_malformed(TemplateReadRequest.parse, raw)


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF))
def test_template_read_request_round_trip(offset: int, length: int) -> None:
    req = TemplateReadRequest(offset, length)
    assert TemplateReadRequest.parse(req.encode()) == req


def test_pycomm3_reads_unnamed_and_predefined_templates_like_we_do() -> None:
    # Predefined types may put the name first without ';' and leave members unnamed.
    raw = (bytes.fromhex("0000" "c400" "00000000" "0000" "c400" "04000000")
           + b"MYPREDEF\x00\x00B\x00")
    attrs = TemplateAttributes(definition_size_words(len(raw)), 8, 2, 7)
    st_ = parse_template_definition(raw, attrs, instance_id=0xF10, lookup=NO_STRUCTS.__getitem__)
    assert st_.name == "MYPREDEF"
    assert [(m.name, m.hidden) for m in st_.members] == [("__unknown0", True), ("B", False)]
    drv = TemplatesFromOurBytes({})
    p3 = drv._parse_template_data(raw, {"member_count": 2, "structure_size": 8}, 0x8F10)
    assert p3["name"] == "MYPREDEF" and p3["attributes"] == ["B"]
    assert compile_decoder(st_)(struct.pack("<ii", 1, 2)) == {"B": 2}


def test_nested_templates_need_their_dependencies() -> None:
    outer = StructType.build("Outer", [("p", PAIR, 2), ("s", "STRING"), ("r", "REAL")])
    raw = encode_template_definition(outer)
    assert template_dependencies(raw, len(outer.members)) == {PAIR.instance_id,
                                                              STRING.instance_id}
    attrs = TemplateAttributes.for_struct(outer)
    with pytest.raises(MalformedPacket, match="template 0x234"):
        parse_template_definition(raw, attrs, instance_id=outer.instance_id,
                                  lookup=NO_STRUCTS.__getitem__)
    known = {PAIR.instance_id: PAIR, STRING.instance_id: STRING}
    assert parse_template_definition(raw, attrs, instance_id=outer.instance_id,
                                     lookup=known.__getitem__) == outer


def test_template_definition_checks_member_bounds() -> None:
    attrs = TemplateAttributes(definition_size_words(len(GOLDEN_PAIR_DEFINITION)), 6, 3, 1)
    with pytest.raises(MalformedPacket, match="member v within the 6-byte structure"):
        parse_template_definition(GOLDEN_PAIR_DEFINITION, attrs, instance_id=0x234,
                                  lookup=NO_STRUCTS.__getitem__)
    bad_code = bytearray(GOLDEN_PAIR_DEFINITION)
    bad_code[18] = 0xD0  # v becomes a CIP STRING, which has no fixed size
    with pytest.raises(MalformedPacket, match="fixed-size atomic type code, got 0xD0"):
        parse_template_definition(bytes(bad_code), TemplateAttributes.for_struct(PAIR),
                                  instance_id=0x234, lookup=NO_STRUCTS.__getitem__)


_P3_CODES = st.sampled_from([DataTypeCode[n] for n in (
    "SINT", "INT", "DINT", "LINT", "USINT", "UINT", "UDINT", "ULINT", "REAL", "LREAL")])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(struct_types(2, _P3_CODES), st.data())
def test_template_round_trip_and_pycomm3_agreement(udt: StructType,
                                                    data: st.DataObject) -> None:
    assume(has_unique_template_ids(udt))
    structs = all_structs(udt)
    raw = encode_template_definition(udt)
    attrs = TemplateAttributes.for_struct(udt)
    ours = parse_template_definition(raw, attrs, instance_id=udt.instance_id,
                                     lookup=structs.__getitem__)
    assert ours == udt
    assert encode_template_definition(ours) == raw
    # pycomm3 parses the same bytes (nested templates through the same fake I/O) ...
    drv = TemplatesFromOurBytes(structs)
    p3 = drv._get_data_type(udt.instance_id, 0x8000 | udt.instance_id)
    assert all(req >= n for req, n in drv.definition_reads)
    value = data.draw(values_for(udt))
    image = compile_encoder(udt)(value)
    if udt.string_capacity is not None:
        assert p3["string"] == udt.string_capacity
    else:
        assert p3["attributes"] == [m.name for m in udt.visible_members]
        assert p3["template"]["structure_size"] == udt.size == len(image)
    # ... and decodes our image to our value, and its encoding decodes to our value
    assert p3["type_class"].decode(image) == value
    assert compile_decoder(udt)(bytes(p3["type_class"].encode(value))) == value


# ---------------------------------------------------------------------------------------------
# A tag's full type and size (protocol.md 9.4), cross-checked with pycomm3's tag records
# ---------------------------------------------------------------------------------------------


def test_tag_type_and_size_agree_with_pycomm3() -> None:
    status_udt = StructType.build("Produced", [("Status", CONNECTION_STATUS), ("Count", "DINT"),
                                               ("Temps", "REAL", 4), ("Run", "BOOL")],
                                  instance_id=0x300)
    tags: dict[str, LogixType] = {
        "Count": DINT,
        "Flags": ArrayType(BOOL, (64,)),
        "Grid": ArrayType(REAL, (2, 3)),
        "Msg": STRING,
        "Prod": status_udt,
        "Prods": ArrayType(status_udt, (3,)),
    }
    syms = [SymbolInstance.for_tag(i + 1, name, t) for i, (name, t) in enumerate(tags.items())]
    structs: dict[int, StructType] = {}
    for t in tags.values():
        all_structs(t, structs)
    drv = TemplatesFromOurBytes(structs)
    p3_tags = {t["tag_name"]: t for t in drv.upload(syms)}
    # our view from the same symbol records (without attribute 7, as pycomm3 requests them)
    listed = parse_symbol_instances(encode_symbol_instances(syms, PYCOMM3_SYMBOL_ATTRIBUTES),
                                    PYCOMM3_SYMBOL_ATTRIBUTES)
    for sym in listed:
        assert sym.name is not None
        t = tag_type(sym, structs.__getitem__)
        assert t == tags[sym.name]
        size = tag_byte_size(sym, lambda tid: structs[tid].size)
        assert size == byte_size(t) == tag_byte_size(
            SymbolInstance.for_tag(1, sym.name, t))  # via attribute 7 too
        p3 = p3_tags[sym.name]
        elements = 1
        for d in p3["dimensions"][: p3["dim"]]:
            elements *= d
        if p3["tag_type"] == "struct":
            p3_size = p3["data_type"]["template"]["structure_size"] * elements
        else:
            p3_size = getattr(p3_cip, p3["data_type"]).size * elements
        assert size == p3_size
    assert p3_tags["Flags"]["data_type"] == "DWORD" and p3_tags["Msg"]["data_type_name"] == (
        "STRING")
    assert p3_tags["Prod"]["data_type"]["attributes"] == ["Status", "Count", "Temps", "Run"]
    value = {"Status": {"RunMode": True, "ConnectionFaulted": False}, "Count": -7,
             "Temps": [1.5, 2.5, -3.0, 0.0], "Run": True}
    image = compile_encoder(status_udt)(value)
    assert image[0] == 0b01 and len(image) == 28
    assert p3_tags["Prod"]["type_class"].decode(image) == value


def test_tag_type_errors() -> None:
    arr = SymbolInstance.for_tag(1, "A", ArrayType(DINT, (4,)))
    no_dims = SymbolInstance(1, name="A", type_word=arr.type_word)
    with pytest.raises(UsageError, match="attribute 8"):
        tag_type(no_dims, NO_STRUCTS.__getitem__)
    zero = SymbolInstance(1, name="A", type_word=arr.type_word, dims=(0, 0, 0))
    with pytest.raises(MalformedPacket, match="non-zero dimensions"):
        tag_type(zero, NO_STRUCTS.__getitem__)
    with pytest.raises(MalformedPacket, match="0xD0"):
        tag_type(SymbolInstance(1, name="S", type_word=0x00D0), NO_STRUCTS.__getitem__)
    with pytest.raises(KeyError):
        tag_type(SymbolInstance.for_tag(1, "S", STRING), NO_STRUCTS.__getitem__)
    with pytest.raises(UsageError, match="structure_size"):
        tag_byte_size(SymbolInstance(1, name="S", type_word=0x8FCE))


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(struct_types(1))
def test_random_template_definition_prefixes_are_malformed(udt: StructType) -> None:
    structs = all_structs(udt)
    attrs = TemplateAttributes.for_struct(udt)
    assert_prefixes_malformed(
        lambda b: parse_template_definition(b, attrs, instance_id=udt.instance_id,
                                            lookup=structs.__getitem__),
        encode_template_definition(udt))

"""Tests of acquisition.discovery: request bytes, the sans-IO upload, the catalog, change checks.

The controller side is a fake (``FakeLogix`` below) answering with bytes built by
``acquisition.logix_objects`` encoders, with small pages so that every continuation path runs.
Independent references: request bytes quoted in protocol.md 10.2 (rows 6, 8, 9) and pycomm3's
own parsers of the same listing and templates (``TemplatesFromOurBytes``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, assume, given, settings
from pycomm3 import cip as p3_cip
from pyconpro.acquisition import cip
from pyconpro.acquisition.discovery import (
    DISCOVERY_SYMBOL_ATTRIBUTES,
    LEGACY_SYMBOL_ATTRIBUTES,
    CatalogBuilder,
    CatalogDone,
    CatalogFailed,
    CatalogRequest,
    DiscoveryError,
    ListingLimits,
    ListingTooLarge,
    TagCatalog,
    build_structs,
    catalog_from_listing,
    symbol_list_request,
    template_attributes_request,
    template_read_request,
)
from pyconpro.acquisition.epath import LogicalSegment, LogicalType, SymbolicSegment, decode_path
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_codec import compile_encoder
from pyconpro.acquisition.logix_objects import (
    PYCOMM3_SYMBOL_ATTRIBUTES,
    SymbolInstance,
    TemplateAttributes,
    TemplateReadRequest,
    encode_attribute_results,
    encode_symbol_instances,
    encode_template_definition,
    parse_attribute_ids,
)
from pyconpro.acquisition.logix_types import (
    BOOL,
    CONNECTION_STATUS,
    DINT,
    INT,
    LINT,
    REAL,
    STRING,
    ArrayType,
    LogixType,
    StructType,
    byte_size,
)
from pyconpro.simulator.faults import endless_listing_reply

from tests.acquisition.test_logix_objects import TemplatesFromOurBytes, all_structs
from tests.acquisition.test_logix_types import has_unique_template_ids, struct_types, values_for

# ---------------------------------------------------------------------------------------------
# A fake Logix answering discovery requests with our encoders' bytes
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeLogix:
    """Answers 0x55 / 0x03 / 0x4C like a controller: ``page`` symbols per reply, ``chunk``
    definition bytes per reply (status 0x06 while more remains)."""

    scopes: dict[str | None, list[SymbolInstance]]
    structs: dict[int, StructType]
    page: int = 3
    chunk: int = 40
    refuse_templates: set[int] = field(default_factory=set)
    refuse_reads: set[int] = field(default_factory=set)
    log: list[tuple[Any, ...]] = field(default_factory=list)

    @classmethod
    def for_tags(
        cls,
        tags: Mapping[str, LogixType],
        *,
        programs: Mapping[str, Mapping[str, LogixType]] = {},
        extra: Sequence[SymbolInstance] = (),
        **kw: Any,
    ) -> FakeLogix:
        scopes: dict[str | None, list[SymbolInstance]] = {None: []}
        structs: dict[int, StructType] = {}
        inst = 1
        for name, t in tags.items():
            scopes[None].append(SymbolInstance.for_tag(inst, name, t))
            all_structs(t, structs)
            inst += 1
        for prog, ptags in programs.items():
            scopes[None].append(SymbolInstance.for_tag(inst, f"Program:{prog}", DINT))
            inst += 1
            scopes[prog] = []
            for name, t in ptags.items():
                scopes[prog].append(SymbolInstance.for_tag(inst, name, t))
                all_structs(t, structs)
                inst += 1
        scopes[None].extend(extra)
        return cls(scopes, structs, **kw)

    def handle(self, message: bytes) -> cip.Reply:
        req = cip.Request.decode(message)
        segs = decode_path(req.path)
        program = None
        if segs and isinstance(segs[0], SymbolicSegment):
            program = segs[0].name.split(":", 1)[1]
            segs = segs[1:]
        assert all(isinstance(s, LogicalSegment) for s in segs)
        cls_id = segs[0].value  # type: ignore[union-attr]
        inst = segs[1].value  # type: ignore[union-attr]
        assert segs[0].kind == LogicalType.CLASS_ID and segs[1].kind == LogicalType.INSTANCE_ID  # type: ignore[union-attr]
        if cls_id == 0x6B and req.service == 0x55:
            attrs = parse_attribute_ids(req.data)
            self.log.append(("symbols", program, inst))
            if program not in self.scopes:
                return cip.Reply(0x55, 0x05, (0,))
            todo = sorted(
                (s for s in self.scopes[program] if s.instance_id >= inst),
                key=lambda s: s.instance_id,
            )
            part = todo[: self.page]
            return cip.Reply(
                0x55, 0x06 if len(todo) > self.page else 0, (), encode_symbol_instances(part, attrs)
            )
        assert cls_id == 0x6C
        if req.service == 0x03:
            self.log.append(("attributes", inst))
            if inst in self.refuse_templates or inst not in self.structs:
                return cip.Reply(0x03, 0x05, (0,))
            return cip.Reply(
                0x03,
                0,
                (),
                encode_attribute_results(
                    TemplateAttributes.for_struct(self.structs[inst]).results()
                ),
            )
        assert req.service == 0x4C
        rr = TemplateReadRequest.parse(req.data)
        self.log.append(("read", inst, rr.offset, rr.length))
        if inst in self.refuse_reads:
            return cip.Reply(0x4C, 0x05, (0,))
        data = encode_template_definition(self.structs[inst])
        wanted = data[rr.offset : rr.offset + rr.length]
        chunk = wanted[: self.chunk]
        return cip.Reply(0x4C, 0x06 if len(chunk) < len(wanted) else 0, (), chunk)


def run(builder: CatalogBuilder, plc: FakeLogix, *, as_bytes: bool = False) -> TagCatalog:
    for _ in range(10_000):
        outs = builder.take_outputs()
        assert len(outs) == 1  # one request at a time, then the end
        (out,) = outs
        if isinstance(out, CatalogDone):
            assert builder.done and builder.take_outputs() == []
            return out.catalog
        if isinstance(out, CatalogFailed):  # a refusal is a notification, the test raises it
            assert not builder.done and builder.outstanding is None
            assert builder.error is out.error and builder.take_outputs() == []
            raise out.error
        assert isinstance(out, CatalogRequest) and out.message == builder.outstanding
        reply = plc.handle(out.message)
        builder.on_reply(reply.encode() if as_bytes else reply)
    raise AssertionError("discovery did not end")


# A default tag set covering every type a produced tag can have, plus things around them.
MOTOR = StructType.build(
    "Motor",
    [("Speed", "REAL"), ("Run", "BOOL"), ("Fault", "BOOL"), ("Count", "DINT"), ("Name", "STRING")],
    instance_id=0x210,
)
LINE = StructType.build(
    "Line",
    [("Status", CONNECTION_STATUS), ("Motors", MOTOR, 2), ("Total", "LINT"), ("Bits", "BOOL", 32)],
    instance_id=0x220,
)
TAGS: dict[str, LogixType] = {
    "test": DINT,
    "test2": DINT,
    "Level": REAL,
    "Small": INT,
    "Big": LINT,
    "Flag": BOOL,
    "Temps": ArrayType(REAL, (10,)),
    "Grid": ArrayType(DINT, (2, 3)),
    "Flags": ArrayType(BOOL, (64,)),
    "Msg": STRING,
    "Motor1": MOTOR,
    "Line1": LINE,
    "Motors": ArrayType(MOTOR, (6,)),  # 6 * 100 > 500 bytes
}
SYSTEM = [
    SymbolInstance.for_tag(900, "__private", DINT),
    SymbolInstance.for_tag(901, "Routine:Main", DINT),
    SymbolInstance.for_tag(902, "Sys", DINT, system=True),
]


def default_plc(**kw: Any) -> FakeLogix:
    return FakeLogix.for_tags(
        TAGS, programs={"MainProgram": {"Local": DINT, "LMotor": MOTOR}}, extra=SYSTEM, **kw
    )


# ---------------------------------------------------------------------------------------------
# Request bytes (protocol.md 10.2 rows 6, 7, 8, 9)
# ---------------------------------------------------------------------------------------------


def test_symbol_list_request_matches_pycomm3_bytes() -> None:
    row6 = bytes.fromhex("55 02 20 6B 24 00 07 00 01 00 02 00 03 00 05 00 06 00 08 00 0A 00")
    assert symbol_list_request(0, None, PYCOMM3_SYMBOL_ATTRIBUTES) == row6
    assert symbol_list_request(0x1234, None, PYCOMM3_SYMBOL_ATTRIBUTES)[:8] == bytes.fromhex(
        "55 03 20 6B 25 00 34 12"
    )
    row7 = symbol_list_request(0, "Main", PYCOMM3_SYMBOL_ATTRIBUTES)
    assert (
        row7
        == bytes.fromhex("55 09 91 0C") + b"Program:Main" + bytes.fromhex("20 6B 24 00") + row6[6:]
    )
    odd = symbol_list_request(5, "Odd", (1, 2, 8))
    assert odd == bytes.fromhex("55 09 91 0B") + b"Program:Odd\x00" + bytes.fromhex(
        "20 6B 24 05 03 00 01 00 02 00 08 00"
    )


def test_template_requests_match_pycomm3_bytes() -> None:
    assert template_attributes_request(0x42) == bytes.fromhex(
        "03 02 20 6C 24 42 04 00 04 00 05 00 02 00 01 00"
    )
    assert template_attributes_request(0x3A1) == bytes.fromhex(
        "03 03 20 6C 25 00 A1 03 04 00 04 00 05 00 02 00 01 00"
    )
    assert template_read_request(0x3A1, 0x10, 0x64) == bytes.fromhex(
        "4C 03 20 6C 25 00 A1 03 10 00 00 00 64 00"
    )


def test_discovery_needs_name_type_and_dims() -> None:
    with pytest.raises(UsageError, match="attribute 8"):
        CatalogBuilder(attributes=(1, 2, 7))


# ---------------------------------------------------------------------------------------------
# Upload of the default tag set
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page,chunk", [(1, 7), (3, 40), (100, 10_000)])
def test_every_type_is_discovered_sized_and_decoded(page: int, chunk: int) -> None:
    plc = default_plc(page=page, chunk=chunk)
    cat = run(CatalogBuilder(), plc, as_bytes=page == 3)
    expected = {**TAGS, "Program:MainProgram.Local": DINT, "Program:MainProgram.LMotor": MOTOR}
    assert sorted(cat.tags) == sorted(expected)
    assert cat.programs == ("MainProgram",)
    for name, t in expected.items():
        info = cat[name]
        assert info.type == t, name
        assert info.type_name == t.name
        assert info.byte_size == byte_size(t)
        assert info.connection_size == byte_size(t) + 2
        assert info.problem is None
        assert info.produced is None  # not in the symbol attributes (protocol.md 9.4)
        sample = _sample(t)
        assert info.decode(compile_encoder(t)(sample)) == sample
    assert cat["Line1"].decode(compile_encoder(LINE)(_line_value()))["Status"] == {
        "RunMode": True,
        "ConnectionFaulted": False,
    }
    assert set(cat.templates) == {
        MOTOR.instance_id,
        LINE.instance_id,
        STRING.instance_id,
        CONNECTION_STATUS.instance_id,
    }
    # nested templates are read after the templates that name them, each exactly once
    reads = [e[1] for e in plc.log if e[0] == "attributes"]
    assert len(reads) == len(set(reads)) == 4


def _sample(t: LogixType, seed: int = 1) -> Any:
    """A deterministic value of type ``t`` with distinct numbers everywhere."""
    if isinstance(t, ArrayType):
        if t.is_bool_array:
            return [i % 3 == seed % 3 for i in range(t.dims[0])]
        out = [_sample(t.element, seed + i) for i in range(t.count)]
        for d in reversed(t.dims[1:]):
            out = [out[i : i + d] for i in range(0, len(out), d)]
        return out
    if isinstance(t, StructType):
        if t.string_capacity is not None:
            return f"s{seed}"
        return {
            m.name: (seed % 2 == 0 if m.bit is not None else _sample(m.type, seed + i))
            for i, m in enumerate(t.visible_members)
        }
    if t == BOOL:
        return True
    if t.code.name in ("REAL", "LREAL"):
        return seed + 0.5
    return seed


def _line_value() -> dict[str, Any]:
    motor = {"Speed": 1.5, "Run": True, "Fault": False, "Count": 3, "Name": "m"}
    return {
        "Status": {"RunMode": True, "ConnectionFaulted": False},
        "Motors": [motor, motor],
        "Total": 2**40,
        "Bits": [i % 3 == 0 for i in range(32)],
    }


def test_case_insensitive_lookup_and_unknown_names() -> None:
    cat = run(CatalogBuilder(), default_plc())
    assert cat["TEST"] is cat["test"] and "LEVEL" in cat and cat.get("nope") is None
    with pytest.raises(KeyError, match="not in the controller's tag list.*similar: test, test2"):
        cat["tes"]


def test_catalog_agrees_with_pycomm3_on_the_same_bytes() -> None:
    plc = default_plc()
    cat = run(CatalogBuilder(attributes=PYCOMM3_SYMBOL_ATTRIBUTES), plc)
    p3 = {t["tag_name"]: t for t in TemplatesFromOurBytes(plc.structs).upload(plc.scopes[None])}
    assert set(p3) == {n for n in cat.tags if not n.startswith("Program:")}
    for name, p3_tag in p3.items():
        info = cat[name]
        dims = tuple(p3_tag["dimensions"][: p3_tag["dim"]])
        assert info.dims == dims
        elements = 1
        for d in dims:
            elements *= d
        if p3_tag["tag_type"] == "struct":
            assert info.element_size == p3_tag["data_type"]["template"]["structure_size"]
            assert info.type_name.split("[")[0] == p3_tag["data_type_name"]
            elem = info.type.element if isinstance(info.type, ArrayType) else info.type
            assert isinstance(elem, StructType)
            if p3_tag["data_type"].get("string") is None:
                assert p3_tag["data_type"]["attributes"] == [m.name for m in elem.visible_members]
        else:
            assert info.element_size == getattr(p3_cip, p3_tag["data_type"]).size
        assert info.byte_size == info.element_size * elements
    # pycomm3 decodes the tag images exactly as our compiled decoders
    for name in ("Motor1", "Line1", "Msg", "Level"):
        t = TAGS[name]
        image = compile_encoder(t)(_value(t))
        assert p3[name]["type_class"].decode(image) == cat[name].decode(image)


def _value(t: LogixType) -> Any:
    return {
        MOTOR: {"Speed": 2.0, "Run": False, "Fault": True, "Count": -9, "Name": "pump"},
        LINE: _line_value(),
        STRING: "hello",
        REAL: 50.0,
    }[t]


def test_without_attribute_7_or_10_sizes_come_from_types_and_templates() -> None:
    for attrs in (LEGACY_SYMBOL_ATTRIBUTES[:2] + (8,), LEGACY_SYMBOL_ATTRIBUTES):
        cat = run(CatalogBuilder(attributes=attrs), default_plc())
        for name, t in TAGS.items():
            assert cat[name].byte_size == byte_size(t)
            assert cat[name].external_access is None


def test_explicit_program_list_and_no_programs() -> None:
    plc = default_plc()
    assert "Program:MainProgram.Local" not in run(CatalogBuilder(programs=False), plc).tags
    cat = run(CatalogBuilder(programs=["MainProgram"]), plc)
    assert "Program:MainProgram.Local" in cat
    with pytest.raises(DiscoveryError, match="symbol list of Program:Ghost from instance 0"):
        run(CatalogBuilder(programs=["Ghost"]), plc)


def test_continuation_requests_start_after_the_last_instance() -> None:
    plc = default_plc(page=4)
    run(CatalogBuilder(programs=False), plc)
    starts = [e[2] for e in plc.log if e[0] == "symbols"]
    ids = sorted(s.instance_id for s in plc.scopes[None])
    assert starts == [0] + [ids[i] + 1 for i in range(3, len(ids) - 1, 4)]


def test_template_reads_continue_at_the_received_offset() -> None:
    plc = default_plc(chunk=16)
    run(CatalogBuilder(), plc)
    reads = [e for e in plc.log if e[0] == "read" and e[1] == MOTOR.instance_id]
    definition = encode_template_definition(MOTOR)
    attrs = TemplateAttributes.for_struct(MOTOR)
    assert [r[2] for r in reads] == list(range(0, len(definition), 16))
    assert all(r[3] == 4 * attrs.definition_size - 21 - r[2] for r in reads)  # pycomm3's rule


# ---------------------------------------------------------------------------------------------
# Refusals and garbage
# ---------------------------------------------------------------------------------------------


def test_unreadable_template_keeps_sizes_and_names_the_problem() -> None:
    plc = default_plc(refuse_templates={MOTOR.instance_id})
    cat = run(CatalogBuilder(), plc)
    for name in ("Motor1", "Motors", "Line1"):
        info = cat[name]
        assert info.type is None and info.decoder is None
        assert "0x210" in (info.problem or "")
        assert info.byte_size == byte_size(TAGS[name])  # from attribute 7
    assert cat["Motor1"].type_name == "<template 0x210>"
    assert cat["Motors"].type_name == "<template 0x210>[6]"
    assert "refused" in cat.template_problems[MOTOR.instance_id]
    assert "nested template 0x210" in cat.template_problems[LINE.instance_id]
    assert cat["Msg"].type == STRING
    with pytest.raises(UsageError, match="type unknown"):
        cat["Motor1"].decode(bytes(byte_size(MOTOR)))
    plc = default_plc(refuse_reads={STRING.instance_id})
    assert run(CatalogBuilder(), plc)["Msg"].type is None


def test_symbol_list_refusal_raises_naming_the_request() -> None:
    plc = default_plc()
    plc.scopes.pop(None)
    with pytest.raises(DiscoveryError, match="symbol list of controller scope") as err:
        run(CatalogBuilder(), plc)
    assert err.value.cause.general == 0x05  # type: ignore[union-attr]


def failure(b: CatalogBuilder) -> DiscoveryError:
    """The error of the ``CatalogFailed`` that ended ``b`` (after any earlier requests)."""
    outs = b.take_outputs()
    assert isinstance(outs[-1], CatalogFailed) and b.outstanding is None
    assert all(isinstance(o, CatalogRequest) for o in outs[:-1])
    return outs[-1].error


def test_endless_partial_replies_terminate() -> None:
    b = CatalogBuilder(programs=False)
    b.on_reply(cip.Reply(0x55, 0x06, (), b""))  # returns: the refusal is an output
    assert "at least one symbol" in str(failure(b))
    b = CatalogBuilder(programs=False)
    one = SymbolInstance.for_tag(5, "A", DINT)
    b.on_reply(
        cip.Reply(0x55, 0x06, (), encode_symbol_instances([one], DISCOVERY_SYMBOL_ATTRIBUTES))
    )
    b.on_reply(
        cip.Reply(0x55, 0x06, (), encode_symbol_instances([one], DISCOVERY_SYMBOL_ATTRIBUTES))
    )
    assert "instances from 6 on" in str(failure(b))
    # a template whose reads never end is given up, the upload finishes
    b = CatalogBuilder(programs=False)
    b.on_reply(
        cip.Reply(
            0x55,
            0,
            (),
            encode_symbol_instances(
                [SymbolInstance.for_tag(1, "M", MOTOR)], DISCOVERY_SYMBOL_ATTRIBUTES
            ),
        )
    )
    b.on_reply(
        cip.Reply(
            0x03, 0, (), encode_attribute_results(TemplateAttributes.for_struct(MOTOR).results())
        )
    )
    for _ in range(1000):
        if b.outstanding is None:
            break
        b.on_reply(cip.Reply(b.outstanding[0], 0x06, (), b"\x00" * 7))
    assert b.done and "keeps answering 0x06" in b.result().template_problems[MOTOR.instance_id]


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        (cip.Reply(0x4C, 0, (), b""), "reply to service 0x55, got reply service 0xCC"),
        (cip.Reply(0x55, 0, (), b"\x01\x00\x00\x00\x05"), "malformed packet"),
        (b"\xd5\x00", "malformed packet"),
    ],
)
def test_wrong_reply_service_and_malformed_bytes_end_the_upload(
    reply: cip.Reply | bytes, needle: str
) -> None:
    b = CatalogBuilder()
    b.on_reply(reply)
    assert b.error is not None
    assert b.take_outputs() == [
        CatalogRequest(symbol_list_request(0), "symbol list of controller scope from instance 0"),
        CatalogFailed(b.error),
    ]
    err = b.error
    assert isinstance(err, DiscoveryError) and isinstance(err.cause, MalformedPacket)
    assert err.request == "symbol list of controller scope from instance 0"
    assert needle in str(err) and b.describe() == "discovery (failed)" and not b.done
    with pytest.raises(DiscoveryError) as raised:
        b.result()
    assert raised.value is err
    with pytest.raises(UsageError, match="discovery failed: no request is outstanding"):
        b.on_reply(cip.Reply(0x55))
    assert b.take_outputs() == []


def test_result_before_done_and_reply_after_done() -> None:
    b = CatalogBuilder()
    with pytest.raises(UsageError, match="waiting for: symbol list of controller scope"):
        b.result()
    plc = default_plc()
    run(b, plc)
    with pytest.raises(UsageError, match="done"):
        b.on_reply(cip.Reply(0x55))


def test_malformed_and_cyclic_definitions_become_problems() -> None:
    a = StructType.build("A", [("X", "DINT")], instance_id=0x300)
    attrs = TemplateAttributes.for_struct(a)
    # B names template 0x301 (itself) as a member
    b_def = bytearray(encode_template_definition(a))
    b_def[2:4] = (0x8000 | 0x301).to_bytes(2, "little")
    structs, problems = build_structs(
        {
            0x300: (attrs, encode_template_definition(a)),
            0x301: (attrs, bytes(b_def)),
            0x302: (attrs, b"\x01"),
        }
    )
    assert structs[0x300] == a
    assert "cycle" in problems[0x301]
    assert "0x302" in problems[0x302]


# ---------------------------------------------------------------------------------------------
# Sizes, produced-ness, datasize
# ---------------------------------------------------------------------------------------------


def test_produced_size_checks_and_datasize_errors() -> None:
    cat = run(CatalogBuilder(), default_plc())
    assert cat.check_datasize("test", 6) == 6 and cat.check_datasize("Level", None) == 6
    with pytest.raises(
        UsageError,
        match=r"datasize=4 is wrong for tag test \(DINT, 4 bytes\): "
        r"use datasize=6",
    ):
        cat.check_datasize("test", 4)
    assert cat.connection_size("Line1") == byte_size(LINE) + 2
    assert byte_size(MOTOR) == 100
    with pytest.raises(UsageError, match="600 bytes.*at most 500"):
        cat.connection_size("Motors")
    assert cat["Motors"].byte_size == 600
    assert cat["Motors"].produce_problem is not None and cat["Line1"].produce_problem is None
    with pytest.raises(UsageError, match="controller-scoped"):
        cat.connection_size("Program:MainProgram.Local")
    marked = cat.with_produced("test2", False)
    assert marked["test2"].produced is False and cat["test2"].produced is None
    with pytest.raises(UsageError, match="not marked produced"):
        marked.connection_size("TEST2")
    assert cat.with_produced("test", True, 2)["test"].max_consumers == 2


# ---------------------------------------------------------------------------------------------
# Member and element references
# ---------------------------------------------------------------------------------------------


def test_resolve_members_elements_and_bits() -> None:
    cat = run(CatalogBuilder(), default_plc())
    image = compile_encoder(LINE)(_line_value())
    r = cat.resolve("Line1.Motors[1].Speed")
    assert r.type == REAL and r.decode_from_base(image) == 1.5
    assert r.offset == LINE.members[1].offset + MOTOR.size + 0
    assert cat.resolve("line1.motors[1].run").decode_from_base(image) is True
    assert cat.resolve("Line1.Motors[0].Fault").decode_from_base(image) is False
    assert [cat.resolve(f"Line1.Bits[{i}]").decode_from_base(image) for i in range(32)] == (
        _line_value()["Bits"]
    )
    assert cat.resolve("Line1.Motors[1].Name").decode_from_base(image) == "m"
    grid = compile_encoder(TAGS["Grid"])([[1, 2, 3], [4, 5, 6]])
    assert cat.resolve("Grid[1,2]").decode_from_base(grid) == 6
    assert cat.resolve("Program:MainProgram.LMotor.Count").type == DINT
    assert cat.resolve("test").offset == 0 and cat.resolve("test").byte_size == 4
    for bad, msg in [
        ("Grid[1]", "2 dimension"),
        ("Grid[2,0]", "out of range 0..1"),
        ("test.X", "has no member"),
        ("Motor1.Nope", "members: Speed, Run"),
        ("Motor1[0]", "not an array"),
        ("Ghost", "not in the controller"),
        ("Line1.Motors[0].Run.X", "has no member"),
    ]:
        with pytest.raises(UsageError, match=msg):
            cat.resolve(bad)


# ---------------------------------------------------------------------------------------------
# Change detection
# ---------------------------------------------------------------------------------------------


def _changed_motor() -> StructType:
    return StructType.build(
        "Motor",
        [
            ("Speed", "REAL"),
            ("Run", "BOOL"),
            ("Fault", "BOOL"),
            ("Count", "DINT"),
            ("Amps", "REAL"),
            ("Name", "STRING"),
        ],
        instance_id=0x210,
    )


def test_unchanged_controller_probes_equal_and_changed_udt_is_noticed() -> None:
    plc = default_plc()
    cat = run(CatalogBuilder(), plc)
    again = run(CatalogBuilder(), default_plc(page=2, chunk=9))
    assert again.fingerprint == cat.fingerprint and again.shape_fingerprint == cat.shape_fingerprint
    assert not cat.diff(again)
    plc.log.clear()
    probe = run(cat.probe(), plc)
    assert probe.shape_fingerprint == cat.shape_fingerprint
    assert not any(e[0] == "read" for e in plc.log)  # the probe reads no definition

    # "download": Motor gains a member (new size, new handle), Line nests it
    motor2 = _changed_motor()
    line2 = StructType.build(
        "Line",
        [
            ("Status", CONNECTION_STATUS),
            ("Motors", motor2, 2),
            ("Total", "LINT"),
            ("Bits", "BOOL", 32),
        ],
        instance_id=0x220,
    )
    tags2 = {**TAGS, "Motor1": motor2, "Line1": line2, "Motors": ArrayType(motor2, (6,))}
    plc2 = FakeLogix.for_tags(
        tags2, programs={"MainProgram": {"Local": DINT, "LMotor": motor2}}, extra=SYSTEM
    )
    assert run(cat.probe(), plc2).shape_fingerprint != cat.shape_fingerprint
    new = run(CatalogBuilder(), plc2)
    diff = cat.diff(new)
    assert diff.templates_changed == (0x210, 0x220)
    assert set(diff.changed) == {"Motor1", "Line1", "Motors", "Program:MainProgram.LMotor"}
    assert not diff.added and not diff.removed
    assert new["Motor1"].byte_size == motor2.size != MOTOR.size
    assert "templates changed: 0x210, 0x220" in str(diff)


def test_added_removed_and_retyped_tags_change_the_shape() -> None:
    cat = run(CatalogBuilder(), default_plc())
    tags = dict(TAGS)
    tags.pop("Small")
    tags["test2"] = REAL
    tags["New"] = DINT
    new = run(
        CatalogBuilder(),
        FakeLogix.for_tags(
            tags, programs={"MainProgram": {"Local": DINT, "LMotor": MOTOR}}, extra=SYSTEM
        ),
    )
    assert new.shape_fingerprint != cat.shape_fingerprint
    d = cat.diff(new)
    assert (d.added, d.removed, d.changed) == (("New",), ("Small",), ("test2",))
    assert str(d) == "added: New; removed: Small; changed: test2"


def test_template_removed_after_download_is_noticed_by_the_probe() -> None:
    cat = run(CatalogBuilder(), default_plc())
    plc = default_plc(refuse_templates={LINE.instance_id})
    assert run(cat.probe(), plc).shape_fingerprint != cat.shape_fingerprint


def test_catalog_from_listing_matches_an_upload() -> None:
    plc = default_plc()
    cat = run(CatalogBuilder(), plc)
    offline = catalog_from_listing(
        plc.scopes[None], plc.structs, program_symbols={"MainProgram": plc.scopes["MainProgram"]}
    )
    assert offline.tags == cat.tags
    assert offline.fingerprint == cat.fingerprint


# ---------------------------------------------------------------------------------------------
# Random UDTs: what we discover is what was declared, and pycomm3 decodes alike
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(struct_types(2), st.integers(1, 4), st.integers(5, 64), st.data())
def test_random_udts_round_trip_through_discovery(
    udt: StructType, page: int, chunk: int, data: st.DataObject
) -> None:
    assume(has_unique_template_ids(udt))  # as on a controller
    tags: dict[str, LogixType] = {"U": udt, "UArr": ArrayType(udt, (2,)), "D": DINT}
    cat = run(CatalogBuilder(programs=False), FakeLogix.for_tags(tags, page=page, chunk=chunk))
    for name, t in tags.items():
        assert cat[name].type == t
        assert cat[name].byte_size == byte_size(t)
    value = data.draw(values_for(udt))
    assert cat["U"].decode(compile_encoder(udt)(value)) == value


@pytest.mark.parametrize(("mode", "limits", "passed"), [
    ("new", ListingLimits(symbols=500), "the limit of 500 symbol entries"),
    ("repeat", ListingLimits(symbols=500), "the limit of 500 symbol entries"),
    ("new", ListingLimits(bytes=10_000), "the limit of 10000 bytes"),
])
def test_an_upload_whose_listing_never_ends_fails_at_a_limit(
    mode: str, limits: ListingLimits, passed: str
) -> None:
    b = CatalogBuilder(plc="10.0.0.5:44818", limits=limits)
    for _ in range(10_000):
        if b.outstanding is None:
            break
        reply = endless_listing_reply(b.outstanding, mode)
        assert reply is not None
        b.on_reply(reply)
    error = failure_after_requests(b)
    assert isinstance(error.cause, ListingTooLarge)
    assert f"the tag listing of PLC 10.0.0.5:44818 passed {passed}" in str(error)
    assert str(error).startswith("symbol list of controller scope from instance ")
    assert b.requests_sent <= 500 // 8 + 2 or "bytes" in passed


def test_an_upload_is_bounded_in_templates() -> None:
    structs = [StructType.build(f"U{i}", [("A", "DINT")], instance_id=0x100 + i) for i in range(9)]
    symbols = [SymbolInstance.for_tag(i + 1, f"T{i}", st) for i, st in enumerate(structs)]
    b = CatalogBuilder(programs=False, limits=ListingLimits(templates=5))
    b.on_reply(cip.Reply(0x55, 0, (), encode_symbol_instances(symbols,
                                                             DISCOVERY_SYMBOL_ATTRIBUTES)))
    for _ in range(100):
        if b.outstanding is None:
            break
        b.on_reply(cip.Reply(b.outstanding[0], 0x05, (), b""))  # every template refused
    error = failure_after_requests(b)
    assert isinstance(error.cause, ListingTooLarge)
    assert "passed the limit of 5 templates" in str(error)


def failure_after_requests(b: CatalogBuilder) -> DiscoveryError:
    """The error of the ``CatalogFailed`` that ended ``b``, after any number of requests."""
    outs = b.take_outputs()
    assert isinstance(outs[-1], CatalogFailed) and b.outstanding is None
    return outs[-1].error

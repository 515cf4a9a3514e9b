"""Assembly connections to generic adapters (acquisition/assembly.py): the connection path,
the scanner's Forward_Open, the sizes a reject asks for, the exclusive owner's O->T datagram and
the declared layout of an input image."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import class1, cm, epath
from pyconpro.acquisition.assembly import (
    AssemblySpec,
    ConnectionKind,
    Direction,
    assembly_forward_open,
    assembly_from_map,
    output_datagram,
    parse_layout,
    size_answer,
)
from pyconpro.acquisition.assembly import (
    SizeAnswer as SizeAnswerT,
)
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_codec import compile_decoder

EO = ConnectionKind.EXCLUSIVE_OWNER


def owner(**kw: object) -> AssemblySpec:
    return AssemblySpec(EO, input=100, output=150, config=151, **kw)  # type: ignore[arg-type]


def test_path_matches_eipscanner_example_bytes() -> None:
    # protocol.md 4.3: EIPScanner's ImplicitMessagingExample path 20 04 24 97 2C 96 2C 64
    assert owner().application_path() == bytes.fromhex("20042497 2c962c64")


def test_path_with_port_segment_config_data_and_16_bit_points() -> None:
    spec = AssemblySpec(ConnectionKind.INPUT_ONLY, input=0x1234, output=152, config=151,
                        config_data=b"\x01\x02")
    path = spec.connection_path((epath.PortSegment.slot(2),))
    assert path == bytes.fromhex("0102 20042497 2c98 2d003412 8001 0102")
    assert epath.decode_path(path)[-1] == epath.DataSegment(b"\x01\x02")


def test_raw_path_is_used_verbatim_after_the_hops() -> None:
    spec = AssemblySpec(ConnectionKind.LISTEN_ONLY, raw_path=bytes.fromhex("20042401 2c992c64"))
    assert spec.connection_path() == bytes.fromhex("20042401 2c992c64")


@pytest.mark.parametrize("kw, fix", [
    ({"input": None}, "connection points"),
    ({"config_data": b"\x01"}, "even number"),
    ({"input_size": 600}, "0..505"),
])
def test_bad_specs_say_why(kw: dict[str, object], fix: str) -> None:
    args: dict[str, object] = {"input": 100, "output": 150, **kw}
    with pytest.raises(UsageError, match=fix):
        AssemblySpec(EO, **args)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="heartbeat"):
        AssemblySpec(ConnectionKind.INPUT_ONLY, input=100, output=152, output_size=4)


def test_forward_open_sizes_count_sequence_and_run_idle_header() -> None:
    fo = assembly_forward_open(owner(), input_bytes=32, output_bytes=32, to_rpi_us=10_000,
                               ot_rpi_us=20_000, connection_serial=1, vendor_id=2,
                               originator_serial=3, to_connection_id=4)
    assert fo.transport == 0x01  # client, cyclic, class 1 (protocol.md 5.6)
    assert fo.ot_params.size == 2 + 4 + 32 and fo.to_params.size == 2 + 32
    assert fo.ot_params.to_word16() == 0x4800 + 38
    assert cm.ForwardOpenRequest.decode_body(fo.encode_body()) == fo
    hb = assembly_forward_open(AssemblySpec(ConnectionKind.LISTEN_ONLY, input=100, output=153,
                                            to_run_idle=True),
                               input_bytes=32, output_bytes=0, to_rpi_us=10_000,
                               ot_rpi_us=10_000, connection_serial=1, vendor_id=2,
                               originator_serial=3, to_connection_id=4)
    assert hb.ot_params.size == 2 and hb.to_params.size == 2 + 4 + 32


def test_size_answers_by_code_and_by_what_is_known() -> None:
    spec = owner()
    assert size_answer(spec, (0x0127, 38), input_known=True, output_known=True) == \
        SizeAnswerT(Direction.OT, 32)
    assert size_answer(spec, (0x0128, 34), input_known=False, output_known=False) == \
        SizeAnswerT(Direction.TO, 32)
    # 0x0109 does not say which: O->T first, then T->O
    assert size_answer(spec, (0x0109, 38), input_known=False, output_known=False) == \
        SizeAnswerT(Direction.OT, 32)
    assert size_answer(spec, (0x0109, 34), input_known=False, output_known=True) == \
        SizeAnswerT(Direction.TO, 32)
    assert size_answer(spec, (0x0109, 34), input_known=True, output_known=True).problem
    assert size_answer(spec, (0x0109,), input_known=False, output_known=False).problem
    listen = AssemblySpec(ConnectionKind.LISTEN_ONLY, input=100, output=153)
    assert size_answer(listen, (0x0109, 34), input_known=False, output_known=False) == \
        SizeAnswerT(Direction.TO, 32)
    assert "heartbeat" in (size_answer(listen, (0x0127, 6), input_known=True,
                                       output_known=False).problem or "")
    assert "less than" in (size_answer(spec, (0x0128, 1), input_known=False,
                                       output_known=True).problem or "")


def test_output_datagram_has_sequence_run_idle_and_image() -> None:
    d = output_datagram(0x11, 0x1_0002, b"\xAA\xBB", run=True, header=True)
    decoded = class1.Class1Datagram.decode(d, run_idle_header=True)
    assert decoded == class1.Class1Datagram(0x11, 0x1_0002, 0x0002, b"\xAA\xBB", 1)
    idle = class1.Class1Datagram.decode(output_datagram(1, 1, b"\0\0", run=False, header=True),
                                        run_idle_header=True)
    assert idle.run_idle == 0
    bare = output_datagram(1, 1, b"\x05", run=True, header=False)
    assert class1.Class1Datagram.decode(bare).data == b"\x05"


@given(st.binary(max_size=64), st.integers(0, 0xFFFFFFFF), st.booleans())
def test_output_datagram_round_trip(image: bytes, seq: int, run: bool) -> None:
    d = class1.Class1Datagram.decode(output_datagram(7, seq, image, run=run, header=True),
                                     run_idle_header=True)
    assert (d.data, d.sequence, d.run_idle) == (image, seq, int(run))


def test_layout_decodes_fields_by_name_packed() -> None:
    t = parse_layout("drive", [{"name": "speed", "type": "INT"},
                               {"name": "fault", "type": "BOOL"},
                               {"name": "ready", "type": "BOOL"},
                               {"name": "torque", "type": "REAL"},
                               {"name": "raw", "type": "USINT[2]", "offset": 8}], size=12)
    image = (1200).to_bytes(2, "little") + b"\x02" + bytes.fromhex("0000c03f") + b"\0\x07\x08" \
        + b"\0\0"
    assert compile_decoder(t)(image) == {"speed": 1200, "fault": False, "ready": True,
                                         "torque": 1.5, "raw": [7, 8]}


def test_layout_bools_with_a_bit_and_no_offset_share_the_previous_bools_byte() -> None:
    t = parse_layout("io", [{"name": "run", "type": "BOOL"},
                            {"name": "fault", "type": "BOOL", "bit": 3},
                            {"name": "ready", "type": "BOOL"},
                            {"name": "again", "type": "BOOL", "bit": 2},  # not past bit 4
                            {"name": "count", "type": "SINT"}])
    assert [(m.name, m.offset, m.bit) for m in t.members] == [
        ("run", 0, 0), ("fault", 0, 3), ("ready", 0, 4), ("again", 1, 2), ("count", 2, None)]
    assert t.size == 3
    assert compile_decoder(t)(bytes([0b11001, 0b100, 5])) == {
        "run": True, "fault": True, "ready": True, "again": True, "count": 5}


@pytest.mark.parametrize("fields, fix", [
    ([], "at least one"),
    ([{"name": "a", "type": "INT", "colour": 1}], "unknown key"),
    ([{"name": "a", "type": "STRING"}], "atomic"),
    ([{"name": "a", "type": "INT"}, {"name": "A", "type": "INT"}], "twice"),
    ([{"name": "a", "type": "DINT", "bit": 2}], "bit is for BOOL"),
    ([{"name": "a", "type": "DINTX"}], "unknown type"),
])
def test_layout_errors_name_the_field(fields: list[dict[str, object]], fix: str) -> None:
    with pytest.raises(UsageError, match=fix):
        parse_layout("x", fields)


def test_layout_larger_than_the_image_is_refused() -> None:
    with pytest.raises(UsageError, match="need 8 bytes"):
        parse_layout("x", [{"name": "a", "type": "LINT"}], size=4)


@pytest.mark.parametrize("spec", [
    AssemblySpec(ConnectionKind.INPUT_ONLY, input=100, output=152),
    AssemblySpec(ConnectionKind.EXCLUSIVE_OWNER, input=100, output=150, config=151,
                 config_data=b"\x01\x02", input_size=32, output_size=8, ot_run_idle=False,
                 to_run_idle=True),
    AssemblySpec(ConnectionKind.LISTEN_ONLY, raw_path=bytes.fromhex("200424972C992C64")),
], ids=lambda s: s.kind.value)
def test_a_spec_as_a_map_reads_back_the_same(spec: AssemblySpec) -> None:
    assert assembly_from_map("x", spec.to_map()) == (spec, None)

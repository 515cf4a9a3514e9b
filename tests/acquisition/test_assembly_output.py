"""Output images written through a declared output layout (``acquisition.assembly``:
``encode_output``, ``output_layout_from_map``): every field type the input decoder reads, BOOL
bits, offsets, the fields not named keeping their bytes, the errors (each names the field and the
fix, and nothing is written), and encode -> decode with the same layout."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition.assembly import (
    AssemblySpec,
    ConnectionKind,
    assembly_from_map,
    encode_output,
    output_layout_from_map,
    parse_layout,
)
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_types import ATOMIC_FORMATS, DataTypeCode

# Every atomic type a layout field may have (BOOL has its own tests: it is a bit).
INTEGERS = [DataTypeCode(c).name for c, (fmt, _) in ATOMIC_FORMATS.items()
            if c != DataTypeCode.BOOL and fmt not in "fd"]
FLOATS = ["REAL", "LREAL"]

DRIVE = parse_layout("drive", [
    {"name": "speed", "type": "INT"},
    {"name": "run", "type": "BOOL"},
    {"name": "reset", "type": "BOOL"},
    {"name": "torque", "type": "REAL"},
    {"name": "limits", "type": "UINT[2]", "offset": 8},
    {"name": "mode", "type": "BOOL", "offset": 12, "bit": 5},
], size=16, key="output_layout")


def _range(type_name: str) -> tuple[int, int]:
    fmt, size = next(f for c, f in ATOMIC_FORMATS.items() if DataTypeCode(c).name == type_name)
    bits = 8 * size
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt.islower() else (0, (1 << bits) - 1)


@pytest.mark.parametrize("type_name", INTEGERS)
def test_every_integer_type_takes_its_whole_range_and_refuses_one_past(type_name: str) -> None:
    t = parse_layout("x", [{"name": "pad", "type": "USINT"}, {"name": "v", "type": type_name}])
    lo, hi = _range(type_name)
    for value in (lo, hi, 0):
        image = encode_output(t, {"v": value}, bytes(t.size))
        assert compile_decoder(t)(image) == {"pad": 0, "v": value}
    for bad in (lo - 1, hi + 1):
        with pytest.raises(UsageError, match=rf"output field 'v' \({type_name}\): {bad} does not"
                           rf" fit {type_name}; give a whole number in {lo}\.\.{hi}"):
            encode_output(t, {"v": bad}, bytes(t.size))
    with pytest.raises(UsageError, match=r"'v'.*is not a .*int"):
        encode_output(t, {"v": 1.5}, bytes(t.size))


@pytest.mark.parametrize("type_name", FLOATS)
def test_floats_take_numbers_and_refuse_text(type_name: str) -> None:
    t = parse_layout("x", [{"name": "v", "type": type_name}])
    assert compile_decoder(t)(encode_output(t, {"v": -2.5}, bytes(t.size))) == {"v": -2.5}
    assert compile_decoder(t)(encode_output(t, {"v": 3}, bytes(t.size))) == {"v": 3.0}
    with pytest.raises(UsageError, match="output field 'v'.*give a number"):
        encode_output(t, {"v": "fast"}, bytes(t.size))


def test_a_real_out_of_range_is_refused_with_its_limit() -> None:
    t = parse_layout("x", [{"name": "v", "type": "REAL"}])
    with pytest.raises(UsageError, match=r"'v' \(REAL\): 1e\+39 does not fit REAL.*3\.4e38"):
        encode_output(t, {"v": 1e39}, bytes(4))


def test_fields_are_written_at_their_offsets_and_bits() -> None:
    image = encode_output(DRIVE, {"speed": -2, "reset": True, "torque": 1.5,
                                  "limits": [10, 65535], "mode": True}, bytes(16))
    # Packed: torque right after the BOOL byte; limits and mode where their offsets say.
    assert image == (struct.pack("<hBf", -2, 0b10, 1.5) + b"\0"
                     + struct.pack("<HH", 10, 65535) + bytes([1 << 5]) + bytes(3))


def test_fields_not_named_keep_their_bytes_and_bits() -> None:
    previous = bytes(range(1, 17))
    image = encode_output(DRIVE, {"speed": 7}, previous)
    assert image == struct.pack("<h", 7) + previous[2:]
    # A BOOL sets or clears its own bit; the other bits of its byte stay.
    assert encode_output(DRIVE, {"run": False}, b"\xff" * 16)[2] == 0xFE
    assert encode_output(DRIVE, {"mode": False}, b"\xff" * 16)[12] == 0xDF
    assert encode_output(DRIVE, {"mode": True}, bytes(16))[12] == 0x20
    # The bytes after the last field (13..15) are the previous image's.
    assert encode_output(DRIVE, {}, previous) == previous


@pytest.mark.parametrize("values, needle", [
    ({"Speed": 1}, "output field 'Speed' is not in the output layout: its fields are speed, run,"
                   " reset, torque, limits, mode"),
    ({"speed": 40000}, r"output field 'speed' \(INT\): 40000 does not fit INT; give a whole"
                       r" number in -32768\.\.32767"),
    ({"run": 2}, r"output field 'run' \(BOOL\): 2 is not a BOOL; give true or false"),
    ({"run": "yes"}, r"output field 'run' \(BOOL\)"),
    ({"limits": [1]}, r"output field 'limits' \(UINT\[2\]\): expected a list of 2 elements.*give"
                      r" a list of 2 values, each a whole number in 0\.\.65535"),
    ({"limits": [1, -1]}, r"output field 'limits\[1\]' \(UINT\[2\]\): -1 does not fit UINT"),
    ({"torque": None}, r"output field 'torque' \(REAL\): None is not a REAL"),
])  # fmt: skip
def test_a_bad_field_names_itself_and_the_fix_and_writes_nothing(
    values: dict[str, object], needle: str
) -> None:
    previous = bytes(range(16))
    with pytest.raises(UsageError, match=needle):
        encode_output(DRIVE, {"speed": 5, **values}, previous)  # the good field is not kept
    # ``previous`` is untouched (bytes), and so is what the caller still sends.
    assert previous == bytes(range(16))


def test_not_a_map_or_an_image_too_small_for_the_layout() -> None:
    with pytest.raises(UsageError, match="give a map of field names"):
        encode_output(DRIVE, [1, 2], bytes(16))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="output image is 8 bytes but the output layout needs 13"):
        encode_output(DRIVE, {"speed": 1}, bytes(8))


@given(speed=st.integers(-32768, 32767), run=st.booleans(), reset=st.booleans(),
       torque=st.floats(width=32, allow_nan=False),
       limits=st.lists(st.integers(0, 65535), min_size=2, max_size=2), mode=st.booleans(),
       previous=st.binary(min_size=16, max_size=16))
def test_encode_then_decode_with_the_same_layout_gives_the_fields_back(
    speed: int, run: bool, reset: bool, torque: float, limits: list[int], mode: bool,
    previous: bytes,
) -> None:
    values = {"speed": speed, "run": run, "reset": reset, "torque": torque, "limits": limits,
              "mode": mode}
    image = encode_output(DRIVE, values, previous)
    assert len(image) == 16 and compile_decoder(DRIVE)(image) == values
    # Bytes no field covers (7, 13..15) and the unused bits of the BOOL bytes are kept.
    assert image[7] == previous[7] and image[13:] == previous[13:]
    assert image[2] & 0xFC == previous[2] & 0xFC and image[12] & 0xDF == previous[12] & 0xDF


# ----------------------------------------------------------------------- the map key

OWNER = {"connection": "exclusive_owner", "input": 100, "output": 150, "output_size": 4}


def test_output_layout_of_an_assembly_map() -> None:
    m = {**OWNER, "output_layout": [{"name": "speed", "type": "INT"},
                                    {"name": "run", "type": "BOOL", "offset": 3, "bit": 1}]}
    spec, layout = assembly_from_map("drive", m)
    assert layout is None  # the input image has no declared layout
    out = output_layout_from_map("drive", m, spec)
    assert out is not None and out.size == 4
    assert encode_output(out, {"speed": 1, "run": True}, bytes(4)) == bytes.fromhex("01000002")
    assert output_layout_from_map("drive", OWNER, spec) is None


@pytest.mark.parametrize("m, needle", [
    ({**OWNER, "output_layout": [{"name": "x", "type": "DINT"}, {"name": "y", "type": "INT"}]},
     r"output_layout of 'drive': its fields need 6 bytes but the assembly is 4 \(output_size\)"),
    ({**OWNER, "output_layout": [{"name": "x", "type": "STRING"}]},
     r"output_layout of 'drive', field 0 \(x\).*atomic"),
    ({**OWNER, "output_layout": {"name": "x"}}, r"assembly\.output_layout: give a list of fields"),
    ({"connection": "input_only", "input": 100, "output": 152,
      "output_layout": [{"name": "x", "type": "INT"}]},
     "input_only connection sends no output data.*leave output_layout out"),
])  # fmt: skip
def test_output_layout_errors_are_raised_with_the_rest_of_the_map(
    m: dict[str, object], needle: str
) -> None:
    with pytest.raises(UsageError, match=needle):
        assembly_from_map("drive", m)


def test_without_output_size_the_layout_is_as_long_as_its_fields() -> None:
    spec = AssemblySpec(ConnectionKind.EXCLUSIVE_OWNER, input=100, output=150)
    out = output_layout_from_map("d", {"output_layout": [{"name": "w", "type": "DWORD"}]}, spec)
    assert out is not None and out.size == 4

"""EPATH segments, connection paths and tag names (protocol.md 4)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import epath
from pyconpro.acquisition.epath import (
    DataSegment,
    ElectronicKey,
    LogicalSegment,
    LogicalType,
    NetworkSegment,
    PortSegment,
    SymbolicSegment,
)
from pyconpro.acquisition.errors import MalformedPacket, UsageError

# protocol.md 4.2: rconpro's unit-tested connection path for tag "test" in slot 0 (9 words).
RCON_PATH = bytes.fromhex("0100 3404 0000000000000000 9104 74657374")
# protocol.md 4.3 / EIPScanner example: assembly I/O path.
ASSEMBLY_PATH = bytes.fromhex("2004 2497 2c96 2c64")
# EIPScanner's Connection Manager path with 16-bit segments (vectors/PROVENANCE.md).
CM16 = bytes.fromhex("2100 0600 2500 0100")


def test_decode_rcon_path() -> None:
    assert epath.decode_path(RCON_PATH) == (
        PortSegment(1, b"\x00"), ElectronicKey(), SymbolicSegment("test"),
    )


def test_encode_rcon_path() -> None:
    assert epath.produced_tag_connection_path("test", 0) == RCON_PATH
    assert epath.produced_tag_connection_path("test", None, None) == bytes.fromhex("9104 74657374")


def test_assembly_and_cm16_paths() -> None:
    segs = epath.decode_path(ASSEMBLY_PATH)
    assert segs == (
        LogicalSegment(LogicalType.CLASS_ID, 4, 8),
        LogicalSegment(LogicalType.INSTANCE_ID, 0x97, 8),
        LogicalSegment(LogicalType.CONNECTION_POINT, 0x96, 8),
        LogicalSegment(LogicalType.CONNECTION_POINT, 0x64, 8),
    )
    assert epath.encode_path(segs) == ASSEMBLY_PATH
    cm = epath.decode_path(CM16)
    assert cm == (
        LogicalSegment(LogicalType.CLASS_ID, 6, 16),
        LogicalSegment(LogicalType.INSTANCE_ID, 1, 16),
    )
    assert epath.encode_path(cm) == CM16
    assert epath.CONNECTION_MANAGER_PATH == bytes.fromhex("20062401")


def test_odd_symbol_padded() -> None:
    assert SymbolicSegment("abc").encode() == bytes.fromhex("9103 616263 00")
    assert epath.decode_path(bytes.fromhex("9103 616263 00")) == (SymbolicSegment("abc"),)


def test_extended_port_segment() -> None:
    # port 2 (Ethernet) with ASCII IP link address "10.0.0.1" (8 bytes), padded to even
    seg = PortSegment(2, b"10.0.0.1")
    raw = seg.encode()
    assert raw == bytes.fromhex("12 08") + b"10.0.0.1"
    assert epath.decode_path(raw) == (seg,)
    odd = PortSegment(2, b"1.2.3.4")
    assert odd.encode() == bytes.fromhex("12 07") + b"1.2.3.4" + b"\x00"
    big = PortSegment(300, b"\x05")
    assert epath.decode_path(big.encode()) == (big,)


def test_key_segment() -> None:
    key = ElectronicKey(1, 0x0E, 166, 33, 11, True)
    raw = key.encode()
    assert raw == bytes.fromhex("3404 0100 0e00 a600 a1 0b")
    assert epath.decode_path(raw) == (key,)
    assert not key.is_wildcard() and ElectronicKey().is_wildcard()


def test_prefixes_malformed() -> None:
    for path in (RCON_PATH, ASSEMBLY_PATH, CM16, PortSegment(2, b"10.0.0.1").encode()):
        # a prefix that ends exactly on a segment boundary is a valid shorter path
        boundaries = set()
        pos = 0
        for seg in epath.decode_path(path):
            pos += len(seg.encode())
            boundaries.add(pos)
        for n in range(1, len(path)):
            if n in boundaries:
                continue
            with pytest.raises(MalformedPacket):
                epath.decode_path(path[:n])


@pytest.mark.parametrize(
    "raw", ["ff00", "3403 0000", "9102 41", "9101 41 01", "0001", "3800", "60"]
)
def test_bad_segments(raw: str) -> None:
    with pytest.raises(MalformedPacket):
        epath.decode_path(bytes.fromhex(raw))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Tag", epath.TagName((epath.TagPart("Tag"),))),
        ("Tag[3]", epath.TagName((epath.TagPart("Tag", (3,)),))),
        ("Tag[1,2]", epath.TagName((epath.TagPart("Tag", (1, 2)),))),
        ("Tag[1, 2 ,3]", epath.TagName((epath.TagPart("Tag", (1, 2, 3)),))),
        ("Udt.Member", epath.TagName((epath.TagPart("Udt"), epath.TagPart("Member")))),
        ("Program:Main.Tag", epath.TagName((epath.TagPart("Tag"),), "Main")),
        (
            "program:Main.A[2].B",
            epath.TagName((epath.TagPart("A", (2,)), epath.TagPart("B")), "Main"),
        ),
        ("_x1", epath.TagName((epath.TagPart("_x1"),))),
    ],
)
def test_parse_tag_names(name: str, expected: epath.TagName) -> None:
    assert epath.parse_tag_name(name) == expected


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "empty"),
        ("1abc", "unexpected '1' at position 0"),
        ("Tag[", "unexpected '\\[' at position 3"),
        ("Tag[1,2,3,4]", "unexpected '\\[' at position 3"),
        ("Tag.", "unexpected 'end of name' at position 4"),
        ("a b", "unexpected ' ' at position 1"),
        ("Program:Tag", "Program:<program>.<tag>"),
        ("A" * 41, "Logix allows 40"),
        ("bad__name", "double underscores"),
        ("Tag-1", "unexpected '-'"),
    ],
)
def test_bad_tag_names(name: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        epath.parse_tag_name(name)


def test_tag_path_with_program_member_and_index() -> None:
    path = epath.encode_path(epath.tag_path("Program:Main.Arr[300].X"))
    assert path == (
        bytes.fromhex("910c")
        + b"Program:Main"
        + bytes.fromhex("9103")
        + b"Arr\x00"
        + bytes.fromhex("2900 2c01")
        + bytes.fromhex("9101")
        + b"X\x00"
    )


@pytest.mark.parametrize("name", ["Udt.Member", "Arr[1]", "Program:Main.Tag"])
def test_produced_tag_path_refuses_non_plain_names(name: str) -> None:
    with pytest.raises(UsageError, match="produced"):
        epath.produced_tag_connection_path(name)


segments = st.one_of(
    st.builds(PortSegment, st.integers(1, 0xFFFF), st.binary(min_size=1, max_size=1)),
    st.builds(PortSegment, st.integers(1, 0xFFFF), st.binary(min_size=2, max_size=20)),
    st.builds(
        LogicalSegment,
        st.sampled_from([LogicalType.CLASS_ID, LogicalType.ATTRIBUTE_ID]),
        st.integers(0, 0xFF),
        st.just(8),
    ),
    st.builds(
        LogicalSegment, st.sampled_from(list(LogicalType)[:5]), st.integers(0, 0xFFFF), st.just(16)
    ),
    st.builds(
        LogicalSegment,
        st.sampled_from(
            [LogicalType.INSTANCE_ID, LogicalType.MEMBER_ID, LogicalType.CONNECTION_POINT]
        ),
        st.integers(0, 0xFFFFFFFF),
        st.just(32),
    ),
    st.builds(
        ElectronicKey,
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 127),
        st.integers(0, 255),
        st.booleans(),
    ),
    st.builds(SymbolicSegment, st.text(alphabet="abcXYZ_:019", min_size=1, max_size=60)),
    st.builds(DataSegment, st.binary(max_size=20).filter(lambda b: len(b) % 2 == 0)),
    st.builds(NetworkSegment, st.just(0x43), st.binary(min_size=1, max_size=1)),
    st.builds(
        NetworkSegment, st.just(0x50), st.binary(max_size=10).filter(lambda b: len(b) % 2 == 0)
    ),
)


@given(st.lists(segments, max_size=6))
def test_path_round_trip(segs: list[epath.Segment]) -> None:
    raw = epath.encode_path(segs)
    assert len(raw) % 2 == 0
    assert epath.decode_path(raw) == tuple(segs)


@given(st.text(max_size=30))
def test_tag_name_parser_never_crashes(text: str) -> None:
    try:
        parsed = epath.parse_tag_name(text)
    except UsageError:
        return
    assert epath.parse_tag_name(str(parsed)) == parsed

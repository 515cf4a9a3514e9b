"""Class-1 datagrams and sequence arithmetic (protocol.md 6, Appendix A.4/A.5)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import class1
from pyconpro.acquisition.errors import MalformedPacket

from tests.acquisition.codec_helpers import assert_prefixes_malformed

# Appendix A.4 with seq32 = 5, seq16 = 9, value 42.
A4 = bytes.fromhex("0200 0280 0800 0100008a 05000000 b100 0600 0900 2a000000")
# protocol.md 6.5: rconpro's unit-tested heartbeat bytes (connection id 0, seq 0, seq16 1).
RCON_HEARTBEAT = bytes.fromhex("02 00 02 80 08 00 00 00 00 00 00 00 00 00 B1 00 02 00 01 00")


def test_decode_a4() -> None:
    d = class1.Class1Datagram.decode(A4)
    assert d == class1.Class1Datagram(0x8A000001, 5, 9, b"\x2a\x00\x00\x00")
    assert d.connection_size == 6
    assert A4[20:] == d.data  # value at datagram offset 20


def test_encode_a4_and_heartbeat() -> None:
    assert class1.Class1Datagram(0x8A000001, 5, 9, b"\x2a\x00\x00\x00").encode() == A4
    assert class1.heartbeat(0, 0, 1) == RCON_HEARTBEAT
    assert len(class1.heartbeat(1, 2)) == 20


def test_run_idle_header() -> None:
    d = class1.Class1Datagram(7, 1, 2, b"\xaa" * 32, 1)
    raw = d.encode()
    assert (
        raw[16:18] == (38).to_bytes(2, "little")
        and raw[18:20] == b"\x02\x00"
        and raw[20:24] == b"\x01\x00\x00\x00"
    )
    assert class1.Class1Datagram.decode(raw, run_idle_header=True) == d
    with pytest.raises(MalformedPacket):
        class1.Class1Datagram.decode(class1.heartbeat(1, 1), run_idle_header=True)


def test_prefixes_and_bad_fields() -> None:
    assert_prefixes_malformed(class1.Class1Datagram.decode, A4)
    for off, val in ((0, 3), (2, 0xA1), (4, 4), (14, 0xB2), (16, 5)):
        bad = bytearray(A4)
        bad[off] = val
        with pytest.raises(MalformedPacket):
            class1.Class1Datagram.decode(bytes(bad))
    with pytest.raises(MalformedPacket):
        class1.Class1Datagram.decode(A4 + b"\x00")


def test_peek_connection_id() -> None:
    assert class1.peek_connection_id(A4) == 0x8A000001
    assert class1.peek_connection_id(A4[:9]) is None


def test_class0() -> None:
    d = class1.Class0Datagram(0x1234, b"\x01\x02")
    raw = d.encode()
    assert raw == bytes.fromhex("0200 a100 0400 34120000 b100 0200 0102")
    assert class1.Class0Datagram.decode(raw) == d
    assert_prefixes_malformed(class1.Class0Datagram.decode, raw)


def test_sequence_wrap() -> None:
    assert class1.seq16_newer(0, 0xFFFF) and not class1.seq16_newer(0xFFFF, 0)
    assert class1.seq16_diff(5, 0xFFFE) == 7 and class1.seq16_diff(3, 3) == 0
    assert class1.seq32_newer(1, 0xFFFFFFFF) and not class1.seq32_newer(0x80000000, 0)
    assert class1.seq32_diff(0, 0xFFFFFFF0) == 16


u32 = st.integers(0, 0xFFFFFFFF)


@given(u32, u32, st.integers(0, 0xFFFF), st.binary(max_size=500), st.one_of(st.none(), u32))
def test_round_trip(cid: int, seq: int, cseq: int, data: bytes, ri: int | None) -> None:
    d = class1.Class1Datagram(cid, seq, cseq, data, ri)
    assert class1.Class1Datagram.decode(d.encode(), run_idle_header=ri is not None) == d


@given(u32, st.integers(-0x7FFFFFFF, 0x7FFFFFFF))
def test_seq32_diff_inverse(base: int, delta: int) -> None:
    assert class1.seq32_diff((base + delta) & 0xFFFFFFFF, base) == delta
    assert class1.seq32_newer((base + delta) & 0xFFFFFFFF, base) == (delta > 0)


@given(st.integers(0, 0xFFFF), st.integers(-0x7FFF, 0x7FFF))
def test_seq16_diff_inverse(base: int, delta: int) -> None:
    assert class1.seq16_diff((base + delta) & 0xFFFF, base) == delta

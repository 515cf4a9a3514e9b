"""Encapsulation header, RegisterSession, SendRRData/SendUnitData (protocol.md 2)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import cpf, encap
from pyconpro.acquisition.errors import EncapsulationError, MalformedPacket, UsageError

from tests.acquisition.codec_helpers import assert_prefixes_malformed

# RegisterSession request as pycomm3 sends it (protocol.md 10.2 row 1): context "_pycomm_".
REGISTER = (
    bytes.fromhex("6500 0400 00000000 00000000")
    + b"_pycomm_"
    + bytes(4)
    + bytes.fromhex("0100 0000")
)


def test_decode_register_session() -> None:
    pkt = encap.EncapsulationPacket.decode(REGISTER)
    assert pkt == encap.EncapsulationPacket(
        encap.Command.REGISTER_SESSION, b"\x01\x00\x00\x00", 0, 0, b"_pycomm_", 0
    )
    assert encap.RegisterSessionData.decode(pkt.data) == encap.RegisterSessionData(1, 0)


def test_encode_register_session() -> None:
    data = encap.RegisterSessionData().encode()
    assert (
        encap.EncapsulationPacket(
            encap.Command.REGISTER_SESSION, data, context=b"_pycomm_"
        ).encode()
        == REGISTER
    )


def test_register_prefixes() -> None:
    assert_prefixes_malformed(encap.EncapsulationPacket.decode, REGISTER)
    assert_prefixes_malformed(encap.RegisterSessionData.decode, b"\x01\x00\x00\x00")


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(MalformedPacket, match="trailing"):
        encap.EncapsulationPacket.decode(REGISTER + b"\x00")


def test_error_reply_status() -> None:
    reply = encap.EncapsulationPacket(encap.Command.SEND_RR_DATA, b"", 5, 0x64)
    with pytest.raises(EncapsulationError, match="0x0064 invalid session handle") as e:
        reply.check_status()
    assert e.value.status == 0x64


def test_bad_context_is_usage_error() -> None:
    with pytest.raises(UsageError):
        encap.EncapsulationPacket(0x65, context=b"short").encode()


def test_frame_buffer_reassembles_split_stream() -> None:
    a = encap.EncapsulationPacket(0x6F, b"abc", 7).encode()
    b = encap.EncapsulationPacket(0x70, b"", 7, 0x64).encode()
    stream = a + b
    for cut in range(len(stream) + 1):
        fb = encap.FrameBuffer()
        got = fb.feed(stream[:cut]) + fb.feed(stream[cut:])
        assert [p.encode() for p in got] == [a, b]
        assert fb.pending() == 0


def test_send_rr_data_layout() -> None:
    data = encap.send_rr_data(b"\x01\x02\x20\x01\x24\x01", timeout=10)
    assert data == bytes.fromhex("00000000 0a00 0200 0000 0000 b200 0600 010220012401")
    sd = encap.SendData.decode(data)
    assert sd.unconnected() == b"\x01\x02\x20\x01\x24\x01"
    assert sd.timeout == 10
    with pytest.raises(MalformedPacket):
        sd.connected()
    assert_prefixes_malformed(encap.SendData.decode, data)


def test_send_unit_data_layout() -> None:
    data = encap.send_unit_data(0x11223344, 7, b"\x4c\x00")
    assert data == bytes.fromhex("00000000 0000 0200 a100 0400 44332211 b100 0400 0700 4c00")
    assert encap.SendData.decode(data).connected() == (0x11223344, 7, b"\x4c\x00")


def test_send_rr_data_with_wrong_items_is_malformed() -> None:
    sd = encap.SendData((cpf.ConnectedAddress(1), cpf.UnconnectedData(b"x")))
    with pytest.raises(MalformedPacket, match="NullAddress"):
        encap.SendData.decode(sd.encode()).unconnected()


packets = st.builds(
    encap.EncapsulationPacket,
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(min_size=8, max_size=8),
    st.integers(0, 0xFFFFFFFF),
)


@given(packets)
def test_packet_round_trip(pkt: encap.EncapsulationPacket) -> None:
    assert encap.EncapsulationPacket.decode(pkt.encode()) == pkt


@given(st.lists(packets, max_size=5), st.integers(1, 50))
def test_frame_buffer_any_chunking(pkts: list[encap.EncapsulationPacket], chunk: int) -> None:
    stream = b"".join(p.encode() for p in pkts)
    fb = encap.FrameBuffer()
    got = []
    for i in range(0, len(stream), chunk):
        got += fb.feed(stream[i : i + chunk])
    assert got == pkts

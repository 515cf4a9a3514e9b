"""Message-router framing, Multiple Service Packet, Unconnected_Send (protocol.md 3, 5.11)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import cip
from pyconpro.acquisition.errors import CipError, MalformedPacket

from tests.acquisition.codec_helpers import assert_prefixes_malformed

# protocol.md 10.2 row 3: pycomm3's Unconnected_Send wrapping Get_Attributes_All of Identity.
US_REQUEST = bytes.fromhex("52 02 20 06 24 01 0A 05 06 00 01 02 20 01 24 01 01 00 01 00")


def test_decode_unconnected_send() -> None:
    req = cip.Request.decode(US_REQUEST)
    assert req == cip.Request(
        0x52, bytes.fromhex("20062401"), bytes.fromhex("0A05 0600 010220012401 01 00 0100")
    )
    us = cip.UnconnectedSend.decode(req.data)
    assert us == cip.UnconnectedSend(bytes.fromhex("010220012401"), b"\x01\x00", 0x0A, 0x05)
    assert cip.Request.decode(us.message) == cip.Request(0x01, bytes.fromhex("20012401"))


def test_encode_unconnected_send() -> None:
    us = cip.UnconnectedSend(bytes.fromhex("010220012401"), b"\x01\x00")
    assert cip.Request(0x52, bytes.fromhex("20062401"), us.encode()).encode() == US_REQUEST
    odd = cip.UnconnectedSend(b"\x0e\x02\x20\x01\x24\x01\x30", b"\x01\x00").encode()
    assert cip.UnconnectedSend.decode(odd).message == b"\x0e\x02\x20\x01\x24\x01\x30"


def test_prefixes() -> None:
    assert_prefixes_malformed(
        lambda b: cip.UnconnectedSend.decode(cip.Request.decode(b).data), US_REQUEST
    )
    reply = cip.Reply(0x54, 1, (0x0109, 6), b"\x01\x02").encode()
    assert_prefixes_malformed(cip.Reply.decode, reply[:8])


def test_reply_with_additional_status() -> None:
    raw = bytes.fromhex("D4 00 01 02 09 01 06 00") + b"tail"
    reply = cip.Reply.decode(raw)
    assert reply == cip.Reply(0x54, 0x01, (0x0109, 6), b"tail")
    assert reply.encode() == raw
    with pytest.raises(
        CipError, match="0x01/0x0109 invalid connection size: the controller wants 6 bytes"
    ):
        reply.raise_for_status()


def test_request_reply_bit_checks() -> None:
    with pytest.raises(MalformedPacket, match="reply service code"):
        cip.Reply.decode(bytes.fromhex("54 00 00 00"))
    with pytest.raises(MalformedPacket, match="request service"):
        cip.Request.decode(bytes.fromhex("D4 00"))


def test_partial_allowed() -> None:
    cip.Reply(0x55, 0x06).raise_for_status(allow_partial=True)
    with pytest.raises(CipError):
        cip.Reply(0x55, 0x06).raise_for_status()


def test_multiple_service_packet() -> None:
    # Two Read Tag requests as in protocol.md 3: count, offsets from the count field.
    a = cip.Request(0x4C, bytes.fromhex("9103 414243 00"), b"\x01\x00").encode()
    b = cip.Request(0x4C, bytes.fromhex("9101 58 00"), b"\x01\x00").encode()
    data = cip.encode_multiple([a, b])
    assert data[:6] == bytes.fromhex("0200 0600") + (6 + len(a)).to_bytes(2, "little")
    assert cip.decode_multiple(data) == (a, b)
    with pytest.raises(MalformedPacket):
        cip.decode_multiple(bytes.fromhex("0200 0600 0300") + a + b)


@given(
    st.integers(0, 0x7F),
    st.binary(max_size=40).filter(lambda b: len(b) % 2 == 0),
    st.binary(max_size=40),
)
def test_request_round_trip(service: int, path: bytes, data: bytes) -> None:
    r = cip.Request(service, path, data)
    assert cip.Request.decode(r.encode()) == r


@given(
    st.integers(0, 0x7F),
    st.integers(0, 255),
    st.lists(st.integers(0, 0xFFFF), max_size=8),
    st.binary(max_size=40),
    st.integers(0, 255),
)
def test_reply_round_trip(
    service: int, status: int, extra: list[int], data: bytes, reserved: int
) -> None:
    r = cip.Reply(service, status, tuple(extra), data, reserved)
    assert cip.Reply.decode(r.encode()) == r


@given(st.lists(st.binary(max_size=30), max_size=6))
def test_multiple_round_trip(msgs: list[bytes]) -> None:
    assert cip.decode_multiple(cip.encode_multiple(msgs)) == tuple(msgs)


@given(
    st.binary(max_size=30),
    st.binary(max_size=12).filter(lambda b: len(b) % 2 == 0),
    st.integers(0, 255),
    st.integers(0, 255),
)
def test_unconnected_send_round_trip(msg: bytes, route: bytes, tick: int, ticks: int) -> None:
    us = cip.UnconnectedSend(msg, route, tick, ticks)
    assert cip.UnconnectedSend.decode(us.encode()) == us

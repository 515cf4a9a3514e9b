"""Connection Manager: Forward_Open, Large_Forward_Open, Forward_Close (protocol.md 5, App. A)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import cip, cm, encap, epath
from pyconpro.acquisition.errors import MalformedPacket, UsageError

from tests.acquisition.codec_helpers import assert_prefixes_malformed

# protocol.md Appendix A.1 (CIP part of the 100-byte frame).
A1_CIP = bytes.fromhex(
    "54 02 20 06 24 01 0A 0E 00 00 00 00 01 00 00 8A 34 12 01 00 2A 00 00 00 00 00 00 00"
    " E0 C8 10 00 02 48 40 42 0F 00 06 48 81 09"
    " 01 00 34 04 00 00 00 00 00 00 00 00 91 04 74 65 73 74"
)
A1_REQUEST = cm.ForwardOpenRequest(
    ot_connection_id=0,
    to_connection_id=0x8A000001,
    connection_serial=0x1234,
    vendor_id=1,
    originator_serial=0x2A,
    timeout_multiplier=0,
    ot_rpi=1_100_000,
    ot_params=cm.NetworkParameters(
        cm.ConnectionType.POINT_TO_POINT, cm.Priority.SCHEDULED, False, 2
    ),
    to_rpi=1_000_000,
    to_params=cm.NetworkParameters(
        cm.ConnectionType.POINT_TO_POINT, cm.Priority.SCHEDULED, False, 6
    ),
    transport=0x81,
    path=bytes.fromhex("0100 3404 0000000000000000 9104 74657374"),
)
# Appendix A.2 success reply (CIP part), O->T id 0xC35A0001.
A2_CIP = bytes.fromhex(
    "D4 00 00 00 01 00 5A C3 01 00 00 8A 34 12 01 00 2A 00 00 00 E0 C8 10 00 40 42 0F 00 00 00"
)
# Appendix A.3 failure reply, size mismatch with the wanted size.
A3_CIP = bytes.fromhex("D4 00 01 02 09 01 06 00 34 12 01 00 2A 00 00 00 00 00")
# Appendix A.6 Forward_Close request.
A6_CIP = bytes.fromhex(
    "4E 02 20 06 24 01 0A 0E 34 12 01 00 2A 00 00 00 09 00"
    " 01 00 34 04 00 00 00 00 00 00 00 00 91 04 74 65 73 74"
)


def test_a1_decode() -> None:
    req = cip.Request.decode(A1_CIP)
    assert req.path == epath.CONNECTION_MANAGER_PATH
    assert cm.ForwardOpenRequest.from_request(req) == A1_REQUEST


def test_a1_encode_builder() -> None:
    built = cm.produced_tag_forward_open(
        tag="test",
        tag_bytes=4,
        to_rpi_us=1_000_000,
        ot_rpi_us=1_100_000,
        connection_serial=0x1234,
        vendor_id=1,
        originator_serial=0x2A,
        to_connection_id=0x8A000001,
        timeout_multiplier=0,
    )
    assert built == A1_REQUEST
    assert built.encode() == A1_CIP
    frame = encap.EncapsulationPacket(
        encap.Command.SEND_RR_DATA, encap.send_rr_data(built.encode()), 0x11223344
    ).encode()
    assert len(frame) == 100 and frame[52:56] == b"\x01\x00\x00\x8a" and frame[81] == 9


def test_a2_success_reply() -> None:
    reply = cip.Reply.decode(A2_CIP)
    ok = cm.decode_forward_open_reply(reply)
    assert ok == cm.ForwardOpenSuccess(
        0xC35A0001, 0x8A000001, 0x1234, 1, 0x2A, 1_100_000, 1_000_000
    )
    assert ok.to_reply().encode() == A2_CIP
    # frame offsets of protocol.md 0 #6: status at 42, O->T id at 44, T->O id at 48
    frame = encap.EncapsulationPacket(0x6F, encap.send_rr_data(A2_CIP)).encode()
    assert (
        frame[42] == 0
        and frame[44:48] == b"\x01\x00\x5a\xc3"
        and frame[48:52] == b"\x01\x00\x00\x8a"
    )


def test_a3_failure_reply() -> None:
    fail = cm.decode_forward_open_reply(cip.Reply.decode(A3_CIP))
    assert fail == cm.ConnectionFailure(1, (0x0109, 6), 0x1234, 1, 0x2A, 0, 0)
    assert fail.extended_status == 0x0109
    assert (
        str(fail.error())
        == "0x01/0x0109 invalid connection size: the controller wants 6 bytes (connection size,"
        " i.e. 4 bytes of tag data + 2)"
    )
    assert fail.to_reply(0x54).encode() == A3_CIP


def test_failure_without_remaining_path_size() -> None:
    raw = bytes.fromhex("D4 00 01 01 00 01 34 12 01 00 2A 00 00 00")
    fail = cm.decode_forward_open_reply(cip.Reply.decode(raw))
    assert isinstance(fail, cm.ConnectionFailure)
    assert fail.remaining_path_size is None and fail.to_reply(0x54).encode() == raw


def test_a6_forward_close() -> None:
    assert cm.forward_close_for(A1_REQUEST).encode() == A6_CIP
    req = cip.Request.decode(A6_CIP)
    assert cm.ForwardCloseRequest.decode_body(req.data) == cm.ForwardCloseRequest(
        0x1234, 1, 0x2A, A1_REQUEST.path
    )
    ok = cm.ForwardCloseSuccess(0x1234, 1, 0x2A)
    raw = ok.to_reply().encode()
    assert raw == bytes.fromhex("CE 00 00 00 34 12 01 00 2A 00 00 00 00 00")
    assert cm.decode_forward_close_reply(cip.Reply.decode(raw)) == ok
    notfound = bytes.fromhex("CE 00 01 01 07 01 34 12 01 00 2A 00 00 00 00 00")
    fail = cm.decode_forward_close_reply(cip.Reply.decode(notfound))
    assert isinstance(fail, cm.ConnectionFailure) and fail.extended_status == 0x0107


def test_prefixes() -> None:
    body = cip.Request.decode(A1_CIP).data
    assert_prefixes_malformed(cm.ForwardOpenRequest.decode_body, body)
    assert_prefixes_malformed(cm.ForwardOpenSuccess.decode_body, cip.Reply.decode(A2_CIP).data)
    assert_prefixes_malformed(cm.ForwardCloseRequest.decode_body, cip.Request.decode(A6_CIP).data)
    with pytest.raises(MalformedPacket):
        cm.ConnectionFailure.from_reply(cip.Reply(0x54, 1, (0x100,), b"\x01\x02"))


def test_large_forward_open_layout() -> None:
    # pycomm3's class-3 Large_Forward_Open (protocol.md 10.2 row 4)
    raw = bytes.fromhex(
        "5B 02 20 06 24 01 0A 05 00000000 78563412 2704 0910 EFBEADDE 07 000000 01402000 A00F0042"
        " 01402000 A00F0042 A3 03 01 00 20 02 24 01"
    )
    req = cm.ForwardOpenRequest.from_request(cip.Request.decode(raw))
    assert req.large and req.to_connection_id == 0x12345678 and req.connection_serial == 0x0427
    assert req.ot_params == cm.NetworkParameters(
        cm.ConnectionType.POINT_TO_POINT, cm.Priority.LOW, True, 4000
    )
    assert req.transport_trigger == cm.TransportTrigger(3, 2, True)
    assert req.ot_rpi == 2_113_537 and cm.multiplier_factor(req.timeout_multiplier) == 512
    assert req.encode() == raw
    assert_prefixes_malformed(
        lambda b: cm.ForwardOpenRequest.decode_body(b, large=True), cip.Request.decode(raw).data
    )


def test_ncp_worked_values() -> None:
    # protocol.md 5.5 table
    assert cm.NetworkParameters.from_word16(0x4802) == cm.NetworkParameters(
        cm.ConnectionType.POINT_TO_POINT, cm.Priority.SCHEDULED, False, 2
    )
    assert cm.NetworkParameters.from_word16(0x43F4) == cm.NetworkParameters(
        cm.ConnectionType.POINT_TO_POINT, cm.Priority.LOW, True, 500
    )
    assert (
        cm.NetworkParameters(
            cm.ConnectionType.MULTICAST, cm.Priority.SCHEDULED, False, 0x22
        ).to_word16()
        == 0x2822
    )
    assert cm.NetworkParameters.from_word32(0x42000FA0).size == 4000
    with pytest.raises(UsageError, match="Large_Forward_Open"):
        cm.NetworkParameters(size=600).to_word16()


def test_multiplier() -> None:
    assert [cm.multiplier_factor(m) for m in range(8)] == [4, 8, 16, 32, 64, 128, 256, 512]
    assert cm.multiplier_code(16) == 2
    with pytest.raises(UsageError):
        cm.multiplier_factor(8)
    with pytest.raises(UsageError):
        cm.multiplier_code(10)


def test_service_mismatch_is_malformed() -> None:
    with pytest.raises(MalformedPacket):
        cm.decode_forward_open_reply(cip.Reply(0x4E))
    with pytest.raises(MalformedPacket):
        cm.ForwardOpenRequest.from_request(cip.Request(0x4C, b""))


def test_builder_rejects_bad_sizes() -> None:
    with pytest.raises(UsageError):
        cm.produced_tag_forward_open(
            tag="t",
            tag_bytes=0,
            to_rpi_us=1000,
            ot_rpi_us=1000,
            connection_serial=1,
            vendor_id=1,
            originator_serial=1,
            to_connection_id=1,
        )


u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
ncp16 = st.builds(
    cm.NetworkParameters,
    st.sampled_from(list(cm.ConnectionType)),
    st.sampled_from(list(cm.Priority)),
    st.booleans(),
    st.integers(0, 511),
    st.booleans(),
)
ncp32 = st.builds(
    cm.NetworkParameters,
    st.sampled_from(list(cm.ConnectionType)),
    st.sampled_from(list(cm.Priority)),
    st.booleans(),
    u16,
    st.booleans(),
)
paths = st.binary(max_size=40).filter(lambda b: len(b) % 2 == 0)


@st.composite
def forward_opens(draw):  # type: ignore[no-untyped-def]
    large = draw(st.booleans())
    ncp = ncp32 if large else ncp16
    return cm.ForwardOpenRequest(
        draw(u32),
        draw(u32),
        draw(u16),
        draw(u16),
        draw(u32),
        draw(u8),
        draw(u32),
        draw(ncp),
        draw(u32),
        draw(ncp),
        draw(u8),
        draw(paths),
        draw(u8),
        draw(u8),
        large,
        draw(st.binary(min_size=3, max_size=3)),
    )


@given(forward_opens())
def test_forward_open_round_trip(req: cm.ForwardOpenRequest) -> None:
    assert cm.ForwardOpenRequest.from_request(cip.Request.decode(req.encode())) == req


@given(st.builds(cm.ForwardOpenSuccess, u32, u32, u16, u16, u32, u32, u32, paths, u8))
def test_success_round_trip(ok: cm.ForwardOpenSuccess) -> None:
    assert cm.decode_forward_open_reply(cip.Reply.decode(ok.to_reply().encode())) == ok


@given(st.integers(1, 255), st.lists(u16, max_size=6), u16, u16, u32, st.one_of(st.none(), u8), u8)
def test_failure_round_trip(
    general: int, extra: list[int], s: int, v: int, o: int, rps: int | None, res: int
) -> None:
    f = cm.ConnectionFailure(general, tuple(extra), s, v, o, rps, 0 if rps is None else res)
    assert cm.decode_forward_open_reply(cip.Reply.decode(f.to_reply(0x54).encode())) == f
    assert cm.decode_forward_close_reply(cip.Reply.decode(f.to_reply(0x4E).encode())) == f


@given(st.builds(cm.ForwardCloseRequest, u16, u16, u32, paths, u8, u8, u8))
def test_close_round_trip(req: cm.ForwardCloseRequest) -> None:
    assert cm.ForwardCloseRequest.decode_body(cip.Request.decode(req.encode()).data) == req


@given(st.builds(cm.ForwardCloseSuccess, u16, u16, u32, paths, u8))
def test_close_success_round_trip(ok: cm.ForwardCloseSuccess) -> None:
    assert cm.decode_forward_close_reply(cip.Reply.decode(ok.to_reply().encode())) == ok


@given(u8)
def test_transport_round_trip(b: int) -> None:
    assert cm.TransportTrigger.from_byte(b).to_byte() == b

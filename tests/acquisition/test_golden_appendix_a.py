"""protocol.md Appendix A (tests/golden/appendix_a.py): our encoders reproduce every example
byte for byte from the appendix's parameters, our decoders read them back, every truncated
prefix is rejected, and tshark decodes the same bytes to the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pyconpro.acquisition import cip, class1, cm, encap, epath
from pyconpro.acquisition.errors import MalformedPacket

from tests.golden import appendix_a as A
from tests.support import compare, pcap, tshark


def _fo() -> cm.ForwardOpenRequest:
    return cm.produced_tag_forward_open(
        tag=A.TAG_NAME,
        tag_bytes=4,
        to_rpi_us=A.TO_RPI_US,
        ot_rpi_us=A.OT_RPI_US,
        connection_serial=A.CONNECTION_SERIAL,
        vendor_id=A.VENDOR_ID,
        originator_serial=A.ORIGINATOR_SERIAL,
        to_connection_id=A.TO_CONNECTION_ID,
        timeout_multiplier=A.TIMEOUT_MULTIPLIER,
        slot=A.SLOT,
    )


def _rr_frame(message: bytes) -> bytes:
    return encap.EncapsulationPacket(
        encap.Command.SEND_RR_DATA,
        encap.send_rr_data(message),
        session=A.SESSION_HANDLE,
        context=A.SENDER_CONTEXT,
    ).encode()


def _success() -> cm.ForwardOpenSuccess:
    return cm.ForwardOpenSuccess(
        A.OT_CONNECTION_ID,
        A.TO_CONNECTION_ID,
        A.CONNECTION_SERIAL,
        A.VENDOR_ID,
        A.ORIGINATOR_SERIAL,
        A.OT_API_US,
        A.TO_API_US,
    )


def _failure() -> cm.ConnectionFailure:
    return cm.ConnectionFailure(
        A.A3_GENERAL_STATUS,
        A.A3_ADDITIONAL_STATUS,
        A.CONNECTION_SERIAL,
        A.VENDOR_ID,
        A.ORIGINATOR_SERIAL,
        0,
        0,
    )


def test_vector_sizes_and_offsets_are_as_the_appendix_says() -> None:
    assert len(A.A1_FRAME) == 100 and len(A.A1_CIP_FORWARD_OPEN) == 60
    assert len(A.CONNECTION_PATH) == 2 * A.CONNECTION_PATH_WORDS == 18
    assert A.A2_FRAME[A.A2_CIP_OFFSET_IN_FRAME :] == A.A2_CIP_REPLY and len(A.A2_FRAME) == 70
    assert A.A3_FRAME[40:] == A.A3_CIP_REPLY
    assert len(A.A4_DATAGRAM) == 24 and A.A4_DATAGRAM[A.A4_VALUE_OFFSET :] == bytes([42, 0, 0, 0])
    assert len(A.A5_HEARTBEAT) == len(A.RCONPRO_HEARTBEAT) == 20


# ---------------------------------------------------------------------------------------------
# encoders reproduce the appendix


def test_a1_connection_path() -> None:
    assert epath.produced_tag_connection_path(A.TAG_NAME, A.SLOT) == A.CONNECTION_PATH
    assert epath.CONNECTION_MANAGER_PATH == A.CM_PATH


def test_a1_forward_open_is_reproduced() -> None:
    fo = _fo()
    assert fo.encode() == A.A1_CIP_FORWARD_OPEN
    assert _rr_frame(fo.encode()) == A.A1_FRAME
    assert fo.ot_params.to_word16() == A.OT_NCP and fo.to_params.to_word16() == A.TO_NCP
    assert fo.transport == A.TRANSPORT_TRIGGER
    assert (fo.priority_tick, fo.timeout_ticks) == (A.PRIORITY_TICK, A.TIMEOUT_TICKS)


def test_a2_success_reply_is_reproduced() -> None:
    assert _success().to_reply().encode() == A.A2_CIP_REPLY
    assert _rr_frame(A.A2_CIP_REPLY) == A.A2_FRAME


def test_a3_failure_reply_is_reproduced() -> None:
    fail = _failure()
    assert fail.to_reply(cip.Service.FORWARD_OPEN).encode() == A.A3_CIP_REPLY
    assert _rr_frame(A.A3_CIP_REPLY) == A.A3_FRAME
    assert str(fail.error()).startswith(
        "0x01/0x0109 invalid connection size: the controller wants 6 bytes"
    )


def test_a4_a5_datagrams_are_reproduced() -> None:
    value = A.TAG_VALUE.to_bytes(4, "little")
    d = class1.Class1Datagram(A.TO_CONNECTION_ID, A.SEQ32, A.SEQ16, value)
    assert d.encode() == A.A4_DATAGRAM
    assert d.connection_size == A.TO_NCP & 0x1FF
    assert class1.heartbeat(A.OT_CONNECTION_ID, A.SEQ32, A.SEQ16) == A.A5_HEARTBEAT
    assert class1.heartbeat(0, 0, 1) == A.RCONPRO_HEARTBEAT


def test_a6_forward_close_is_reproduced() -> None:
    assert cm.forward_close_for(_fo()).encode() == A.A6_CIP_FORWARD_CLOSE
    fc = cm.ForwardCloseRequest(
        A.CONNECTION_SERIAL, A.VENDOR_ID, A.ORIGINATOR_SERIAL, A.CONNECTION_PATH
    )
    assert fc.encode() == A.A6_CIP_FORWARD_CLOSE


# ---------------------------------------------------------------------------------------------
# decoders read them back


def _unconnected(frame: bytes) -> bytes:
    packet = encap.EncapsulationPacket.decode(frame)
    assert (packet.command, packet.session) == (encap.Command.SEND_RR_DATA, A.SESSION_HANDLE)
    return encap.SendData.decode(packet.data).unconnected()


def test_decoders_read_the_appendix() -> None:
    req = cip.Request.decode(_unconnected(A.A1_FRAME))
    assert req.path == A.CM_PATH
    assert cm.ForwardOpenRequest.from_request(req) == _fo()
    assert epath.decode_path(A.CONNECTION_PATH) == (
        epath.PortSegment(1, b"\x00"),
        epath.NO_KEY,
        epath.SymbolicSegment("test"),
    )
    assert cm.decode_forward_open_reply(cip.Reply.decode(_unconnected(A.A2_FRAME))) == _success()
    assert cm.decode_forward_open_reply(cip.Reply.decode(_unconnected(A.A3_FRAME))) == _failure()
    d = class1.Class1Datagram.decode(A.A4_DATAGRAM)
    assert (d.connection_id, d.data) == (A.TO_CONNECTION_ID, bytes([42, 0, 0, 0]))
    hb = class1.Class1Datagram.decode(A.A5_HEARTBEAT)
    assert (hb.connection_id, hb.data, hb.cip_sequence) == (0xC35A0001, b"", 1)
    fc_req = cip.Request.decode(A.A6_CIP_FORWARD_CLOSE)
    assert cm.ForwardCloseRequest.decode_body(fc_req.data) == cm.forward_close_for(_fo())


DECODERS: dict[str, Callable[[bytes], object]] = {
    "A1_FRAME": lambda b: cm.ForwardOpenRequest.from_request(
        cip.Request.decode(
            encap.SendData.decode(encap.EncapsulationPacket.decode(b).data).unconnected()
        )
    ),
    "A2_FRAME": lambda b: cm.decode_forward_open_reply(
        cip.Reply.decode(
            encap.SendData.decode(encap.EncapsulationPacket.decode(b).data).unconnected()
        )
    ),
    "A3_FRAME": lambda b: cm.decode_forward_open_reply(
        cip.Reply.decode(
            encap.SendData.decode(encap.EncapsulationPacket.decode(b).data).unconnected()
        )
    ),
    "A4_DATAGRAM": class1.Class1Datagram.decode,
    "A5_HEARTBEAT": class1.Class1Datagram.decode,
    "A6_CIP_FORWARD_CLOSE": lambda b: cm.ForwardCloseRequest.decode_body(
        cip.Request.decode(b).data
    ),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_every_truncated_prefix_is_malformed(name: str) -> None:
    data = A.ALL[name]
    DECODERS[name](data)  # the whole thing decodes
    for n in range(len(data)):
        with pytest.raises(MalformedPacket):
            DECODERS[name](data[:n])


# ---------------------------------------------------------------------------------------------
# tshark reads the appendix the same way


@pytest.mark.tshark
def test_tshark_decodes_the_appendix(tshark_bin: str, tmp_path: Path) -> None:
    frames = pcap.tcp_conversation_frames(
        [(True, A.A1_FRAME), (False, A.A2_FRAME), (True, A.A1_FRAME), (False, A.A3_FRAME)],
        client=("192.168.1.100", 50000),
        server=("192.168.1.10", 44818),
    )
    frames.append(pcap.ipv4_udp_frame("192.168.1.10", 2222, "192.168.1.100", 2222, A.A4_DATAGRAM))
    frames.append(pcap.ipv4_udp_frame("192.168.1.100", 2222, "192.168.1.10", 2222, A.A5_HEARTBEAT))
    path = pcap.write_pcap(tmp_path / "appendix_a.pcap", frames)
    assert tshark.capture_problems(path) == []
    t = tshark.dissect(path)
    (layer,) = t[4].layer("cipcm", skip=tshark.GENERATED)
    compare.assert_forward_open_request(4, _fo(), layer)
    assert t[4].values("cip.symbol") == ["test"]
    (layer,) = t[5].layer("cipcm", skip=tshark.GENERATED)
    compare.assert_forward_open_success(5, _success(), layer)
    (layer,) = t[7].layer("cipcm", skip=tshark.GENERATED)
    compare.assert_connection_failure(7, _failure(), layer)
    compare.assert_class1(8, class1.Class1Datagram.decode(A.A4_DATAGRAM), t[8], split=True)
    compare.assert_class1(9, class1.Class1Datagram.decode(A.A5_HEARTBEAT), t[9], split=True)

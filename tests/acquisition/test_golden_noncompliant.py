"""cipdip_baseline_io_logix_like_NONCOMPLIANT.pcap: malformed on purpose.

Its Forward_Open lacks the connection serial / vendor / originator serial fields and its UDP 2222
datagrams start with a 24-byte encapsulation header. Every frame must either decode or be
rejected with MalformedPacket (nothing else may escape), and those two defects must be rejected.
"""

from __future__ import annotations

import pytest
from pyconpro.acquisition import cip, class1, cm, cpf, encap
from pyconpro.acquisition.errors import MalformedPacket

from tests.support import golden_pcap, pcap, walk

PCAP = "cipdip_baseline_io_logix_like_NONCOMPLIANT.pcap"
FORWARD_OPEN_FRAME = 8


def _walk_tolerant(pdu: pcap.EncapPdu) -> walk.Message | MalformedPacket:
    try:
        m = walk.decode_message(pdu)
        if m.request is not None and m.request.service in (0x54, 0x5B):
            cm.ForwardOpenRequest.from_request(m.request)
        if m.reply is not None and m.reply.service in (0x54, 0x5B):
            cm.decode_forward_open_reply(m.reply)
        return m
    except MalformedPacket as e:  # anything else is a bug and fails the test
        return e


def test_every_tcp_frame_decodes_or_is_rejected_cleanly() -> None:
    pdus = pcap.enip_tcp_pdus(golden_pcap(PCAP))
    assert [p.command for p in pdus] == [0x65, 0x65, 0x6F, 0x6F]
    results = {p.last_frame: _walk_tolerant(p) for p in pdus}
    rejected = [n for n, r in results.items() if isinstance(r, MalformedPacket)]
    assert rejected == [FORWARD_OPEN_FRAME]


def test_forward_open_without_triad_is_rejected() -> None:
    (pdu,) = [p for p in pcap.enip_tcp_pdus(golden_pcap(PCAP)) if p.last_frame == 8]
    m = walk.decode_message(pdu)  # the encapsulation and CIP framing are fine...
    assert m.request is not None and m.request.service == cip.Service.FORWARD_OPEN
    assert m.request.path == bytes.fromhex("20062401")
    # ...but the body is 27 bytes where a Forward_Open needs at least 36 + path
    assert len(m.request.data) == 27
    with pytest.raises(MalformedPacket) as info:
        cm.ForwardOpenRequest.from_request(m.request)
    assert info.value.context == "Forward_Open"
    # the same bytes do not parse as a Large_Forward_Open either
    with pytest.raises(MalformedPacket):
        cm.ForwardOpenRequest.decode_body(m.request.data, large=True)


def test_udp_2222_frames_with_encapsulation_header_are_rejected() -> None:
    dgs = walk.class1_datagrams(golden_pcap(PCAP))
    assert len(dgs) == 1900
    for p in dgs:
        assert p.payload[:2] == b"\x70\x00"  # SendUnitData header where item count 2 belongs
        for run_idle in (False, True):
            with pytest.raises(MalformedPacket):
                class1.Class1Datagram.decode(p.payload, run_idle_header=run_idle)
        with pytest.raises(MalformedPacket):
            class1.Class0Datagram.decode(p.payload)
        with pytest.raises(MalformedPacket):
            cpf.decode_items(p.payload)
    # The defect is exactly the extra header: the bytes after it are a well-formed
    # SendUnitData (class-0 style connected address + data), which UDP 2222 must not carry.
    sd = encap.SendData.decode(encap.EncapsulationPacket.decode(dgs[0].payload).data)
    assert [type(i) for i in sd.items] == [cpf.ConnectedAddress, cpf.ConnectedData]

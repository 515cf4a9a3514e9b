"""Golden tests on the other reference captures (tests/golden/PROVENANCE.md):

* every encapsulation frame of every well-formed capture: header, command data, CPF items and
  CIP message decode and re-encode to the captured bytes, and agree with tshark;
* the class-1 datagrams of icsnpp_enip_cip_example.pcap and ndpi_cip_io.pcap;
* the real Logix class-3 Forward_Opens / replies / Forward_Closes of
  iti_openics_EIP-SoftwareUpload.pcap, and the connected traffic on those connections;
* the ListIdentity replies of suricata_enip_test1.pcap and icsnpp_enip_cip_example.pcap.
"""

from __future__ import annotations

import pytest
from pyconpro.acquisition import cip, class1, cm, cpf, encap

from tests.support import compare, golden_pcap, tshark, walk

WELL_FORMED = [
    "eipscanner_opener.pcap",
    "icsnpp_enip_cip_example.pcap",
    "iti_openics_EIP-SoftwareUpload.pcap",
    "ndpi_cip_io.pcap",
    "ndpi_ethernetIP.pcap",
    "suricata_enip_test1.pcap",
]
ITI = "iti_openics_EIP-SoftwareUpload.pcap"


def _messages(name: str) -> list[walk.Message]:
    return walk.explicit_messages(golden_pcap(name))


# ---------------------------------------------------------------------------------------------
# every encapsulation frame


@pytest.mark.parametrize("name", WELL_FORMED)
def test_every_encapsulation_frame_decodes_and_reencodes(name: str) -> None:
    for m in _messages(name):
        p = m.packet
        assert p.encode() == m.pdu.data, f"frame {m.frame}: header re-encode"
        if p.command in (encap.Command.SEND_RR_DATA, encap.Command.SEND_UNIT_DATA):
            assert m.send is not None and m.send.encode() == p.data
            assert m.message is not None
            decoded = m.request if m.request is not None else m.reply
            assert decoded is not None and decoded.encode() == m.message
        elif p.command == encap.Command.REGISTER_SESSION:
            assert encap.RegisterSessionData.decode(p.data).encode() == p.data
        elif p.command in (encap.Command.LIST_IDENTITY, encap.Command.LIST_SERVICES) and p.data:
            items = cpf.decode_items(p.data)
            assert cpf.encode_items(items) == p.data
        else:
            assert p.command in (encap.Command.UNREGISTER_SESSION, encap.Command.LIST_IDENTITY)


@pytest.mark.tshark
@pytest.mark.parametrize("name", WELL_FORMED)
def test_every_encapsulation_frame_matches_tshark(
    name: str, tshark_frames: tshark.FramesOf
) -> None:
    frames = tshark_frames(name)
    by_frame: dict[int, list[walk.Message]] = {}
    for m in _messages(name):
        by_frame.setdefault(m.frame, []).append(m)
    for n, ms in by_frame.items():
        layers = frames[n].layer("enip")
        assert len(layers) == len(ms), f"frame {n}: {len(ms)} PDUs, tshark shows {len(layers)}"
        for m, t in zip(ms, layers, strict=True):
            p = m.packet
            assert (p.command, len(p.data), p.session, p.status, p.options) == (
                t.int_value("enip.command"),
                t.int_value("enip.length"),
                t.int_value("enip.session"),
                t.int_value("enip.status"),
                t.int_value("enip.options"),
            ), f"frame {n}"
            delay = t.int_values("enip.listid_delay")  # ListIdentity: 2 bytes of the context
            context = b"".join(d.to_bytes(2, "little") for d in delay) + t.bytes_value(
                "enip.context"
            )
            assert p.context == context, f"frame {n}"
            items: tuple[cpf.Item, ...] = ()
            if m.send is not None:
                items = m.send.items
                iface = "srrd" if p.command == encap.Command.SEND_RR_DATA else "sud"
                assert m.send.interface_handle == t.int_value(f"enip.{iface}.iface")
                assert m.send.timeout == t.int_value("enip.timeout")
            elif p.command == encap.Command.LIST_IDENTITY and p.data:
                items = cpf.decode_items(p.data)
            assert [int(i.type_id) for i in items] == t.int_values("enip.cpf.typeid")[
                : len(items)
            ], f"frame {n}"
            assert [len(i.body()) for i in items] == t.int_values("enip.cpf.length")[
                : len(items)
            ], f"frame {n}"
            if m.connection_id is not None:
                assert m.connection_id == t.int_value("enip.cpf.cai.connid")
            if m.paired is not None and m.reply is not None:
                assert t.int_value("enip.response_to") == m.paired.frame, f"frame {n}"


# ---------------------------------------------------------------------------------------------
# class-1 datagrams without a Forward_Open in the capture


@pytest.mark.parametrize(
    "name,count,sizes",
    [
        ("icsnpp_enip_cip_example.pcap", 398, {2, 6, 88}),
        ("ndpi_cip_io.pcap", 4, {12, 16}),
    ],
)
def test_class1_datagrams_decode_and_reencode(name: str, count: int, sizes: set[int]) -> None:
    dgs = walk.class1_datagrams(golden_pcap(name))
    assert len(dgs) == count
    seen = set()
    for p in dgs:
        # Without the Forward_Open the run/idle header is unknown: read it as data.
        d = class1.Class1Datagram.decode(p.payload)
        assert d.encode() == p.payload
        assert class1.peek_connection_id(p.payload) == d.connection_id
        seen.add(d.connection_size)
    assert seen == sizes


def test_icsnpp_heartbeats_are_sequence_count_only() -> None:
    beats = [
        class1.Class1Datagram.decode(p.payload)
        for p in walk.class1_datagrams(golden_pcap("icsnpp_enip_cip_example.pcap"))
        if p.src == "192.168.1.22"
    ]
    assert beats and all(b.data == b"" and b.connection_size == 2 for b in beats)
    assert {len(class1.heartbeat(b.connection_id, b.sequence, b.cip_sequence)) for b in beats} == {
        20
    }
    for b in beats:
        assert class1.heartbeat(b.connection_id, b.sequence, b.cip_sequence) == b.encode()


@pytest.mark.tshark
@pytest.mark.parametrize("name", ["icsnpp_enip_cip_example.pcap", "ndpi_cip_io.pcap"])
def test_class1_datagrams_match_tshark(name: str, tshark_frames: tshark.FramesOf) -> None:
    frames = tshark_frames(name)
    for p in walk.class1_datagrams(golden_pcap(name)):
        d = class1.Class1Datagram.decode(p.payload)
        compare.assert_class1(p.number, d, frames[p.number], split=False)


# ---------------------------------------------------------------------------------------------
# real Logix class-3 connections (iti)


def _cm_messages(service: int) -> list[walk.Message]:
    return [
        m
        for m in _messages(ITI)
        if m.request is not None
        and m.request.service == service
        and m.request.path == bytes.fromhex("20062401")
    ]


def test_iti_class3_forward_opens_reencode() -> None:
    opens = _cm_messages(cip.Service.FORWARD_OPEN)
    assert [m.frame for m in opens] == [23, 43, 149, 214, 674, 692, 706]
    for m in opens:
        assert m.request is not None
        fo = cm.ForwardOpenRequest.from_request(m.request)
        assert fo.encode(m.request.path) == m.message
        # RSLogix 5000 against a CompactLogix: transport 0xA3, path 01 00 20 02 24 01, RPI 8 s,
        # NCP 0x43F4 (P2P, low, variable, 500 bytes) both ways
        assert fo.transport == 0xA3 and fo.path == bytes.fromhex("010020022401")
        assert (fo.ot_rpi, fo.to_rpi) == (8_000_000, 8_000_000)
        assert (
            fo.ot_params
            == fo.to_params
            == cm.NetworkParameters(cm.ConnectionType.POINT_TO_POINT, cm.Priority.LOW, True, 500)
        )
        assert fo.ot_params.to_word16() == 0x43F4
        assert m.paired is not None and m.paired.reply is not None
        ok = cm.decode_forward_open_reply(m.paired.reply)
        assert isinstance(ok, cm.ForwardOpenSuccess)
        assert ok.triad == fo.triad
        assert ok.to_reply().encode() == m.paired.message


def test_iti_forward_closes_reencode_and_name_their_open() -> None:
    opens = {
        cm.ForwardOpenRequest.from_request(m.request).triad  # type: ignore[arg-type]
        for m in _cm_messages(cip.Service.FORWARD_OPEN)
    }
    closes = _cm_messages(cip.Service.FORWARD_CLOSE)
    assert closes
    for m in closes:
        assert m.request is not None and m.paired is not None and m.paired.reply is not None
        fc = cm.ForwardCloseRequest.decode_body(m.request.data)
        assert fc.encode(m.request.path) == m.message
        assert fc.triad in opens
        ok = cm.decode_forward_close_reply(m.paired.reply)
        assert isinstance(ok, cm.ForwardCloseSuccess)
        assert ok.to_reply().encode() == m.paired.message


def test_iti_connected_traffic_uses_the_ids_of_the_reply() -> None:
    """The originator sends on the O->T id the target chose, the target answers on the T->O id
    the originator proposed (protocol.md 5.7), with a 16-bit sequence count per message."""
    ot_ids, to_ids = set(), set()
    for m in _cm_messages(cip.Service.FORWARD_OPEN):
        assert m.paired is not None and m.paired.reply is not None
        ok = cm.decode_forward_open_reply(m.paired.reply)
        assert isinstance(ok, cm.ForwardOpenSuccess)
        ot_ids.add(ok.ot_connection_id)
        to_ids.add(ok.to_connection_id)
    unit = [m for m in _messages(ITI) if m.packet.command == encap.Command.SEND_UNIT_DATA]
    assert len(unit) > 100
    for m in unit:
        assert m.connection_id in (ot_ids if m.from_client else to_ids)
        if m.reply is not None and m.paired is not None:
            assert m.sequence == m.paired.sequence  # a reply echoes its request's count


@pytest.mark.tshark
def test_iti_forward_opens_and_replies_match_tshark(tshark_frames: tshark.FramesOf) -> None:
    frames = tshark_frames(ITI)
    for m in _cm_messages(cip.Service.FORWARD_OPEN):
        assert m.request is not None and m.paired is not None and m.paired.reply is not None
        (layer,) = frames[m.frame].layer("cipcm", skip=tshark.GENERATED)
        compare.assert_forward_open_request(
            m.frame, cm.ForwardOpenRequest.from_request(m.request), layer
        )
        n = m.paired.frame
        compare.assert_reply_status(n, m.paired.reply, frames[n])
        ok = cm.decode_forward_open_reply(m.paired.reply)
        assert isinstance(ok, cm.ForwardOpenSuccess)
        (layer,) = frames[n].layer("cipcm", skip=tshark.GENERATED)
        compare.assert_forward_open_success(n, ok, layer)


@pytest.mark.tshark
def test_iti_forward_closes_match_tshark(tshark_frames: tshark.FramesOf) -> None:
    frames = tshark_frames(ITI)
    for m in _cm_messages(cip.Service.FORWARD_CLOSE):
        assert m.request is not None and m.paired is not None and m.paired.reply is not None
        (layer,) = frames[m.frame].layer("cipcm", skip=tshark.GENERATED)
        compare.assert_forward_close_request(
            m.frame, cm.ForwardCloseRequest.decode_body(m.request.data), layer
        )
        n = m.paired.frame
        ok = cm.decode_forward_close_reply(m.paired.reply)
        assert isinstance(ok, cm.ForwardCloseSuccess)
        (layer,) = frames[n].layer("cipcm", skip=tshark.GENERATED)
        compare.assert_forward_close_success(n, ok, layer)


# ---------------------------------------------------------------------------------------------
# Unconnected_Send and Multiple Service Packet (iti, ndpi_ethernetIP)


@pytest.mark.parametrize("name", [ITI, "ndpi_ethernetIP.pcap"])
def test_unconnected_send_and_multiple_service_reencode(name: str) -> None:
    n_us = n_msp = 0
    for m in _messages(name):
        req = m.request
        if req is None:
            continue
        if req.service == cip.Service.UNCONNECTED_SEND and req.path == bytes.fromhex("20062401"):
            us = cip.UnconnectedSend.decode(req.data)
            assert us.encode() == req.data
            assert cip.Request.decode(us.message).encode() == us.message
            n_us += 1
        if req.service == cip.Service.MULTIPLE_SERVICE_PACKET:
            parts = cip.decode_multiple(req.data)
            assert cip.encode_multiple(parts) == req.data
            assert all(cip.Request.decode(p).encode() == p for p in parts)
            n_msp += 1
    assert n_us + n_msp > 0


@pytest.mark.tshark
def test_unconnected_send_matches_tshark(tshark_frames: tshark.FramesOf) -> None:
    frames = tshark_frames(ITI)
    checked = 0
    for m in _messages(ITI):
        req = m.request
        if req is None or req.service != cip.Service.UNCONNECTED_SEND:
            continue
        us = cip.UnconnectedSend.decode(req.data)
        t = frames[m.frame]
        assert len(us.message) == t.int_value("cip.cm.msg_req_size")
        assert len(us.route_path) // 2 == t.int_value("cip.cm.route_path_size")
        assert cip.Request.decode(us.message).service == t.int_values("cip.service")[1]
        checked += 1
    assert checked > 0


# ---------------------------------------------------------------------------------------------
# ListIdentity


@pytest.mark.parametrize(
    "name,frame",
    [("suricata_enip_test1.pcap", 6), ("icsnpp_enip_cip_example.pcap", 372)],
)
def test_list_identity_reply(name: str, frame: int) -> None:
    (m,) = [m for m in _messages(name) if m.frame == frame]
    assert m.packet.command == encap.Command.LIST_IDENTITY
    (item,) = cpf.decode_items(m.packet.data)
    assert isinstance(item, cpf.IdentityItem)
    assert item.product_name == "1756-ENBT/A" and item.vendor_id == 1
    assert cpf.encode_items((item,)) == m.packet.data
    req = [
        x
        for x in _messages(name)
        if x.packet.command == encap.Command.LIST_IDENTITY and x.from_client
    ]
    assert len(req) == 1 and req[0].packet.data == b""


@pytest.mark.tshark
@pytest.mark.parametrize(
    "name,frame",
    [("suricata_enip_test1.pcap", 6), ("icsnpp_enip_cip_example.pcap", 372)],
)
def test_list_identity_matches_tshark(
    name: str, frame: int, tshark_frames: tshark.FramesOf
) -> None:
    (m,) = [m for m in _messages(name) if m.frame == frame]
    (item,) = cpf.decode_items(m.packet.data)
    assert isinstance(item, cpf.IdentityItem)
    compare.assert_identity(frame, item, tshark_frames(name)[frame])

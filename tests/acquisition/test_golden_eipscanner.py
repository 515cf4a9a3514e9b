"""Golden tests on eipscanner_opener.pcap (EIPScanner originator against OpENer 2.3).

Every Forward_Open, Forward_Open reply (success, 0x0119, 0x0127 with its size word, multicast
with the 0x8001 sockaddr), Forward_Close request/reply and class-1 datagram in the capture is
decoded with our codec, compared field by field with tshark's decode of the same frame, and
re-encoded to the captured bytes exactly. The byte-level checks run without tshark.
"""

from __future__ import annotations

import pytest
from pyconpro.acquisition import cip, class1, cm, cpf, encap, epath

from tests.support import compare, golden_pcap, tshark, walk

PCAP = "eipscanner_opener.pcap"

# Frame numbers (tshark's), from the capture's provenance note.
FORWARD_OPENS = [8, 58, 120, 133, 146, 172]
FO_SUCCESS = [9, 59, 147, 173]
FO_FAILURE = {121: (0x01, (0x0119,)), 134: (0x01, (0x0127, 38))}
FORWARD_CLOSES = [44, 106, 207]
FC_SUCCESS = [45, 107, 208]


@pytest.fixture(scope="module")
def messages() -> dict[int, walk.Message]:
    out = {}
    for m in walk.explicit_messages(golden_pcap(PCAP)):
        assert m.frame not in out, "one encapsulation frame per TCP segment in this capture"
        out[m.frame] = m
    return out


def _request(messages: dict[int, walk.Message], n: int) -> cip.Request:
    req = messages[n].request
    assert req is not None
    return req


def _reply(messages: dict[int, walk.Message], n: int) -> cip.Reply:
    rep = messages[n].reply
    assert rep is not None
    return rep


def test_the_frames_we_test_are_the_cm_frames(messages: dict[int, walk.Message]) -> None:
    """Our decode finds exactly these Connection Manager requests and replies."""
    cm_path = epath.encode_path((epath.class_id(6, 16), epath.instance_id(1, 16)))
    fo = [n for n, m in messages.items() if m.request and m.request.service == 0x54]
    fc = [n for n, m in messages.items() if m.request and m.request.service == 0x4E]
    assert fo == FORWARD_OPENS and fc == FORWARD_CLOSES
    assert all(messages[n].request.path == cm_path for n in fo + fc)  # type: ignore[union-attr]
    replies = {n: m.reply.service for n, m in messages.items() if m.reply}
    assert replies == {
        **dict.fromkeys(FO_SUCCESS + list(FO_FAILURE), 0x54),
        **dict.fromkeys(FC_SUCCESS, 0x4E),
    }
    # pairing by order matches the requests
    for n in FO_SUCCESS + list(FO_FAILURE) + FC_SUCCESS:
        paired = messages[n].paired
        assert paired is not None and paired.frame == n - 1


# ---------------------------------------------------------------------------------------------
# byte-exact: decode, re-encode


@pytest.mark.parametrize("n", FORWARD_OPENS)
def test_forward_open_reencodes(messages: dict[int, walk.Message], n: int) -> None:
    req = _request(messages, n)
    fo = cm.ForwardOpenRequest.from_request(req)
    assert fo.encode_body() == req.data
    assert fo.encode(req.path) == messages[n].message
    assert not fo.large and fo.path[:2] == b"\x20\x04"  # assembly path 20 04 24 97 2C 96 2C 64


@pytest.mark.parametrize("n", FO_SUCCESS)
def test_forward_open_success_reencodes(messages: dict[int, walk.Message], n: int) -> None:
    rep = _reply(messages, n)
    ok = cm.decode_forward_open_reply(rep)
    assert isinstance(ok, cm.ForwardOpenSuccess)
    assert ok.to_reply().encode() == messages[n].message
    m = messages[n]
    assert m.send is not None and m.send.encode() == m.packet.data
    assert m.packet.encode() == m.pdu.data


@pytest.mark.parametrize("n", sorted(FO_FAILURE))
def test_forward_open_failure_reencodes(messages: dict[int, walk.Message], n: int) -> None:
    rep = _reply(messages, n)
    fail = cm.decode_forward_open_reply(rep)
    assert isinstance(fail, cm.ConnectionFailure)
    assert (fail.general_status, fail.additional) == FO_FAILURE[n]
    assert fail.triad == cm.Triad(1, 0x0156, 0x00012345)
    assert fail.to_reply(cip.Service.FORWARD_OPEN).encode() == messages[n].message


def test_failure_0127_carries_the_correct_size(messages: dict[int, walk.Message]) -> None:
    fail = cm.decode_forward_open_reply(_reply(messages, 134))
    assert isinstance(fail, cm.ConnectionFailure)
    assert fail.extended_status == 0x0127 and fail.additional[1] == 38  # 32 + 4 + 2
    text = str(fail.error())
    assert "0x01/0x0127" in text


@pytest.mark.parametrize("n", FORWARD_CLOSES)
def test_forward_close_reencodes(messages: dict[int, walk.Message], n: int) -> None:
    req = _request(messages, n)
    fc = cm.ForwardCloseRequest.decode_body(req.data)
    assert fc.encode(req.path) == messages[n].message
    # the close names the connection it opened: same triad and path as the matching open
    fo = cm.ForwardOpenRequest.from_request(
        _request(messages, max(x for x in FORWARD_OPENS if x < n and x not in (120, 133)))
    )
    assert (fc.triad, fc.path) == (fo.triad, fo.path)


@pytest.mark.parametrize("n", FC_SUCCESS)
def test_forward_close_success_reencodes(messages: dict[int, walk.Message], n: int) -> None:
    ok = cm.decode_forward_close_reply(_reply(messages, n))
    assert isinstance(ok, cm.ForwardCloseSuccess)
    assert ok.to_reply().encode() == messages[n].message


def test_reply_sockaddr_items(messages: dict[int, walk.Message]) -> None:
    """P2P replies carry 0x8000 0.0.0.0:2222; the multicast ones add 0x8001 239.192.1.32."""
    seen = {}
    for n in FO_SUCCESS:
        send = messages[n].send
        assert send is not None
        seen[n] = [
            (i.direction, i.sockaddr.address, i.sockaddr.port) for i in walk.sockaddr_items(send)
        ]
    p2p = [(cpf.ItemId.SOCKADDR_O2T, "0.0.0.0", 2222)]
    assert seen == {
        9: p2p,
        59: p2p,
        147: p2p + [(cpf.ItemId.SOCKADDR_T2O, "239.192.1.32", 2222)],
        173: p2p + [(cpf.ItemId.SOCKADDR_T2O, "239.192.1.32", 2222)],
    }


def test_multicast_listeners_share_the_t_to_o_id(messages: dict[int, walk.Message]) -> None:
    a = cm.decode_forward_open_reply(_reply(messages, 147))
    b = cm.decode_forward_open_reply(_reply(messages, 173))
    assert isinstance(a, cm.ForwardOpenSuccess) and isinstance(b, cm.ForwardOpenSuccess)
    assert a.to_connection_id == b.to_connection_id
    for n in (146, 172):
        fo = cm.ForwardOpenRequest.from_request(_request(messages, n))
        assert fo.to_params.connection_type == cm.ConnectionType.MULTICAST


def test_every_encapsulation_frame_reencodes(messages: dict[int, walk.Message]) -> None:
    assert len(messages) == 36
    for m in messages.values():
        assert m.packet.encode() == m.pdu.data
        if m.send is not None:
            assert m.send.encode() == m.packet.data
        if m.request is not None:
            assert m.request.encode() == m.message
        if m.reply is not None:
            assert m.reply.encode() == m.message
        if m.packet.command == encap.Command.REGISTER_SESSION:
            assert encap.RegisterSessionData.decode(m.packet.data).encode() == m.packet.data


# ---------------------------------------------------------------------------------------------
# class-1 datagrams


def _io_connections(messages: dict[int, walk.Message]) -> dict[int, tuple[str, int]]:
    """connection id -> (direction, NCP size) from our own decode of the opens and replies."""
    conns: dict[int, tuple[str, int]] = {}
    for n in FO_SUCCESS:
        ok = cm.decode_forward_open_reply(_reply(messages, n))
        fo = cm.ForwardOpenRequest.from_request(_request(messages, n - 1))
        assert isinstance(ok, cm.ForwardOpenSuccess)
        conns[ok.ot_connection_id] = ("O->T", fo.ot_params.size)
        conns[ok.to_connection_id] = ("T->O", fo.to_params.size)
    return conns


def _decode_io(d: bytes, conns: dict[int, tuple[str, int]]) -> class1.Class1Datagram:
    """Decode with the run/idle convention (protocol.md 6.3): O->T data carries the 32-bit
    header, heartbeats (size 2) and T->O data do not."""
    cid = class1.peek_connection_id(d)
    assert cid is not None
    direction, size = conns[cid]
    dg = class1.Class1Datagram.decode(d, run_idle_header=direction == "O->T" and size > 2)
    assert dg.connection_size == size, "datagram size equals the NCP size of its connection"
    return dg


def test_every_class1_datagram_decodes_and_reencodes(messages: dict[int, walk.Message]) -> None:
    conns = _io_connections(messages)
    dgs = walk.class1_datagrams(golden_pcap(PCAP))
    assert len(dgs) == 129
    kinds = set()
    for p in dgs:
        dg = _decode_io(p.payload, conns)
        assert dg.encode() == p.payload
        kinds.add((conns[dg.connection_id][0], dg.connection_size, dg.run_idle))
    assert kinds == {("T->O", 34, None), ("O->T", 38, 1), ("O->T", 2, None)}


# ---------------------------------------------------------------------------------------------
# against tshark


@pytest.mark.tshark
@pytest.mark.parametrize("n", FORWARD_OPENS)
def test_forward_open_matches_tshark(messages: dict[int, walk.Message],
                                     tshark_frames: tshark.FramesOf, n: int) -> None:
    fo = cm.ForwardOpenRequest.from_request(_request(messages, n))
    (layer,) = tshark_frames(PCAP)[n].layer("cipcm", skip=tshark.GENERATED)
    compare.assert_forward_open_request(n, fo, layer)


@pytest.mark.tshark
@pytest.mark.parametrize("n", FO_SUCCESS)
def test_forward_open_success_matches_tshark(
    messages: dict[int, walk.Message], tshark_frames: tshark.FramesOf, n: int
) -> None:
    rep = _reply(messages, n)
    frame = tshark_frames(PCAP)[n]
    compare.assert_reply_status(n, rep, frame)
    ok = cm.decode_forward_open_reply(rep)
    assert isinstance(ok, cm.ForwardOpenSuccess)
    (layer,) = frame.layer("cipcm", skip=tshark.GENERATED)
    compare.assert_forward_open_success(n, ok, layer)
    send = messages[n].send
    assert send is not None
    compare.assert_sockaddrs(n, walk.sockaddr_items(send), frame)


@pytest.mark.tshark
@pytest.mark.parametrize("n", sorted(FO_FAILURE))
def test_forward_open_failure_matches_tshark(
    messages: dict[int, walk.Message], tshark_frames: tshark.FramesOf, n: int
) -> None:
    rep = _reply(messages, n)
    frame = tshark_frames(PCAP)[n]
    compare.assert_reply_status(n, rep, frame)
    fail = cm.decode_forward_open_reply(rep)
    assert isinstance(fail, cm.ConnectionFailure)
    (layer,) = frame.layer("cipcm", skip=tshark.GENERATED)
    compare.assert_connection_failure(n, fail, layer)


@pytest.mark.tshark
@pytest.mark.parametrize("n", FORWARD_CLOSES)
def test_forward_close_matches_tshark(
    messages: dict[int, walk.Message], tshark_frames: tshark.FramesOf, n: int
) -> None:
    fc = cm.ForwardCloseRequest.decode_body(_request(messages, n).data)
    (layer,) = tshark_frames(PCAP)[n].layer("cipcm", skip=tshark.GENERATED)
    compare.assert_forward_close_request(n, fc, layer)


@pytest.mark.tshark
@pytest.mark.parametrize("n", FC_SUCCESS)
def test_forward_close_success_matches_tshark(
    messages: dict[int, walk.Message], tshark_frames: tshark.FramesOf, n: int
) -> None:
    rep = _reply(messages, n)
    frame = tshark_frames(PCAP)[n]
    compare.assert_reply_status(n, rep, frame)
    ok = cm.decode_forward_close_reply(rep)
    assert isinstance(ok, cm.ForwardCloseSuccess)
    (layer,) = frame.layer("cipcm", skip=tshark.GENERATED)
    compare.assert_forward_close_success(n, ok, layer)


@pytest.mark.tshark
def test_class1_datagrams_match_tshark(
    messages: dict[int, walk.Message], tshark_frames: tshark.FramesOf
) -> None:
    conns = _io_connections(messages)
    frames = tshark_frames(PCAP)
    for p in walk.class1_datagrams(golden_pcap(PCAP)):
        compare.assert_class1(p.number, _decode_io(p.payload, conns), frames[p.number], split=True)

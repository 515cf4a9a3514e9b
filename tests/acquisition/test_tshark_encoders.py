"""Our encoders' output, decoded by tshark: random produced-tag Forward_Opens, their success and
failure replies (with sockaddr items and additional status words), Forward_Closes, heartbeats
and T->O data, written into one capture and dissected once. Every frame must be clean (no
malformed packet, no expert error) and decode to the values we encoded.

Random but reproducible (fixed seed; ``PYCONPRO_FUZZ_SEED`` changes it), batched so that tshark
runs once per test.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from pyconpro.acquisition import cip, class1, cm, cpf, encap, epath

from tests.support import compare, pcap, tshark

SEED = int(os.environ.get("PYCONPRO_FUZZ_SEED", "20261124"))
CONNECTIONS = 40
CLIENT = ("192.168.7.100", 50123)
SERVER = ("192.168.7.10", 44818)


def _rr(message: bytes, session: int, context: bytes, extra: tuple[cpf.Item, ...] = ()) -> bytes:
    return encap.EncapsulationPacket(
        encap.Command.SEND_RR_DATA, encap.send_rr_data(message, extra), session, 0, context
    ).encode()


def _tag(rng: random.Random) -> str:
    first = rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    rest = "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randrange(0, 30))
    )
    return first + rest


@pytest.mark.tshark
def test_random_connections_decode_in_tshark_as_encoded(tshark_bin: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    session = rng.randrange(1, 2**32)
    conv = pcap.TcpConversation(CLIENT, SERVER)
    frames = conv.handshake()
    expect: dict[int, tuple[str, object]] = {}  # frame number -> what we encoded

    def tcp(from_client: bool, payload: bytes, kind: str, value: object) -> None:
        frames.append(conv.segment(from_client, payload))
        expect[len(frames)] = (kind, value)

    def io(from_client: bool, d: class1.Class1Datagram, group: str | None = None) -> None:
        src, dst = (CLIENT[0], SERVER[0]) if from_client else (SERVER[0], group or CLIENT[0])
        frames.append(pcap.ipv4_udp_frame(src, 2222, dst, 2222, d.encode()))
        expect[len(frames)] = ("io", d)

    for i in range(CONNECTIONS):
        ctx = rng.randbytes(8)
        multicast = rng.random() < 0.3
        fo = cm.produced_tag_forward_open(
            tag=_tag(rng),
            tag_bytes=rng.randrange(1, 510),
            to_rpi_us=rng.randrange(1000, 10_000_000),
            ot_rpi_us=rng.randrange(1000, 10_000_000),
            connection_serial=rng.randrange(1, 0x10000),
            vendor_id=rng.randrange(1, 0x10000),
            originator_serial=rng.randrange(0, 2**32),
            to_connection_id=rng.randrange(1, 2**32),
            multicast=multicast,
            timeout_multiplier=rng.randrange(0, 8),
            slot=rng.choice((None, 0, 1, 5)),
        )
        tcp(True, _rr(fo.encode(), session, ctx), "fo", fo)
        if rng.random() < 0.25:
            ext = rng.choice(
                [(0x0100,), (0x0109, fo.to_params.size), (0x0113,), (0x0127, 2), (0x0315,)]
            )
            fail = cm.ConnectionFailure(
                0x01, ext, fo.connection_serial, fo.vendor_id, fo.originator_serial, 0, 0
            )
            reply = fail.to_reply(cip.Service.FORWARD_OPEN).encode()
            tcp(False, _rr(reply, session, ctx), "fail", fail)
            continue
        ok = cm.ForwardOpenSuccess(
            rng.randrange(1, 2**32),
            rng.randrange(1, 2**32) if multicast else fo.to_connection_id,
            fo.connection_serial,
            fo.vendor_id,
            fo.originator_serial,
            fo.ot_rpi,
            fo.to_rpi,
        )
        items: tuple[cpf.Item, ...] = (cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_O2T, cpf.Sockaddr()),)
        group = None
        if multicast:
            group = f"239.192.{rng.randrange(256)}.{rng.randrange(256)}"
            items += (cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr(group)),)
        tcp(False, _rr(ok.to_reply().encode(), session, ctx, items), "ok", (ok, items))
        seq32 = rng.randrange(0, 2**32)
        for k in range(2):
            data = rng.randbytes(fo.to_params.size - 2)
            d = class1.Class1Datagram(
                ok.to_connection_id, (seq32 + k) & 0xFFFFFFFF, rng.randrange(0x10000), data
            )
            io(False, d, group)  # multicast T->O goes to the group of the 0x8001 item
            hb = class1.Class1Datagram.decode(
                class1.heartbeat(ok.ot_connection_id, seq32 + k, rng.randrange(0x10000))
            )
            io(True, hb)
        fc = cm.forward_close_for(fo)
        tcp(True, _rr(fc.encode(), session, ctx), "fc", fc)
        fc_ok = cm.ForwardCloseSuccess(fo.connection_serial, fo.vendor_id, fo.originator_serial)
        tcp(False, _rr(fc_ok.to_reply().encode(), session, ctx), "fc_ok", fc_ok)

    path = pcap.write_pcap(tmp_path / "ours.pcap", frames)

    tshark.assert_capture_clean(path)
    t = tshark.dissect(path)
    assert len(t) == len(frames) and sorted(expect) == list(range(4, len(frames) + 1))
    for n, (kind, value) in expect.items():
        if kind == "io":
            assert isinstance(value, class1.Class1Datagram)
            compare.assert_class1(n, value, t[n], split=True)
            continue
        (layer,) = t[n].layer("cipcm", skip=tshark.GENERATED)
        if kind == "fo":
            assert isinstance(value, cm.ForwardOpenRequest)
            compare.assert_forward_open_request(n, value, layer)
            symbols = [
                s.name
                for s in epath.decode_path(value.path)
                if isinstance(s, epath.SymbolicSegment)
            ]
            assert t[n].values("cip.symbol") == symbols
        elif kind == "fail":
            assert isinstance(value, cm.ConnectionFailure)
            compare.assert_connection_failure(n, value, layer)
        elif kind == "ok":
            ok, items = value  # type: ignore[misc]
            compare.assert_forward_open_success(n, ok, layer)
            compare.assert_sockaddrs(n, [i for i in items if isinstance(i, cpf.SockaddrInfo)], t[n])
        elif kind == "fc":
            assert isinstance(value, cm.ForwardCloseRequest)
            compare.assert_forward_close_request(n, value, layer)
        else:
            assert isinstance(value, cm.ForwardCloseSuccess)
            compare.assert_forward_close_success(n, value, layer)

"""Tests of the test-only capture reader (tests/support/pcap.py).

Against tshark on the reference captures (frame counts, timestamps, addresses, payloads,
encapsulation framing), and on synthetic captures for the formats and TCP cases the reference
captures do not contain.
"""

from __future__ import annotations

import itertools
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import PCAP_DIR, golden_pcap, pcap, tshark

PCAPS = sorted(p.name for p in PCAP_DIR.glob("*.pcap"))


def test_all_reference_captures_are_present() -> None:
    assert PCAPS == [
        "cipdip_baseline_io_logix_like_NONCOMPLIANT.pcap",
        "eipscanner_opener.pcap",
        "icsnpp_enip_cip_example.pcap",
        "iti_openics_EIP-SoftwareUpload.pcap",
        "ndpi_cip_io.pcap",
        "ndpi_ethernetIP.pcap",
        "suricata_enip_test1.pcap",
    ]


@pytest.mark.tshark
@pytest.mark.parametrize("name", PCAPS)
def test_frames_match_tshark(name: str, tshark_frames: tshark.FramesOf) -> None:
    """Frame numbers, timestamps, addresses, ports and transport payloads equal tshark's."""
    ts = tshark_frames(name)
    packets = pcap.read_packets(golden_pcap(name))
    assert [p.number for p in packets] == sorted(ts) == list(range(1, len(ts) + 1))
    checked = {"udp": 0, "tcp": 0}
    for p in packets:
        f = ts[p.number]
        assert p.timestamp == pytest.approx(float(f.one("frame.time_epoch")), abs=1e-6)
        assert p.frame == p.frame[: int(f.one("frame.cap_len"))]
        assert len(p.frame) == int(f.one("frame.cap_len"))
        if p.proto not in ("udp", "tcp"):
            assert "udp" not in f.layers and "tcp" not in f.layers
            continue
        assert (p.src, p.dst) == (f.one("ip.src"), f.one("ip.dst"))
        assert (p.sport, p.dport) == (
            int(f.one(f"{p.proto}.srcport")),
            int(f.one(f"{p.proto}.dstport")),
        )
        expected = f.values(f"{p.proto}.payload")
        assert p.payload == (tshark.parse_bytes(expected[0]) if expected else b"")
        if p.proto == "tcp":
            assert p.tcp_seq == int(f.one("tcp.seq_raw"))
        checked[p.proto] += 1
    assert sum(checked.values()) > 0


@pytest.mark.tshark
@pytest.mark.parametrize("name", PCAPS)
def test_encapsulation_frames_match_tshark(name: str, tshark_frames: tshark.FramesOf) -> None:
    """Splitting the TCP streams gives exactly the ENIP PDUs tshark shows, header for header."""
    ts = tshark_frames(name)
    expected = []
    for number, f in sorted(ts.items()):
        if "tcp" not in f.layers:
            continue
        for pdu in f.layer("enip"):
            if "enip.command" in pdu:  # nested CPF-only trees have no header
                # ListIdentity: tshark shows the context's first 2 bytes as a response delay
                delay = [
                    f"{d & 0xFF:02x}:{d >> 8:02x}" for d in pdu.int_values("enip.listid_delay")
                ]
                expected.append(
                    (
                        number,
                        pdu.values("enip.command")[0],
                        pdu.values("enip.length")[0],
                        pdu.values("enip.session")[0],
                        pdu.values("enip.status")[0],
                        ":".join(delay + pdu.values("enip.context")[:1]),
                    )
                )
    got = []
    for p in pcap.enip_tcp_pdus(golden_pcap(name)):
        cmd, length, session, status = struct.unpack_from("<HHII", p.data)
        context = ":".join(f"{b:02x}" for b in p.data[12:20])
        got.append(
            (
                p.last_frame,
                f"0x{cmd:04x}",
                str(length),
                f"0x{session:08x}",
                f"0x{status:08x}",
                context,
            )
        )
        assert len(p.data) == 24 + length
        assert p.first_frame <= p.last_frame
    assert got == expected


def test_ndpi_ethernetip_has_several_pdus_per_segment() -> None:
    pdus = pcap.enip_tcp_pdus(golden_pcap("ndpi_ethernetIP.pcap"))
    in_frame_3 = [p for p in pdus if p.last_frame == 3]
    assert len(in_frame_3) == 7
    assert all(p.first_frame == 3 for p in in_frame_3)
    assert b"".join(p.data for p in in_frame_3) == next(
        x.payload for x in pcap.read_packets(golden_pcap("ndpi_ethernetIP.pcap")) if x.number == 3
    )


def test_pcapng_nanosecond_resolution() -> None:
    frames = pcap.read_frames(golden_pcap("eipscanner_opener.pcap"))
    # tshark shows 0.000016344 s between frames 1 and 2: only a ns-resolution read gets that.
    assert frames[1].ts_ns - frames[0].ts_ns == 16344


def test_null_linktype_and_udp_counts() -> None:
    dg = pcap.udp_datagrams(golden_pcap("cipdip_baseline_io_logix_like_NONCOMPLIANT.pcap"), 2222)
    assert len(dg) == 1900
    assert {p.linktype for p in dg} == {pcap.LINKTYPE_NULL}
    # these datagrams wrongly start with an encapsulation header (SendUnitData, 0x0070)
    assert all(p.payload[:2] == b"\x70\x00" for p in dg)


# ---------------------------------------------------------------------------------------------
# Synthetic captures: formats and link types the reference set lacks


def _udp_ip(payload: bytes) -> bytes:
    return pcap.ipv4_udp_frame("10.0.0.1", 1234, "10.0.0.2", 2222, payload)[14:]


def _classic(
    endian: str, magic: int, linktype: int, records: list[tuple[float, bytes]], unit: float
) -> bytes:
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for ts, fr in records:
        sec = int(ts)
        out += struct.pack(endian + "IIII", sec, round((ts - sec) / unit), len(fr), len(fr)) + fr
    return out


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("magic,unit", [(0xA1B2C3D4, 1e-6), (0xA1B23C4D, 1e-9)])
def test_classic_pcap_both_byte_orders_and_resolutions(
    tmp_path: Path, endian: str, magic: int, unit: float
) -> None:
    fr = pcap.ipv4_udp_frame("10.0.0.1", 1234, "10.0.0.2", 2222, b"hello")
    path = tmp_path / "x.pcap"
    path.write_bytes(_classic(endian, magic, 1, [(100.25, fr), (101.5, fr + b"\0" * 6)], unit))
    pk = pcap.read_packets(path)
    assert [p.number for p in pk] == [1, 2]
    assert [p.timestamp for p in pk] == [pytest.approx(100.25), pytest.approx(101.5)]
    # Ethernet padding after the IP packet must not leak into the payload
    assert [p.payload for p in pk] == [b"hello", b"hello"]
    assert pk[0].flow == ("10.0.0.1", 1234, "10.0.0.2", 2222)


@pytest.mark.parametrize(
    "linktype,header",
    [
        (pcap.LINKTYPE_NULL, struct.pack("<I", 2)),
        (pcap.LINKTYPE_NULL, struct.pack(">I", 2)),
        (pcap.LINKTYPE_LOOP, struct.pack(">I", 2)),
        (pcap.LINKTYPE_LINUX_SLL, bytes(14) + b"\x08\x00"),
        (pcap.LINKTYPE_LINUX_SLL2, b"\x08\x00" + bytes(18)),
        (pcap.LINKTYPE_RAW, b""),
        (pcap.LINKTYPE_ETHERNET, bytes(12) + b"\x81\x00\x00\x05\x08\x00"),  # 802.1Q
    ],
)
def test_link_types(tmp_path: Path, linktype: int, header: bytes) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(_classic("<", 0xA1B2C3D4, linktype, [(1.0, header + _udp_ip(b"abc"))], 1e-6))
    (p,) = pcap.read_packets(path)
    assert (p.proto, p.payload, p.dport) == ("udp", b"abc", 2222)


def test_pcapng_blocks(tmp_path: Path) -> None:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    # IDB 0: Ethernet, tsresol 10^-3; IDB 1: raw IP, default resolution
    idb0 = block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HHB3x", 9, 1, 3) + bytes(4))
    idb1 = block(1, struct.pack("<HHI", 101, 0, 0))
    eth = pcap.ipv4_udp_frame("10.0.0.1", 1, "10.0.0.2", 2, b"one")
    epb0 = block(6, struct.pack("<IIIII", 0, 0, 5000, len(eth), len(eth)) + eth)
    raw = _udp_ip(b"two")
    epb1 = block(6, struct.pack("<IIIII", 1, 0, 7_000_000, len(raw), len(raw)) + raw)
    spb = block(3, struct.pack("<I", len(eth)) + eth)
    nrb = block(4, bytes(4))  # a block we skip
    path = tmp_path / "x.pcapng"
    path.write_bytes(shb + idb0 + idb1 + epb0 + nrb + epb1 + spb)
    pk = pcap.read_packets(path)
    assert [(p.number, p.payload) for p in pk] == [(1, b"one"), (2, b"two"), (3, b"one")]
    assert pk[0].timestamp == pytest.approx(5.0)
    assert pk[1].timestamp == pytest.approx(7.0)


def test_truncated_file_is_an_error(tmp_path: Path) -> None:
    fr = pcap.ipv4_udp_frame("10.0.0.1", 1, "10.0.0.2", 2, b"x")
    data = _classic("<", 0xA1B2C3D4, 1, [(1.0, fr)], 1e-6)
    path = tmp_path / "x.pcap"
    for cut in (len(data) - 1, 30):
        path.write_bytes(data[:cut])
        with pytest.raises(pcap.PcapError):
            pcap.read_frames(path)
    path.write_bytes(b"not a capture")
    with pytest.raises(pcap.PcapError):
        pcap.read_frames(path)


def test_non_udp_tcp_frames_keep_their_numbers() -> None:
    pk = pcap.read_packets(golden_pcap("iti_openics_EIP-SoftwareUpload.pcap"))
    assert pk[0].proto == "llc"  # spanning tree
    assert pk[3].proto == "tcp" and pk[3].number == 4


# ---------------------------------------------------------------------------------------------
# TCP reassembly and encapsulation splitting


def _segments_capture(
    tmp_path: Path, segments: list[tuple[int, bytes]], syn: bool = True, isn: int = 0xFFFFFF00
) -> Path:
    """A capture of one client->server direction: optional SYN, then segments at the given
    offsets relative to isn+1 (the ISN is near 2^32 so sequence numbers wrap)."""
    frames = []
    if syn:
        frames.append(
            pcap.ipv4_tcp_frame("10.0.0.1", 5, "10.0.0.2", 44818, isn, 0, b"", flags=pcap.TCP_SYN)
        )
    for off, data in segments:
        frames.append(
            pcap.ipv4_tcp_frame(
                "10.0.0.1", 5, "10.0.0.2", 44818, (isn + 1 + off) & 0xFFFFFFFF, 1, data
            )
        )
    return pcap.write_pcap(tmp_path / "t.pcap", frames)


def _pdu(command: int, body: bytes) -> bytes:
    return struct.pack("<HHII8sI", command, len(body), 7, 0, b"ctx12345", 0) + body


def test_reassembly_orders_drops_retransmissions_and_splits(tmp_path: Path) -> None:
    a, b, c = _pdu(0x65, b"\x01\x00\x00\x00"), _pdu(0x6F, bytes(range(40))), _pdu(0x70, b"z" * 9)
    stream = a + b + c
    cut1, cut2 = 10, len(a) + 30
    segs = [
        (0, stream[:cut1]),
        (cut2, stream[cut2:]),  # out of order
        (cut1, stream[cut1:cut2]),
        (cut1, stream[cut1:cut2]),  # retransmission
        (cut1 + 2, stream[cut1 + 2 : cut2 - 1]),  # inside delivered bytes, nothing new
    ]
    path = _segments_capture(tmp_path, segs)
    (s,) = pcap.tcp_streams(pcap.read_packets(path)).values()
    assert s.data == stream and s.gaps == 0 and len(s.chunks) == 1
    assert sorted(s.retransmitted_frames) == [5, 6]
    pdus = pcap.split_encapsulation(s)
    assert [p.data for p in pdus.pdus] == [a, b, c] and pdus.leftovers == []
    # frames: 1 SYN, 2 = stream[:10], 3 = stream[cut2:], 4 = stream[10:cut2]
    assert [(p.first_frame, p.last_frame) for p in pdus.pdus] == [(2, 4), (4, 3), (3, 3)]


def test_gap_starts_a_new_chunk_and_partial_pdu_is_a_leftover(tmp_path: Path) -> None:
    a, b = _pdu(0x65, b"1234"), _pdu(0x6F, b"x" * 20)
    path = _segments_capture(tmp_path, [(0, a + b[:10]), (len(a) + len(b) + 5, a)])
    (s,) = pcap.tcp_streams(pcap.read_packets(path)).values()
    assert s.gaps == 1 and [c.offset for c in s.chunks] == [0, len(a) + len(b) + 5]
    split = pcap.split_encapsulation(s)
    assert [p.data for p in split.pdus] == [a, a]
    assert [left for _, _, left in split.leftovers] == [10]


def test_capture_starting_mid_stream(tmp_path: Path) -> None:
    a = _pdu(0x6F, b"abc")
    path = _segments_capture(tmp_path, [(100, a), (100 + len(a), a)], syn=False)
    (s,) = pcap.tcp_streams(pcap.read_packets(path)).values()
    assert [p.data for p in pcap.split_encapsulation(s).pdus] == [a, a]


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=60), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_segmentation_reassembles(tmp_path_factory: pytest.TempPathFactory,
                                      bodies: list[bytes], seed: int) -> None:
    """Random cuts, shuffled order and duplicated segments still give the same PDUs."""
    rng = random.Random(seed)
    pdus = [_pdu(0x70, body) for body in bodies]
    stream = b"".join(pdus)
    cuts = sorted({0, len(stream), *(rng.randrange(len(stream)) for _ in range(4))})
    segs = [(x, stream[x:y]) for x, y in itertools.pairwise(cuts)]
    segs += rng.sample(segs, k=min(2, len(segs)))
    rng.shuffle(segs)
    path = _segments_capture(tmp_path_factory.mktemp("seg"), segs)
    (s,) = pcap.tcp_streams(pcap.read_packets(path)).values()
    assert s.data == stream
    assert [p.data for p in pcap.split_encapsulation(s).pdus] == pdus

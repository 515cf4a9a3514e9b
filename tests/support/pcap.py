"""A small capture reader for the golden tests (test-only; no third-party dependency).

Reads classic pcap (micro- and nanosecond magic, either byte order) and pcapng (SHB / IDB /
EPB / SPB / obsolete PB, per-interface link type and ``if_tsresol``). Link types: Ethernet
(with 802.1Q tags), BSD NULL/loopback, Linux cooked SLL and SLL2, raw IPv4. Above that it
parses IPv4 (honouring the IP total length, so Ethernet padding never leaks into payloads)
and UDP/TCP. Frames it cannot parse (ARP, STP, IPv6, fragments...) are still yielded, with
``proto`` saying what they are, so frame numbers always match tshark's ``frame.number``.

For TCP it reassembles each direction by sequence number (dropping retransmitted bytes,
starting a new contiguous *chunk* at every gap) and splits an EtherNet/IP byte stream into
encapsulation frames (24-byte header, length at offset 2, little-endian), remembering the
capture frames each one starts and ends in. tshark reports a PDU at the frame that completes
it, which is ``EncapPdu.last_frame``.

The reader trusts nothing: a truncated record raises ``PcapError`` naming the file and offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

# Link-layer header types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)

IPPROTO_TCP = 6
IPPROTO_UDP = 17

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04

ENCAP_HEADER_LEN = 24


class PcapError(Exception):
    """The capture file is truncated or not a pcap/pcapng file."""


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One captured link-layer frame, as stored in the file."""

    number: int  # 1-based, as tshark's frame.number
    ts_ns: int  # nanoseconds since the epoch (a float cannot hold pcapng's ns exactly)
    linktype: int
    data: bytes  # captured bytes (may be shorter than orig_len if snapped)
    orig_len: int

    @property
    def timestamp(self) -> float:
        """Seconds since the epoch."""
        return self.ts_ns / 1e9


@dataclass(frozen=True, slots=True)
class Packet:
    """A frame decoded down to the transport layer.

    ``proto`` is ``"udp"`` or ``"tcp"`` when those were parsed, otherwise a short word saying
    what stopped the parse (``"arp"``, ``"ipv6"``, ``"ipv4-fragment"``, ``"ipv4-proto-1"``,
    ``"non-ip"``, ``"truncated"``...). ``payload`` is the transport payload (empty otherwise).
    """

    number: int
    ts_ns: int
    linktype: int
    frame: bytes
    proto: str
    src: str | None = None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None
    payload: bytes = b""
    ip_header: bytes = b""
    tcp_seq: int | None = None
    tcp_ack: int | None = None
    tcp_flags: int | None = None

    @property
    def timestamp(self) -> float:
        """Seconds since the epoch."""
        return self.ts_ns / 1e9

    @property
    def flow(self) -> tuple[str, int, str, int]:
        """(src ip, src port, dst ip, dst port): the key of one direction of a TCP stream."""
        assert self.src is not None and self.dst is not None
        assert self.sport is not None and self.dport is not None
        return (self.src, self.sport, self.dst, self.dport)


# ---------------------------------------------------------------------------------------------
# File formats


# magic -> (byte order, nanoseconds per fractional unit)
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_IDB = 0x00000001
_PCAPNG_PB = 0x00000002  # obsolete Packet Block
_PCAPNG_SPB = 0x00000003
_PCAPNG_EPB = 0x00000006


def read_frames(path: str | Path) -> list[RawFrame]:
    """Every record of a pcap or pcapng file, numbered from 1."""
    data = Path(path).read_bytes()
    if data[:4] in _PCAP_MAGICS:
        return list(_read_pcap(data, str(path)))
    if len(data) >= 4 and struct.unpack_from("<I", data)[0] == _PCAPNG_SHB:
        return list(_read_pcapng(data, str(path)))
    raise PcapError(f"{path}: not a pcap or pcapng file (magic {data[:4].hex()})")


def _read_pcap(data: bytes, name: str) -> Iterator[RawFrame]:
    endian, unit = _PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise PcapError(f"{name}: truncated pcap global header")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    pos, number = 24, 0
    while pos < len(data):
        if pos + rec.size > len(data):
            raise PcapError(f"{name}: truncated record header at offset {pos}")
        sec, frac, incl, orig = rec.unpack_from(data, pos)
        pos += rec.size
        if pos + incl > len(data):
            raise PcapError(f"{name}: record at offset {pos} claims {incl} bytes past the end")
        number += 1
        yield RawFrame(
            number, sec * 1_000_000_000 + frac * unit, linktype, data[pos : pos + incl], orig
        )
        pos += incl


def _read_pcapng(data: bytes, name: str) -> Iterator[RawFrame]:
    endian = "<"
    interfaces: list[tuple[int, tuple[int, int]]] = []  # (linktype, ts units per second)
    pos, number = 0, 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise PcapError(f"{name}: truncated pcapng block header at offset {pos}")
        btype = struct.unpack_from(endian + "I", data, pos)[0]
        if btype == _PCAPNG_SHB:
            # The byte-order magic decides how this whole section is read.
            bom = data[pos + 8 : pos + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise PcapError(f"{name}: bad pcapng byte-order magic at offset {pos}")
            interfaces = []
        blen = struct.unpack_from(endian + "I", data, pos + 4)[0]
        if blen < 12 or blen % 4 or pos + blen > len(data):
            raise PcapError(f"{name}: bad pcapng block length {blen} at offset {pos}")
        body = data[pos + 8 : pos + blen - 4]
        if btype == _PCAPNG_IDB:
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            interfaces.append((linktype, _if_tsresol(body[8:], endian)))
        elif btype in (_PCAPNG_EPB, _PCAPNG_PB):
            if btype == _PCAPNG_EPB:
                iface, ts_hi, ts_lo, incl, orig = struct.unpack_from(endian + "IIIII", body, 0)
            else:
                iface, _drops, ts_hi, ts_lo, incl, orig = struct.unpack_from(
                    endian + "HHIIII", body, 0
                )
            if iface >= len(interfaces) or 20 + incl > len(body):
                raise PcapError(f"{name}: bad packet block at offset {pos}")
            linktype, (num, den) = interfaces[iface]
            number += 1
            ts_ns = ((ts_hi << 32) | ts_lo) * 1_000_000_000 * num // den
            yield RawFrame(number, ts_ns, linktype, body[20 : 20 + incl], orig)
        elif btype == _PCAPNG_SPB:
            if not interfaces:
                raise PcapError(f"{name}: simple packet block before any interface")
            orig = struct.unpack_from(endian + "I", body, 0)[0]
            linktype, _unit = interfaces[0]
            number += 1
            yield RawFrame(number, 0, linktype, body[4 : 4 + orig], orig)
        pos += blen


def _if_tsresol(options: bytes, endian: str) -> tuple[int, int]:
    """Seconds per timestamp unit as a fraction (num, den) from an IDB's options
    (default: microseconds)."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = options[pos + 4]
            return (1, 2 ** (v & 0x7F)) if v & 0x80 else (1, 10**v)
        pos += 4 + length + (-length % 4)
    return (1, 1_000_000)


# ---------------------------------------------------------------------------------------------
# Link, network and transport layers


def read_packets(path: str | Path) -> list[Packet]:
    """Every frame of the capture decoded down to UDP/TCP where possible."""
    return [decode_frame(f) for f in read_frames(path)]


def decode_frame(raw: RawFrame) -> Packet:
    base = Packet(raw.number, raw.ts_ns, raw.linktype, raw.data, proto="truncated")
    ip = _link_payload(raw.linktype, raw.data)
    if isinstance(ip, str):
        return replace(base, proto=ip)
    return _decode_ipv4(ip, base)


def _link_payload(linktype: int, d: bytes) -> bytes | str:
    """The IPv4 packet inside a link-layer frame, or a word saying why there is none."""
    if linktype == LINKTYPE_ETHERNET:
        if len(d) < 14:
            return "truncated"
        etype, pos = struct.unpack_from(">H", d, 12)[0], 14
        while etype in ETHERTYPE_VLAN:
            if len(d) < pos + 4:
                return "truncated"
            etype, pos = struct.unpack_from(">H", d, pos + 2)[0], pos + 4
        if etype < 0x0600:
            return "llc"  # 802.3 length field: STP, CDP...
        return d[pos:] if etype == ETHERTYPE_IPV4 else _ethertype_name(etype)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(d) < 4:
            return "truncated"
        # The family is in the capturing host's byte order (NULL) or big-endian (LOOP).
        fam_le, fam_be = struct.unpack_from("<I", d)[0], struct.unpack_from(">I", d)[0]
        fam = fam_be if linktype == LINKTYPE_LOOP else (fam_le if fam_le < 0x10000 else fam_be)
        return d[4:] if fam == 2 else "non-ip"
    if linktype == LINKTYPE_LINUX_SLL:
        if len(d) < 16:
            return "truncated"
        etype = struct.unpack_from(">H", d, 14)[0]
        return d[16:] if etype == ETHERTYPE_IPV4 else _ethertype_name(etype)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(d) < 20:
            return "truncated"
        etype = struct.unpack_from(">H", d, 0)[0]
        return d[20:] if etype == ETHERTYPE_IPV4 else _ethertype_name(etype)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, 12, 14):
        return d if d[:1] and d[0] >> 4 == 4 else "non-ip"
    return f"linktype-{linktype}"


def _ethertype_name(etype: int) -> str:
    return {0x0806: "arp", 0x86DD: "ipv6", 0x88CC: "lldp"}.get(etype, f"ethertype-{etype:04x}")


def _decode_ipv4(ip: bytes, base: Packet) -> Packet:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return replace(base, proto="non-ip" if ip[:1] and ip[0] >> 4 != 4 else "truncated")
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from(">H", ip, 2)[0]
    if ihl < 20 or total < ihl or len(ip) < total:
        return base
    ip = ip[:total]  # drop link-layer padding
    flags_frag = struct.unpack_from(">H", ip, 6)[0]
    proto = ip[9]
    base = replace(
        base,
        src=".".join(str(b) for b in ip[12:16]),
        dst=".".join(str(b) for b in ip[16:20]),
        ip_header=ip[:ihl],
    )
    if flags_frag & 0x3FFF:  # more-fragments flag or a fragment offset
        return replace(base, proto="ipv4-fragment")
    seg = ip[ihl:]
    if proto == IPPROTO_UDP:
        if len(seg) < 8:
            return base
        sport, dport, ulen = struct.unpack_from(">HHH", seg)
        if ulen < 8 or ulen > len(seg):
            return base
        return replace(base, proto="udp", sport=sport, dport=dport, payload=seg[8:ulen])
    if proto == IPPROTO_TCP:
        if len(seg) < 20:
            return base
        sport, dport, seq, ack, off_flags = struct.unpack_from(">HHIIH", seg)
        doff = (off_flags >> 12) * 4
        if doff < 20 or doff > len(seg):
            return base
        return replace(
            base,
            proto="tcp",
            sport=sport,
            dport=dport,
            payload=seg[doff:],
            tcp_seq=seq,
            tcp_ack=ack,
            tcp_flags=off_flags & 0x01FF,
        )
    return replace(base, proto=f"ipv4-proto-{proto}")


def udp_datagrams(path: str | Path, port: int | None = None) -> list[Packet]:
    """The UDP packets of a capture, optionally only those to or from ``port``."""
    return [
        p
        for p in read_packets(path)
        if p.proto == "udp" and (port is None or port in (p.sport, p.dport))
    ]


# ---------------------------------------------------------------------------------------------
# TCP reassembly


@dataclass(frozen=True, slots=True)
class Chunk:
    """Contiguous bytes of one TCP direction; ``frames[i]`` captured byte ``offsets[i]``..."""

    offset: int  # relative to the stream's first sequence number
    data: bytes
    # (relative offset where the frame's new bytes start, frame number), ascending.
    pieces: tuple[tuple[int, int], ...]

    def frame_at(self, offset: int) -> int:
        """Number of the frame that carried the byte at relative ``offset``."""
        frame = self.pieces[0][1]
        for start, number in self.pieces:
            if start > offset:
                break
            frame = number
        return frame


@dataclass(slots=True)
class TcpStream:
    """One direction of a TCP connection, reassembled by sequence number."""

    flow: tuple[str, int, str, int]
    chunks: list[Chunk] = field(default_factory=list)
    retransmitted_frames: list[int] = field(default_factory=list)  # fully duplicate segments
    gaps: int = 0  # number of holes (missing bytes) between chunks

    @property
    def data(self) -> bytes:
        """All reassembled bytes, gaps ignored (use ``chunks`` when gaps matter)."""
        return b"".join(c.data for c in self.chunks)


def tcp_streams(packets: Iterable[Packet]) -> dict[tuple[str, int, str, int], TcpStream]:
    """Reassemble every TCP direction in capture order of first appearance.

    The stream's base is the SYN's sequence number + 1 when the SYN was captured, else the
    sequence number of the first segment seen in that direction (captures that start
    mid-connection). Segments are ordered by sequence number; bytes already delivered are
    dropped (retransmissions, keep-alive probes), a hole starts a new chunk.
    """
    segs: dict[tuple[str, int, str, int], list[Packet]] = {}
    for p in packets:
        if p.proto == "tcp":
            segs.setdefault(p.flow, []).append(p)
    return {flow: _reassemble(flow, plist) for flow, plist in segs.items()}


def _reassemble(flow: tuple[str, int, str, int], plist: list[Packet]) -> TcpStream:
    syn = next((p for p in plist if p.tcp_flags is not None and p.tcp_flags & TCP_SYN), None)
    first_seq = plist[0].tcp_seq
    assert first_seq is not None
    base = (syn.tcp_seq + 1) & 0xFFFFFFFF if syn and syn.tcp_seq is not None else first_seq
    stream = TcpStream(flow)
    with_data = []
    for p in plist:
        if not p.payload:
            continue
        assert p.tcp_seq is not None
        rel = (p.tcp_seq - base) & 0xFFFFFFFF
        if rel >= 0x80000000:
            rel -= 0x100000000  # before the base: old data (e.g. a keep-alive probe)
        with_data.append((rel, p.number, p.payload))
    with_data.sort(key=lambda t: (t[0], t[1]))
    nxt: int | None = None
    cur_off, cur_data = 0, bytearray()
    cur_pieces: list[tuple[int, int]] = []
    for rel, number, payload in with_data:
        end = rel + len(payload)
        if end <= (0 if nxt is None else nxt):
            stream.retransmitted_frames.append(number)
            continue
        if rel < 0 and nxt is None:
            payload, rel = payload[-rel:], 0
        if nxt is None or rel > nxt:
            if nxt is not None:
                stream.gaps += 1
            if cur_data:
                stream.chunks.append(Chunk(cur_off, bytes(cur_data), tuple(cur_pieces)))
            cur_off, cur_data, cur_pieces = rel, bytearray(), []
            nxt = rel
        new = payload[nxt - rel :]  # partial overlap: keep only the unseen tail
        cur_pieces.append((nxt, number))
        cur_data += new
        nxt += len(new)
    if cur_data:
        stream.chunks.append(Chunk(cur_off, bytes(cur_data), tuple(cur_pieces)))
    return stream


# ---------------------------------------------------------------------------------------------
# EtherNet/IP encapsulation framing over TCP


@dataclass(frozen=True, slots=True)
class EncapPdu:
    """One EtherNet/IP encapsulation frame (24-byte header + ``length`` bytes) from TCP."""

    flow: tuple[str, int, str, int]
    offset: int  # relative stream offset of the header's first byte
    first_frame: int  # capture frame carrying the first byte
    last_frame: int  # capture frame carrying the last byte (where tshark shows it)
    data: bytes

    @property
    def command(self) -> int:
        value: int = struct.unpack_from("<H", self.data, 0)[0]
        return value

    @property
    def length(self) -> int:
        value: int = struct.unpack_from("<H", self.data, 2)[0]
        return value


@dataclass(slots=True)
class EncapSplit:
    pdus: list[EncapPdu]
    # Bytes that did not form a whole PDU: (flow, chunk offset, bytes left at the chunk's end).
    leftovers: list[tuple[tuple[str, int, str, int], int, int]]


def split_encapsulation(stream: TcpStream) -> EncapSplit:
    """Cut a reassembled TCP direction into encapsulation frames.

    Each chunk is assumed to start on a frame boundary (true of a stream captured from its
    SYN, and of the resynchronisation points in the reference captures); an incomplete frame
    at the end of a chunk is reported in ``leftovers`` rather than guessed at.
    """
    pdus: list[EncapPdu] = []
    leftovers = []
    for chunk in stream.chunks:
        pos = 0
        d = chunk.data
        while pos < len(d):
            if len(d) - pos < ENCAP_HEADER_LEN:
                leftovers.append((stream.flow, chunk.offset, len(d) - pos))
                break
            length = struct.unpack_from("<H", d, pos + 2)[0]
            end = pos + ENCAP_HEADER_LEN + length
            if end > len(d):
                leftovers.append((stream.flow, chunk.offset, len(d) - pos))
                break
            pdus.append(
                EncapPdu(
                    flow=stream.flow,
                    offset=chunk.offset + pos,
                    first_frame=chunk.frame_at(chunk.offset + pos),
                    last_frame=chunk.frame_at(chunk.offset + end - 1),
                    data=d[pos:end],
                )
            )
            pos = end
    return EncapSplit(pdus, leftovers)


def enip_tcp_pdus(path: str | Path, port: int = 44818) -> list[EncapPdu]:
    """Every encapsulation frame carried over TCP ``port`` (either direction), ordered by the
    frame that completes it (then by stream offset), as tshark lists them."""
    streams = tcp_streams(read_packets(path))
    out: list[EncapPdu] = []
    for flow, stream in streams.items():
        if port in (flow[1], flow[3]):
            out.extend(split_encapsulation(stream).pdus)
    out.sort(key=lambda p: (p.last_frame, p.offset))
    return out


# ---------------------------------------------------------------------------------------------
# Writing captures (to let tshark dissect bytes that did not come from a capture)


def ipv4_udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An Ethernet + IPv4 + UDP frame around ``payload`` (checksums zero: tshark is told not
    to verify them)."""
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    return _ether(_ipv4(src, dst, IPPROTO_UDP, udp))


def ipv4_tcp_frame(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    seq: int,
    ack: int,
    payload: bytes,
    flags: int = 0x18,
) -> bytes:
    """An Ethernet + IPv4 + TCP frame (PSH|ACK by default) around ``payload``."""
    tcp = struct.pack(">HHIIHHHH", sport, dport, seq, ack, (5 << 12) | flags, 65535, 0, 0)
    return _ether(_ipv4(src, dst, IPPROTO_TCP, tcp + payload))


def _ipv4(src: str, dst: str, proto: int, body: bytes) -> bytes:
    addr = [bytes(int(x) for x in a.split(".")) for a in (src, dst)]
    return (
        struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, 64, proto, 0, addr[0], addr[1]
        )
        + body
    )


def _ether(ip: bytes) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip


def write_pcap(
    path: str | Path,
    frames: Iterable[bytes],
    linktype: int = LINKTYPE_ETHERNET,
    start: float = 1_700_000_000.0,
    step: float = 0.001,
) -> Path:
    """Write ``frames`` as a classic little-endian microsecond pcap; returns the path."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
    for i, fr in enumerate(frames):
        ts = start + i * step
        sec = int(ts)
        out += struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(fr), len(fr)) + fr
    p = Path(path)
    p.write_bytes(bytes(out))
    return p


class TcpConversation:
    """Frames of one TCP connection with consistent sequence numbers, so tshark can track it;
    interleave them with other frames (e.g. UDP I/O) in any order you like."""

    def __init__(
        self,
        client: tuple[str, int] = ("192.168.1.100", 50000),
        server: tuple[str, int] = ("192.168.1.10", 44818),
    ) -> None:
        self.client, self.server = client, server
        self._cseq, self._sseq = 1000, 5000

    def handshake(self) -> list[bytes]:
        (c_ip, c_port), (s_ip, s_port) = self.client, self.server
        c, s = self._cseq, self._sseq
        self._cseq, self._sseq = c + 1, s + 1
        return [
            ipv4_tcp_frame(c_ip, c_port, s_ip, s_port, c, 0, b"", flags=TCP_SYN),
            ipv4_tcp_frame(s_ip, s_port, c_ip, c_port, s, c + 1, b"", flags=TCP_SYN | 0x10),
            ipv4_tcp_frame(c_ip, c_port, s_ip, s_port, c + 1, s + 1, b"", flags=0x10),
        ]

    def segment(self, from_client: bool, payload: bytes) -> bytes:
        (c_ip, c_port), (s_ip, s_port) = self.client, self.server
        if from_client:
            frame = ipv4_tcp_frame(c_ip, c_port, s_ip, s_port, self._cseq, self._sseq, payload)
            self._cseq += len(payload)
        else:
            frame = ipv4_tcp_frame(s_ip, s_port, c_ip, c_port, self._sseq, self._cseq, payload)
            self._sseq += len(payload)
        return frame


def tcp_conversation_frames(
    messages: Iterable[tuple[bool, bytes]],
    client: tuple[str, int] = ("192.168.1.100", 50000),
    server: tuple[str, int] = ("192.168.1.10", 44818),
) -> list[bytes]:
    """Frames of one TCP connection (handshake, then one segment per message); each message
    is ``(from_client, payload)``."""
    conv = TcpConversation(client, server)
    return conv.handshake() + [conv.segment(fc, payload) for fc, payload in messages]

"""Walk captured EtherNet/IP traffic through *our* codec (acquisition/), for the golden tests.

``explicit_messages(path)`` decodes every encapsulation frame carried over TCP 44818 down to
the CIP message (request or reply) and pairs each reply with its request (FIFO per TCP
connection: explicit messaging has one request outstanding per session in these captures;
the tests cross-check the pairing against tshark's ``enip.response_to``).
``class1_datagrams(path)`` lists the UDP 2222 payloads.

Only ``MalformedPacket`` is caught here, and only where the caller asked for tolerance; any
other exception is a codec bug and propagates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyconpro.acquisition import cip, cpf, encap

from tests.support import pcap

UDP_IO_PORT = 2222
ENIP_PORT = 44818


@dataclass(slots=True)
class Message:
    """One encapsulation frame from TCP and what our codec made of it."""

    pdu: pcap.EncapPdu
    packet: encap.EncapsulationPacket
    send: encap.SendData | None = None  # SendRRData / SendUnitData command data
    connection_id: int | None = None  # SendUnitData: connected address
    sequence: int | None = None  # SendUnitData: 16-bit sequence count
    message: bytes | None = None  # the CIP message inside
    request: cip.Request | None = None
    reply: cip.Reply | None = None
    paired: Message | None = None  # reply -> its request, request -> its reply

    @property
    def frame(self) -> int:
        """The capture frame tshark shows this message in."""
        return self.pdu.last_frame

    @property
    def from_client(self) -> bool:
        return self.pdu.flow[3] == ENIP_PORT


def decode_message(pdu: pcap.EncapPdu) -> Message:
    """Decode one encapsulation frame as far as its command allows (MalformedPacket escapes)."""
    packet = encap.EncapsulationPacket.decode(pdu.data)
    m = Message(pdu, packet)
    if packet.command in (encap.Command.SEND_RR_DATA, encap.Command.SEND_UNIT_DATA) and packet.data:
        m.send = encap.SendData.decode(packet.data)
        if packet.command == encap.Command.SEND_RR_DATA:
            m.message = m.send.unconnected()
        else:
            m.connection_id, m.sequence, m.message = m.send.connected()
        if m.message[:1] and m.message[0] & cip.REPLY_FLAG:
            m.reply = cip.Reply.decode(m.message)
        else:
            m.request = cip.Request.decode(m.message)
    return m


def explicit_messages(path: str | Path) -> list[Message]:
    """Every TCP encapsulation frame of the capture, decoded, requests paired with replies."""
    out = [decode_message(p) for p in pcap.enip_tcp_pdus(path, ENIP_PORT)]
    pending: dict[tuple[str, int, str, int], list[Message]] = {}
    for m in out:
        if m.request is not None and m.from_client:
            pending.setdefault(m.pdu.flow, []).append(m)
        elif m.reply is not None and not m.from_client:
            src, sport, dst, dport = m.pdu.flow
            queue = pending.get((dst, dport, src, sport), [])
            if queue:
                req = queue.pop(0)
                m.paired, req.paired = req, m
    return out


def class1_datagrams(path: str | Path) -> list[pcap.Packet]:
    """UDP packets to or from port 2222 (class-0/1 implicit I/O)."""
    return pcap.udp_datagrams(path, UDP_IO_PORT)


def sockaddr_items(send: encap.SendData) -> list[cpf.SockaddrInfo]:
    return [i for i in send.items if isinstance(i, cpf.SockaddrInfo)]

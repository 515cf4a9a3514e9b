"""EtherNet/IP encapsulation: the 24-byte header, its commands, and the command-specific data of
RegisterSession, SendRRData and SendUnitData.

Implements protocol.md 2.1 (header), 2.2 (commands), 2.4 (RegisterSession), 2.5/2.6 (ListIdentity
and ListServices replies, whose items live in ``cpf``), 2.7 (SendRRData / SendUnitData data).
Stream framing (``FrameBuffer``) is pure: the owner of the TCP socket feeds it bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from pyconpro.acquisition import cpf
from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.errors import EncapsulationError, MalformedPacket, UsageError


class Command(IntEnum):
    NOP = 0x0000
    LIST_TARGETS = 0x0001
    LIST_SERVICES = 0x0004
    LIST_IDENTITY = 0x0063
    LIST_INTERFACES = 0x0064
    REGISTER_SESSION = 0x0065
    UNREGISTER_SESSION = 0x0066
    SEND_RR_DATA = 0x006F
    SEND_UNIT_DATA = 0x0070
    INDICATE_STATUS = 0x0072
    CANCEL = 0x0073
    START_DTLS = 0x00C8


# Encapsulation header (protocol.md 2.1):
#  off 0  command:UINT        off 2  length:UINT (bytes after the header)
#  off 4  session handle:UDINT  off 8  status:UDINT
#  off 12 sender context[8]   off 20 options:UDINT
HEADER = struct.Struct("<HHII8sI")
HEADER_SIZE = HEADER.size  # 24
MAX_LENGTH = 0xFFFF

# RegisterSession data (protocol.md 2.4): protocol version:UINT = 1, option flags:UINT = 0
_REGISTER = struct.Struct("<HH")
# SendRRData / SendUnitData data (protocol.md 2.7): interface handle:UDINT, timeout:UINT, CPF
_SEND_DATA = struct.Struct("<IH")


@dataclass(frozen=True, slots=True)
class EncapsulationPacket:
    """One encapsulation message; ``data`` is everything after the 24-byte header."""

    command: int
    data: bytes = b""
    session: int = 0
    status: int = 0
    context: bytes = bytes(8)
    options: int = 0

    def encode(self) -> bytes:
        if len(self.data) > MAX_LENGTH:
            raise UsageError(f"encapsulation data of {len(self.data)} bytes exceeds 65535")
        if len(self.context) != 8:
            raise UsageError("sender context must be exactly 8 bytes")
        return (
            HEADER.pack(
                self.command, len(self.data), self.session, self.status, self.context, self.options
            )
            + self.data
        )

    @classmethod
    def decode(cls, frame: bytes) -> EncapsulationPacket:
        """Decode exactly one complete frame (header + ``length`` bytes, nothing more)."""
        r = Reader(frame, context="encapsulation")
        command, length, session, status, context, options = r.unpack(
            HEADER, "24-byte encapsulation header"
        )
        data = r.take(length, f"{length} bytes of encapsulation data (header length field)")
        r.expect_end("encapsulation frame")
        return cls(command, data, session, status, context, options)

    def check_status(self) -> None:
        """Raise EncapsulationError if the header status is not success."""
        if self.status != 0:
            raise EncapsulationError(self.status, self.command)


def frame_size(buffer: bytes | bytearray) -> int | None:
    """Total size of the frame starting at ``buffer[0]``, or None until 24 bytes are there."""
    if len(buffer) < HEADER_SIZE:
        return None
    return HEADER_SIZE + (buffer[2] | (buffer[3] << 8))


@dataclass(slots=True)
class FrameBuffer:
    """Reassembles encapsulation frames from a TCP byte stream (readers must loop until
    ``24 + length`` bytes are available, protocol.md 2.1)."""

    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[EncapsulationPacket]:
        self._buf += data
        out: list[EncapsulationPacket] = []
        while True:
            size = frame_size(self._buf)
            if size is None or len(self._buf) < size:
                return out
            frame = bytes(self._buf[:size])
            del self._buf[:size]
            out.append(EncapsulationPacket.decode(frame))

    def pending(self) -> int:
        return len(self._buf)


@dataclass(frozen=True, slots=True)
class RegisterSessionData:
    protocol_version: int = 1
    options: int = 0

    def encode(self) -> bytes:
        return _REGISTER.pack(self.protocol_version, self.options)

    @classmethod
    def decode(cls, data: bytes) -> RegisterSessionData:
        r = Reader(data, context="RegisterSession")
        version, options = r.unpack(_REGISTER, "protocol version and option flags")
        r.expect_end("RegisterSession data")
        return cls(version, options)


@dataclass(frozen=True, slots=True)
class SendData:
    """Command-specific data of SendRRData and SendUnitData: interface handle, timeout, CPF."""

    items: tuple[cpf.Item, ...]
    interface_handle: int = 0
    timeout: int = 0

    def encode(self) -> bytes:
        return _SEND_DATA.pack(self.interface_handle, self.timeout) + cpf.encode_items(self.items)

    @classmethod
    def decode(cls, data: bytes) -> SendData:
        r = Reader(data, context="SendRRData/SendUnitData")
        handle, timeout = r.unpack(_SEND_DATA, "interface handle and timeout")
        items = cpf.decode_items(data, r.pos, context="SendRRData/SendUnitData CPF")
        return cls(items, handle, timeout)

    # Convenience views for the two layouts used in practice (protocol.md 2.7).
    def unconnected(self) -> bytes:
        """The CIP message of a SendRRData: null address + unconnected data."""
        cpf.require_layout(self.items, cpf.NullAddress, cpf.UnconnectedData, context="SendRRData")
        item = self.items[1]
        assert isinstance(item, cpf.UnconnectedData)
        return item.data

    def connected(self) -> tuple[int, int, bytes]:
        """(connection id, 16-bit sequence count, CIP message) of a class-3 SendUnitData."""
        cpf.require_layout(
            self.items, cpf.ConnectedAddress, cpf.ConnectedData, context="SendUnitData"
        )
        addr, data = self.items[0], self.items[1]
        assert isinstance(addr, cpf.ConnectedAddress) and isinstance(data, cpf.ConnectedData)
        if len(data.data) < 2:
            raise MalformedPacket("16-bit sequence count in connected data", 0, "SendUnitData")
        return addr.connection_id, data.data[0] | (data.data[1] << 8), data.data[2:]


def send_rr_data(message: bytes, extra_items: tuple[cpf.Item, ...] = (), timeout: int = 0) -> bytes:
    """Command data of a SendRRData carrying one unconnected CIP message."""
    items: tuple[cpf.Item, ...] = (cpf.NullAddress(), cpf.UnconnectedData(message)) + extra_items
    return SendData(items, 0, timeout).encode()


def send_unit_data(connection_id: int, sequence: int, message: bytes) -> bytes:
    """Command data of a class-3 SendUnitData (connected address + connected data)."""
    body = struct.pack("<H", sequence & 0xFFFF) + message
    return SendData((cpf.ConnectedAddress(connection_id), cpf.ConnectedData(body))).encode()

"""Class-1 (and class-0) implicit I/O datagrams on UDP 2222, and sequence-number arithmetic.

Implements protocol.md 6.1 (datagram layout), 6.2 (what counts toward the connection size),
6.3 (optional 32-bit run/idle header), 6.4 (16- and 32-bit sequence rules), 6.5 (heartbeat).

A class-1 datagram is a bare CPF block, no encapsulation header:
  off 0  item count = 2
  off 2  0x8002 sequenced address, length 8: connection id:UDINT, encapsulation seq:UDINT
  off 14 0x00B1 connected data, length 2 [+4] + N: CIP seq16, [run/idle:UDINT], data
This module is on the receive hot path: ``decode`` does one ``unpack_from`` and one slice.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyconpro.acquisition.errors import MalformedPacket, UsageError

# The fixed 20-byte prefix of a class-1 datagram (see module docstring).
_PREFIX = struct.Struct("<HHHIIHHH")
PREFIX_SIZE = _PREFIX.size  # 20
_RUN_IDLE = struct.Struct("<I")
_ITEM_COUNT = 2
_SEQ_ADDR = 0x8002
_SEQ_ADDR_LEN = 8
_CONN_DATA = 0x00B1
_CONN_ADDR = 0x00A1
# class 0: count=2, 0x00A1 len 4 id, 0x00B1 len N data (no sequence count)
_PREFIX0 = struct.Struct("<HHHIHH")

RUN_IDLE_RUN = 0x0001


@dataclass(frozen=True, slots=True)
class Class1Datagram:
    """One class-1 datagram: ``data`` is the application data (for a Logix produced tag, the tag
    image); ``run_idle`` is the 32-bit header when the connection uses one, else None."""

    connection_id: int
    sequence: int  # 32-bit encapsulation sequence number
    cip_sequence: int  # 16-bit CIP sequence count
    data: bytes = b""
    run_idle: int | None = None

    @property
    def connection_size(self) -> int:
        """What the NCP size of this connection must be (protocol.md 6.2)."""
        return 2 + (4 if self.run_idle is not None else 0) + len(self.data)

    def encode(self) -> bytes:
        if not (0 <= self.connection_id <= 0xFFFFFFFF and 0 <= self.sequence <= 0xFFFFFFFF):
            raise UsageError("connection id and sequence must be 32-bit unsigned")
        if not 0 <= self.cip_sequence <= 0xFFFF:
            raise UsageError("CIP sequence count must be 16-bit unsigned")
        header = b"" if self.run_idle is None else _RUN_IDLE.pack(self.run_idle)
        length = 2 + len(header) + len(self.data)
        if length > 0xFFFF:
            raise UsageError("class-1 data too large")
        return (
            _PREFIX.pack(_ITEM_COUNT, _SEQ_ADDR, _SEQ_ADDR_LEN, self.connection_id, self.sequence,
                         _CONN_DATA, length, self.cip_sequence)
            + header
            + self.data
        )

    @classmethod
    def decode(cls, datagram: bytes, run_idle_header: bool = False) -> Class1Datagram:
        """Decode one datagram; ``run_idle_header`` says whether this connection carries the
        32-bit header (Logix produced-tag data does not; protocol.md 6.3)."""
        if len(datagram) < PREFIX_SIZE:
            raise MalformedPacket(
                f"a class-1 datagram of at least {PREFIX_SIZE} bytes, got {len(datagram)}",
                len(datagram), "class-1",
            )
        count, t1, l1, cid, seq, t2, l2, cseq = _PREFIX.unpack_from(datagram)
        if count != _ITEM_COUNT:
            raise MalformedPacket(f"CPF item count 2, got {count}", 0, "class-1")
        if t1 != _SEQ_ADDR or l1 != _SEQ_ADDR_LEN:
            raise MalformedPacket(
                f"sequenced address item 0x8002 of length 8, got 0x{t1:04X} length {l1}",
                2,
                "class-1",
            )
        if t2 != _CONN_DATA:
            raise MalformedPacket(f"connected data item 0x00B1, got 0x{t2:04X}", 14, "class-1")
        if l2 != len(datagram) - 18:
            raise MalformedPacket(
                f"connected data length {len(datagram) - 18} (rest of datagram), field says {l2}",
                16,
                "class-1",
            )
        if run_idle_header:
            if l2 < 6:
                raise MalformedPacket(
                    "32-bit run/idle header after the sequence count", 20, "class-1"
                )
            (ri,) = _RUN_IDLE.unpack_from(datagram, 20)
            return cls(cid, seq, cseq, datagram[24:], ri)
        return cls(cid, seq, cseq, datagram[20:], None)


def heartbeat(connection_id: int, sequence: int, cip_sequence: int = 1) -> bytes:
    """An O->T heartbeat: a class-1 datagram whose data is only the sequence count (6.5).

    The bytes of ``Class1Datagram(connection_id, sequence, cip_sequence).encode()`` in one
    ``pack`` (a worker sends thousands per second)."""
    if not 0 <= connection_id <= 0xFFFFFFFF:
        raise UsageError("connection id must be 32-bit unsigned")
    return _PREFIX.pack(_ITEM_COUNT, _SEQ_ADDR, _SEQ_ADDR_LEN, connection_id,
                        sequence & 0xFFFFFFFF, _CONN_DATA, 2, cip_sequence & 0xFFFF)


def peek_connection_id(datagram: bytes) -> int | None:
    """Connection id of a class-1 datagram without a full decode (demultiplexing), or None."""
    if len(datagram) < 10:
        return None
    return int.from_bytes(datagram[6:10], "little")


@dataclass(frozen=True, slots=True)
class Class0Datagram:
    """Class-0 datagram: connected address item (no sequence numbers) + connected data."""

    connection_id: int
    data: bytes

    def encode(self) -> bytes:
        return (
            _PREFIX0.pack(
                _ITEM_COUNT, _CONN_ADDR, 4, self.connection_id, _CONN_DATA, len(self.data)
            )
            + self.data
        )

    @classmethod
    def decode(cls, datagram: bytes) -> Class0Datagram:
        if len(datagram) < _PREFIX0.size:
            raise MalformedPacket(
                f"a class-0 datagram of at least {_PREFIX0.size} bytes", len(datagram), "class-0"
            )
        count, t1, l1, cid, t2, l2 = _PREFIX0.unpack_from(datagram)
        if count != 2 or t1 != _CONN_ADDR or l1 != 4 or t2 != _CONN_DATA:
            raise MalformedPacket(
                "connected address (0x00A1, 4) + connected data (0x00B1)", 0, "class-0"
            )
        if l2 != len(datagram) - _PREFIX0.size:
            raise MalformedPacket(
                "connected data length equal to the rest of the datagram", 12, "class-0"
            )
        return cls(cid, datagram[_PREFIX0.size :])


# ------------------------------------------------------------------ sequence arithmetic (6.4)


def seq16_diff(new: int, old: int) -> int:
    """Signed distance new - old on the 16-bit circle, in -32768..32767."""
    d = (new - old) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def seq32_diff(new: int, old: int) -> int:
    """Signed distance new - old on the 32-bit circle."""
    d = (new - old) & 0xFFFFFFFF
    return d - 0x1_0000_0000 if d >= 0x8000_0000 else d


def seq16_newer(new: int, old: int) -> bool:
    return seq16_diff(new, old) > 0


def seq32_newer(new: int, old: int) -> bool:
    """OpENer's SEQ_GT32: accept only if (int32)(new - old) > 0."""
    return seq32_diff(new, old) > 0

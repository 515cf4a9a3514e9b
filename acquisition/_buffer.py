"""Bounds-checked little-endian reading for parsers of network bytes.

Every parser in ``acquisition`` reads through ``Reader`` so that a short or inconsistent
buffer surfaces as ``MalformedPacket`` with the offset and what was expected, never as
``IndexError`` or ``struct.error`` (STYLE.md #7).
"""

from __future__ import annotations

import struct
from typing import Any

from pyconpro.acquisition.errors import MalformedPacket

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


class Reader:
    """A cursor over ``data[start:end]``; offsets reported are relative to ``data``."""

    __slots__ = ("context", "data", "end", "pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None, context: str = ""):
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end
        self.context = context

    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise MalformedPacket(
                f"{what} ({n} bytes, {max(self.end - self.pos, 0)} left)", self.pos, self.context
            )

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n

    def pad(self, what: str) -> None:
        """Skip one pad byte, which must be zero: a non-zero pad is not a valid encoding (and
        accepting it would make decode/encode lose bytes)."""
        if self.u8(what) != 0:
            raise MalformedPacket(f"{what} = 0", self.pos - 1, self.context)

    def unpack(self, st: struct.Struct, what: str) -> tuple[Any, ...]:
        self.need(st.size, what)
        out = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return out

    def u8(self, what: str) -> int:
        value: int = self.unpack(_U8, what)[0]
        return value

    def u16(self, what: str) -> int:
        value: int = self.unpack(_U16, what)[0]
        return value

    def u32(self, what: str) -> int:
        value: int = self.unpack(_U32, what)[0]
        return value

    def u64(self, what: str) -> int:
        value: int = self.unpack(_U64, what)[0]
        return value

    def rest(self) -> bytes:
        out = bytes(self.data[self.pos : self.end])
        self.pos = self.end
        return out

    def sub(self, n: int, what: str) -> Reader:
        """A reader over the next ``n`` bytes; this reader moves past them."""
        self.need(n, what)
        r = Reader(self.data, self.pos, self.pos + n, self.context)
        self.pos += n
        return r

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            raise MalformedPacket(
                f"end of {what} ({self.end - self.pos} unexpected trailing bytes)",
                self.pos,
                self.context,
            )

    def fail(self, expected: str) -> MalformedPacket:
        return MalformedPacket(expected, self.pos, self.context)

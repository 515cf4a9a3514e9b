"""Controller time: the member of a produced UDT that holds the controller's wall-clock time,
and reading it from a sample's bytes (docs/configuration.md "Controller time").

A tag's ``source_time`` names the member (``"Stamp"``, or a path into nested structures,
``"Header.Stamp"``; compared case-insensitively, as Logix compares names). The member must be a
64-bit integer (LINT, or ULINT / LWORD) holding microseconds since 1970-01-01 00:00 UTC, the
value of ``GSV WallClockTime CurrentValue``: ``locate`` finds its offset in the tag's bytes once
its type is known (the template the worker learns, or a ``type`` given) and says what is wrong
otherwise; ``read`` turns those 8 bytes of a sample into ns since the epoch, the bus's ``st``.

Pure: types and bytes in, offsets and numbers out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from pyconpro.acquisition.logix_types import (
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    StructType,
)

__all__ = ["SourceTime", "SourceTimeError", "locate", "read"]

#: Member types that can hold the controller's time, and whether they are signed.
TIME_TYPES: Final = {DataTypeCode.LINT: True, DataTypeCode.ULINT: False,
                     DataTypeCode.LWORD: False}  # fmt: skip
_I64, _U64 = struct.Struct("<q"), struct.Struct("<Q")
_NS_PER_US: Final = 1000
_I64_MAX: Final = 2**63 - 1
_GSV_HINT: Final = (
    "make it a LINT member written by GSV WallClockTime CurrentValue (docs/configuration.md"
    ' "Controller time"), or name another member in source_time'
)


class SourceTimeError(ValueError):
    """``source_time`` cannot be read from this type; the message names the member, its type
    and the fix."""


@dataclass(frozen=True, slots=True)
class SourceTime:
    """Where the controller's time is in a tag's bytes."""

    offset: int
    signed: bool


def _member(t: StructType, name: str) -> tuple[str, LogixType, int]:
    for m in t.visible_members:
        if m.name.lower() == name.lower():
            return m.name, m.type, m.offset
    names = ", ".join(m.name for m in t.visible_members) or "(none)"
    raise SourceTimeError(f"{t.name} has no member {name!r}; its members are: {names}")


def locate(t: LogixType | None, path: str, tag: str) -> SourceTime:
    """The place of member ``path`` of tag ``tag`` (of type ``t``) that ``source_time`` names;
    ``SourceTimeError`` when there is none or it cannot hold the time."""
    where = f"tag {tag!r}: source_time = {path!r}"
    if t is None:
        raise SourceTimeError(
            f"{where} needs the tag's type, which the controller did not give: remove"
            " source_time, or check that the controller lists its tags")
    offset, here, shown = 0, t, tag
    for name in path.split("."):
        if not isinstance(here, StructType):
            raise SourceTimeError(
                f"{where}: {shown} is a {here.name}, not a structure with members: name a"
                " member of the tag's UDT, or remove source_time")
        try:
            real, here, at = _member(here, name)
        except SourceTimeError as exc:
            raise SourceTimeError(f"{where}: {exc}") from None
        offset += at
        shown = f"{shown}.{real}"
    if isinstance(here, AtomicType) and here.code in TIME_TYPES:
        return SourceTime(offset, TIME_TYPES[here.code])
    pair = (isinstance(here, ArrayType) and here.dims == (2,) and isinstance(here.element,
            AtomicType) and here.element.code == DataTypeCode.DINT)  # fmt: skip
    hint = (" (a DINT[2] pair, as old firmware wrote the wall clock, is not read: use a LINT)"
            if pair else "")  # fmt: skip
    raise SourceTimeError(
        f"{where}: member {shown} is a {here.name}, not a LINT of microseconds since 1970"
        f"{hint}; {_GSV_HINT}")


def read(raw: bytes, at: SourceTime) -> int | None:
    """The controller time in ``raw`` as ns since the Unix epoch; None when the bytes are
    too short or the value is outside what the bus carries (int64 ns: years 1677-2262)."""
    end = at.offset + 8
    if len(raw) < end:
        return None
    us: int = (_I64 if at.signed else _U64).unpack_from(raw, at.offset)[0]
    ns = us * _NS_PER_US
    return ns if -_I64_MAX - 1 <= ns <= _I64_MAX else None

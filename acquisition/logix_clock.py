"""The Logix Wall Clock Time object (class 0x8B, instance 1): the controller's clock, pure.

Owns the clock a simulated controller keeps and the services clients use on it
(protocol.md 10.5): Get_Attribute_List 0x03 and Set_Attribute_List 0x04 (pycomm3
``get_plc_time`` / ``set_plc_time``, pylogix ``GetPLCTime`` / ``SetPLCTime``, libplctag raw
tags) and Get_Attribute_Single 0x0E / Set_Attribute_Single 0x10 (node-ethernet-ip on an L8x).

The clock is a number of microseconds that runs with the caller's monotonic ``now``: it is set
(``set_utc``) and read (``utc_us``) at a given ``now``, and never reads a clock itself. The
simulator's shell sets it from the host's clock once at start-up; clients may set it later, as
they set a real controller's. The simulated controller's time zone is UTC, so the local time is
the UTC time, plus one hour while daylight saving time is on (attribute 10).

Attributes (value layouts; the list services carry no sizes, so both sides know them):

| attr | type    | meaning                                           | used by                   |
|------|---------|---------------------------------------------------|---------------------------|
| 5    | DINT[7] | local date and time: year, month, day, hour,      | node-ethernet-ip          |
|      |         | minute, second, microsecond                       | ``readWallClock`` (L8x)   |
| 6    | ULINT   | UTC: microseconds since 1970-01-01 00:00          | pycomm3 get/set_plc_time  |
| 10   | USINT   | daylight saving time in effect (0 / 1)            | pylogix ``SetPLCTime``    |
| 11   | ULINT   | local time: microseconds since 1970-01-01 00:00   | pylogix ``GetPLCTime``    |

Every attribute here can be set. Values a clock cannot hold (a UTC time outside the years
1970-9999, a DST flag other than 0 or 1) get 0x09 Invalid attribute value; other attribute ids
0x14.
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass
from enum import IntEnum

from pyconpro.acquisition._buffer import Reader
from pyconpro.acquisition.cip import Reply, Service
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_objects import (
    encode_attribute_list,
    encode_attribute_statuses,
    parse_attribute_ids,
)
from pyconpro.acquisition.status import GeneralStatus

__all__ = [
    "ATTRIBUTE_WIDTHS",
    "DST_ADJUSTMENT_US",
    "WallClock",
    "WallClockAttribute",
    "decode_date_time",
    "encode_date_time",
    "wall_clock_service",
]


class WallClockAttribute(IntEnum):
    """Wall Clock Time object (class 0x8B) instance attributes served (protocol.md 10.5)."""

    LOCAL_DATE_TIME = 5
    CURRENT_UTC = 6
    DST = 10
    CURRENT_LOCAL = 11


_DATE_TIME = struct.Struct("<7i")
_ULINT = struct.Struct("<Q")
_USINT = struct.Struct("<B")
_LAYOUTS: dict[int, struct.Struct] = {
    WallClockAttribute.LOCAL_DATE_TIME: _DATE_TIME,
    WallClockAttribute.CURRENT_UTC: _ULINT,
    WallClockAttribute.DST: _USINT,
    WallClockAttribute.CURRENT_LOCAL: _ULINT,
}
#: Bytes of each attribute's value (what parse_attribute_list needs to read a reply).
ATTRIBUTE_WIDTHS = {attr: layout.size for attr, layout in _LAYOUTS.items()}

DST_ADJUSTMENT_US = 3_600_000_000  # one hour, the Logix default DST adjustment
_EPOCH = datetime.datetime(1970, 1, 1)
_ONE_US = datetime.timedelta(microseconds=1)
_MAX_US = (datetime.datetime(9999, 12, 31, 23, 59, 59, 999_999) - _EPOCH) // _ONE_US


def encode_date_time(us: int) -> bytes:
    """DINT[7] (year, month, day, hour, minute, second, microsecond) of ``us`` after 1970."""
    if not 0 <= us <= _MAX_US:
        raise UsageError(f"{us} us after 1970 is outside the years 1970-9999 a clock holds")
    t = _EPOCH + datetime.timedelta(microseconds=us)
    return _DATE_TIME.pack(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond)


def decode_date_time(data: bytes) -> int:
    """Microseconds after 1970 of a DINT[7] date and time of the years 1970-9999."""
    r = Reader(data, context="date and time (DINT[7])")
    fields = r.unpack(_DATE_TIME, "year, month, day, hour, minute, second, microsecond")
    r.expect_end("date and time (DINT[7])")
    try:
        t = datetime.datetime(*fields)
    except (ValueError, OverflowError) as err:
        raise MalformedPacket(f"a date and time, got {fields} ({err})", 0,
                              "date and time (DINT[7])") from None
    if t < _EPOCH:
        raise MalformedPacket(f"a date and time from 1970 on, got {t}", 0,
                              "date and time (DINT[7])")
    return (t - _EPOCH) // _ONE_US


@dataclass(slots=True)
class WallClock:
    """The controller's clock: UTC microseconds = ``offset_us`` + ``now`` in microseconds."""

    offset_us: int = 0
    dst: bool = False

    def set_utc(self, utc_us: int, now: float) -> None:
        self.offset_us = utc_us - round(now * 1_000_000)

    def utc_us(self, now: float) -> int:
        return self.offset_us + round(now * 1_000_000)

    def local_us(self, now: float) -> int:
        return self.utc_us(now) + (DST_ADJUSTMENT_US if self.dst else 0)

    def get(self, attr: int, now: float) -> bytes | None:
        """The value of attribute ``attr`` at ``now`` (None: not an attribute served here)."""
        if attr == WallClockAttribute.LOCAL_DATE_TIME:
            return encode_date_time(min(max(self.local_us(now), 0), _MAX_US))
        if attr == WallClockAttribute.CURRENT_UTC:
            return _ULINT.pack(min(max(self.utc_us(now), 0), _MAX_US))
        if attr == WallClockAttribute.DST:
            return _USINT.pack(self.dst)
        if attr == WallClockAttribute.CURRENT_LOCAL:
            return _ULINT.pack(min(max(self.local_us(now), 0), _MAX_US))
        return None

    def set(self, attr: int, value: bytes, now: float) -> int:
        """Set attribute ``attr`` to ``value`` (of its width); returns the CIP status."""
        width = ATTRIBUTE_WIDTHS.get(attr)
        if width is None:
            raise UsageError(f"wall clock attribute {attr} is not served; these are: "
                             f"{', '.join(map(str, ATTRIBUTE_WIDTHS))}")
        if len(value) != width:
            raise UsageError(f"wall clock attribute {attr}: a value of {width} bytes, got "
                             f"{len(value)}")
        if attr == WallClockAttribute.DST:
            (flag,) = _USINT.unpack(value)
            if flag > 1:
                return GeneralStatus.INVALID_ATTRIBUTE_VALUE
            self.dst = bool(flag)
            return GeneralStatus.SUCCESS
        if attr == WallClockAttribute.LOCAL_DATE_TIME:
            try:
                us = decode_date_time(value)
            except MalformedPacket:
                return GeneralStatus.INVALID_ATTRIBUTE_VALUE
        else:
            (us,) = _ULINT.unpack(value)
        if attr != WallClockAttribute.CURRENT_UTC and self.dst:
            us -= DST_ADJUSTMENT_US  # a local time
        if not 0 <= us <= _MAX_US:
            return GeneralStatus.INVALID_ATTRIBUTE_VALUE
        self.set_utc(us, now)
        return GeneralStatus.SUCCESS


def wall_clock_service(clock: WallClock, service: int, attr: int | None, data: bytes,
                       now: float) -> Reply:
    """The reply to ``service`` on the Wall Clock instance (``attr``: the path's attribute
    segment, if any). Never raises on bad request data."""
    if service == Service.GET_ATTRIBUTE_LIST and attr is None:
        return _get_list(clock, data, now)
    if service == Service.SET_ATTRIBUTE_LIST and attr is None:
        return _set_list(clock, data, now)
    if service == Service.GET_ATTRIBUTE_SINGLE and attr is not None:
        if data:
            return Reply(service, GeneralStatus.TOO_MUCH_DATA)
        value = clock.get(attr, now)
        if value is None:
            return Reply(service, GeneralStatus.ATTRIBUTE_NOT_SUPPORTED)
        return Reply(service, data=value)
    if service == Service.SET_ATTRIBUTE_SINGLE and attr is not None:
        width = ATTRIBUTE_WIDTHS.get(attr)
        if width is None:
            return Reply(service, GeneralStatus.ATTRIBUTE_NOT_SUPPORTED)
        if len(data) != width:
            return Reply(service, GeneralStatus.NOT_ENOUGH_DATA if len(data) < width
                         else GeneralStatus.TOO_MUCH_DATA)
        return Reply(service, clock.set(attr, data, now))
    return Reply(service, GeneralStatus.SERVICE_NOT_SUPPORTED)


def _get_list(clock: WallClock, data: bytes, now: float) -> Reply:
    service = Service.GET_ATTRIBUTE_LIST
    try:
        attrs = parse_attribute_ids(data)
    except MalformedPacket:
        count = int.from_bytes(data[:2], "little")
        return Reply(service, GeneralStatus.TOO_MUCH_DATA if len(data) > 2 + 2 * count
                     else GeneralStatus.NOT_ENOUGH_DATA)
    entries = []
    for a in attrs:
        value = clock.get(a, now)
        entries.append((a, GeneralStatus.ATTRIBUTE_NOT_SUPPORTED if value is None else 0,
                        value or b""))
    failed = any(status for _, status, _ in entries)
    return Reply(service, GeneralStatus.ATTRIBUTE_LIST_ERROR if failed else 0,
                 data=encode_attribute_list(entries))


def _set_list(clock: WallClock, data: bytes, now: float) -> Reply:
    # Set_Attribute_List request: UINT count, then per attribute UINT id + value of its width
    # (logix_objects.encode_attribute_values). The whole request is read before anything is
    # set; an attribute of unknown width ends it (what follows cannot be delimited).
    service = Service.SET_ATTRIBUTE_LIST
    r = Reader(data, context="Set_Attribute_List request")
    pending: list[tuple[int, bytes | None]] = []
    try:
        count = r.u16("attribute count")
        for i in range(count):
            attr = r.u16(f"attribute id {i + 1} of {count}")
            width = ATTRIBUTE_WIDTHS.get(attr)
            if width is None:
                pending.append((attr, None))
                break
            pending.append((attr, r.take(width, f"attribute {attr} value")))
        else:
            if r.remaining():
                return Reply(service, GeneralStatus.TOO_MUCH_DATA)
    except MalformedPacket:
        return Reply(service, GeneralStatus.NOT_ENOUGH_DATA)
    statuses = [
        (attr, GeneralStatus.ATTRIBUTE_NOT_SUPPORTED if value is None
         else clock.set(attr, value, now))
        for attr, value in pending
    ]
    failed = any(status for _, status in statuses)
    return Reply(service, GeneralStatus.ATTRIBUTE_LIST_ERROR if failed else 0,
                 data=encode_attribute_statuses(statuses))

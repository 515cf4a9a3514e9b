"""acquisition.logix_clock: the Wall Clock Time object (class 0x8B) of a simulated controller.

The requests are the ones pycomm3 and pylogix build (their own encoders: pycomm3's generic
message packet, pylogix's ``_cip_message``) and the replies are read the way they read them
(pycomm3's ``Struct(n_bytes(6), ULINT)``, pylogix's ULINT 6 bytes into the reply data). No
sockets; ``now`` is a number the tests choose.
"""

from __future__ import annotations

import datetime
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycomm3 import LogixDriver
from pycomm3.packets.cip import GenericConnectedRequestPacket
from pycomm3.tag import Tag
from pyconpro.acquisition import cip, epath
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_clock import (
    ATTRIBUTE_WIDTHS,
    DST_ADJUSTMENT_US,
    WallClock,
    WallClockAttribute,
    decode_date_time,
    encode_date_time,
    wall_clock_service,
)
from pyconpro.acquisition.logix_objects import (
    encode_attribute_ids,
    encode_attribute_values,
    parse_attribute_list,
    parse_attribute_statuses,
)
from pylogix import PLC

from tests.acquisition.codec_helpers import assert_prefixes_malformed

T0 = 1_700_000_000_123_456  # 2023-11-14 22:13:20.123456 UTC, in microseconds
NOW = 1000.0  # the monotonic seconds at which the clock is set in most tests
WIDTHS = {5: 28, 6: 8, 10: 1, 11: 8}  # DINT[7], ULINT, USINT, ULINT


def clock_at_t0() -> WallClock:
    c = WallClock()
    c.set_utc(T0, NOW)
    return c


def serve(clock: WallClock, message: bytes, now: float = NOW) -> cip.Reply:
    """One request message (service, path to class 0x8B instance 1, data) to the clock."""
    req = cip.Request.decode(message)
    segs = [s for s in epath.decode_path(req.path) if isinstance(s, epath.LogicalSegment)]
    assert [(s.kind, s.value) for s in segs[:2]] == [(epath.LogicalType.CLASS_ID, 0x8B),
                                                     (epath.LogicalType.INSTANCE_ID, 1)]
    attr = segs[2].value if len(segs) == 3 else None
    return wall_clock_service(clock, req.service, attr, req.data, now)


class Pycomm3OnOurClock(LogixDriver):
    """pycomm3's LogixDriver whose generic messages go to our clock: ``get_plc_time`` and
    ``set_plc_time`` build their requests and parse the replies with pycomm3's own code."""

    def __init__(self, clock: WallClock, now: float) -> None:
        super().__init__("127.0.0.1")
        self.clock, self.now = clock, now
        self.messages: list[bytes] = []

    def generic_message(self, **kw: Any) -> Tag:  # type: ignore[override]
        data_type: Any = kw.get("data_type")
        packet = GenericConnectedRequestPacket(
            1, kw["service"], kw["class_code"], kw["instance"],
            kw.get("attribute", b""), kw.get("request_data", b""), data_type)
        message = packet.build_message()[2:]  # without the connected sequence count
        self.messages.append(message)
        reply = serve(self.clock, message, self.now)
        if reply.status:
            return Tag(kw.get("name", "generic"), None, None, f"status 0x{reply.status:02X}")
        value = data_type.decode(reply.data) if data_type else reply.data
        return Tag(kw.get("name", "generic"), value, None, None)


# ---------------------------------------------------------------------------------------------
# What the clients send, and what they read
# ---------------------------------------------------------------------------------------------


def test_pycomm3_gets_utc_and_sets_it() -> None:
    clock = clock_at_t0()
    drv = Pycomm3OnOurClock(clock, NOW + 2.5)
    got = drv.get_plc_time()
    assert got.error is None
    assert got.value["microseconds"] == T0 + 2_500_000
    assert got.value["datetime"] == datetime.datetime(
        2023, 11, 14, 22, 13, 22, 623456, tzinfo=datetime.UTC)
    # Get_Attribute_List of attribute 6 on 20 8B 24 01 (pycomm3 logix_driver.get_plc_time).
    assert drv.messages[-1] == bytes.fromhex("03 02 20 8B 24 01 0100 0600")

    assert drv.set_plc_time(microseconds=946_684_800_000_000).error is None  # 2000-01-01
    assert drv.messages[-1] == bytes.fromhex("04 02 20 8B 24 01 0100 0600") + struct.pack(
        "<Q", 946_684_800_000_000)
    assert clock.utc_us(NOW + 2.5) == 946_684_800_000_000
    drv.now = NOW + 4.0
    assert drv.get_plc_time().value["microseconds"] == 946_684_800_000_000 + 1_500_000


def test_pylogix_gets_local_time_and_sets_utc_with_dst() -> None:
    plc = PLC()
    get = plc._cip_message(0x03, 0x8B, 0x01, [0x0B])  # eip.py _get_plc_time
    assert get == bytes.fromhex("03 02 20 8B 24 01 0100 0B00")
    clock = clock_at_t0()
    reply = serve(clock, get)
    assert reply.status == 0
    # pylogix reads a ULINT 56 bytes into the SendUnitData reply: 6 into the reply data.
    assert struct.unpack_from("<Q", reply.data, 6)[0] == T0

    # SetPLCTime(dst=1): UTC in attribute 6, the DST flag in attribute 10 (eip.py _set_plc_time)
    later = T0 + 86_400_000_000
    put = plc._cip_message(0x04, 0x8B, 0x01, [0x06, 0x0A],
                           [struct.pack("<Q", later), struct.pack("<B", 1)])
    assert put == bytes.fromhex("04 02 20 8B 24 01 0200 0600") + struct.pack("<Q", later) \
        + bytes.fromhex("0A00 01")
    answer = serve(clock, put, NOW + 1)
    assert (answer.status, parse_attribute_statuses(answer.data)) == (0, ((6, 0), (10, 0)))
    local = struct.unpack_from("<Q", serve(clock, get, NOW + 3).data, 6)[0]
    assert local == later + 2_000_000 + DST_ADJUSTMENT_US
    assert clock.utc_us(NOW + 3) == later + 2_000_000


def test_attribute_widths() -> None:
    assert ATTRIBUTE_WIDTHS == WIDTHS


def test_get_attribute_list_reply_golden() -> None:
    clock = clock_at_t0()
    reply = serve(clock, cip.Request(0x03, epath.encode_path(
        [epath.class_id(0x8B), epath.instance_id(1)]), encode_attribute_ids((6, 10, 11, 5))
    ).encode())
    golden = (bytes.fromhex("0400" "0600 0000") + struct.pack("<Q", T0)
              + bytes.fromhex("0A00 0000 00" "0B00 0000") + struct.pack("<Q", T0)
              + bytes.fromhex("0500 0000") + struct.pack("<7i", 2023, 11, 14, 22, 13, 20, 123456))
    assert (reply.status, reply.data) == (0, golden)
    entries = parse_attribute_list(golden, WIDTHS)
    assert [(a, s) for a, s, _ in entries] == [(6, 0), (10, 0), (11, 0), (5, 0)]
    assert decode_date_time(entries[3][2]) == T0
    assert_prefixes_malformed(lambda b: parse_attribute_list(b, WIDTHS), golden)


# ---------------------------------------------------------------------------------------------
# The clock
# ---------------------------------------------------------------------------------------------


def test_clock_runs_with_now_and_dst_moves_the_local_time_only() -> None:
    clock = clock_at_t0()
    assert clock.utc_us(NOW) == clock.local_us(NOW) == T0
    assert clock.utc_us(NOW + 0.000001) == T0 + 1
    clock.dst = True
    assert clock.utc_us(NOW + 10) == T0 + 10_000_000
    assert clock.local_us(NOW + 10) == T0 + 10_000_000 + DST_ADJUSTMENT_US
    assert clock.get(WallClockAttribute.DST, NOW) == b"\x01"
    assert decode_date_time(clock.get(5, NOW) or b"") == T0 + DST_ADJUSTMENT_US


@pytest.mark.parametrize("attr", [5, 6, 11])
@pytest.mark.parametrize("dst", [False, True])
def test_each_time_attribute_sets_the_clock(attr: int, dst: bool) -> None:
    clock = WallClock(dst=dst)
    target = 1_234_567_890_000_000
    local = target + (DST_ADJUSTMENT_US if dst and attr != 6 else 0)
    value = encode_date_time(local) if attr == 5 else struct.pack("<Q", local)
    assert clock.set(attr, value, 7.0) == 0
    assert clock.utc_us(7.0) == target
    assert clock.get(attr, 7.0) == value
    assert clock.get(6, 9.0) == struct.pack("<Q", target + 2_000_000)


def test_values_a_clock_cannot_hold_are_refused() -> None:
    clock = clock_at_t0()
    bad = [
        (10, b"\x02"),  # DST is 0 or 1
        (6, struct.pack("<Q", 2**64 - 1)),  # after year 9999
        (5, struct.pack("<7i", 2024, 2, 30, 0, 0, 0, 0)),  # no 30 February
        (5, struct.pack("<7i", 1969, 12, 31, 23, 59, 59, 0)),  # before 1970
        (5, struct.pack("<7i", 2024, 1, 1, 0, 0, 0, 1_000_000)),  # microsecond out of range
    ]
    for attr, value in bad:
        assert clock.set(attr, value, NOW) == 0x09, (attr, value)
    clock.dst = True
    assert clock.set(11, struct.pack("<Q", 1000), NOW) == 0x09  # local before 1970 + 1 h
    assert clock.utc_us(NOW) == T0  # nothing changed
    assert clock.get(7, NOW) is None
    with pytest.raises(UsageError, match="a value of 8 bytes, got 4"):
        clock.set(6, bytes(4), NOW)
    with pytest.raises(UsageError, match="attribute 7 is not served"):
        clock.set(7, b"", NOW)


def test_date_time_golden_and_errors() -> None:
    # node-ethernet-ip's layout: year, month (1-12), day, hour, minute, second, microsecond.
    golden = bytes.fromhex("e8070000 02000000 1d000000 0d000000 2d000000 1e000000 40e20100")
    us = (datetime.datetime(2024, 2, 29, 13, 45, 30, 123456) - datetime.datetime(1970, 1, 1)) \
        // datetime.timedelta(microseconds=1)
    assert encode_date_time(us) == golden and decode_date_time(golden) == us
    assert_prefixes_malformed(decode_date_time, golden)
    with pytest.raises(MalformedPacket, match="a date and time"):
        decode_date_time(struct.pack("<7i", 2023, 13, 1, 0, 0, 0, 0))
    with pytest.raises(UsageError, match="1970-9999"):
        encode_date_time(-1)


@given(st.integers(0, 253_402_300_799_999_999))
def test_date_time_round_trip(us: int) -> None:
    assert decode_date_time(encode_date_time(us)) == us


@given(st.integers(0, 2**62), st.floats(0, 1e6), st.floats(0, 1e4), st.booleans())
def test_set_then_read_after_any_delay(utc: int, now: float, delay: float, dst: bool) -> None:
    clock = WallClock(dst=dst)
    clock.set_utc(utc, now)
    elapsed = round((now + delay) * 1_000_000) - round(now * 1_000_000)
    assert clock.utc_us(now + delay) == utc + elapsed


# ---------------------------------------------------------------------------------------------
# The services: lists, singles, errors
# ---------------------------------------------------------------------------------------------


def path(attr: int | None = None) -> bytes:
    segs: list[epath.Segment] = [epath.class_id(0x8B), epath.instance_id(1)]
    if attr is not None:
        segs.append(epath.attribute_id(attr))
    return epath.encode_path(segs)


def test_get_list_with_an_unknown_attribute_is_a_list_error() -> None:
    reply = serve(clock_at_t0(), cip.Request(0x03, path(), encode_attribute_ids((6, 3))).encode())
    assert reply.status == 0x0A
    assert parse_attribute_list(reply.data, WIDTHS) == (
        (6, 0, struct.pack("<Q", T0)), (3, 0x14, b""))
    short = serve(clock_at_t0(), cip.Request(0x03, path(), b"\x02\x00\x06\x00").encode())
    assert short.status == 0x13
    long = serve(clock_at_t0(), cip.Request(0x03, path(), b"\x01\x00\x06\x00\x00").encode())
    assert long.status == 0x15


def test_set_list_statuses_and_errors() -> None:
    clock = clock_at_t0()

    def set_list(data: bytes) -> cip.Reply:
        return serve(clock, cip.Request(0x04, path(), data).encode())

    two = encode_attribute_values([(10, b"\x01"), (6, struct.pack("<Q", 5_000_000))])
    reply = set_list(two)
    assert (reply.status, parse_attribute_statuses(reply.data)) == (0, ((10, 0), (6, 0)))
    assert (clock.dst, clock.utc_us(NOW)) == (True, 5_000_000)
    # An attribute of unknown width ends the list: what follows cannot be delimited.
    stop = set_list(encode_attribute_values([(10, b"\x00"), (4, b""), (6, bytes(8))]))
    assert (stop.status, parse_attribute_statuses(stop.data)) == (0x0A, ((10, 0), (4, 0x14)))
    assert clock.dst is False and clock.utc_us(NOW) == 5_000_000
    invalid = set_list(encode_attribute_values([(10, b"\x07"), (6, bytes(8))]))
    assert (invalid.status, parse_attribute_statuses(invalid.data)) \
        == (0x0A, ((10, 0x09), (6, 0)))
    assert set_list(two[:-1]).status == 0x13 and set_list(two + b"\x00").status == 0x15
    assert set_list(b"").status == 0x13
    assert_prefixes_malformed(parse_attribute_statuses, reply.data)


def test_single_attribute_services() -> None:
    clock = clock_at_t0()

    def single(service: int, attr: int, data: bytes = b"") -> cip.Reply:
        return serve(clock, cip.Request(service, path(attr), data).encode())

    assert single(0x0E, 11).data == struct.pack("<Q", T0)
    assert single(0x0E, 5).data == encode_date_time(T0)  # node-ethernet-ip on an L8x
    date = struct.pack("<7i", 2030, 6, 1, 12, 0, 0, 0)
    assert single(0x10, 5, date).status == 0
    assert single(0x0E, 5).data == date
    assert single(0x0E, 3).status == 0x14 and single(0x10, 3, b"\x00").status == 0x14
    assert single(0x0E, 6, b"\x00").status == 0x15
    assert single(0x10, 6, bytes(7)).status == 0x13 and single(0x10, 6, bytes(9)).status == 0x15
    assert single(0x10, 10, b"\x05").status == 0x09
    for service in (0x01, 0x02, 0x05, 0x4C):
        assert serve(clock, cip.Request(service, path(), b"").encode()).status == 0x08
    assert serve(clock, cip.Request(0x03, path(6), b"").encode()).status == 0x08


@given(st.integers(0, 0xFF), st.one_of(st.none(), st.integers(0, 0xFFFF)), st.binary(max_size=40))
def test_any_request_gets_a_reply(service: int, attr: int | None, data: bytes) -> None:
    reply = wall_clock_service(clock_at_t0(), service, attr, data, NOW)
    assert reply.service == service
    reply.encode()

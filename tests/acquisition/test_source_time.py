"""Controller time (acquisition/source_time.py and its checks): the member a tag's
``source_time`` names is found in the UDT's layout, refused with its name and type when it
cannot hold the time (at add time when the type is given, when the type is learned otherwise:
the consumer FAILS with that message), and read from a sample's bytes."""

from __future__ import annotations

import random
import struct

import pytest
from pyconpro.acquisition.config import ConfigError, parse_config
from pyconpro.acquisition.connection import ConsumerConnection, State
from pyconpro.acquisition.control import consumer_from_map, consumer_to_map
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_types import DINT, REAL, StructType
from pyconpro.acquisition.originator import ConsumerParams, Originator
from pyconpro.acquisition.source_time import SourceTime, SourceTimeError, locate, read

HEADER = StructType.build("Header", [("Seq", "DINT"), ("Stamp", "LINT")])
STATUS = StructType.build("Status", [("Mode", "DINT"), ("Running", "BOOL"),
                                     ("Stamp", "LINT"), ("Pair", "DINT", 2),
                                     ("Speed", "REAL"), ("Head", HEADER)])  # fmt: skip
T0 = 1000.0


def test_the_member_is_found_at_its_offset_by_name_or_path_case_insensitively() -> None:
    assert locate(STATUS, "Stamp", "S") == SourceTime(8, True)  # after DINT, BOOL host: 8-aligned
    assert locate(STATUS, "stamp", "S") == SourceTime(8, True)
    head = next(m for m in STATUS.members if m.name == "Head")
    assert locate(STATUS, "Head.Stamp", "S") == SourceTime(head.offset + 8, True)
    ulint = StructType.build("U", [("T", "ULINT")])
    assert locate(ulint, "T", "U") == SourceTime(0, False)


@pytest.mark.parametrize(
    ("t", "path", "message"),
    [
        (STATUS, "Stmp", "tag 'S': source_time = 'Stmp': Status has no member 'Stmp'; its"
         " members are: Mode, Running, Stamp, Pair, Speed, Head"),
        (STATUS, "Speed", "tag 'S': source_time = 'Speed': member S.Speed is a REAL, not a LINT"
         " of microseconds since 1970; make it a LINT member written by GSV WallClockTime"
         ' CurrentValue (docs/configuration.md "Controller time"), or name another member in'
         " source_time"),
        (STATUS, "Pair", "member S.Pair is a DINT[2], not a LINT of microseconds since 1970 (a"
         " DINT[2] pair, as old firmware wrote the wall clock, is not read: use a LINT)"),
        (STATUS, "Mode.Stamp", "S.Mode is a DINT, not a structure with members"),
        (REAL, "Stamp", "S is a REAL, not a structure with members"),
        (None, "Stamp", "needs the tag's type, which the controller did not give"),
    ],
)
def test_a_member_that_cannot_hold_the_time_is_refused_with_its_name_and_type(
    t: StructType | None, path: str, message: str
) -> None:
    with pytest.raises(SourceTimeError) as info:
        locate(t, path, "S")
    assert message in str(info.value)


def test_read_turns_microseconds_into_ns_and_refuses_what_does_not_fit() -> None:
    us = 1_700_000_000_123_456
    raw = struct.pack("<i4xq", 7, us)
    assert read(raw, SourceTime(8, True)) == us * 1000
    assert read(struct.pack("<q", -5), SourceTime(0, True)) == -5000  # before 1970: kept
    assert read(raw[:12], SourceTime(8, True)) is None  # too short
    assert read(struct.pack("<Q", 2**63), SourceTime(0, False)) is None  # past year 2262
    assert read(struct.pack("<Q", us), SourceTime(0, False)) == us * 1000


def state(conn: ConsumerConnection) -> State:
    return conn.state  # read afresh: mypy keeps ``conn.state`` narrowed across calls


def conn_for(source_time: str, tag_type: StructType | None = None) -> ConsumerConnection:
    params = ConsumerParams(plc="p", tag="Status", rpi_us=1000, tag_type=tag_type,
                            source_time=source_time)  # fmt: skip
    return ConsumerConnection(params, Originator(random.Random(1)))


def test_a_learned_type_without_the_member_fails_the_consumer_with_the_reason() -> None:
    conn = conn_for("Speed")
    conn.start(T0)
    assert conn.state is State.RESOLVING
    conn.on_resolved(T0, STATUS.size, STATUS)
    assert state(conn) is State.FAILED
    assert conn.failure is not None and "member Status.Speed is a REAL" in conn.failure
    good = conn_for("Stamp")
    good.start(T0)
    good.on_resolved(T0, STATUS.size, STATUS)
    assert state(good) is State.OPENING and good.source_at == SourceTime(8, True)


def test_a_given_type_is_checked_when_the_consumer_is_defined() -> None:
    assert conn_for("Stamp", STATUS).source_at == SourceTime(8, True)
    with pytest.raises(UsageError, match="member Status.Speed is a REAL"):
        conn_for("Speed", STATUS)
    with pytest.raises(UsageError, match="not a structure"):
        ConsumerParams(plc="p", tag="T", rpi_us=1000, tag_type=DINT, source_time="Stamp")


def test_the_key_in_the_file_and_on_the_control_socket() -> None:
    base = '[[plc]]\nname = "p"\naddress = "10.0.0.1"\n  [[plc.tag]]\n  name = "Status"\n'
    config = parse_config(base + '  source_time = "Head.Stamp"\n', "f.toml", sink_kinds={})
    assert config.plcs[0].tags[0].source_time == "Head.Stamp"
    with pytest.raises(ConfigError) as info:
        parse_config(base + '  source_time = "Stamp[0]"\n', "f.toml", sink_kinds={})
    (issue,) = info.value.issues
    assert (issue.key, issue.line, issue.problem) == (
        "plc[0].tag[0].source_time", 6, "source_time = 'Stamp[0]' is not the name of a UDT"
        " member")
    d = consumer_from_map({"address": "10.0.0.1", "tag": "Status", "source_time": "Stamp"})
    assert d.source_time == "Stamp" and d.params().source_time == "Stamp"
    assert consumer_from_map(consumer_to_map(d)) == d

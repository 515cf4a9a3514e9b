"""Consumer definitions (acquisition/control.py): command-line text, control-socket maps and the
typed configuration all give the same ConsumerDef; every error names the key."""

from __future__ import annotations

import pytest
from pyconpro.acquisition.control import consumer_from_map, consumer_from_text, parse_type
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_types import DINT, INT, REAL, ArrayType


def test_text_with_defaults() -> None:
    d = consumer_from_text("address=10.0.0.5,tag=Count")
    assert (d.plc, d.rpi_us, d.ot_rpi_us, d.multiplier, d.multicast, d.slot) == (
        "10.0.0.5", 100_000, None, 1, False, 0)
    assert d.key == "10.0.0.5/Count" and d.params().factor == 8


def test_text_all_keys() -> None:
    d = consumer_from_text("plc=p1,address=10.0.0.5,port=1234,udp_port=2300,slot=3,"
                           "route=1/2;2/10.0.0.9,tag=Arr,alias=A,rpi_ms=2.5,ot_rpi_ms=10,"
                           "multiplier=32,transport=multicast,type=REAL[4]")
    assert d.route == ((1, 2), (2, "10.0.0.9"))
    assert (d.rpi_us, d.ot_rpi_us, d.multiplier, d.multicast) == (2500, 10_000, 3, True)
    assert d.key == "p1/A" and d.logix_type() == ArrayType(REAL, (4,))
    p = d.params()
    assert p.tag_bytes is None and p.tag_type == ArrayType(REAL, (4,))
    assert p.connection_path().startswith(b"\x01\x02\x12\x0810.0.0.9\x01\x03")


def test_map_equals_text() -> None:
    m = {"plc": "p", "address": "10.0.0.5", "tag": "T", "rpi_ms": 20, "size": 4}
    assert consumer_from_map(m) == consumer_from_text(
        "plc=p,address=10.0.0.5,tag=T,rpi_ms=20,size=4"
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tag=T", "missing required key 'address'"),
        ("address=10.0.0.5", "missing required key 'tag'"),
        ("address=nowhere,tag=T", "IPv4"),
        ("address=10.0.0.5,tag=T,colour=red", "'colour'"),
        ("address=10.0.0.5,tag=T,multiplier=6", "multiplier"),
        ("address=10.0.0.5,tag=T,transport=broadcast", "transport = 'broadcast' is not one of"),
        ("address=10.0.0.5,tag=T,size=501", "size = 501 is above the 500 bytes"),
        ("address=10.0.0.5,tag=T,rpi_ms=abc", "rpi_ms"),
        ("address=10.0.0.5,tag=T.Member", "names a member or element"),
        ("address=10.0.0.5,tag=T,size=8,type=DINT", "does not match type"),
        ("address=10.0.0.5,tag=T,type=Foo", "unknown type"),
        ("address=10.0.0.5,tagT", "is not key=value"),
    ],
)
def test_errors_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        consumer_from_text(text)
    assert needle in str(info.value)


def test_parse_type() -> None:
    assert parse_type("DINT") == DINT
    assert parse_type("int[2, 3]") == ArrayType(INT, (2, 3))
    with pytest.raises(UsageError):
        parse_type("DINT[")

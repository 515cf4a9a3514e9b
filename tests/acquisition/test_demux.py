"""The class-1 receive path (acquisition/demux.py): routing by (source, T->O id) and every drop
reason; hostile bytes never raise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition.class1 import Class1Datagram
from pyconpro.acquisition.demux import Demux, DropReason
from pyconpro.acquisition.errors import UsageError

PLC = "10.1.2.3"
OTHER = "10.1.2.4"


def dgram(cid: int, seq: int, data: bytes = b"\x2a\x00\x00\x00", cseq: int = 1) -> bytes:
    return Class1Datagram(cid, seq, cseq, data).encode()


def test_accepts_and_routes_to_owner() -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    d.add(PLC, 0x2000, 4, "b")
    got = d.receive(dgram(0x2000, 7), PLC)
    assert got is not None and got.owners == ("b",) and got.datagram.data == b"\x2a\0\0\0"
    assert got.missed == 0 and d.accepted == 1


@pytest.mark.parametrize(
    ("data", "source", "reason"),
    [
        (b"\x02\x00", PLC, DropReason.MALFORMED),
        (dgram(0x1000, 1)[:-1] + b"", PLC, DropReason.MALFORMED),
        (dgram(0x9999, 1), PLC, DropReason.UNKNOWN_ID),
        (dgram(0x1000, 1), OTHER, DropReason.WRONG_SOURCE),
        (dgram(0x1000, 1, b"\x01\x02"), PLC, DropReason.WRONG_SIZE),
    ],
)
def test_drop_reasons(data: bytes, source: str, reason: DropReason) -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    assert d.receive(data, source) is None
    assert d.drops[reason] == 1
    assert sum(d.drops.values()) == 1


def test_stale_and_duplicate_seq32_dropped_gap_counted() -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    first = d.receive(dgram(0x1000, 10), PLC)
    assert first is not None and first.missed == 0
    assert d.receive(dgram(0x1000, 10), PLC) is None  # duplicate
    assert d.receive(dgram(0x1000, 9), PLC) is None  # reordered
    got = d.receive(dgram(0x1000, 14), PLC)
    assert got is not None and got.missed == 3
    assert d.drops[DropReason.STALE] == 2


def test_seq32_wraps() -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    d.receive(dgram(0x1000, 0xFFFFFFFF), PLC)
    got = d.receive(dgram(0x1000, 1), PLC)
    assert got is not None and got.missed == 1


def test_remove_and_shared_multicast_route() -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    d.add(PLC, 0x1000, 4, "b")
    both = d.receive(dgram(0x1000, 1), PLC)
    assert both is not None and both.owners == ("a", "b")
    d.remove(PLC, 0x1000, "a")
    one = d.receive(dgram(0x1000, 2), PLC)
    assert one is not None and one.owners == ("b",)
    d.remove(PLC, 0x1000, "b")
    assert d.receive(dgram(0x1000, 3), PLC) is None
    assert d.drops[DropReason.UNKNOWN_ID] == 1 and len(d) == 0
    d.remove(PLC, 0x1000, "b")  # idempotent


def test_shared_route_must_agree_on_size() -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    with pytest.raises(UsageError):
        d.add(PLC, 0x1000, 8, "b")


def test_new_route_after_remove_starts_a_new_sequence_space() -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    d.receive(dgram(0x1000, 100), PLC)
    d.remove(PLC, 0x1000, "a")
    d.add(PLC, 0x1000, 4, "a")
    assert d.receive(dgram(0x1000, 1), PLC) is not None


def test_counters() -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    d.receive(b"junk", PLC)
    d.receive(dgram(0x1000, 1), PLC)
    c = d.counters()
    assert c["drop_malformed"] == 1 and c["accepted"] == 1 and c["routes"] == 1


@given(st.binary(max_size=64), st.sampled_from([PLC, OTHER]))
def test_never_raises_on_arbitrary_bytes(data: bytes, source: str) -> None:
    d = Demux()
    d.add(PLC, 0x1000, 4, "a")
    d.receive(data, source)
    assert d.accepted + sum(d.drops.values()) == 1

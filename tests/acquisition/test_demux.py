"""The class-1 receive path (acquisition/demux.py): routing by (source, T->O id) and every drop
reason; hostile bytes never raise. Every test runs on the pure-Python demultiplexer and on the
compiled one (workers/_fastpath.c), which must follow the same rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition.class1 import Class1Datagram
from pyconpro.acquisition.demux import DropReason
from pyconpro.acquisition.errors import UsageError

from tests.support.receive_paths import PATHS, NewDemux, demux_factory

PLC = ("10.1.2.3", 2222)
OTHER = ("10.1.2.4", 2222)
PLC_OTHER_PORT = ("10.1.2.3", 40000)


@pytest.fixture(scope="module", params=PATHS)
def new_demux(request: pytest.FixtureRequest) -> NewDemux:
    return demux_factory(request.param)


def dgram(cid: int, seq: int, data: bytes = b"\x2a\x00\x00\x00", cseq: int = 1) -> bytes:
    return Class1Datagram(cid, seq, cseq, data).encode()


def test_accepts_and_routes_to_owner(new_demux: NewDemux) -> None:
    d = new_demux()
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
        (dgram(0x1000, 1), PLC_OTHER_PORT, DropReason.WRONG_PORT),
        (dgram(0x1000, 1)[:2] + b"\x01\x80" + dgram(0x1000, 1)[4:], PLC, DropReason.MALFORMED),
        (dgram(0x1000, 1, b"\x01\x02"), PLC, DropReason.WRONG_SIZE),
    ],
)
def test_drop_reasons(
    new_demux: NewDemux, data: bytes, source: tuple[str, int], reason: DropReason,
) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a")
    assert d.receive(data, source) is None
    assert d.drops[reason] == 1
    assert sum(d.drops.values()) == 1
    assert d.last_dropped == {reason: source}


def test_stale_and_duplicate_seq32_dropped_gap_counted(new_demux: NewDemux) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a")
    first = d.receive(dgram(0x1000, 10), PLC)
    assert first is not None and first.missed == 0
    assert d.receive(dgram(0x1000, 10), PLC) is None  # duplicate
    assert d.receive(dgram(0x1000, 9), PLC) is None  # reordered
    got = d.receive(dgram(0x1000, 14), PLC)
    assert got is not None and got.missed == 3
    assert d.drops[DropReason.STALE] == 2


def test_seq32_wraps(new_demux: NewDemux) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a")
    d.receive(dgram(0x1000, 0xFFFFFFFF), PLC)
    got = d.receive(dgram(0x1000, 1), PLC)
    assert got is not None and got.missed == 1


def test_remove_and_shared_multicast_route(new_demux: NewDemux) -> None:
    d = new_demux()
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


def test_shared_route_must_agree_on_size(new_demux: NewDemux) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a")
    with pytest.raises(UsageError):
        d.add(PLC, 0x1000, 8, "b")


def test_new_route_after_remove_starts_a_new_sequence_space(new_demux: NewDemux) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a")
    d.receive(dgram(0x1000, 100), PLC)
    d.remove(PLC, 0x1000, "a")
    d.add(PLC, 0x1000, 4, "a")
    assert d.receive(dgram(0x1000, 1), PLC) is not None


def test_counters(new_demux: NewDemux) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a")
    d.receive(b"junk", PLC)
    d.receive(dgram(0x1000, 1), PLC)
    c = d.counters()
    assert c["drop_malformed"] == 1 and c["accepted"] == 1 and c["routes"] == 1


@given(st.binary(max_size=64), st.sampled_from([PLC, OTHER, PLC_OTHER_PORT]))
def test_never_raises_on_arbitrary_bytes(
    new_demux: NewDemux, data: bytes, source: tuple[str, int],
) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a", max_jump=16)
    d.receive(data, source)
    assert d.accepted + sum(d.drops.values()) == 1


def test_forged_datagrams_from_another_port_change_nothing(new_demux: NewDemux) -> None:
    # Five datagrams with the live id from the PLC's address but another port: dropped, and
    # the real stream goes on as if they had never been sent (no gap, nothing stale).
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a", max_jump=16)
    assert d.receive(dgram(0x1000, 100), PLC) is not None
    for k in range(5):
        assert d.receive(dgram(0x1000, 1_000_000_000 + k, b"\xff" * 4), PLC_OTHER_PORT) is None
    got = d.receive(dgram(0x1000, 101), PLC)
    assert got is not None and got.missed == 0 and got.datagram.data == b"\x2a\0\0\0"
    assert d.drops[DropReason.WRONG_PORT] == 5 and d.drops[DropReason.STALE] == 0


def test_a_sequence_jump_beyond_the_watchdog_is_dropped_and_keeps_the_place(
    new_demux: NewDemux,
) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a", max_jump=16)
    d.receive(dgram(0x1000, 100), PLC)
    ok = d.receive(dgram(0x1000, 116), PLC)  # 15 missed: within the window
    assert ok is not None and ok.missed == 15
    assert d.receive(dgram(0x1000, 116 + 1_000_048_823), PLC) is None  # a forged far jump
    assert d.drops[DropReason.SEQ_JUMP] == 1
    nxt = d.receive(dgram(0x1000, 117), PLC)  # the real stream is not stale because of it
    assert nxt is not None and nxt.missed == 0


def test_a_real_jump_is_believed_when_the_stream_continues_from_it(new_demux: NewDemux) -> None:
    # The worker was stopped and its socket buffer overflowed: the PLC's sequence really moved
    # on by 5000. The first datagram after the hole is held back, its successor confirms it.
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a", max_jump=16)
    d.receive(dgram(0x1000, 10), PLC)
    assert d.receive(dgram(0x1000, 5010), PLC) is None
    got = d.receive(dgram(0x1000, 5011), PLC)
    assert got is not None and got.missed == 5000  # 11..5010, the held-back one included
    after = d.receive(dgram(0x1000, 5012), PLC)
    assert after is not None and after.missed == 0
    assert d.drops[DropReason.SEQ_JUMP] == 1


def test_two_unrelated_jumps_are_both_dropped(new_demux: NewDemux) -> None:
    d = new_demux()
    d.add(PLC, 0x1000, 4, "a", max_jump=16)
    d.receive(dgram(0x1000, 10), PLC)
    assert d.receive(dgram(0x1000, 90_000), PLC) is None
    assert d.receive(dgram(0x1000, 50_000), PLC) is None  # not a successor of 90_000
    assert d.drops[DropReason.SEQ_JUMP] == 2
    assert d.receive(dgram(0x1000, 11), PLC) is not None


def test_max_jump_must_be_positive(new_demux: NewDemux) -> None:
    with pytest.raises(UsageError):
        new_demux().add(PLC, 0x1000, 4, "a", max_jump=0)

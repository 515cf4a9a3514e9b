"""simulator.faults: T->O datagram faults on a fake clock with a seeded RNG; the endless
symbol listing."""

from __future__ import annotations

import random

import pytest
from pyconpro.acquisition import cip, epath
from pyconpro.acquisition.discovery import symbol_list_request, template_attributes_request
from pyconpro.acquisition.logix_objects import parse_symbol_instances
from pyconpro.simulator.faults import (
    REORDER_HOLD_S,
    DatagramFaults,
    FaultSettings,
    endless_listing_reply,
)

A = ("127.0.0.1", 2222)
B = ("127.0.0.9", 2222)


def dg(n: int, dest: tuple[str, int] = A) -> tuple[bytes, tuple[str, int]]:
    return (n.to_bytes(4, "little"), dest)


def faults(seed: int = 1, **settings: object) -> DatagramFaults:
    return DatagramFaults(FaultSettings(**settings), random.Random(seed))  # type: ignore[arg-type]


def test_no_faults_pass_everything_in_order() -> None:
    f = faults()
    assert f.process([dg(1), dg(2, B)], 0.0) == [dg(1), dg(2, B)]
    assert f.next_deadline() is None and f.due(99.0) == [] and f.pending() == 0
    assert not f.settings.active


def test_drop_rate_is_statistical_and_counted() -> None:
    f = faults(drop=0.3)
    sent = sum(len(f.process([dg(i)], i * 0.01)) for i in range(10_000))
    assert f.counters.dropped + sent == 10_000
    assert 2700 < f.counters.dropped < 3300
    assert f.settings.active


def test_drop_all_and_stop_producing() -> None:
    f = faults(drop=1.0)
    assert f.process([dg(1), dg(2)], 0.0) == [] and f.counters.dropped == 2
    f = faults(stop_producing=True)
    assert f.process([dg(1)], 0.0) == [] and f.counters.suppressed == 1


def test_duplicate_sends_twice() -> None:
    f = faults(duplicate=1.0)
    assert f.process([dg(1)], 0.0) == [dg(1), dg(1)]
    assert f.counters.duplicated == 1


def test_reorder_swaps_with_the_next_datagram_to_the_same_destination() -> None:
    f = faults(reorder=1.0)
    assert f.process([dg(1)], 0.0) == []  # held
    assert f.next_deadline() == pytest.approx(REORDER_HOLD_S)
    assert f.process([dg(2, B)], 0.01) == []  # other destination: held separately
    assert f.process([dg(3)], 0.02) == [dg(3), dg(1)]
    assert f.due(REORDER_HOLD_S + 0.01) == [dg(2, B)]  # nobody followed it: sent late
    assert f.counters.reordered == 2 and f.pending() == 0


def test_delay_releases_in_time_order() -> None:
    f = faults(delay_s=0.2)
    assert f.process([dg(1)], 0.0) == []
    assert f.process([dg(2)], 0.1) == []
    assert f.next_deadline() == pytest.approx(0.2)
    assert f.due(0.19) == []
    assert f.due(0.2) == [dg(1)]
    assert f.due(1.0) == [dg(2)]
    assert f.counters.delayed == 2


def test_partial_delay_rate_reorders_against_undelayed() -> None:
    f = faults(seed=3, delay_s=0.05, delay_rate=0.5)
    out = []
    for i in range(200):
        out += f.process([dg(i)], i * 0.01) + f.due(i * 0.01)
    out += f.due(10.0)
    assert sorted(out) == sorted(dg(i) for i in range(200))
    assert out != [dg(i) for i in range(200)]
    assert 60 < f.counters.delayed < 140


def test_clear_forgets_queued_datagrams() -> None:
    f = faults(delay_s=1.0, reorder=1.0)
    f.process([dg(1)], 0.0)
    f.settings = FaultSettings(reorder=1.0)
    f.process([dg(2)], 0.0)
    assert f.pending() == 2
    f.clear()
    assert f.pending() == 0 and f.due(99.0) == []


def test_same_seed_same_decisions() -> None:
    runs = []
    for _ in range(2):
        f = faults(seed=42, drop=0.5, duplicate=0.2)
        runs.append([f.process([dg(i)], 0.0) for i in range(100)])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("bad", [
    {"drop": 1.5}, {"duplicate": -0.1}, {"reorder": "x"}, {"delay_s": -1}, {"delay_s": 61},
    {"delay_rate": 2},
])
def test_settings_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="fault"):
        FaultSettings(**bad)  # type: ignore[arg-type]


def test_updated_names_unknown_switches_and_checks_booleans() -> None:
    s = FaultSettings().updated({"drop": 0.25, "stop_producing": True})
    assert s.drop == 0.25 and s.stop_producing and s.as_dict()["drop"] == 0.25
    with pytest.raises(ValueError, match="unknown fault"):
        s.updated({"explode": 1})
    with pytest.raises(ValueError, match="true or false"):
        s.updated({"refuse_register": 1})


def test_endless_listing_answers_only_the_listing_and_never_ends() -> None:
    with pytest.raises(ValueError, match="endless_listing"):
        FaultSettings(endless_listing="forever")
    assert FaultSettings().updated({"endless_listing": "repeat"}).active
    assert endless_listing_reply(template_attributes_request(0x100), "new") is None
    attrs = (1, 2, 7, 8)
    routed = cip.Request(cip.Service.UNCONNECTED_SEND, epath.CONNECTION_MANAGER_PATH,
                         cip.UnconnectedSend(symbol_list_request(40, attributes=attrs),
                                             b"\x01\x00").encode()).encode()
    for mode, names in (("new", [f"Endless{i}" for i in range(40, 48)]),
                        ("repeat", [f"Endless{i}" for i in range(8)])):
        for message in (symbol_list_request(40, attributes=attrs), routed):
            raw = endless_listing_reply(message, mode)
            assert raw is not None
            reply = cip.Reply.decode(raw)
            assert reply.status == 0x06  # more follows, always
            page = parse_symbol_instances(reply.data, attrs)
            assert [s.instance_id for s in page] == list(range(40, 48))
            assert [s.name for s in page] == names

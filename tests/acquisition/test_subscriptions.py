"""The subscription table's decisions and counts (acquisition/subscriptions.py)."""

from __future__ import annotations

from pyconpro.acquisition.subscriptions import (
    Peer,
    Refusal,
    SubscriptionLimits,
    SubscriptionTable,
    Upstream,
)

A, B = Peer("10.0.0.1"), Peer("10.0.0.2")


def test_caps_per_peer_and_in_total_refuse_count_and_say_so_once() -> None:
    t = SubscriptionTable(SubscriptionLimits(per_peer=2, total=3, max_bytes=16))
    assert t.subscribe(A, b"sample/").refusal is None
    assert t.subscribe(A, b"event/").refusal is None
    first = t.subscribe(A, b"stats/")
    assert first.refusal is Refusal.PEER_FULL and first.first
    assert t.subscribe(A, b"stats/x").first is False  # logged once per peer
    assert t.subscribe(B, b"sample/").refusal is None
    assert t.subscribe(B, b"event/").refusal is Refusal.BUS_FULL
    assert t.subscribe(B, b"x" * 17).refusal is Refusal.TOO_LONG
    st = t.stats()
    assert (st["held"], st["topics"], st["accepted"]) == (3, 2, 3)
    assert (st["refused_peer_full"], st["refused_bus_full"], st["refused_too_long"]) == (2, 1, 1)
    assert st["largest_peer"] == {"peer": "10.0.0.1", "held": 2}


def test_a_connection_that_ends_releases_what_its_address_held_first() -> None:
    t = SubscriptionTable()
    for p in (A, B):
        t.subscribe(p, b"sample/")
    t.subscribe(B, b"event/")
    # libzmq unsubscribes for an ended connection without saying whose: the address seen
    # leaving is released first, not the other peer holding the same topic.
    t.left(B.address, now=1.0)
    t.unsubscribe(None, b"sample/", now=1.0)
    t.unsubscribe(None, b"event/", now=1.0)
    assert (t.holdings(A), t.holdings(B)) == (1, 0)
    assert t.stats()["peers"] == 1


def test_gone_drops_an_address_whatever_was_missed_and_explicit_unsubscriptions_count() -> None:
    t = SubscriptionTable()
    t.subscribe(A, b"sample/")
    t.subscribe(A, b"sample/")  # a peer may hold one topic twice (two connections)
    t.unsubscribe(A, b"sample/", now=0.0)
    assert t.holdings(A) == 1
    t.unsubscribe(A, b"never/", now=0.0)  # refused or unknown: nothing to release
    t.gone(A.address)
    assert t.stats()["held"] == 0 and t.stats()["peers"] == 0


def test_only_replay_markers_go_upstream_first_holder_in_last_one_out() -> None:
    t = SubscriptionTable()
    t.subscribe(A, b"sample/")
    assert t.take_outputs() == []
    t.subscribe(A, b"replay/r1/")
    t.subscribe(B, b"replay/r1/")
    assert t.take_outputs() == [Upstream(True, b"replay/r1/")]
    t.unsubscribe(A, b"replay/r1/", now=0.0)
    assert t.take_outputs() == []
    t.unsubscribe(B, b"replay/r1/", now=0.0)
    assert t.take_outputs() == [Upstream(False, b"replay/r1/")]
    assert Upstream(False, b"replay/r1/").frame == b"\x00replay/r1/"

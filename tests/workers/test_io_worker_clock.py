"""The I/O worker's timers on a fake clock: the session keep-alive and the reconnect after the
back-off happen exactly when the clock reaches their deadline (the loop waits until the
earliest deadline of every machine, never polls for them), with the worker's real sockets on
loopback against a tiny encapsulation listener in this thread (tests/support/encap_listener.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from pyconpro.acquisition import encap
from pyconpro.acquisition.control import consumer_from_text
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.originator import BackoffPolicy
from pyconpro.acquisition.session import PlcState
from pyconpro.workers.io_worker import IoWorker, WorkerOptions

from tests.support.encap_listener import Listener

LOCAL = "127.61.13.1"
PLC = "127.61.13.2"
PLC2 = "127.61.13.3"


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rig() -> Iterator[tuple[IoWorker, Listener, FakeClock]]:
    clock = FakeClock(1000.0)
    listener = Listener(PLC)
    w = IoWorker(WorkerOptions(
        local_address=LOCAL, udp_port=0, pub_endpoint="tcp://127.0.0.1:0",
        control_endpoint="tcp://127.0.0.1:0", stats_interval_s=0, keepalive_s=5.0,
        request_timeout_s=60.0, session_jitter=0.0,
        backoff=BackoffPolicy(50.0, 50.0, 0.0)), clock=clock)
    w.open()
    try:
        yield w, listener, clock
    finally:
        w.close()
        listener.close()


def run_until(w: IoWorker, listener: Listener, cond: Callable[[], bool],
              timeout: float = 10.0) -> None:
    """Step the worker and the listener (real time bounds the wait, the fake clock stands)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        w.step(max_wait_s=0.01)
        listener.service()


def settle(w: IoWorker, listener: Listener, passes: int = 20) -> None:
    for _ in range(passes):
        w.step(max_wait_s=0.005)
        listener.service()


def test_keepalive_and_reconnect_exactly_at_their_deadlines(
        rig: tuple[IoWorker, Listener, FakeClock]) -> None:
    w, listener, clock = rig
    w.add_consumer(consumer_from_text(f"plc=p,address={PLC},port={listener.port},tag=T,size=4,"
                                      "rpi_ms=100,reconnect_min_s=1,reconnect_max_s=1"), clock())
    link = next(iter(w.links.values()))
    run_until(w, listener, lambda: link.up and encap.Command.SEND_RR_DATA in listener.commands)
    assert link.plc.keepalive_at == 1005.0
    assert w.next_deadline() == 1005.0  # the keep-alive is the earliest timer of any machine

    clock.t = 1004.999
    settle(w, listener)
    assert encap.Command.NOP not in listener.commands
    clock.t = 1005.0
    run_until(w, listener, lambda: encap.Command.NOP in listener.commands)
    assert listener.commands.count(encap.Command.NOP) == 1
    assert w.next_deadline() == 1010.0

    clock.t = 1006.0
    listener.drop()  # EOF: the session fails and backs off 1 s
    run_until(w, listener, lambda: link.plc.state is PlcState.BACKOFF)
    assert link.plc.retry_at == 1007.0 and w.next_deadline() == 1007.0
    assert w.status()["plcs"][0]["sessions_failed"] == 1

    clock.t = 1006.999
    settle(w, listener)
    assert listener.accepted == 1 and link.plc.state is PlcState.BACKOFF
    clock.t = 1007.0
    run_until(w, listener, lambda: listener.accepted == 2 and link.up)
    assert w.status()["plcs"][0]["sessions_opened"] == 2
    assert link.plc.keepalive_at == 1012.0


def test_a_refused_add_leaves_nothing_behind(rig: tuple[IoWorker, Listener, FakeClock]) -> None:
    """A definition that fails once the consumer is registered (here: a connection path longer
    than a Forward_Open can carry, which a caller of the Python API can build) is rolled back:
    no consumer, no PLC session opened for it, the key free for a correct add."""
    w, listener, clock = rig
    good = consumer_from_text(f"plc=p,address={PLC},port={listener.port},tag=T,size=4")
    bad = replace(good, route=((1, 0),) * 300)
    with pytest.raises(UsageError, match="connection path"):
        w.add_consumer(bad, clock())
    assert w.consumers == {} and w.links == {} and w.status()["plcs"] == []
    settle(w, listener)
    assert listener.accepted == 0  # no session was opened for nothing
    c = w.add_consumer(good, clock())
    assert list(w.consumers) == ["p/T"] and w.consumers["p/T"] is c
    link = next(iter(w.links.values()))
    run_until(w, listener, lambda: link.up and encap.Command.SEND_RR_DATA in listener.commands)
    assert listener.accepted == 1


def test_the_sessions_of_two_plcs_keep_their_own_deadlines_in_one_heap(
        rig: tuple[IoWorker, Listener, FakeClock]) -> None:
    """Each PLC session's timers are entries of the worker's one timer heap (no walk over the
    sessions per loop iteration): each keep-alive comes exactly at its own deadline."""
    w, listener, clock = rig
    other = Listener(PLC2)
    try:
        def serve(cond: Callable[[], bool]) -> None:
            end = time.monotonic() + 10
            while not cond():
                assert time.monotonic() < end, "condition not reached in time"
                w.step(max_wait_s=0.01)
                listener.service()
                other.service()

        w.add_consumer(consumer_from_text(f"plc=a,address={PLC},port={listener.port},tag=T,"
                                          "size=4"), clock())
        serve(lambda: encap.Command.SEND_RR_DATA in listener.commands)
        clock.t = 1002.0
        w.add_consumer(consumer_from_text(f"plc=b,address={PLC2},port={other.port},tag=T,"
                                          "size=4"), clock())
        serve(lambda: encap.Command.SEND_RR_DATA in other.commands)
        a, b = w.links[(PLC, listener.port)], w.links[(PLC2, other.port)]
        assert (a.plc.keepalive_at, b.plc.keepalive_at) == (1005.0, 1007.0)
        assert w.next_deadline() == 1005.0
        clock.t = 1005.0
        serve(lambda: encap.Command.NOP in listener.commands)
        assert encap.Command.NOP not in other.commands and w.next_deadline() == 1007.0
        clock.t = 1007.0
        serve(lambda: encap.Command.NOP in other.commands)
        assert listener.commands.count(encap.Command.NOP) == 1 and w.next_deadline() == 1010.0
    finally:
        other.close()

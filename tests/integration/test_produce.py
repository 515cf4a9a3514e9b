"""Producing tags: the I/O worker as a class-1 target, the simulator as the Logix consumer.

Real processes on loopback: a worker producing on 127.61.13.1 (TCP and UDP ports chosen by the
OS), a simulator on 127.61.13.2 whose consumed tag opens the Forward_Open to it, and the test
publishing values on a bus PUB socket the worker's feed connects to. No timed assertions: the
checks are the order of the values and that they arrive; intervals are only loosely bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from pyconpro.acquisition.produce import produce_topic
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.support.wait import wait_for
from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER = "127.61.13.1"
SIM = "127.61.13.2"
SIM2 = "127.61.13.3"
COUNTER = {"name": "PcCounter", "type": "DINT", "max_consumers": 1}
SETPOINTS = {"name": "PcSetpoints", "type": "Setpoints", "max_consumers": 2,
             "members": [["Speed", "REAL"], ["Run", "BOOL"], ["Recipe", "DINT[2]"]]}


class Bus:
    """The test's stand-in for the bus: a PUB socket the worker's feed connects to."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind("tcp://127.0.0.1:0")
        self.endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, tag: str, value: Any) -> None:
        self.pub.send_multipart([produce_topic(tag), msgpack.packb({"value": value})])

    def close(self) -> None:
        self.pub.close()
        self.ctx.term()


@pytest.fixture
def bus() -> Iterator[Bus]:
    b = Bus()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def worker(bus: Bus, receive_path: str) -> Iterator[WorkerProcess]:
    """On both receive paths: the consumers' heartbeats come through either."""
    args = ["--tcp-port", "0", "--bus-connect", bus.endpoint, "--stats-interval", "0.2"]
    for spec in (COUNTER, SETPOINTS):
        args += ["--produce", json.dumps(spec)]
    with start_worker(WORKER, extra_args=args) as w:
        yield w


def sim(address: str = SIM) -> SimulatorProcess:
    return start_simulator(address, extra_args=["--seed", "3"])


def produce_status(w: WorkerProcess) -> dict[str, Any]:
    st: dict[str, Any] = w.control("status")["produce"]
    return st


def tag_status(w: WorkerProcess, name: str) -> dict[str, Any]:
    return next(t for t in produce_status(w)["tags"] if t["name"] == name)


def consume(s: SimulatorProcess, w: WorkerProcess, tag: str, type_: str, **kw: Any) -> str:
    st = produce_status(w)
    s.control.consume(WORKER, tag, type_, port=st["tcp_port"],
                      udp_port=w.info["udp_port"], rpi_ms=20, **kw)
    return f"{WORKER}/{tag}"


def consumed(s: SimulatorProcess, key: str) -> dict[str, Any]:
    return next(t for t in s.control.consumed() if t["key"] == key)


def publish_until_seen(bus: Bus, s: SimulatorProcess, key: str, tag: str, value: Any) -> None:
    """Publish ``value`` until the consumer receives it: the bus subscription and the
    connection are both up from then on."""
    def got() -> bool:
        bus.publish(tag, value)
        c = consumed(s, key)
        return c["state"] == "RUNNING" and any(r["value"] == value for r in c["records"])

    wait_for(got, f"{key} running with the value {value!r}", timeout=20)


def test_values_published_on_the_bus_arrive_in_order_at_the_rpi(
    worker: WorkerProcess, bus: Bus
) -> None:
    with sim() as s:
        key = consume(s, worker, "PcCounter", "DINT")
        publish_until_seen(bus, s, key, "PcCounter", -1)
        start = len(consumed(s, key)["records"])
        for v in range(1, 21):
            bus.publish("PcCounter", v)

            def arrived(v: int = v) -> bool:
                return any(r["value"] == v for r in consumed(s, key)["records"][start:])

            wait_for(arrived, f"value {v} at the consumer", timeout=10)
        records = consumed(s, key)["records"][start:]
        values = [r["value"] for r in records]
        # In order, each value at least once (the RPI repeats the latest one), none lost.
        firsts = [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]
        assert [v for v in firsts if v != -1] == list(range(1, 21))
        # At the RPI, loosely: datagrams keep coming with no value fed.
        n = consumed(s, key)["received"]
        wait_for(lambda: consumed(s, key)["received"] >= n + 10, "data at the RPI", timeout=10)
        times = [r["t"] for r in consumed(s, key)["records"][-10:]]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(0.0 < g < 1.0 for g in gaps), gaps  # 20 ms RPI; loose on a busy machine
        st = tag_status(worker, "PcCounter")
        assert st["fed"] and st["source"] == "bus" and len(st["consumers"]) == 1
        # The consumer's heartbeats reached the target through the worker's class-1 socket.
        assert st["consumers"][0]["heartbeats"] > 0
        assert produce_status(worker)["target"]["heartbeats_unknown"] == 0


def test_udt_and_api_values_and_unfed_status(worker: WorkerProcess, bus: Bus) -> None:
    before = tag_status(worker, "PcSetpoints")
    assert not before["fed"] and before["sending"].startswith("zeros")
    # the interface's netmask (lo: 127.0.0.1/8 holds every 127.x address): multicast
    # consumers from off that subnet would be refused with 0x0813
    assert produce_status(worker)["netmask"] == "255.0.0.0"
    with sim() as s:
        key = consume(s, worker, "PcSetpoints", "Setpoints",
                      members=SETPOINTS["members"])
        wait_for(lambda: consumed(s, key)["records"], "zeros before anybody feeds it")
        assert consumed(s, key)["records"][0]["value"] == {
            "Speed": 0.0, "Run": False, "Recipe": [0, 0]}
        value = {"Speed": 2.5, "Run": True, "Recipe": [7, 8]}
        reply = worker.control("set", tag="PcSetpoints", value=value)
        assert reply["ok"] and reply["tag"]["source"] == "api"
        wait_for(lambda: any(r["value"] == value for r in consumed(s, key)["records"]),
                 "the API's value at the consumer")
        bad = worker.control("set", tag="PcSetpoints", value={"Speed": "fast"})
        assert not bad["ok"] and "PcSetpoints" in bad["error"]


def test_over_max_consumers_is_refused_and_forward_close_frees_the_slot(
    worker: WorkerProcess, bus: Bus
) -> None:
    with sim() as s1, sim(SIM2) as s2:
        key = consume(s1, worker, "PcCounter", "DINT")
        wait_for(lambda: consumed(s1, key)["state"] == "RUNNING", "first consumer running")
        consume(s2, worker, "PcCounter", "DINT")
        wait_for(lambda: any("0x031E" in e for e in consumed(s2, key)["events"]),
                 "the second consumer refused with 0x031E", timeout=20)
        assert produce_status(worker)["target"]["reject_codes"].get("0x01/0x031E", 0) >= 1
        s1.control.unconsume(key)  # Forward_Close: the slot is free at once
        wait_for(lambda: consumed(s2, key)["state"] == "RUNNING",
                 "the second consumer running once the first closed", timeout=30)


def test_a_consumer_restart_and_a_heartbeat_loss_free_the_slot(
    worker: WorkerProcess, bus: Bus
) -> None:
    with sim() as s:
        key = consume(s, worker, "PcCounter", "DINT", multiplier=0)
        publish_until_seen(bus, s, key, "PcCounter", -1)
    # The simulator is gone without a Forward_Close: its heartbeats stop, the watchdog
    # (O->T RPI x 4) frees the slot, counted and visible in status.
    wait_for(lambda: produce_status(worker)["target"]["timeouts"] >= 1, "the watchdog expiry")
    wait_for(lambda: tag_status(worker, "PcCounter")["consumers"] == [], "the slot freed")
    assert any("timed_out" in e for e in produce_status(worker)["events"])
    with sim() as s:  # the consumer comes back (max_consumers = 1): it is accepted again
        key = consume(s, worker, "PcCounter", "DINT")
        publish_until_seen(bus, s, key, "PcCounter", 99)

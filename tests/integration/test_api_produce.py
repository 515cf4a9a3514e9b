"""The Python API producing a tag: ``Connection.addProducer(...).set(value)`` against the
simulator's consumed tag (its ``consume`` control command opens the Forward_Open to the API's
worker, as a Logix controller would).

Real processes on loopback: the API's worker on 127.78.N.1 (its TCP and UDP ports chosen free),
the simulator on 127.78.N.2. No timed assertions: the values' order and their arrival are
checked, with generous deadlines.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyconpro.acquisition.errors import UsageError
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from pyconpro import CommError, Connection, Producer
from tests.support.ports import free_port, free_subnet, free_udp_port
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = [("Speed", "REAL"), ("Run", "BOOL"), ("Recipe", "DINT[2]")]


@pytest.fixture
def net() -> int:
    return free_subnet(78, (1, 2))


@pytest.fixture
def sim(net: int) -> Iterator[SimulatorProcess]:
    with start_simulator(f"127.78.{net}.2", extra_args=["--seed", "5"]) as s:
        yield s


def consume(sim: SimulatorProcess, p: Producer, type_: str, **kw: Any) -> str:
    """The simulated controller consumes ``p`` (20 ms RPI, timeout x64 for a busy machine)."""
    st = p.status()
    sim.control.consume(p.local_address, p.name, type_, port=st["tcp_port"],
                        udp_port=st["udp_port"], rpi_ms=20, multiplier=4, **kw)
    return f"{p.local_address}/{p.name}"


def records(sim: SimulatorProcess, key: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = next(
        t for t in sim.control.consumed() if t["key"] == key)["records"]
    return found


def wait_value(sim: SimulatorProcess, key: str, value: Any, since: int = 0) -> None:
    wait_for(lambda: any(r["value"] == value for r in records(sim, key)[since:]),
             f"{value!r} at the consumer", 30)  # fmt: skip


def test_set_values_reach_the_consumer_in_order(net: int, sim: SimulatorProcess) -> None:
    local = f"127.78.{net}.1"
    with Connection(udp_port=0, tcp_port=0) as con:
        p = con.addProducer("PcSetpoints", "Setpoints", members=MEMBERS, max_consumers=1,
                            local_address=local)
        assert p.status()["fed"] is False and p.status()["sending"].startswith("zeros")
        key = consume(sim, p, "Setpoints", members=[list(m) for m in MEMBERS])
        wait_value(sim, key, {"Speed": 0.0, "Run": False, "Recipe": [0, 0]})  # zeros first
        start = len(records(sim, key))
        sent = [{"Speed": 0.5 * i, "Run": i % 2 == 1, "Recipe": [i, -i]} for i in range(1, 11)]
        for value in sent:
            p.set(value)
            wait_value(sim, key, value, start)
        got = [r["value"] for r in records(sim, key)[start:]]
        firsts = [v for i, v in enumerate(got) if i == 0 or got[i - 1] != v]
        assert [v for v in firsts if v in sent] == sent  # in order, none lost
        # a value that does not fit is refused, named, and the previous one stays
        with pytest.raises(UsageError, match="PcSetpoints"):
            p.set({"Speed": "fast"})
        st = p.status()
        assert (st["source"], st["rejected"], st["updates"]) == ("api", 1, 10)
        assert [c["peer"] for c in st["consumers"]] == [f"127.78.{net}.2"]
        assert st["consumers"][0]["rpi_us"] == 20_000
        # the raw tag image works too, of exactly the tag's size
        image = bytes(st["size"])
        p.set(image)
        wait_value(sim, key, {"Speed": 0.0, "Run": False, "Recipe": [0, 0]},
                   len(records(sim, key)) - 1)
        with pytest.raises(UsageError, match="raw image of 3 bytes"):
            p.set(b"abc")


def test_definitions_are_checked_before_anything_starts(net: int) -> None:
    with Connection(udp_port=0, tcp_port=0) as con:
        with pytest.raises(UsageError, match="consumer_address"):
            con.addProducer("PcCounter", "DINT")
        with pytest.raises(UsageError, match="Nope"):
            con.addProducer("PcCounter", "Nope", local_address=f"127.78.{net}.1")
        assert con._workers == {}  # nothing started for a bad definition
        con.add_producer("PcCounter", "DINT", local_address=f"127.78.{net}.1")
        with pytest.raises(UsageError, match="produced already"):
            con.addProducer("pccounter", "DINT", local_address=f"127.78.{net}.1")
        # the TCP port is taken: the worker says which one, and by what key it is changed
        port = con.producers[0].tcp_port
        with Connection(udp_port=0, tcp_port=port) as other:
            with pytest.raises(CommError, match=f"cannot listen on TCP 127.78.{net}.1:{port}"):
                other.addProducer("PcOther", "DINT", local_address=f"127.78.{net}.1")


def test_a_killed_worker_is_replaced_and_produces_again(
    net: int, sim: SimulatorProcess
) -> None:
    """Fixed ports, so the controller finds the new worker where the old one was."""
    local = f"127.78.{net}.1"
    with Connection(udp_port=free_udp_port(local), tcp_port=free_port(local)) as con:
        p = con.addProducer("PcCounter", "DINT", local_address=local)
        p.set(41)
        key = consume(sim, p, "DINT")
        wait_value(sim, key, 41)
        os.kill(con._workers[local].proc.pid, signal.SIGKILL)
        wait_for(lambda: con._workers[local].proc.poll() is not None, "the worker gone")
        p.set(42)  # a new worker, the tag produced again; then the new value
        assert p.status()["updates"] == 2  # the last value (41) was given back, then 42
        wait_value(sim, key, 42, len(records(sim, key)))

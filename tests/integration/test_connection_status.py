"""A produced UDT whose first member is CONNECTION_STATUS, end to end (protocol.md 7.2).

The simulator's default tag ``CellStatus`` (``Status`` CONNECTION_STATUS, ``Parts`` DINT,
``Temperature`` REAL) is consumed by the real I/O worker process, which learns the type from the
simulator by explicit messaging and publishes decoded samples: the status member must arrive as
named flags ``{"RunMode": bool, "ConnectionFaulted": bool}``, not as bytes. pycomm3 browses and
reads the same tag, and a write through pycomm3 flips a flag the worker then sees, so each flag
is checked at its own bit. Processes on unusual 127.61.17.x addresses with OS-chosen ports;
every wait has a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pycomm3 import LogixDriver
from pyconpro.acquisition import wire
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_types import CONNECTION_STATUS_FLAGS
from pyconpro.simulator.tags import default_store
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER = "127.61.17.1"
SIM = "127.61.17.2"
TAG = "CellStatus"


@pytest.fixture
def sim() -> Iterator[SimulatorProcess]:
    with start_simulator(SIM, extra_args=["--initial-watchdog", "0.5", "--seed", "17"]) as s:
        yield s


def consumer(sim: SimulatorProcess, rpi_ms: int = 20) -> str:
    """No ``type`` and no ``size``: the worker must learn both from the controller."""
    return (f"plc=cell,address={sim.address},port={sim.tcp_port},udp_port={sim.udp_port},"
            f"tag={TAG},rpi_ms={rpi_ms}")


def driver(sim: SimulatorProcess) -> LogixDriver:
    plc = LogixDriver(f"{sim.address}:{sim.tcp_port}")
    plc.socket_timeout = 5.0
    return plc


def value_of(s: wire.Sample) -> dict[str, Any]:
    assert isinstance(s.value, dict), s.value
    return s.value


def samples_until(w: WorkerProcess, predicate: Callable[[wire.Sample], bool], timeout: float,
                  what: str) -> list[wire.Sample]:
    """Poll the bus until a CellStatus sample satisfies ``predicate``; every sample so far."""
    w.wait_for(lambda m: isinstance(m, wire.Sample) and m.tag == TAG and predicate(m), timeout,
               what)
    return w.samples("cell", TAG)


def test_worker_publishes_connection_status_as_named_flags(sim: SimulatorProcess) -> None:
    with start_worker(WORKER, [consumer(sim)]) as w:
        w.wait_state(f"cell/{TAG}", "RUNNING", 15.0)
        samples_until(w, lambda m: True, 10.0, f"a {TAG} sample")
        w.collect(0.5)
        got = w.samples("cell", TAG)
        assert len(got) >= 10
        decode = compile_decoder(default_store().find(TAG).type)  # type: ignore[union-attr]
        for s in got:
            assert s.type_name == TAG and len(s.raw) == 12
            value = value_of(s)
            assert list(value) == ["Status", "Parts", "Temperature"]
            status = value["Status"]
            assert status == {"RunMode": True, "ConnectionFaulted": False}, status
            assert list(status) == list(CONNECTION_STATUS_FLAGS)
            assert all(type(flag) is bool for flag in status.values())
            assert s.raw[0] & 0b11 == 0b01  # the flags really come from the datagram's byte 0
            assert isinstance(value["Parts"], int) and isinstance(value["Temperature"], float)
            assert 35.0 <= value["Temperature"] <= 45.0
            assert value == decode(s.raw)
        parts = [value_of(s)["Parts"] for s in got]
        assert parts == sorted(parts)

        # The other flag, at its own bit: set ConnectionFaulted in the controller through
        # pycomm3 (a test stand-in for the consumer side setting it) and try to clear RunMode,
        # which the running controller re-asserts.
        with driver(sim) as plc:
            written = plc.write(("CellStatus.Status.ConnectionFaulted", True),
                                ("CellStatus.Status.RunMode", False))
            assert [r.error for r in written] == [None, None]
        faulted = {"RunMode": True, "ConnectionFaulted": True}
        samples_until(w, lambda m: value_of(m)["Status"] == faulted, 5.0,
                      "a sample with ConnectionFaulted set")
        w.collect(0.2)
        after = w.samples("cell", TAG)[len(got):]
        assert after[-1].raw[0] & 0b11 == 0b11 and value_of(after[-1])["Status"] == faulted
        # The producer ticks before every datagram: the cleared RunMode never goes out.
        assert all(value_of(s)["Status"]["RunMode"] is True for s in after)


def test_pycomm3_browses_and_reads_the_status_udt(sim: SimulatorProcess) -> None:
    with driver(sim) as plc:
        tag = plc.tags[TAG]
        assert (tag["tag_type"], tag["data_type_name"]) == ("struct", TAG)
        udt = plc.data_types[TAG]
        assert udt["attributes"] == ["Status", "Parts", "Temperature"]
        assert udt["template"]["structure_size"] == 12
        status = udt["internal_tags"]["Status"]
        assert (status["offset"], status["data_type_name"]) == (0, "CONNECTION_STATUS")
        flags = status["data_type"]["internal_tags"]
        assert status["data_type"]["attributes"] == list(CONNECTION_STATUS_FLAGS)
        assert (flags["RunMode"]["bit"], flags["ConnectionFaulted"]["bit"]) == (0, 1)
        assert flags["RunMode"]["offset"] == flags["ConnectionFaulted"]["offset"] == 0
        value = plc.read(TAG).value
        assert value["Status"] == {"RunMode": True, "ConnectionFaulted": False}
        assert plc.read("CellStatus.Status.RunMode").value is True
        # Parts counts every 0.5 s of the simulator's clock: poll (no sleeping), at most 5 s.
        deadline = time.monotonic() + 5.0
        later = value["Parts"]
        while later <= value["Parts"] and time.monotonic() < deadline:
            later = plc.read("CellStatus.Parts").value
        assert later > value["Parts"]

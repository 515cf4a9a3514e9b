"""A PLC whose tag listing never ends (the simulator's ``endless_listing`` fault): the worker
reads it only up to its limits (acquisition/discovery.py ``ListingLimits``, and the type
cache's requests per fill), fails the consumer's type lookup with an error naming the PLC and
the limit, drops what it read and backs off; its memory stays bounded (it grew by about 100 MB
in 45 s before the limits). Once the PLC answers truly again the consumer runs.

The simulator listens on 127.61.14.2 with OS-chosen ports; the worker binds 127.61.14.1 with
UDP port 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pyconpro.acquisition import wire
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WORKER = "127.61.14.1"
SIM = "127.61.14.2"
RSS_GROWTH_MAX_MB = 40  # measured: 32 -> 46 MB over 45 s and six listings given up


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(params=["new", "repeat"])
def endless_sim(request: pytest.FixtureRequest) -> Iterator[SimulatorProcess]:
    with start_simulator(SIM, extra_args=["--endless-listing", request.param]) as sim:
        yield sim


def given_up(w: WorkerProcess) -> int:
    plcs = w.control("status")["plcs"]
    return int(plcs[0]["types"]["given_up"]) if plcs else 0


def test_a_listing_that_never_ends_is_bounded_and_the_consumer_backs_off(
    endless_sim: SimulatorProcess,
) -> None:
    sim = endless_sim
    with start_worker(WORKER, []) as w:
        start = rss_mb(w.pid)
        spec = {"plc": "a", "address": sim.address, "port": sim.tcp_port,
                "udp_port": sim.udp_port, "tag": "Counter", "rpi_ms": 20}
        assert w.control("add", consumer=spec)["ok"]
        peak = start
        deadline = time.monotonic() + 120
        while given_up(w) < 2:  # two listings stopped: memory does not add up across them
            assert time.monotonic() < deadline, w.log_text()[-3000:]
            w.poll(0.2)
            peak = max(peak, rss_mb(w.pid))
        assert peak - start < RSS_GROWTH_MAX_MB, (start, peak)
        def is_error(m: wire.Message) -> bool:
            return isinstance(m, wire.Event) and m.kind == "error" and m.state_to == "BACKOFF"

        # It may have arrived while the loop above polled: look there first.
        error = next((m for m in w.messages if is_error(m)), None) or w.wait_for(
            is_error, 30, "the consumer's error event")  # fmt: skip
        assert isinstance(error, wire.Event)
        assert f"the tag listing of PLC {sim.address}:{sim.tcp_port} passed the limit of" \
            in error.message
        assert "give the tags' 'size' (or 'type')" in error.message
        types = w.control("status")["plcs"][0]["types"]
        assert types["generation_requests"] <= 5000
        # The PLC answers truly again: after its back-off the consumer learns its type.
        sim.control.faults(endless_listing="")
        w.wait_state("a/Counter", "RUNNING", 60)

"""The worker's receive path never waits for the bus (issue 4): a subscriber that stops reading
costs messages, counted in ``pub_drops``, never a late heartbeat or an expired connection.

A SUB socket with RCVHWM = 1 that never reads connects to a worker whose PUB high-water mark
is 10 messages, over ``ipc://`` (a Unix socket buffers ~200 KB, so its pipe fills within a
second; a loopback TCP connection would buffer megabytes first). The worker consumes the
simulator's ``Big`` tag (DINT[125], 500 bytes) every 5 ms. The PUB socket is an XPUB with
XPUB_NODROP (docs/worker.md "Bus"): a full pipe makes the non-blocking send fail with EAGAIN
and the message is counted in ``pub_drops``; it is then lost for every subscriber, also for the
test's own SUB socket (RCVHWM 1,000,000, never full), which therefore sees exactly
``pub_drops`` messages missing as gaps in the per-topic ``sq``. Addresses 127.61.13.x.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from pyconpro.acquisition import wire
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(120),
    pytest.mark.usefixtures("receive_path"),  # every test on both receive paths
]

WORKER = "127.61.13.1"
SIM = "127.61.13.2"


@pytest.fixture
def sim() -> Iterator[SimulatorProcess]:
    with start_simulator(SIM, extra_args=["--seq16", "every", "--seed", "13"]) as s:
        yield s


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="pcp-bus-")  # short: a Unix socket path has 107 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_status(w: WorkerProcess, predicate: Callable[[dict[str, Any]], bool], timeout: float,
                what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = w.control("status")
        if predicate(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s; last status counters:"
                                 f" {st['counters']}; log:\n{w.log_text()[-3000:]}")
        w.poll(0.05)


def test_a_subscriber_that_never_reads_costs_counted_drops_not_data(
        sim: SimulatorProcess, ipc_dir: str) -> None:
    with start_worker(WORKER, [], pub=f"ipc://{ipc_dir}/pub",
                      extra_args=["--hwm", "10", "--stats-interval", "0.2"]) as w:
        stuck = w.ctx.socket(zmq.SUB)
        try:
            stuck.setsockopt(zmq.LINGER, 0)
            stuck.setsockopt(zmq.RCVHWM, 1)
            stuck.setsockopt(zmq.SUBSCRIBE, b"s")  # sample/ and stats/
            stuck.connect(w.info["pub"])
            wait_status(w, lambda st: "s" in st["bus_topics"], 10, "the stuck subscription")
            spec = {"plc": "s", "address": sim.address, "port": sim.tcp_port,
                    "udp_port": sim.udp_port, "tag": "Big", "type": "DINT[125]", "rpi_ms": 5,
                    "ot_rpi_ms": 50, "multiplier": 32}
            assert w.control("add", consumer=spec)["ok"]
            first = wait_status(w, lambda st: st["counters"]["pub_drops"] > 0, 20,
                                "pub_drops > 0")
            # The pipe stays full: further samples are dropped and counted (how many still
            # fit into the kernel's socket buffer depends on when libzmq's I/O thread ran),
            # and the connection runs on as if nobody were slow.
            later = wait_status(
                w, lambda st: st["counters"]["pub_drops"] >= first["counters"]["pub_drops"] + 150,
                30, "150 more drops")
            assert later["counters"]["samples"] >= first["counters"]["samples"] + 100  # + stats
            [c] = later["consumers"]
            assert c["state"] == "RUNNING"
            assert c["counters"]["timeouts"] == 0 and c["counters"]["opens"] == 1
            assert later["counters"]["heartbeat_send_errors"] == 0
            assert not [k for k, v in later["counters"].items() if k.startswith("drop_") and v]
            assert len(sim.control.connections()) == 1
        finally:
            stuck.close()
        # Once the stuck subscriber is gone nothing is dropped any more: every message the
        # worker counted as dropped is a gap in its topic's sequence, and nothing else is.
        last_two: list[int] = []

        def settled(m: wire.Message) -> bool:
            if isinstance(m, wire.Stats):
                last_two[:] = [*last_two[-1:], int(m.counters["pub_drops"])]
            return len(last_two) == 2 and last_two[0] == last_two[1]

        final = w.wait_for(settled, 20, "two stats messages without new drops")
        assert isinstance(final, wire.Stats)
        w.collect(0.3)  # a message after every gap
        previous: dict[bytes, int] = {}
        missing = 0
        for m in w.messages:
            if m.topic in previous:
                missing += m.seq - previous[m.topic] - 1
            previous[m.topic] = m.seq
        assert missing == final.counters["pub_drops"] > 0

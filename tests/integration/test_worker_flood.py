"""A flood of junk on the worker's UDP port must not cost a healthy connection anything.

20 produced DINTs at 10 ms (heartbeats every 10 ms too, so the simulator drops a connection
after 320 ms without one), then 200,000 datagrams sent as fast as one process can: valid-looking
class-1 datagrams with unknown ids, random bytes, and forgeries with live T->O ids from the
simulator's own address but another port. The worker must keep its timers on time (its drain is
bounded by time, not by count), drop every junk datagram by its reason, and report the flood as
such in its log. Nothing healthy may be lost: no reopen, no timeout, no CIP sequence gap, no bus
gap. Should the rest of the machine starve the worker so long that the kernel drops datagrams
(``udp_kernel_drops``), loss happened before the worker and is not judged; on a machine with a
core for the worker there is none. Addresses 127.61.13.x, ports from the OS; the sender runs at
the lowest priority, as a flood does not get to choose which process the scheduler prefers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.acquisition import wire
from pyconpro.simulator.testing import SimulatorProcess, start_simulator
from pyconpro.workers import process

from tests.integration.test_worker_pause import consumers as _consumers
from tests.integration.test_worker_pause import tag_file, wait_all_running
from tests.workers.worker_process import start_worker

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(180),
    pytest.mark.usefixtures("receive_path"),  # every test on both receive paths
]

WORKER = "127.61.13.1"
SIM = "127.61.13.2"
FLOODER = "127.61.13.9"
TAGS = 20
JUNK = 200_000

SENDER = r"""
import os, random, socket, struct, sys
os.nice(19)
target = (sys.argv[1], int(sys.argv[2]))
flooder, plc_ip, plc_port = sys.argv[3], sys.argv[4], int(sys.argv[5])
live = [int(x) for x in sys.argv[7].split(",")]
n = int(sys.argv[6])
rnd = random.Random(7)
junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
junk.bind((flooder, 0))
forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
forger.bind((plc_ip, 0))  # the PLC's address, any port but its class-1 port
assert forger.getsockname()[1] != plc_port
head = struct.Struct("<HHHIIHHH")
payloads = []
for k in range(256):
    payloads.append(head.pack(2, 0x8002, 8, 0x7000_0000 + k, k, 0x00B1, 6, k) + b"\0\0\0\0")
    payloads.append(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 60))))
forged = 0
for i in range(n):
    if i % 20 == 0:
        cid = live[i % len(live)]
        forger.sendto(head.pack(2, 0x8002, 8, cid, 4_000_000_000 + i, 0x00B1, 6, i & 0xFFFF)
                      + b"\xff\xff\xff\x7f", target)
        forged += 1
    else:
        junk.sendto(payloads[i % len(payloads)], target)
print(forged, flush=True)
"""


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProcess]:
    with start_simulator(SIM, config=tag_file(tmp_path / "tags.toml", TAGS),
                         extra_args=["--seq16", "every", "--seed", "13"]) as s:  # fmt: skip
        yield s


def test_a_junk_flood_costs_healthy_connections_nothing(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    # Heartbeats every 10 ms; the simulator drops a connection after 32 of them are missing
    # (320 ms): a worker whose drain ran on for tens of ms per pass, as a count-bounded one
    # does under a flood, loses connections; a busy machine's scheduling does not.
    specs = [c.replace("ot_rpi_ms=500", "ot_rpi_ms=10").replace("multiplier=16", "multiplier=32")
             for c in _consumers(sim)]  # fmt: skip
    with start_worker(WORKER, specs) as w:
        wait_all_running(w)
        w.collect(0.5)  # every connection has data and heartbeats in its steady state
        before = w.control("status")
        w.messages.clear()
        live = [c["to_id"] for c in sim.control.connections()]
        assert len(live) == TAGS
        out = tmp_path / "sender.out"
        sender = process.spawn(
            [sys.executable, "-c", SENDER, WORKER, str(w.info["udp_port"]), FLOODER, SIM,
             str(sim.udp_port), str(JUNK), ",".join(map(str, live))],
            stdout=out, stderr=tmp_path / "sender.err",
        )  # fmt: skip
        try:
            while sender.poll() is None:
                w.collect(0.1)
            assert sender.returncode == 0, (tmp_path / "sender.err").read_text()
        finally:
            sender.stop()
        forged = int(out.read_text())
        w.collect(0.5)  # the samples of the last moments of the flood, and some after it
        after = w.control("status")

        drops = {k: after["counters"][k] - before["counters"][k]
                 for k in after["counters"] if k.startswith("drop_")}  # fmt: skip
        # Every forgery that reached the worker was dropped for its port, none delivered.
        assert 0 < drops["drop_wrong_port"] <= forged, drops
        assert drops["drop_unknown_id"] > 0 and drops["drop_malformed"] > 0, drops
        assert drops["drop_seq_jump"] == 0 and drops["drop_stale"] == 0, drops

        # The worker lost nothing it read. Only a process starved of CPU by the rest of the
        # machine lets its socket buffer overflow, and then the kernel says so: healthy loss is
        # at most what the kernel dropped.
        kernel = after["counters"]["udp_kernel_drops"] - before["counters"]["udp_kernel_drops"]
        lost = 0
        for i in range(TAGS):
            samples = [s for s in w.samples("p", f"P{i:02d}") if isinstance(s, wire.Sample)]
            assert len(samples) > 50, (i, len(samples))
            assert all(s.value != 0x7FFFFFFF for s in samples)  # no forged value stored
            if kernel:  # loss before the worker: nothing to compare the counts with
                continue
            steps = [(b.cip_seq - a.cip_seq - 1) & 0xFFFF for a, b in zip(samples, samples[1:])]
            lost += sum(steps)
            # What the CIP count says was lost is what the connection counted as its gap.
            assert samples[-1].gap - samples[0].gap == sum(steps)
        assert lost <= kernel, (lost, kernel)
        if kernel == 0:
            # With every datagram read, nothing healthy was touched: no reopen, no timeout.
            timeouts = [e.message for e in w.events(kind="timeout")]
            assert not timeouts, timeouts[:5]
            assert not w.events(kind="state"), [e.message for e in w.events(kind="state")][:5]
            bad = [(c["tag"], c["state"], c["counters"]) for c in after["consumers"]
                   if c["state"] != "RUNNING" or c["counters"]["opens"] != 1
                   or c["counters"]["timeouts"] != 0]  # fmt: skip
            assert not bad, bad[:3]
        else:
            print(f"the kernel dropped {kernel} datagram(s) (the machine starved the worker);"
                  " loss and reopens were not judged")

        # The flood is reported as what it is.
        deadline = time.monotonic() + 30
        while "datagram(s) dropped in the last" not in w.log_text():
            assert time.monotonic() < deadline, w.log_text()[-3000:]
            w.collect(0.2)
        line = next(x for x in w.log_text().splitlines() if "dropped in the last" in x)
        assert "unknown_id" in line and "wrong_port" in line and FLOODER in line, line

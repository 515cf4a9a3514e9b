"""A paused I/O worker must not declare connections dead whose data is waiting in its socket.

The worker is frozen with SIGSTOP (what a GC pause, a slow control request or a loaded machine
does to it, only longer and on demand) while the simulator keeps producing: every datagram
reaches the worker's UDP receive buffer in time, so the worker must read them before it judges
any T->O watchdog. A worker that evaluated its timers first would find every connection silent
for longer than its watchdog, reopen it, and drop the waiting datagrams as unknown ids.

The pause (250 ms) is longer than the worker's T->O watchdog (10 ms x 16 = 160 ms) and much
shorter than the simulator's O->T watchdog (heartbeats every 500 ms x 16 = 8 s), so the
simulator keeps every connection and keeps producing. Addresses 127.61.11.x, ports from the OS.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import msgpack
import pytest
import zmq
from pyconpro.acquisition import wire
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(120),
    pytest.mark.usefixtures("receive_path"),  # every test on both receive paths
]

WORKER = "127.61.11.1"
SIM = "127.61.11.2"
TAGS = 20
RPI_MS = 10
MULTIPLIER = 16  # T->O watchdog 160 ms
PAUSE_S = 0.25
PAUSES = 12


def tag_file(path: Path, n: int) -> Path:
    text = ['[controller]\nprogram_name = "PAUSE_TEST"\n']
    for i in range(n):
        text.append(f'\n[[tags]]\nname = "P{i:02d}"\ntype = "DINT"\nproduced = true\n'
                    'max_consumers = 2\ngenerator = { kind = "counter", interval_s = 0.01 }\n')
    path.write_text("".join(text))
    return path


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProcess]:
    with start_simulator(SIM, config=tag_file(tmp_path / "tags.toml", TAGS),
                         extra_args=["--seq16", "every", "--seed", "11"]) as s:
        yield s


def consumers(sim: SimulatorProcess) -> list[str]:
    return [f"plc=p,address={sim.address},port={sim.tcp_port},udp_port={sim.udp_port},"
            f"tag=P{i:02d},type=DINT,rpi_ms={RPI_MS},ot_rpi_ms=500,multiplier={MULTIPLIER}"
            for i in range(TAGS)]


def wait_all_running(w: WorkerProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {c["state"] for c in w.control("list")["consumers"]}
        if states == {"RUNNING"}:
            return
        w.poll(0.05)
    raise AssertionError(f"not all RUNNING within {timeout:g} s; log:\n{w.log_text()[-4000:]}")


class ControlLoad:
    """Keeps the worker busy with a pipelined stream of cheap ``list`` requests (a DEALER in a
    thread, at most 16 in flight), so SIGSTOP lands while the worker is working. An idle worker
    is stopped inside poll, and its first wake-up after SIGCONT reads the socket anyway; a busy
    one goes on with what it was doing and then to its next loop iteration, which is where the
    order of "read the sockets" and "check the timers" matters."""

    def __init__(self, w: WorkerProcess) -> None:
        self.sock = w.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100)
        self.sock.setsockopt(zmq.RCVHWM, 100)
        self.sock.connect(w.info["control"])
        self.stop = threading.Event()
        self.replies = 0
        self.thread = threading.Thread(target=self._run, name="control-load", daemon=True)

    def _run(self) -> None:
        request = [b"", msgpack.packb({"op": "list"})]
        in_flight = 0
        while not self.stop.is_set():
            while in_flight < 16:
                self.sock.send_multipart(request)
                in_flight += 1
            if self.sock.poll(100):
                self.sock.recv_multipart()
                in_flight -= 1
                self.replies += 1

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        assert not self.thread.is_alive()


def pause_repeatedly(w: WorkerProcess) -> None:
    for _ in range(PAUSES):
        os.kill(w.pid, signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)  # the pause itself is the stimulus, not a wait for a result
        finally:
            os.kill(w.pid, signal.SIGCONT)
        w.collect(0.15)


def test_datagrams_queued_during_a_pause_are_read_before_the_watchdogs(
        sim: SimulatorProcess) -> None:
    with start_worker(WORKER, consumers(sim)) as w:
        wait_all_running(w)
        w.collect(0.3)  # every connection has had data: its watchdog is API x multiplier now
        before = w.control("status")
        w.messages.clear()
        with ControlLoad(w) as load:
            pause_repeatedly(w)
        assert load.replies > PAUSES, "the control load did not keep the worker busy"
        w.collect(0.3)
        after = w.control("status")
        timeouts = w.events(kind="timeout")
        assert not timeouts, [e.message for e in timeouts][:5]
        drops = {k: after["counters"][k] - before["counters"][k]
                 for k in after["counters"] if k.startswith("drop_")}
        assert drops["drop_unknown_id"] == 0, drops
        assert {c["state"] for c in after["consumers"]} == {"RUNNING"}
        assert all(c["counters"]["timeouts"] == 0 and c["counters"]["opens"] == 1
                   for c in after["consumers"])
        # Nothing was lost on the way: every tag's samples kept coming, in sequence.
        for i in range(TAGS):
            samples = w.samples("p", f"P{i:02d}")
            assert len(samples) > PAUSES * (PAUSE_S + 0.15) * 1000 / RPI_MS * 0.5
            assert all(isinstance(s, wire.Sample) and s.gap == samples[0].gap for s in samples)
        assert len(sim.control.connections()) == TAGS

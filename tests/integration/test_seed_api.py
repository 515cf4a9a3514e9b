"""The original in-process API against the simulator process.

* The README's "Full Example" (examples/seed_full_example.py) runs unchanged but for the IP,
  both handlers get the tags' bytes, and nothing is left open at the PLC afterwards.
* Stopping every consumer and starting one again right away raises nothing and data flows.
* datasize: optional, and a wrong one names the right value; REAL 50.0 arrives as b'\\x00\\x00HB';
  the slot is honoured; an unknown tag fails Start() with the controller's reason.

Simulators on 127.62.5.x (their default TCP/UDP ports on their own addresses); the API's worker
binds a free UDP port (PYCONPRO_UDP_PORT=0 / Connection(udp_port=0)).
"""

from __future__ import annotations

import ast
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.simulator.testing import SimulatorProcess, start_simulator
from pyconpro.workers.process import regex_ready, spawn

from pyconpro import CommError, Connection, ConsumerHint, DatasizeError, TagSample
from tests.support.leaks import alive

ROOT = Path(__file__).resolve().parents[2]
SEED_TAGS = ROOT / "examples" / "sim-seed-tags.toml"
FULL_EXAMPLE = ROOT / "examples" / "seed_full_example.py"
WAIT = 10.0  # every wait below has this timeout


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with start_simulator("127.62.5.3", tcp_port=44818, udp_port=2222, config=SEED_TAGS) as p:
        yield p


@pytest.fixture
def con() -> Iterator[Connection]:
    c = Connection(udp_port=0)
    c.Start()
    yield c
    c.Close()


def test_full_example_runs_unchanged_but_for_the_ip() -> None:
    address = "127.62.5.2"
    source = FULL_EXAMPLE.read_text()
    assert source.count('"127.0.0.2"') == 1
    with start_simulator(address, tcp_port=44818, udp_port=2222, config=SEED_TAGS) as sim:
        proc = subprocess.run(
            [sys.executable, "-c", source.replace('"127.0.0.2"', f'"{address}"')],
            check=False, capture_output=True, text=True, timeout=60, cwd=ROOT,
            env=dict(os.environ, PYCONPRO_UDP_PORT="0"))
        assert proc.returncode == 0, proc.stderr
        leftover = sim.control.connections()
    assert leftover == []  # both connections were closed at the PLC
    test, test2 = [], []
    for line in proc.stdout.splitlines():
        if line.endswith(" 1 2"):
            test2.append(ast.literal_eval(line[:-4]))
        else:
            test.append(ast.literal_eval(line))
    # 10 s at an RPI of 1 s: about ten samples each (allow for start-up and scheduling)
    assert 6 <= len(test) <= 12 and 6 <= len(test2) <= 12, proc.stdout
    for samples, start in ((test, 0), (test2, 1000)):
        assert all(isinstance(b, bytes) and len(b) == 4 for b in samples)  # DINT tag bytes
        values = [struct.unpack("<i", b)[0] for b in samples]
        assert values == sorted(values) and values[0] >= start and values[-1] > values[0]


def test_stop_all_then_start_again_right_away(sim: SimulatorProcess, con: Connection) -> None:
    plc = con.addPLC(sim.address, slot=0)
    got = {"test": threading.Event(), "test2": threading.Event()}
    samples: list[TagSample] = []

    def handler(s: TagSample) -> None:
        samples.append(s)
        got[s.tag].set()

    c = plc.addConsumer(ConsumerHint(tag="test", datasize=6, rpi=50, otrpi=50), handler,
                        sample=True)
    c2 = plc.add_consumer(ConsumerHint(tag="test2", rpi=50), handler, sample=True)
    c.Start()
    c2.start()
    assert got["test"].wait(WAIT) and got["test2"].wait(WAIT)
    c.Stop()
    c2.Stop()
    got["test"].clear()
    c.Start()  # right away: the old connection may still be closing at the PLC
    assert got["test"].wait(WAIT)
    assert c.state == "RUNNING"
    s = samples[-1]
    assert s.tag == "test" and s.type_name == "DINT" and isinstance(s.value, int)
    assert struct.unpack("<i", s.raw)[0] == s.value and s.time.year >= 2024
    c.Stop()
    con.Join(WAIT)
    assert c.state == "CLOSED"


def test_real_bytes_exactly_as_before(sim: SimulatorProcess, con: Connection) -> None:
    plc = con.add_plc(sim.address)
    received: list[bytes] = []
    done = threading.Event()

    def handler(data: bytes, tag: str, *, sink: list[bytes]) -> None:
        assert tag == "level"
        sink.append(data)
        done.set()

    c = plc.addConsumer(ConsumerHint(tag="level", rpi=50), handler, args=("level",),
                        kwargs={"sink": received})
    c.Start()
    assert done.wait(WAIT)
    c.Stop()
    assert received[0] == b"\x00\x00HB"


def test_wrong_datasize_names_the_right_value(sim: SimulatorProcess, con: Connection) -> None:
    plc = con.addPLC(sim.address, slot=0)
    c = plc.addConsumer(ConsumerHint(tag="test", datasize=4, rpi=100), lambda d: None)
    with pytest.raises(DatasizeError, match=r"datasize=4 is wrong for tag test \(DINT, 4 "
                                            r"bytes\): use datasize=6"):
        c.Start()
    with pytest.raises(CommError, match="not in the controller's tag list"):
        plc.addConsumer(ConsumerHint(tag="nosuch", datasize=6), lambda d: None).Start()


def test_unknown_tag_fails_start_with_the_controllers_reason(sim: SimulatorProcess,
                                                            con: Connection) -> None:
    c = con.addPLC(sim.address).addConsumer(ConsumerHint(tag="nosuch", rpi=100), print)
    with pytest.raises(CommError, match="nosuch"):
        c.Start()


def test_the_slot_is_honoured(con: Connection) -> None:
    with start_simulator("127.62.5.4", tcp_port=44818, udp_port=2222, config=SEED_TAGS,
                         extra_args=["--slot", "2"]) as sim:
        done = threading.Event()
        c = con.addPLC(sim.address, slot=2).addConsumer(
            ConsumerHint(tag="test", datasize=6, rpi=50), lambda d: done.set())
        c.Start()
        assert done.wait(WAIT)
        c.Stop()
        con.Join(WAIT)


CHILD = """
import sys, threading
from pyconpro import Connection, ConsumerHint
con = Connection(udp_port=0); con.Start()
got = threading.Event()
c = con.addPLC(sys.argv[1]).addConsumer(ConsumerHint(tag="test", rpi=50), lambda d: got.set())
c.Start(); got.wait(10)
print([w.proc.pid for w in con._workers.values()][0], flush=True)
threading.Event().wait(60)
"""


def test_the_worker_stops_and_closes_when_the_user_process_dies(sim: SimulatorProcess) -> None:
    # its first line is the worker's pid, once a sample arrived
    child = spawn([sys.executable, "-c", CHILD, sim.address],
                  ready=regex_ready(r"^(?P<worker>\d+)$"), ready_timeout_s=60)
    try:
        worker_pid = int(child.ready["worker"])
        assert len(sim.control.connections()) == 1
        child.kill()  # no Close(), no atexit: only the parent-death signal is left
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and alive(worker_pid):
            time.sleep(0.05)
        assert not alive(worker_pid)
        assert sim.control.connections() == []  # it sent Forward_Close on its way out
    finally:
        child.kill()  # when it is still running; reaps it and closes the pipe


# -- Start() when it cannot run: what the caller gets and what the log shows -------------------


def test_a_taken_udp_port_names_the_api_parameter() -> None:
    """A `pyconpro run` (here: a socket of ours) holds the class-1 port: Start() raises a
    CommError that says so and names Connection(udp_port=...), and Close() is clean."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        con = Connection(udp_port=port, local_address="127.0.0.1")
        con.Start()
        c = con.addPLC("127.62.5.98").addConsumer(ConsumerHint(tag="test"), print)
        with pytest.raises(CommError) as info:
            c.Start()
        con.Close()  # nothing half-made left to trip over
    message = str(info.value)
    assert f"cannot bind UDP 127.0.0.1:{port}: the port is taken" in message
    assert "Connection(udp_port=0)" in message and "--udp-port" not in message


def test_an_unreachable_plc_start_returns_with_the_cause_readable() -> None:
    """Nothing listens on the PLC's address: Start() returns after start_timeout (the worker
    keeps retrying) and c.failure says why it is not running."""
    with Connection(udp_port=0, start_timeout=2.0) as con:
        c = con.addPLC("127.62.5.97").addConsumer(ConsumerHint(tag="test"), print)
        c.Start()
        assert c.state != "RUNNING"
        assert c.failure is not None
        assert "127.62.5.97" in c.failure and "refused" in c.failure, c.failure


def test_a_refused_tag_raises_without_hex_dumps_in_the_log(tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]
                                                           ) -> None:
    """A tag that exists but is not produced: a clean CommError; the worker's flight recorder
    dump is logged at DEBUG only (the API's worker logs WARNING and up by default)."""
    tags = tmp_path / "tags.toml"
    tags.write_text('[[tags]]\nname = "plain"\ntype = "DINT"\nvalue = 7\n')
    with start_simulator("127.62.5.6", tcp_port=44818, udp_port=2222, config=tags) as sim, \
            Connection(udp_port=0) as con:
        c = con.addPLC(sim.address).addConsumer(ConsumerHint(tag="plain", rpi=100), print)
        with pytest.raises(CommError, match="plain"):
            c.Start()
        assert c.state == "FAILED"
    err = capfd.readouterr().err
    assert "flight recorder" not in err

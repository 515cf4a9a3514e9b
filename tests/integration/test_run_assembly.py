"""``pyconpro run`` with a generic adapter: a config whose only ``[[plc]]`` is the simulator in
adapter mode (``pyconpro sim --adapter plain``, OpENer's assemblies), with no slot and two
``[[plc.assembly]]`` entries. The input-only one reaches the SQLite sink decoded through its
declared layout; the exclusive owner's output image, published by this test into the bus,
reaches the simulator's output assembly 150 in run mode, and ``pyconpro status`` says whether
it is fed. The worker asks the device nothing but the Connection Manager.

Real processes on loopback: the simulator on 127.76.N.2 (TCP 44818: the config file has no TCP
port key), the worker on 127.76.N.1, bus and control sockets as ``ipc://`` files in the test's
temporary directory. Every wait has a deadline; every process is stopped by PID.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from pyconpro.acquisition import wire
from pyconpro.workers.process import Child, spawn

from pyconpro.status_cli import request
from tests.support.leaks import alive
from tests.support.ports import free_subnet, free_udp_port
from tests.support.wait import wait_for

simulator_testing = pytest.importorskip("pyconpro.simulator.testing")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30.0
IMAGE = bytes(range(0x41, 0x41 + 32))  # assembly 150 is 32 bytes


def config(tmp: Path, net: int, sim: Any, worker_port: int) -> str:
    return f"""
[bus]
endpoint = "ipc://{tmp}/bus"
control_base = "ipc://{tmp}/ctl"
[worker]
udp_port = {worker_port}
stats_interval_s = 1
[supervisor]
start_s = 0.5
backoff_initial_s = 0.2
backoff_max_s = 1
stop_timeout_s = 15

[[plc]]
name = "io"
address = "127.76.{net}.2"
local_address = "127.76.{net}.1"
udp_port = {sim.udp_port}
rpi_ms = 20
multiplier = 32

  [[plc.assembly]]
  name = "inputs"
  connection = "input_only"
  input = 100
  output = 152
  config = 151
  layout = [{{name = "count", type = "DINT"}}, {{name = "rest", type = "SINT[28]"}}]

  [[plc.assembly]]
  name = "drive"
  connection = "exclusive_owner"
  input = 100
  output = 150
  config = 151

[[sink]]
kind = "sqlite"
name = "db"
path = "out.sqlite3"
flush_interval_s = 0.2
"""


class Run:
    """``python -m pyconpro.cli run CONFIG`` as a child of the test."""

    def __init__(self, tmp: Path, text: str) -> None:
        self.tmp = tmp
        path = tmp / "pipeline.toml"
        path.write_text(text)
        self.log = tmp / "run.log"
        self.control = f"ipc://{tmp}/ctl-supervisor"
        self.db = tmp / "out.sqlite3"
        self.proc: Child = spawn([sys.executable, "-m", "pyconpro.cli", "run", str(path)],
                                 stdout=self.log, stderr=self.log, cwd=REPO)
        self.child_pids: set[int] = set()

    def status(self) -> dict[str, Any]:
        st = request(self.control, {"op": "status"}, 5.0)
        assert st is not None and st.get("ok"), f"no status; log:\n{self.log_text()}"
        self.child_pids |= {c["pid"] for c in st["children"] if c["pid"]}
        return st

    def consumer(self, key: str) -> dict[str, Any]:
        for w in self.status().get("workers", {}).values():
            for c in w.get("consumers") or []:
                if c.get("key") == key:
                    return dict(c)
        return {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # schema not created yet
            return []
        finally:
            con.close()

    def status_screen(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "pyconpro.cli", "status", "--once", "--control", self.control],
            check=False, capture_output=True, text=True, timeout=30, cwd=REPO,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    def stop(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"pyconpro run did not stop; log:\n{self.log_text()}") from None


@pytest.fixture
def net() -> int:
    return free_subnet(76)


@pytest.fixture
def sim(net: int) -> Iterator[Any]:
    s = simulator_testing.start_simulator(f"127.76.{net}.2", tcp_port=44818,
                                          extra_args=["--adapter", "plain"])
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def run(net: int, sim: Any, tmp_path: Path) -> Iterator[Run]:
    port = free_udp_port(f"127.76.{net}.1")
    r = Run(tmp_path, config(tmp_path, net, sim, port))
    try:
        yield r
    finally:
        r.proc.kill()  # when it is still running; reaps it


def out150(sim: Any) -> dict[str, Any]:
    return next(a for a in sim.control.status()["assemblies"] if a["instance"] == 150)


def test_input_assembly_rows_decoded_and_the_output_image_from_the_bus(
    sim: Any, run: Run
) -> None:
    # Input only, through its layout: rows in the SQLite sink.
    def rows() -> list[tuple[Any, ...]]:
        return run.query("SELECT value_json, raw, type FROM samples WHERE plc='io' AND"
                         " tag='inputs' ORDER BY id")

    got = wait_for(lambda: len(r := rows()) >= 10 and r, "10 rows of io/inputs", WAIT_S)
    values = [json.loads(v) for v, _, _ in got]
    assert all(set(v) == {"count", "rest"} and len(v["rest"]) == 28 for v in values)
    counts = [v["count"] for v in values]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    assert all(int.from_bytes(raw[:4], "little", signed=True) == v["count"]
               for (_, raw, _), v in zip(got, values, strict=True))
    assert {t for _, _, t in got} == {"Assembly_inputs"}

    # The exclusive owner runs and sends zeros in idle mode until someone feeds it.
    wait_for(lambda: run.consumer("io/drive").get("state") == "RUNNING", "io/drive RUNNING",
             WAIT_S)
    assert run.consumer("io/drive")["assembly"]["output"].startswith("not fed")
    wait_for(lambda: out150(sim)["run_idle"] == 0 and out150(sim)["updates"] > 0,
             "idle O->T data at assembly 150", WAIT_S)
    screen = run.status_screen()
    assert "assembly io/drive: exclusive_owner input 100 output 150 config 151; output not fed" \
        in screen

    # A process publishes the output image into the bus (wire-format.md "Output images").
    ctx: zmq.Context[Any] = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(f"ipc://{run.tmp}/ctl-bus-in")
    topic = wire.topic_for_output("io", "drive")
    try:
        def delivered() -> bool:
            pub.send_multipart([topic, wire.encode_output(IMAGE)])
            a = out150(sim)
            return bool(a["data"] == IMAGE.hex() and a["run_idle"] == 1)

        wait_for(delivered, "the image at assembly 150 in run mode", WAIT_S, interval=0.1)
        # The supervisor's status of the worker follows at its next poll.
        wait_for(lambda: run.consumer("io/drive")["assembly"]["output"] == "fed",
                 "io/drive fed in the status", WAIT_S)
        assert "assembly io/drive: exclusive_owner input 100 output 150 config 151; output fed" \
            in run.status_screen()
        before = out150(sim)["updates"]
        wait_for(lambda: out150(sim)["updates"] >= before + 20, "more O->T datagrams", WAIT_S)
        assert out150(sim)["data"] == IMAGE.hex()
    finally:
        pub.close()

    # The drive's input image without a layout: bytes only.
    raw = run.query("SELECT value_json, raw FROM samples WHERE tag='drive' LIMIT 1")
    assert raw and raw[0][0] in (None, "null") and len(raw[0][1]) == 32
    # Nothing but the Connection Manager was asked: no tag listing, templates or clock.
    assert sim.control.status()["controller_requests"] == 0
    assert run.stop() == 0, run.log_text()
    wait_for(lambda: not any(alive(pid) for pid in run.child_pids), "children gone", 10.0)
    closed = {t for (t,) in run.query(
        "SELECT tag FROM events WHERE kind='state' AND state_to='CLOSED'")}
    assert closed == {"inputs", "drive"}

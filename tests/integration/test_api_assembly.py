"""The in-process API with a generic adapter (``pyconpro sim --adapter plain``, OpENer's
assemblies): ``PLC.addAssembly`` with an ``AssemblyHint``; an input-only consumer's handler gets
the layout's fields, an exclusive owner's ``set_output`` reaches the device's output assembly
in run mode, and a wrong size or a consumer without output data is refused with the reason.

The example of docs/api.md ("Generic adapters: addAssembly") runs as written but for the
device's address, against a simulator on the standard ports.

The simulator on 127.77.N.2 (kernel-chosen TCP/UDP ports, or the standard ones for the
example), the API's worker on a free UDP port (``Connection(udp_port=0)``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from pyconpro import AssemblyHint, CommError, Connection, TagSample
from tests.support.ports import free_subnet
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0
IMAGE = bytes(range(100, 132))  # assembly 150 is 32 bytes


@pytest.fixture
def sim() -> Iterator[SimulatorProcess]:
    with start_simulator(f"127.77.{free_subnet(77)}.2", extra_args=["--adapter", "plain"]) as s:
        yield s


def out150(sim: SimulatorProcess) -> dict[str, Any]:
    return next(a for a in sim.control.status()["assemblies"] if a["instance"] == 150)


def test_add_assembly_samples_and_set_output(sim: SimulatorProcess) -> None:
    got: list[TagSample] = []
    lock = threading.Lock()

    def handler(s: TagSample) -> None:
        with lock:
            got.append(s)

    with Connection(udp_port=0) as con:
        plc = con.addPLC(sim.address, slot=None, port=sim.tcp_port, udp_port=sim.udp_port,
                         name="io")
        inputs = plc.addAssembly(AssemblyHint(
            "inputs", "input_only", input=100, output=152, config=151, rpi=10,
            layout=[{"name": "count", "type": "DINT"}]), handler, sample=True)
        inputs.Start()
        assert inputs.state == "RUNNING", inputs.failure
        def moved() -> bool:  # the device's counter steps every 0.1 s: wait for a step
            with lock:
                return len(got) >= 10 and got[-1].value["count"] > got[0].value["count"]

        wait_for(moved, "10 samples and the counter moving", WAIT)
        with lock:
            counts = [s.value["count"] for s in got]
            assert all(len(s.raw) == 32 and s.plc == "io" and s.tag == "inputs" for s in got)
        assert counts == sorted(counts)
        with pytest.raises(CommError, match="only an exclusive-owner"):
            inputs.set_output(IMAGE)

        drive = plc.add_assembly(AssemblyHint("drive", "exclusive_owner", input=100, output=150,
                                              config=151, rpi=10), lambda data: None)
        with pytest.raises(CommError, match="Start"):
            drive.set_output(IMAGE)
        drive.start()
        assert drive.state == "RUNNING", drive.failure
        wait_for(lambda: out150(sim)["updates"] > 0 and out150(sim)["run_idle"] == 0,
                 "idle data before an image", WAIT)
        drive.set_output(IMAGE)
        wait_for(lambda: out150(sim)["data"] == IMAGE.hex() and out150(sim)["run_idle"] == 1,
                 "the image at assembly 150 in run mode", WAIT)
        with pytest.raises(CommError, match="output assembly is 32 bytes"):
            drive.set_output(b"short")
        before = out150(sim)["updates"]
        wait_for(lambda: out150(sim)["updates"] >= before + 10, "more O->T datagrams", WAIT)
        assert out150(sim)["data"] == IMAGE.hex()  # the refused image was not sent
        with pytest.raises(Exception, match="already has a consumer named"):
            plc.addAssembly(AssemblyHint("drive", "input_only", input=100, output=152),
                            lambda data: None)
        drive.Stop()
        inputs.Stop()
        con.Join(WAIT)
        assert (drive.state, inputs.state) == ("CLOSED", "CLOSED")
    wait_for(lambda: not sim.control.status()["connections"], "no connection left open", WAIT)


def test_set_output_with_a_map_of_the_output_layouts_fields(sim: SimulatorProcess) -> None:
    layout: list[dict[str, Any]] = [
        {"name": "speed", "type": "INT"}, {"name": "run", "type": "BOOL"},
        {"name": "fault_reset", "type": "BOOL", "offset": 2, "bit": 7},
        {"name": "limits", "type": "REAL[2]", "offset": 24}]
    with Connection(udp_port=0) as con:
        plc = con.addPLC(sim.address, slot=None, port=sim.tcp_port, udp_port=sim.udp_port,
                         name="io")
        drive = plc.addAssembly(AssemblyHint("drive", "exclusive_owner", input=100, output=150,
                                             config=151, rpi=10, output_layout=layout),
                                lambda data: None)
        drive.Start()
        assert drive.state == "RUNNING", drive.failure
        drive.set_output(IMAGE)  # bytes are still taken
        wait_for(lambda: out150(sim)["data"] == IMAGE.hex(), "the bytes image", WAIT)
        # The fields named are written into the image sent so far; the others keep theirs.
        drive.set_output({"speed": -2, "fault_reset": True, "limits": [1.5, -0.25]})
        want = bytearray(IMAGE)
        want[0:2] = (-2).to_bytes(2, "little", signed=True)
        want[2] |= 0x80
        want[24:32] = bytes.fromhex("0000c03f000080be")
        wait_for(lambda: out150(sim)["data"] == want.hex() and out150(sim)["run_idle"] == 1,
                 "the fields at assembly 150", WAIT)
        drive.set_output({"run": True, "fault_reset": False})
        want[2] = (want[2] | 0x01) & 0x7F
        wait_for(lambda: out150(sim)["data"] == want.hex(), "the BOOL bits changed", WAIT)
        for bad, needle in (({"sped": 1}, "output field 'sped' is not in the output layout"),
                            ({"speed": 40000}, r"40000 does not fit INT; give a whole number"),
                            ({"run": "on"}, r"'run' \(BOOL\).*give true or false")):
            with pytest.raises(CommError, match=needle):
                drive.set_output(bad)
        before = out150(sim)["updates"]
        wait_for(lambda: out150(sim)["updates"] >= before + 10, "more O->T datagrams", WAIT)
        assert out150(sim)["data"] == want.hex()  # the refused maps changed nothing
        drive.Stop()
        con.Join(WAIT)
    wait_for(lambda: not sim.control.status()["connections"], "no connection left open", WAIT)


def test_the_api_doc_example_runs_against_the_simulated_adapter() -> None:
    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    block = doc.split("### Generic adapters: `addAssembly`", 1)[1]
    source = block.split("```python\n", 1)[1].split("```", 1)[0]
    assert source.count('"192.168.1.20"') == 1
    address = f"127.77.{free_subnet(77, (2,), 44818)}.2"
    with start_simulator(address, tcp_port=44818, udp_port=2222,
                         extra_args=["--adapter", "plain"]) as sim:
        env = dict(os.environ, PYCONPRO_UDP_PORT="0", PYCONPRO_LOCAL_ADDRESS="127.0.0.1")
        proc = subprocess.run([sys.executable, "-c", source.replace("192.168.1.20", address)],
                              check=False, capture_output=True, text=True, timeout=60,
                              cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stderr
        values = [line for line in proc.stdout.splitlines() if line.startswith("{'speed': ")]
        assert values and all("'fault': " in v for v in values), proc.stdout
        # bytes(32), then the fields: setpoint (INT) and run (BOOL, bit 0 of byte 2).
        image = (1200).to_bytes(2, "little") + b"\x01" + bytes(29)
        assert out150(sim)["run_idle"] == 1 and out150(sim)["data"] == image.hex()
        wait_for(lambda: not sim.control.status()["connections"], "both closed", WAIT)

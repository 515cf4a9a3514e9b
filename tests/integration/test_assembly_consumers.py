"""Assembly consumers against the simulator's generic-adapter mode (``pyconpro sim --adapter``),
through a real worker process: input only with a declared layout and sizes learned from the
device's 0x0109 replies, the T->O run/idle header taken off, listen only refused (0x0119)
without an owner and opened with one, and an exclusive owner whose output image comes from a
publisher on the bus and reaches the device at the RPI. Addresses 127.61.14.x."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from pyconpro.acquisition import wire
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER = "127.61.14.1"
SIM = "127.61.14.2"
DEADLINE_S = 20.0


def until(what: str, probe: Callable[[], Any], w: WorkerProcess | None = None) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            log = w.log_text()[-3000:] if w is not None else ""
            raise AssertionError(f"no {what} within {DEADLINE_S:g} s\n{log}")
        if w is not None:
            w.poll(0.05)
        else:
            time.sleep(0.05)


def consumer(sim: SimulatorProcess, name: str, **assembly: Any) -> dict[str, Any]:
    return {"plc": "io", "address": sim.address, "port": sim.tcp_port, "udp_port": sim.udp_port,
            "tag": name, "rpi_ms": 10, "multiplier": 32, "assembly": assembly}


def state_of(w: WorkerProcess, key: str) -> dict[str, Any]:
    st = w.control("status")
    return next((c for c in st["consumers"] if f"{c['plc']}/{c['tag']}" == key), {})


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[SimulatorProcess]:
    mode = getattr(request, "param", "plain")
    with start_simulator(SIM, extra_args=["--adapter", mode]) as s:
        yield s


@pytest.mark.parametrize("sim", ["t2o-run-idle"], indirect=True)
def test_input_only_with_layout_learns_sizes_and_strips_run_idle(sim: SimulatorProcess) -> None:
    with start_worker(WORKER, []) as w:
        spec = consumer(sim, "inputs", connection="input_only", input=100, output=152,
                        config=151, to_run_idle=True,
                        layout=[{"name": "count", "type": "DINT"}])
        assert w.control("add", consumer=spec)["ok"]
        until("samples", lambda: len(w.samples("io", "inputs")) >= 20, w)
        samples = w.samples("io", "inputs")
        assert all(len(s.raw) == 32 for s in samples)
        counts = [s.value["count"] for s in samples if isinstance(s.value, dict)]
        assert len(counts) == len(samples)
        assert counts == sorted(counts) and counts[-1] > counts[0]
        rejects = [e for e in w.events("inputs") if e.kind == "reject"]
        assert rejects and "0x0109" in rejects[0].message
        assert "Studio" not in " ".join(e.message for e in w.events("inputs"))


def test_listen_only_waits_for_an_owner_then_runs(sim: SimulatorProcess) -> None:
    with start_worker(WORKER, []) as w:
        listen = consumer(sim, "listen", connection="listen_only", input=100, output=153,
                          config=151, input_size=32)
        assert w.control("add", consumer=listen)["ok"]
        until("the 0x0119 refusal", lambda: any(
            "0x0119" in e.message for e in w.events("listen", "reject")), w)
        assert not w.samples("io", "listen")
        owner = consumer(sim, "input", connection="input_only", input=100, output=152,
                         config=151, input_size=32)
        assert w.control("add", consumer=owner)["ok"]
        until("listen-only samples", lambda: len(w.samples("io", "listen")) >= 5, w)


@pytest.fixture
def pub() -> Iterator[zmq.Socket[bytes]]:
    """A publisher of output images, bound to a free TCP port on 127.0.0.1."""
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind("tcp://127.0.0.1:*")
        yield sock
    finally:
        sock.close()


def owner_worker(pub: zmq.Socket[bytes]) -> WorkerProcess:
    """A worker reading output images from ``pub``."""
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    return start_worker(WORKER, [], extra_args=["--bus-connect", endpoint])


def out150(sim: SimulatorProcess) -> dict[str, Any]:
    """The simulated adapter's output assembly 150 (its data, run/idle, datagrams taken)."""
    return next(a for a in sim.control.status()["assemblies"] if a["instance"] == 150)


def test_exclusive_owner_sends_the_bus_image_at_the_rpi(sim: SimulatorProcess,
                                                        pub: zmq.Socket[bytes]) -> None:
    with owner_worker(pub) as w:
        spec = consumer(sim, "drive", connection="exclusive_owner", input=100, output=150,
                        config=151)
        assert w.control("add", consumer=spec)["ok"]
        until("the connection", lambda: state_of(w, "io/drive").get("state") == "RUNNING",
              w)
        st = state_of(w, "io/drive")
        assert st["assembly"]["output"].startswith("not fed")

        until("idle datagrams at the device", lambda: out150(sim)["run_idle"] == 0)
        image = bytes(range(1, 33))
        topic = wire.topic_for_output("io", "drive")
        until("the image at the device", lambda: (
            pub.send_multipart([topic, wire.encode_output(image)]),
            out150(sim)["data"] == image.hex() and out150(sim)["run_idle"] == 1)[1])
        before = out150(sim)["updates"]
        t0 = time.monotonic()
        until("more datagrams", lambda: out150(sim)["updates"] >= before + 50)
        elapsed = time.monotonic() - t0
        # 50 datagrams at a 10 ms O->T RPI: at least 0.45 s went by (never a burst).
        assert elapsed >= 0.45
        assert state_of(w, "io/drive")["assembly"]["output"] == "fed"
        pub.send_multipart([topic, wire.encode_output(b"short")])
        until("the refusal", lambda: state_of(w, "io/drive")["counters"]
              ["outputs_refused"] >= 1, w)
        assert out150(sim)["data"] == image.hex()
        # A second exclusive owner of the same output assembly: 0x0106, retried.
        assert w.control("add", consumer={**spec, "tag": "drive2"})["ok"]
        until("the ownership conflict", lambda: any(
            "0x0106" in e.message for e in w.events("drive2", "reject")), w)


def test_exclusive_owner_writes_the_fields_of_a_bus_map(sim: SimulatorProcess,
                                                        pub: zmq.Socket[bytes]) -> None:
    with owner_worker(pub) as w:
        spec = consumer(sim, "drive", connection="exclusive_owner", input=100, output=150,
                        config=151, output_size=32, output_layout=[
                            {"name": "speed", "type": "DINT"},
                            {"name": "run", "type": "BOOL"},
                            {"name": "ramp", "type": "REAL", "offset": 28}])
        assert w.control("add", consumer=spec)["ok"]
        until("the connection", lambda: state_of(w, "io/drive").get("state") == "RUNNING",
              w)

        topic = wire.topic_for_output("io", "drive")
        first = wire.encode_output({"speed": -1200, "ramp": 2.5})
        want = (-1200).to_bytes(4, "little", signed=True) + bytes(24) + \
            bytes.fromhex("00002040")
        until("the fields at the device", lambda: (
            pub.send_multipart([topic, first]),
            out150(sim)["data"] == want.hex() and out150(sim)["run_idle"] == 1)[1])
        # Another map names only ``run``: speed and ramp keep their values.
        second = wire.encode_output({"run": True})
        want = want[:4] + b"\x01" + want[5:]
        until("the BOOL added", lambda: (
            pub.send_multipart([topic, second]), out150(sim)["data"] == want.hex())[1])
        # A bad map is refused as a whole, with the field named; the image stays.
        pub.send_multipart([topic, wire.encode_output({"speed": 1, "rmp": 1.0})])
        until("the refusal", lambda: state_of(w, "io/drive")["counters"]
              ["outputs_refused"] >= 1, w)
        until("the error event", lambda: any(
            "output field 'rmp' is not in the output layout" in e.message
            for e in w.events("drive", "error")), w)
        before = out150(sim)["updates"]
        until("more datagrams", lambda: out150(sim)["updates"] >= before + 10)
        assert out150(sim)["data"] == want.hex()
        # The bytes form still works for an assembly with an output layout.
        image = bytes(range(32))
        until("the bytes image", lambda: (
            pub.send_multipart([topic, wire.encode_output(image)]),
            out150(sim)["data"] == image.hex())[1])

"""Wireshark's dissectors (an implementation independent of ours) decode a capture of assembly
traffic between a real worker and the simulator's generic adapter (``--adapter plain``) with no
malformed frame: the Forward_Opens with their 0x0109 size rejects and the sizes learned from
them, an input-only connection (heartbeat O->T), an exclusive owner whose O->T data carries the
run/idle header and the output image published on the bus, and the Forward_Closes.

The simulator uses the standard ports (44818/2222) on its own loopback address so tshark
recognises the traffic without decode-as rules. Addresses 127.61.15.x.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import zmq
from pyconpro.acquisition import wire
from pyconpro.simulator.testing import start_simulator

from tests.integration.test_worker_tshark import _start_capture, _wait_for_marker
from tests.support import tshark
from tests.support.wait import wait_for
from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [pytest.mark.tshark, pytest.mark.slow, pytest.mark.timeout(180)]

SIM = "127.61.15.2"
WORKER = "127.61.15.1"
IMAGE = bytes(range(0xA0, 0xA0 + 32))


def _consumer(sim: Any, name: str, **assembly: Any) -> dict[str, Any]:
    return {"plc": "io", "address": sim.address, "port": sim.tcp_port, "udp_port": sim.udp_port,
            "tag": name, "rpi_ms": 20, "multiplier": 32, "assembly": assembly}


def _running(w: WorkerProcess, key: str) -> bool:
    return any(c.get("key") == key and c.get("state") == "RUNNING"
               for c in w.control("status")["consumers"])


def test_capture_of_assembly_traffic_has_no_malformed_frames(tshark_bin: str) -> None:
    ctx: zmq.Context[Any] = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="pyconpro-cap-") as tmp:
        pcap = Path(tmp) / "assembly.pcapng"
        capture = _start_capture(pcap, SIM)
        try:
            with start_simulator(SIM, tcp_port=44818, udp_port=2222,
                                 extra_args=["--adapter", "plain"]) as sim, \
                    start_worker(WORKER, [], extra_args=[
                        "--bus-connect", f"tcp://127.0.0.1:{port}"]) as w:
                assert w.control("add", consumer=_consumer(
                    sim, "inputs", connection="input_only", input=100, output=152,
                    config=151))["ok"]
                assert w.control("add", consumer=_consumer(
                    sim, "drive", connection="exclusive_owner", input=100, output=150,
                    config=151))["ok"]
                wait_for(lambda: _running(w, "io/inputs") and _running(w, "io/drive"),
                         "both connections RUNNING", 20)
                topic = wire.topic_for_output("io", "drive")

                def delivered() -> bool:
                    pub.send_multipart([topic, wire.encode_output(IMAGE)])
                    a = next(a for a in sim.control.status()["assemblies"]
                             if a["instance"] == 150)
                    return bool(a["data"] == IMAGE.hex() and a["run_idle"] == 1)

                wait_for(delivered, "the image at assembly 150", 20, interval=0.1)
                assert w.stop() == 0
            _wait_for_marker(pcap, SIM)
        finally:
            capture.stop(20)
            pub.close()
        tshark.assert_capture_clean(pcap)
        frames = tshark.dissect(pcap)
        services = {int(v, 0) for ff in frames.values() for v in ff.values("cip.service")}
        assert {0x54, 0xD4, 0x4E, 0xCE} <= services  # Forward_Open / _Close and their replies
        ext = {int(v, 0) for ff in frames.values() for v in ff.values("cip.cm.ext_status")}
        assert 0x0109 in ext  # the sizes were left out: the device said them
        # The accepted Forward_Opens carry the learned sizes: 2 + 32 T->O; O->T 2 (heartbeat)
        # and 2 + 4 + 32 (sequence count, run/idle header, image).
        sizes = {int(v, 0) for ff in frames.values() for v in ff.values("cip.cm.fwo.consize")}
        assert {34, 2, 38} <= sizes
        io = [ff for ff in frames.values() if "enip.cpf.sai.connid" in ff]
        assert len(io) > 20
        headers = [ff for ff in io if "cip.32bitheader" in ff]
        assert headers, "no O->T datagram decoded with its run/idle header"
        images = {tshark.parse_bytes(v) for ff in headers for v in ff.values("cipio.data")}
        assert IMAGE in images

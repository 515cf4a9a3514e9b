"""Wireshark's dissectors (an implementation independent of ours) decode a capture of real
worker <-> simulator traffic with no malformed frame: RegisterSession, symbol/template listing,
Forward_Open with a T->O sockaddr item, replies, class-1 data, heartbeats, Forward_Close and
UnRegisterSession.

The simulator uses the standard ports (44818/2222) on its own unusual loopback address so tshark
recognises the traffic without decode-as rules; the worker uses a free UDP port (so it sends the
T->O sockaddr item).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest
from pyconpro.acquisition import wire
from pyconpro.simulator.testing import start_simulator
from pyconpro.workers.process import Child

from tests.support import tshark
from tests.support.requirements import skip_or_fail
from tests.workers.worker_process import start_worker

pytestmark = [pytest.mark.tshark, pytest.mark.slow, pytest.mark.timeout(180)]

SIM = "127.61.9.2"
WORKER = "127.61.9.1"


def _start_capture(path: Path, host: str) -> Child:
    if os.geteuid() != 0:
        skip_or_fail(
            "capture", "capturing on the loopback interface needs root (or dumpcap capabilities)"
        )
    return tshark.start_capture(
        [tshark.require_tshark(), "-n", "-i", "lo", "-f", f"host {host}", "-w", str(path)], 20
    )


def _wait_for_marker(path: Path, host: str, timeout: float = 15.0) -> None:
    """Send a unique datagram to ``host`` and wait until the capture file holds it: packets are
    captured in order, so everything sent before it is in the file too."""
    marker = os.urandom(16)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while time.monotonic() < deadline:
            s.sendto(marker, (host, 9))
            try:
                if marker in path.read_bytes():
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)  # poll interval of a wait-until loop, not a timing assumption
    pytest.fail("the capture never showed the marker datagram")


def test_capture_of_worker_traffic_has_no_malformed_frames(tshark_bin: str) -> None:
    with tempfile.TemporaryDirectory(prefix="pyconpro-cap-") as tmp:
        pcap = Path(tmp) / "worker.pcapng"
        capture = _start_capture(pcap, SIM)
        try:
            with start_simulator(
                SIM, tcp_port=44818, udp_port=2222, extra_args=["--seq16", "every"]
            ) as sim:
                base = (
                    f"plc=a,address={sim.address},port={sim.tcp_port},"
                    f"udp_port={sim.udp_port},rpi_ms=50"
                )
                with start_worker(
                    WORKER,
                    [f"{base},tag=Counter", f"{base},tag=Motor", f"{base},tag=Setpoint,type=REAL"],
                ) as w:
                    w.wait_state("a/Counter", "RUNNING", 10)
                    w.wait_state("a/Motor", "RUNNING", 10)
                    w.wait_for(
                        lambda m: isinstance(m, wire.Sample) and m.tag == "Motor",
                        5,
                        "a Motor sample",
                    )
                    w.collect(0.5)
                    assert w.stop() == 0
            _wait_for_marker(pcap, SIM)
        finally:
            capture.stop(20)
        frames = tshark.dissect(pcap)
        tshark.assert_capture_clean(pcap)
        commands = [int(v, 0) for ff in frames.values() for v in ff.values("enip.command")]
        assert {0x65, 0x6F, 0x66} <= set(commands)  # register, SendRRData, unregister
        services = {int(v, 0) for ff in frames.values() for v in ff.values("cip.service")}
        assert {0x54, 0xD4, 0x4E, 0xCE, 0x55, 0xD5} <= services
        # the Forward_Open for Setpoint was refused: Wireshark shows the extended status
        ext = {int(v, 0) for ff in frames.values() for v in ff.values("cip.cm.ext_status")}
        assert 0x031F in ext
        io = [ff for ff in frames.values() if "enip.cpf.sai.connid" in ff]
        assert len(io) > 20  # class-1 data and heartbeats

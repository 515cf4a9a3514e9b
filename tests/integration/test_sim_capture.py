"""A capture of real traffic between our codec and the simulator, decoded by tshark
(Wireshark's dissectors, independent of our encoders): no malformed frame, no expert error,
and the fields we care about read back as we sent them.

The simulator runs on its own address with the standard ports (44818 / 2222) so that tshark
dissects by port without decode-as; the consumer uses its own loopback address (TCP source
and UDP 2222), so a concurrent run of other tests cannot collide with it. ``dumpcap`` records
``lo`` with a capture filter on that /24.

``Capture`` below starts dumpcap (``tests/support/tshark.start_capture``: it returns once dumpcap
captures) and stops it once a sentinel datagram is in the file.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.acquisition import cip, class1, cm, encap, epath
from pyconpro.acquisition.encap import Command
from pyconpro.simulator.testing import EncapClient, SimulatorProcess, start_simulator

from tests.support import pcap
from tests.support import tshark as ts
from tests.support.clients import class3_fo
from tests.support.requirements import skip_or_fail

pytestmark = [pytest.mark.timeout(120), pytest.mark.tshark]

NET = "127.0.94"
SIM = f"{NET}.2"
ME = f"{NET}.1"
START = b"pyconpro-capture-start"
SENTINEL = b"pyconpro-capture-end"

TAGS = """
[[tags]]
name = "Fixed"
type = "DINT"
produced = true
max_consumers = 4
value = 42

[[tags]]
name = "Shared"
type = "REAL[3]"
produced = true
max_consumers = 4
value = [1.0, 2.0, 3.0]

[[tags]]
name = "Limited"
type = "DINT"
produced = true
rpi_min_us = 10000
rpi_max_us = 100000
default_rpi_us = 20000
"""


class Capture:
    """dumpcap on ``lo`` with a capture filter, into a pcap file."""

    def __init__(self, path: Path, capture_filter: str) -> None:
        exe = shutil.which("dumpcap")
        if exe is None:
            skip_or_fail("capture", "dumpcap is not installed (apt-get install tshark)")
        self.path = path
        self.proc = ts.start_capture(
            [exe, "-q", "-P", "-i", "lo", "-f", capture_filter, "-w", str(path)], 15
        )

    def sync(self, marker: bytes, to: tuple[str, int], source: str) -> None:
        """Send ``marker`` datagrams until one is in the file: dumpcap announces itself before
        its filter is live and flushes its file on its own schedule, so both ends of the
        conversation are fenced this way."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                s.sendto(marker, to)
                if self._has(marker):
                    return
                time.sleep(0.05)  # polling the file dumpcap writes, not timing a result
        pytest.fail(f"the marker datagram {marker!r} never reached the capture file")

    def _has(self, marker: bytes) -> bool:
        try:
            return any(p.payload == marker for p in pcap.read_packets(self.path))
        except (pcap.PcapError, FileNotFoundError, struct.error):
            return False  # dumpcap is in the middle of writing a record

    def stop(self) -> None:
        self.proc.stop(10)


@pytest.fixture(scope="module")
def capture_file(tmp_path_factory: pytest.TempPathFactory, tshark_bin: str) -> Iterator[Path]:
    """Run the whole conversation once under capture; tests then read the file."""
    if os.geteuid() != 0:
        skip_or_fail("capture", "capturing on lo needs root (or dumpcap capabilities)")
    d = tmp_path_factory.mktemp("capture")
    (d / "tags.toml").write_text(TAGS)
    path = d / "sim.pcap"
    sim = start_simulator(SIM, tcp_port=44818, udp_port=2222, config=d / "tags.toml",
                          extra_args=["--initial-watchdog", "0.5"])
    try:
        cap = Capture(path, f"net {NET}.0/24")
        try:
            cap.sync(START, (SIM, 9), ME)
            _conversation(sim)
            cap.sync(SENTINEL, (SIM, 9), ME)
        finally:
            cap.stop()
    finally:
        sim.close()
    yield path


def _fo(
    tag: str, n: int, serial: int, *, multicast: bool = False, **changes: object
) -> cm.ForwardOpenRequest:
    import dataclasses

    req = cm.produced_tag_forward_open(
        tag=tag,
        tag_bytes=n,
        to_rpi_us=20_000,
        ot_rpi_us=20_000,
        connection_serial=serial,
        vendor_id=0x0FAB,
        originator_serial=0x5EED0001,
        to_connection_id=0x7E570000 + serial,
        multicast=multicast,
        timeout_multiplier=2,
    )
    return dataclasses.replace(req, **changes) if changes else req  # type: ignore[arg-type]


def _conversation(sim: SimulatorProcess) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((ME, 2222))
    udp.settimeout(2)
    mc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with EncapClient(SIM, 44818, source=ME) as c:
            c.request(Command.LIST_IDENTITY)
            c.request(Command.LIST_SERVICES)
            c.send(Command.NOP)
            # P2P produced tag, data both ways, then Forward_Close.
            req = _fo("Fixed", 4, 1)
            ok, _ = c.forward_open(req)
            assert isinstance(ok, cm.ForwardOpenSuccess)
            for seq in range(1, 11):
                data, _ = udp.recvfrom(2048)
                assert class1.Class1Datagram.decode(data).data == struct.pack("<i", 42)
                udp.sendto(class1.heartbeat(ok.ot_connection_id, seq), (SIM, 2222))
            assert isinstance(c.forward_close(cm.forward_close_for(req)), cm.ForwardCloseSuccess)
            # Multicast: the reply carries the group in a T->O sockaddr item.
            mreq = _fo("Shared", 12, 2, multicast=True)
            mok, items = c.forward_open(mreq)
            assert isinstance(mok, cm.ForwardOpenSuccess)
            group = items[-1].sockaddr.address  # type: ignore[union-attr]
            mc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            mc.bind((group, 2222))
            mc.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton(ME),
            )
            mc.settimeout(2)
            for seq in range(1, 6):
                mc.recvfrom(2048)
                udp.sendto(class1.heartbeat(mok.ot_connection_id, seq), (SIM, 2222))
            c.forward_close(cm.forward_close_for(mreq))
            # Rejections with and without additional words.
            size = cm.NetworkParameters(
                cm.ConnectionType.POINT_TO_POINT, cm.Priority.SCHEDULED, False, 10
            )
            for bad in (
                _fo("Fixed", 4, 3, to_params=size),  # 0x0109 + wanted size
                _fo("Nope", 4, 4),  # 0x031F
                _fo("Limited", 4, 5, to_rpi=5_000),  # 0x0112 + 5 words
                _fo(
                    "Fixed",
                    4,
                    6,
                    path=epath.produced_tag_connection_path(
                        "Fixed", 0, epath.ElectronicKey(vendor_id=9)
                    ),
                ),  # 0x0114
                _fo("Fixed", 4, 7, path=epath.produced_tag_connection_path("Fixed", 3)),  # 0x0312
            ):
                res, _ = c.forward_open(bad)
                assert isinstance(res, cm.ConnectionFailure)
            dup = _fo("Fixed", 4, 8)
            c.forward_open(dup)
            res, _ = c.forward_open(dup)  # 0x0100
            assert isinstance(res, cm.ConnectionFailure)
            c.forward_close(cm.forward_close_for(dup))
            res2 = c.forward_close(cm.forward_close_for(_fo("Fixed", 4, 9)))  # 0x0107
            assert isinstance(res2, cm.ConnectionFailure)
            # Class 3 like pycomm3: Large_Forward_Open, connected Get_Attributes_All, close.
            c3 = class3_fo(originator_serial=0x10090001)
            ok3, _ = c.forward_open(c3)
            assert isinstance(ok3, cm.ForwardOpenSuccess)
            c.send_unit(ok3.ot_connection_id, 1, bytes.fromhex("01022001 2401"))
            c.forward_close(cm.forward_close_for(c3))
            # An unconnected request through Unconnected_Send, as pycomm3 reads the identity.
            us = cip.UnconnectedSend(bytes.fromhex("01022001 2401"), bytes.fromhex("0100"))
            c.send_rr(cip.Request(0x52, epath.CONNECTION_MANAGER_PATH, us.encode()).encode())
            # Encapsulation error reply (24 bytes), then unregister.
            c.request(
                Command.SEND_RR_DATA,
                encap.send_rr_data(b"\x01\x02\x20\x01\x24\x01"),
                session=c.session + 1,
            )
            c.send(Command.UNREGISTER_SESSION)
            assert c.sock.recv(10) == b""
    finally:
        udp.close()
        mc.close()


# --------------------------------------------------------------------------- checks


def test_capture_is_clean(capture_file: Path) -> None:
    ts.assert_capture_clean(capture_file)


def test_capture_has_everything(capture_file: Path) -> None:
    frames = ts.dissect(capture_file)
    cm_ext = [v for f in frames.values() for v in f.int_values("cip.cm.ext_status")]
    assert {0x0109, 0x031F, 0x0112, 0x0114, 0x0312, 0x0100, 0x0107} <= set(cm_ext)
    io = [f for f in frames.values() if "cipio" in f.layers or "enip.cpf.sai.connid" in f]
    assert len(io) >= 25  # data and heartbeats of the P2P and multicast connections
    commands = {v for f in frames.values() for v in f.int_values("enip.command")}
    assert {0x63, 0x04, 0x00, 0x65, 0x66, 0x6F, 0x70} <= commands
    assert 0x64 in {v for f in frames.values() for v in f.int_values("enip.status")}


def test_tshark_reads_the_forward_open_replies_as_we_sent_them(capture_file: Path) -> None:
    frames = ts.dissect(capture_file)
    # The size rejection carries the wanted size as its second additional-status word.
    size_frames = [f for f in frames.values() if 0x0109 in f.int_values("cip.cm.ext_status")]
    assert size_frames
    assert size_frames[0].int_values("cip.addstat") == [0x0109, 6]
    rpi_frames = [f for f in frames.values() if 0x0112 in f.int_values("cip.cm.ext_status")]
    assert rpi_frames and rpi_frames[0].int_values("cip.addstat") == [
        0x0112,
        0x0100,
        20_000,
        0,
        20_000,
        0,
    ]
    # Every success reply shows the APIs we granted.
    apis = [v for f in frames.values() for v in f.int_values("cip.cm.toapi")]
    assert 20_000 in apis and 2_113_537 in apis
    # The multicast reply's T->O sockaddr item names a group in 239.192.0.0/16.
    addrs = [v for f in frames.values() for v in f.values("enip.sinaddr")]
    assert any(a.startswith("239.192.") for a in addrs)

"""Two interfaces, two subnets, two simulated PLCs, two workers on the same host (ARCHITECTURE.md
"one I/O worker per interface"; protocol.md 6.7 "join on the interface that faces the PLC").

Topology, built and removed by the test (network namespaces and veth pairs, names unique per
run):

    ns HOST: h1 10.201.1.1/24 ----veth---- p1 10.201.1.2/24 : ns PLC1 (simulator 1)
             h2 10.201.2.1/24 ----veth---- p2 10.201.2.2/24 : ns PLC2 (simulator 2)

Both workers run in HOST and both use UDP port 2222, as in production. Both simulators have host
id 2 on their /24, so both put multicast data on the *same* group (239.192.1.32, protocol.md
6.7): each worker must receive its own PLC's unicast and multicast traffic and nothing of the
other's, which the worker's demultiplexer would count as unknown-id / wrong-source drops.
The bus and control sockets are ipc:// (shared across network namespaces).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyconpro.workers.process import Child, SpawnError, regex_ready, source_env, spawn_with_log

from tests.support.requirements import skip_or_fail
from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(120)]

_ROOT = Path(__file__).resolve().parent.parent.parent
_READY = regex_ready(r"READY tcp=(?P<addr>[\d.]+):(?P<tcp>\d+) udp=[\d.]+:(?P<udp>\d+)")
GROUP = "239.192.1.32"


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


@dataclass
class Net:
    host: str
    plcs: tuple[str, str]


@pytest.fixture
def net() -> Iterator[Net]:
    if os.geteuid() != 0:
        skip_or_fail(
            "netns",
            "network-namespace test needs root (ip netns add / veth); run as root or"
            " in CI, which runs the suite as root",
        )
    if shutil.which("ip") is None:
        skip_or_fail("netns", "iproute2 ('ip') is not installed; apt-get install iproute2")
    tag = f"pcp{os.getpid() % 100000}"
    host, plc1, plc2 = f"{tag}h", f"{tag}a", f"{tag}b"
    created: list[str] = []
    try:
        for ns in (host, plc1, plc2):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i, plc in ((1, plc1), (2, plc2)):
            h, p = f"{tag}h{i}", f"{tag}p{i}"
            _ip("link", "add", h, "netns", host, "type", "veth", "peer", "name", p, "netns", plc)
            _ip("-n", host, "addr", "add", f"10.201.{i}.1/24", "dev", h)
            _ip("-n", plc, "addr", "add", f"10.201.{i}.2/24", "dev", p)
            _ip("-n", host, "link", "set", h, "up")
            _ip("-n", plc, "link", "set", p, "up")
            _ip("-n", plc, "route", "add", "224.0.0.0/4", "dev", p)
    except RuntimeError as exc:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=20)
        if "Operation not permitted" in str(exc):
            skip_or_fail("netns", f"cannot create network namespaces here: {exc}")
        raise
    try:
        yield Net(host, (plc1, plc2))
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=20)


@dataclass
class Sim:
    proc: Child  # from spawn_with_log: its stderr is the log, deleted by close()
    address: str
    tcp_port: int
    udp_port: int


def start_sim_in(ns: str, address: str, seed: int) -> Sim:
    """The simulator in network namespace ``ns`` (no control channel: the test process is not
    in that namespace, so ``simulator.testing.start_simulator`` cannot ping it)."""
    cmd = [
        "ip",
        "netns",
        "exec",
        ns,
        sys.executable,
        "-m",
        "pyconpro.simulator",
        "--address",
        address,
        "--netmask",
        "255.255.255.0",
        "--seq16",
        "every",
        "--no-identity-delay",
        "--seed",
        str(seed),
    ]
    try:
        proc = spawn_with_log(cmd, log_prefix="pyconpro-netns-sim-", ready=_READY, cwd=_ROOT,
                              env=source_env(_ROOT), ready_timeout_s=15)
    except SpawnError as err:
        raise AssertionError(f"simulator in {ns} did not start: {err}") from None
    m = proc.ready
    return Sim(proc, m["addr"], int(m["tcp"]), int(m["udp"]))


def stop_sim(sim: Sim) -> None:
    sim.proc.close(10)


def consumers_for(sim: Sim, plc: str) -> list[str]:
    base = f"plc={plc},address={sim.address},port={sim.tcp_port},udp_port={sim.udp_port}"
    return [f"{base},tag=Counter,rpi_ms=20", f"{base},tag=Sine,rpi_ms=20,transport=multicast"]


def test_two_workers_two_interfaces_each_gets_only_its_own_traffic(net: Net) -> None:
    sims = [start_sim_in(net.plcs[0], "10.201.1.2", 1), start_sim_in(net.plcs[1], "10.201.2.2", 2)]
    workers: list[WorkerProcess] = []
    tmp = tempfile.mkdtemp(prefix="pyconpro-netns-")
    try:
        for i, (sim, plc) in enumerate(zip(sims, ("plc1", "plc2"), strict=True), start=1):
            workers.append(
                start_worker(
                    f"10.201.{i}.1",
                    consumers_for(sim, plc),
                    udp_port=2222,
                    prefix=["ip", "netns", "exec", net.host],
                    pub=f"ipc://{tmp}/w{i}.pub",
                    control=f"ipc://{tmp}/w{i}.ctl",
                )
            )
        for w, plc in zip(workers, ("plc1", "plc2"), strict=True):
            w.wait_state(f"{plc}/Counter", "RUNNING", 15)
            w.wait_state(f"{plc}/Sine", "RUNNING", 15)
        for w in workers:
            w.messages.clear()
            w.collect(1.0)
        for w, plc, other in zip(workers, ("plc1", "plc2"), ("plc2", "plc1"), strict=True):
            assert len(w.samples(plc, "Counter")) >= 20
            assert len(w.samples(plc, "Sine")) >= 20  # multicast arrived
            assert not w.samples(other)
            status = w.control("status")
            assert status["groups"] == [GROUP]  # same group on both sides
            c = status["counters"]
            # every datagram this worker's sockets received was its own PLC's (a connection
            # that reopened on a busy machine leaves its old id's last datagrams unknown)
            reopened = any(s["counters"]["opens"] > 1 for s in status["consumers"])
            assert c["drop_wrong_source"] == 0 and (reopened or c["drop_unknown_id"] == 0), c
            assert c["datagrams"] == c["accepted"] + c["drop_stale"], c
            assert all(s["state"] == "RUNNING" for s in status["consumers"])
        # stopping one worker does not disturb the other
        assert workers[0].stop() == 0
        workers[1].messages.clear()
        workers[1].collect(0.5)
        assert len(workers[1].samples("plc2", "Sine")) >= 10
    finally:
        for w in workers:
            w.close()
        for sim in sims:
            stop_sim(sim)
        shutil.rmtree(tmp, ignore_errors=True)


LISTENER = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 8, 1)  # IP_PKTINFO: the datagram's destination address
s.bind(("0.0.0.0", 44818))
s.settimeout(30)
print("READY", flush=True)
data, anc, _flags, src = s.recvmsg(600, socket.CMSG_SPACE(12))
dst = next(socket.inet_ntoa(d[8:12]) for lvl, typ, d in anc if lvl == socket.IPPROTO_IP)
print(f"command=0x{struct.unpack_from('<H', data)[0]:04X} from={src[0]} to={dst}", flush=True)
"""


def test_discover_broadcasts_to_each_subnet_even_without_a_broadcast_address_set(
        net: Net) -> None:
    # The host's addresses were added as 10.201.N.1/24 without `brd +`: the kernel reports
    # broadcast 0.0.0.0 for them. Discovery must send to 10.201.N.255 (inside the namespaces
    # only: nothing leaves this test's veth pairs).
    listener = spawn_with_log(["ip", "netns", "exec", net.plcs[0], sys.executable, "-c",
                               LISTENER], log_prefix="pyconpro-netns-listen-",
                              ready=regex_ready(r"READY"), ready_timeout_s=15)  # fmt: skip
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", net.host, sys.executable, "-m", "pyconpro.cli", "discover",
             "--timeout", "1", "--json"],
            cwd=_ROOT, env=source_env(_ROOT), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"  # the listener does not answer
        got, _err = listener.communicate(30)
        assert "command=0x0063 from=10.201.1.1 to=10.201.1.255" in got, got
    finally:
        listener.close()

"""A producing worker knows its interface's netmask: a multicast consumer from off its subnet
is refused with 0x01/0x0813 (as a Logix producer and OpENer do; TTL 1 keeps the data on the
link), one on it is accepted, and unicast is accepted from anywhere.

Topology, built and removed by the test (a network namespace with a veth pair in it, names
unique per run): the worker on 10.203.1.1/24, consumers from 10.203.1.2/24 (on its subnet) and
10.203.2.2/24 (off it), all local addresses of that namespace, so nothing leaves it. The
consumers are a script run inside the namespace (the project's encapsulation client and
Forward_Open codec); the worker's control and PUB sockets are ipc:// (shared across
namespaces). Needs root (CI runs the suite as root); skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.requirements import skip_or_fail
from tests.workers.worker_process import start_worker

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
WORKER, ON_SUBNET, OFF_SUBNET = "10.203.1.1", "10.203.1.2", "10.203.2.2"
CONSUMER = r"""
import json, sys
from pyconpro.acquisition import cm, cpf
from pyconpro.simulator.testing import EncapClient

results = []
for n, (source, multicast) in enumerate(json.loads(sys.argv[1])):
    with EncapClient(sys.argv[2], 44818, source=source) as client:
        request = cm.produced_tag_forward_open(
            tag="PcCounter", tag_bytes=4, to_rpi_us=50_000, ot_rpi_us=50_000,
            connection_serial=0x100 + n, vendor_id=0x0F0F, originator_serial=0xBEEF,
            to_connection_id=0x7000_0000 + n, multicast=multicast, slot=None)
        extra = () if multicast else (
            cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("0.0.0.0", 2222)),)
        answer, _ = client.forward_open(request, extra)
        if isinstance(answer, cm.ConnectionFailure):
            results.append([source, multicast, answer.general_status, answer.extended_status])
        else:
            results.append([source, multicast, 0, None])
            client.forward_close(cm.ForwardCloseRequest(
                request.connection_serial, request.vendor_id, request.originator_serial,
                request.path))
print(json.dumps(results), flush=True)
"""


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


@pytest.fixture
def ns() -> Iterator[str]:
    if os.geteuid() != 0:
        skip_or_fail("netns", "network-namespace test needs root (ip netns add); run as root"
                     " or in CI, which runs the suite as root")  # fmt: skip
    if shutil.which("ip") is None:
        skip_or_fail("netns", "iproute2 ('ip') is not installed; apt-get install iproute2")
    name = f"pcpm{os.getpid() % 100000}"
    try:
        _ip("netns", "add", name)
    except RuntimeError as exc:
        if "Operation not permitted" in str(exc):
            skip_or_fail("netns", f"cannot create network namespaces here: {exc}")
        raise
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "pcpa", "type", "veth", "peer", "name", "pcpb")
        for address in (f"{WORKER}/24", f"{ON_SUBNET}/24", f"{OFF_SUBNET}/24"):
            _ip("-n", name, "addr", "add", address, "dev", "pcpa")
        for link in ("pcpa", "pcpb"):
            _ip("-n", name, "link", "set", link, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=20)


def test_an_off_subnet_multicast_consumer_is_refused_with_0x0813(ns: str) -> None:
    tmp = tempfile.mkdtemp(prefix="pyconpro-netns-produce-")
    spec = {"name": "PcCounter", "type": "DINT", "max_consumers": 4}
    try:
        with start_worker(WORKER, prefix=["ip", "netns", "exec", ns], pub=f"ipc://{tmp}/w.pub",
                          control=f"ipc://{tmp}/w.ctl",
                          extra_args=["--tcp-port", "44818", "--produce", json.dumps(spec)],
                          ) as worker:  # fmt: skip
            assert worker.control("status")["produce"]["netmask"] == "255.255.255.0"
            tries = [[ON_SUBNET, True], [OFF_SUBNET, True], [OFF_SUBNET, False]]
            out = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-c", CONSUMER, json.dumps(tries),
                 WORKER], check=False, capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            results = json.loads(out.stdout)
            assert results == [[ON_SUBNET, True, 0, None],
                               [OFF_SUBNET, True, 0x01, 0x0813],
                               [OFF_SUBNET, False, 0, None]]  # fmt: skip
            codes = worker.control("status")["produce"]["target"]["reject_codes"]
            assert codes == {"0x01/0x0813": 1}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

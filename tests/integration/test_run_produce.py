"""``pyconpro run`` producing a tag for a (simulated) Logix controller.

The plant of test_run.py (two simulated PLCs, two workers, the SQLite sink) plus a
``[[produce]]`` entry served by the worker that also consumes line1's tags: the simulator of
line1 *consumes* the produced tag (its ``consume`` control command opens the Forward_Open to the
worker on TCP 44818), this test publishes values into the bus input (``produce/<name>/`` on
``<control_base>-bus-in``, wire-format.md) and the simulator receives them in order, while
line1's own tags keep flowing to the sink. A reload that changes the entry restarts that worker
only, and the consumer is back on its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zmq
from pyconpro.acquisition.produce import produce_topic

from pyconpro.status_cli import request
from tests.integration import test_run
from tests.integration.test_run import REPO, Plant, Run
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

plant = test_run.plant
run_factory = test_run.run_factory

TAG = "PcCounter"
PRODUCE = """
[[produce]]
name = "PcCounter"
type = "DINT"
max_consumers = 1
local_address = "{local}"
"""


def config(plant: Plant, max_consumers: int = 1) -> str:
    """test_run's config (its worker for line1 on .1), plus the produced tag on .1."""
    produce = PRODUCE.format(local=plant.addr(1))
    return plant.config() + produce.replace("max_consumers = 1",
                                            f"max_consumers = {max_consumers}")


class Feed:
    """A user process's side: a PUB socket connected to the bus input."""

    def __init__(self, plant: Plant) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.connect(f"ipc://{plant.tmp}/ctl-bus-in")

    def publish(self, value: Any) -> None:
        self.pub.send_multipart([produce_topic(TAG), msgpack.packb({"value": value})])

    def close(self) -> None:
        self.pub.close()
        self.ctx.term()


def produce_status(run: Run, worker: str) -> dict[str, Any] | None:
    """The worker's ``produce`` status as the supervisor relays it (None until there)."""
    st = request(run.control, {"op": "status"}, 5.0) or {}
    p: dict[str, Any] | None = (st.get("workers") or {}).get(worker, {}).get("produce")
    return p


def consumed(sim: Any, key: str) -> dict[str, Any]:
    return next(t for t in sim.control.consumed() if t["key"] == key)


def consume(plant: Plant, sim: Any) -> str:
    """The simulated PLC consumes the produced tag from the worker on .1 (TCP 44818, its
    class-1 port the config's [worker] udp_port)."""
    sim.control.consume(plant.addr(1), TAG, "DINT", port=44818, udp_port=plant.worker_port,
                        rpi_ms=20, multiplier=4)  # timeout x64: 1.28 s, for a busy machine
    return f"{plant.addr(1)}/{TAG}"


def publish_until_seen(feed: Feed, sim: Any, key: str, value: int) -> int:
    """Publish ``value`` until the simulator receives it (the bus subscription and the
    connection are both up from then on); the index of its first record."""
    def got() -> list[int]:
        feed.publish(value)
        c = consumed(sim, key)
        if c["state"] != "RUNNING":
            return []
        return [i for i, r in enumerate(c["records"]) if r["value"] == value][:1]

    found: list[int] = wait_for(got, f"{key} receiving {value}", 60)
    return found[0]


def assert_in_order(feed: Feed, sim: Any, key: str, values: range) -> None:
    """Each value published once, after the previous one arrived: they arrive in order."""
    start = publish_until_seen(feed, sim, key, values.start - 1)
    for v in values:
        feed.publish(v)

        def arrived(v: int = v) -> bool:
            return any(r["value"] == v for r in consumed(sim, key)["records"][start:])

        wait_for(arrived, f"value {v} at the consumer", 20)
    got = [r["value"] for r in consumed(sim, key)["records"][start:]]
    firsts = [v for i, v in enumerate(got) if i == 0 or got[i - 1] != v]
    assert firsts[1:] == list(values), firsts  # each once or repeated at the RPI, none lost


def status_screen(run: Run) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pyconpro.cli", "status", "--once", "--control", run.control],
        check=False, capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_produced_tag_reaches_a_simulated_plc_in_order_beside_its_consumers(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    worker = f"worker-{plant.addr(1)}"
    run = run_factory(config(plant))
    feed = Feed(plant)
    try:
        st = wait_for(lambda: produce_status(run, worker), "the worker producing", 30)
        tag = st["tags"][0]
        assert (st["tcp_port"], tag["name"], tag["fed"]) == (44818, TAG, False)
        sim = plant.sims[0]  # line1: the PLC whose tags the same worker consumes
        key = consume(plant, sim)
        assert_in_order(feed, sim, key, range(1, 21))
        # line1's own tags keep flowing through the same worker
        before = run.counts().get(("line1", "Counter"), 0)
        wait_for(lambda: run.counts().get(("line1", "Counter"), 0) >= before + 5,
                 "line1 rows while producing")  # fmt: skip

        def fed() -> dict[str, Any] | None:
            """The supervisor's copy is up to a second old: wait for it to show the feed."""
            t = (produce_status(run, worker) or {"tags": [{}]})["tags"][0]
            return t if t.get("updates", 0) >= 21 and t.get("consumers") else None

        tag = wait_for(fed, "status: fed by the bus, one consumer")
        assert tag["fed"] and tag["source"] == "bus"
        assert [c["peer"] for c in tag["consumers"]] == [plant.addr(2)]

        def row() -> list[str] | None:
            """The tag's row on the status screen once it shows the consumer."""
            screen = status_screen(run)
            assert f"producing on TCP {plant.addr(1)}:44818" in screen, screen
            cells = next(x.split() for x in screen.splitlines() if x.startswith(f"  {TAG}"))
            return cells if f"{plant.addr(2)}@20ms" in cells else None

        cells = wait_for(row, "the consumer on the status screen")
        assert cells[:3] == [TAG, "DINT", "bus"] and "1/1" in cells, cells
        assert run.stop() == 0, run.log_text()
        run.assert_children_gone()
    finally:
        feed.close()


def test_a_reload_that_changes_the_produce_entry_restarts_its_worker_only(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    worker, other = f"worker-{plant.addr(1)}", f"worker-{plant.addr(4)}"
    run = run_factory(config(plant, max_consumers=1))
    feed = Feed(plant)
    try:
        wait_for(lambda: produce_status(run, worker), "the worker producing", 30)
        one, two = plant.sims
        key = consume(plant, one)
        publish_until_seen(feed, one, key, 7)
        # max_consumers = 1: a second controller is refused (0x01/0x031E) and keeps retrying
        consume(plant, two)
        wait_for(lambda: any("0x031E" in e for e in consumed(two, key)["events"]),
                 "the second consumer refused", 30)  # fmt: skip
        pids = {c["name"]: c["pid"] for c in run.status()["children"]}

        run.config.write_text(config(plant, max_consumers=2))
        run.proc.send_signal(signal.SIGHUP)

        def reloaded() -> dict[str, Any] | None:
            st = run.status()
            new = {c["name"]: c for c in st["children"]}
            p = st["workers"][worker].get("produce")
            ok = (new[worker]["pid"] not in (None, pids[worker])
                  and new[worker]["state"] == "RUNNING"
                  and p is not None and p["tags"][0]["max_consumers"] == 2)
            return st if ok else None

        st = wait_for(reloaded, "the worker restarted with the changed entry", 60)
        assert f"restart {worker}" in st["supervisor"]["last_reload"]["message"]
        assert {c["name"]: c["pid"] for c in st["children"]}[other] == pids[other]
        # both controllers are served now, by themselves, and get what is published next
        publish_until_seen(feed, one, key, 1000)
        publish_until_seen(feed, two, key, 1000)
        assert_in_order(feed, two, key, range(2001, 2006))

        def peers() -> bool:
            p = produce_status(run, worker) or {"tags": [{}]}
            return sorted(c["peer"] for c in p["tags"][0].get("consumers", [])) == [
                plant.addr(2), plant.addr(3)]

        wait_for(peers, "both controllers in the status (up to a second old)")
        assert run.stop() == 0, run.log_text()
        run.assert_children_gone()
    finally:
        feed.close()

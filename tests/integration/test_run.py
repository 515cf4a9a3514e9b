"""``pyconpro run`` end to end: two simulated PLCs, two I/O workers, the SQLite sink, the bus.

Real processes on loopback only: simulators on 127.73.N.2 / 127.73.N.3 (N picked free per
test, TCP 44818 on its own address, UDP on a kernel-chosen port), workers on 127.73.N.1 and
127.73.N.4 (one per local address, so the run has two workers), bus and control sockets as
``ipc://`` files in the test's temporary directory. Every wait has a deadline; every process is
stopped by PID at the end (the supervisor's children die with it through PDEATHSIG, and the test
checks they are gone).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from pyconpro.acquisition import wire
from pyconpro.workers.process import spawn

from pyconpro.status_cli import request
from tests.support.leaks import alive
from tests.support.ports import free_subnet, free_udp_port
from tests.support.wait import wait_for

simulator_testing = pytest.importorskip("pyconpro.simulator.testing")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30.0








@dataclass
class Plant:
    tmp: Path
    net: int
    sims: list[Any]

    def addr(self, host: int) -> str:
        return f"127.73.{self.net}.{host}"

    def config(self, *, line1_tags: str = '"Counter", "Array10"') -> str:
        port = self.worker_port
        tags1 = "".join(f'  [[plc.tag]]\n  name = {t.strip()}\n  rpi_ms = 50\n'
                        for t in line1_tags.split(","))  # fmt: skip
        return f"""
[bus]
endpoint = "ipc://{self.tmp}/bus"
control_base = "ipc://{self.tmp}/ctl"
[worker]
udp_port = {port}
stats_interval_s = 1
[supervisor]
start_s = 0.5
backoff_initial_s = 0.2
backoff_max_s = 1
stop_timeout_s = 15

[[plc]]
name = "line1"
address = "{self.addr(2)}"
local_address = "{self.addr(1)}"
udp_port = {self.sims[0].udp_port}
{tags1}
[[plc]]
name = "line2"
address = "{self.addr(3)}"
local_address = "{self.addr(4)}"
udp_port = {self.sims[1].udp_port}
rpi_ms = 100
  [[plc.tag]]
  name = "Counter"
  [[plc.tag]]
  name = "Sine"
  alias = "wave"

[[sink]]
kind = "sqlite"
name = "db"
path = "out.sqlite3"
flush_interval_s = 0.2
"""

    worker_port: int = 0


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    net = free_subnet(73, (2, 3))
    sims = []
    try:
        for host in (2, 3):
            sims.append(simulator_testing.start_simulator(f"127.73.{net}.{host}", tcp_port=44818))
        p = Plant(tmp_path, net, sims)
        p.worker_port = free_udp_port(p.addr(1), p.addr(4))
        yield p
    finally:
        for sim in sims:
            sim.close()


class Run:
    """``python -m pyconpro.cli run CONFIG`` as a child of the test."""

    def __init__(self, plant: Plant, text: str) -> None:
        self.plant = plant
        self.config = plant.tmp / "pipeline.toml"
        self.config.write_text(text)
        self.log = plant.tmp / "run.log"
        self.control = f"ipc://{plant.tmp}/ctl-supervisor"
        self.db = plant.tmp / "out.sqlite3"
        self.log.write_bytes(b"")  # a fresh log per run (spawn appends)
        self.proc = spawn([sys.executable, "-m", "pyconpro.cli", "run", str(self.config)],
                          stdout=self.log, stderr=self.log, cwd=REPO)  # fmt: skip
        self.child_pids: set[int] = set()

    def status(self) -> dict[str, Any]:
        st = request(self.control, {"op": "status"}, 5.0)
        assert st is not None and st.get("ok"), f"no status; log:\n{self.log_text()}"
        for c in st["children"]:
            if c["pid"]:
                self.child_pids.add(c["pid"])
        return st

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def counts(self) -> dict[tuple[str, str], int]:
        if not self.db.exists():
            return {}
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT plc, tag, COUNT(*) FROM samples GROUP BY plc, tag")
            return {(p, t): n for p, t, n in rows}
        except sqlite3.OperationalError:  # schema not created yet
            return {}
        finally:
            con.close()

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def stop(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)  # when it is still running
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"pyconpro run did not stop; log:\n{self.log_text()}") from None

    def assert_children_gone(self) -> None:
        def gone() -> bool:
            return not any(alive(pid) for pid in self.child_pids)

        wait_for(gone, "every child process to be gone", 10.0)


@pytest.fixture
def run_factory(plant: Plant) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(text: str | None = None) -> Run:
        r = Run(plant, text if text is not None else plant.config())
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.proc.kill()  # when it is still running; reaps it


EXPECTED = {("line1", "Counter"), ("line1", "Array10"), ("line2", "Counter"), ("line2", "wave")}


def test_two_simulated_plcs_end_to_end(plant: Plant, run_factory: Callable[..., Run]) -> None:
    run = run_factory()
    wait_for(lambda: set(run.counts()) == EXPECTED and min(run.counts().values()) >= 5,
             f"5 rows of each of {sorted(EXPECTED)}")  # fmt: skip
    st = run.status()
    workers = sorted(c["name"] for c in st["children"] if c["kind"] == "worker")
    assert workers == [f"worker-{plant.addr(1)}", f"worker-{plant.addr(4)}"]
    assert run.stop() == 0, run.log_text()
    run.assert_children_gone()

    types = {(p, t): ty for p, t, ty in run.query("SELECT DISTINCT plc, tag, type FROM samples")}
    assert types == {("line1", "Counter"): "DINT", ("line1", "Array10"): "DINT[10]",
                     ("line2", "Counter"): "DINT", ("line2", "wave"): "REAL"}  # fmt: skip
    pubs = dict(run.query("SELECT DISTINCT plc, publisher FROM samples"))
    assert pubs == {"line1": f"worker-{plant.addr(1)}", "line2": f"worker-{plant.addr(4)}"}
    counter = [(json.loads(v), raw) for v, raw in run.query(
        "SELECT value_json, raw FROM samples WHERE plc='line1' AND tag='Counter' ORDER BY id")]
    values = [v for v, _ in counter]
    assert all(isinstance(v, int) for v in values)
    assert values == sorted(values) and values[-1] > values[0]
    assert all(int.from_bytes(raw, "little", signed=True) == v for v, raw in counter)
    for (arr,) in run.query("SELECT value_json FROM samples WHERE tag='Array10'"):
        a = json.loads(arr)
        assert len(a) == 10 and all(isinstance(x, int) for x in a)
    # Workers stop first, so their Forward_Close events reach the still-running sink.
    closed = {(p, t) for p, t in run.query(
        "SELECT plc, tag FROM events WHERE kind='state' AND state_to='CLOSED'")}  # fmt: skip
    assert closed == EXPECTED


def test_sigkilled_worker_and_sink_come_back_and_data_flows(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    run = run_factory()
    wait_for(lambda: run.counts().get(("line1", "Counter"), 0) >= 5, "first rows")
    st = wait_for(lambda: (s := run.status()) and all(
        c["state"] == "RUNNING" for c in s["children"]) and s, "every child RUNNING")
    victims = {c["name"]: c["pid"] for c in st["children"]
               if c["name"] in (f"worker-{plant.addr(1)}", "sink-db")}  # fmt: skip
    assert len(victims) == 2
    for pid in victims.values():
        os.kill(pid, signal.SIGKILL)

    def back() -> dict[str, Any] | None:
        s = run.status()
        cs = {c["name"]: c for c in s["children"]}
        ok = all(cs[n]["state"] == "RUNNING" and cs[n]["pid"] != pid and cs[n]["restarts"] == 1
                 for n, pid in victims.items())  # fmt: skip
        return s if ok else None

    back_st = wait_for(back, "worker and sink restarted")
    for name in victims:
        c = next(c for c in back_st["children"] if c["name"] == name)
        assert c["last_exit"] == "killed by SIGKILL"
    restarted_ns = time.time_ns()

    def flowing() -> bool:
        rows = run.query("SELECT plc, tag, COUNT(*) FROM samples WHERE t_wall_ns > ? "
                         "GROUP BY plc, tag", restarted_ns)  # fmt: skip
        got = {(p, t): n for p, t, n in rows}
        return set(got) == EXPECTED and min(got.values()) >= 3

    wait_for(flowing, "rows from both PLCs after the restarts")
    # The status screen shows it too.
    out = subprocess.run(
        [sys.executable, "-m", "pyconpro.cli", "status", "--once", "--control", run.control],
        check=False, capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "killed by SIGKILL" in out.stdout
    assert "line1/Counter" in out.stdout and "RUNNING" in out.stdout
    assert run.stop() == 0, run.log_text()
    run.assert_children_gone()


def test_a_killed_worker_leaves_one_outage_per_tag_in_the_gaps_table(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    """A worker cannot record its own death: its successor does, from the time the supervisor
    saw it die to its own first sample of each tag (cause ``restart``), in the SQLite sink's
    gaps table and in ``pyconpro status``."""
    run = run_factory()
    worker = f"worker-{plant.addr(1)}"
    wait_for(lambda: run.counts().get(("line1", "Counter"), 0) >= 5, "first rows")
    st = wait_for(lambda: (s := run.status()) and all(
        c["state"] == "RUNNING" for c in s["children"]) and s, "every child RUNNING")
    victim = next(c["pid"] for c in st["children"] if c["name"] == worker)
    # The supervisor must have seen the consumers' data before the kill (its status poll).
    wait_for(lambda: (cs := run.status()["workers"][worker].get("consumers")) and all(
        "last_data_s" in c for c in cs), "the worker's status with its consumers' data")
    os.kill(victim, signal.SIGKILL)
    killed_ns = time.time_ns()

    def outages() -> list[tuple[Any, ...]]:
        return run.query(
            "SELECT tag, cause, resumed, start_wall_ns, end_wall_ns, end_mono_ns, missed, rpi_us,"
            " publisher FROM gaps WHERE kind = 'outage' AND plc = 'line1' ORDER BY tag")

    rows = wait_for(lambda: len(outages()) == 2 and outages(), "an outage row per line1 tag")
    assert [r[:3] for r in rows] == [("Array10", "restart", 1), ("Counter", "restart", 1)]
    for tag, _, _, start, end, end_mono, missed, rpi_us, pub in rows:
        assert rpi_us == 50_000 and pub == worker
        # Before the outage: the killed worker's last sample; after: the new one's first.
        (last,) = run.query("SELECT max(t_wall_ns) FROM samples WHERE plc='line1' AND tag=?"
                            " AND t_wall_ns < ?", tag, killed_ns)
        # The outage row and the new worker's first sample may reach the file in two batches.
        def first_after(tag: str = tag) -> list[tuple[Any, ...]]:
            return run.query("SELECT t_wall_ns, t_mono_ns FROM samples WHERE plc='line1' AND"
                             " tag=? AND t_wall_ns > ? ORDER BY t_wall_ns LIMIT 1", tag, killed_ns)

        (first,) = wait_for(first_after, f"the new worker's first {tag} row")
        assert last[0] <= start <= first[0] and end_mono == first[1]
        assert missed == round((end - start) / 50e6) - 1

    def counted() -> bool:
        consumers = run.status()["workers"][worker].get("consumers") or []
        return bool(consumers) and all(c["counters"].get("outages") == 1 for c in consumers)

    wait_for(counted, "the outages in the worker's status")
    out = subprocess.run(
        [sys.executable, "-m", "pyconpro.cli", "status", "--once", "--control", run.control],
        check=False, capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    counter = next(line.split() for line in out.stdout.splitlines()
                   if line.strip().startswith("line1/Counter"))
    assert counter[6] == "1"  # OUTAGES
    assert run.stop() == 0, run.log_text()
    run.assert_children_gone()


def test_reload_adds_a_tag_without_restarting_the_worker(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    run = run_factory()
    wait_for(lambda: set(run.counts()) == EXPECTED, "first rows of every tag")
    st = wait_for(lambda: (s := run.status()) and all(
        c["state"] == "RUNNING" for c in s["children"]) and s, "every child RUNNING")
    pids = {c["name"]: c["pid"] for c in st["children"]}
    run.config.write_text(plant.config(line1_tags='"Counter", "Array10", "Sine"'))
    run.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: run.counts().get(("line1", "Sine"), 0) >= 3, "rows of the added tag")
    st = run.status()
    assert {c["name"]: c["pid"] for c in st["children"]} == pids
    assert st["supervisor"]["last_reload"]["ok"] is True
    assert "add line1/Sine" in st["supervisor"]["last_reload"]["message"]
    # tail shows live decoded samples of the new tag
    out = subprocess.run(
        [sys.executable, "-m", "pyconpro.cli", "tail", "line1/Sine", "--json", "--count", "3",
         "--timeout", "20", "--connect", f"ipc://{plant.tmp}/bus"],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(lines) == 3
    assert all(x["stream"] == "sample"
               and (x["plc"], x["tag"], x["type"]) == ("line1", "Sine", "REAL")
               for x in lines)  # fmt: skip
    assert run.stop() == 0, run.log_text()
    run.assert_children_gone()


def test_consumers_changed_behind_the_supervisors_back_are_restored(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    """Someone uses a worker's control socket directly: removes a configured consumer, adds one
    the config does not have, changes another (removes it and adds it with another RPI). The
    supervisor sees it in the worker's status within a second or two and puts the configured
    set back, with a log line and an ``error`` event naming what was changed and that it was
    restored (published on the bus: the SQLite sink stores it)."""
    run = run_factory()
    wait_for(lambda: set(run.counts()) == EXPECTED, "first rows of every tag")
    name1, name2 = f"worker-{plant.addr(1)}", f"worker-{plant.addr(4)}"
    workers = wait_for(lambda: (w := run.status()["workers"]) and all(
        w[n]["consumers_added"] for n in (name1, name2)) and w, "consumers added")

    def worker(name: str, req: dict[str, Any]) -> dict[str, Any]:
        reply = request(workers[name]["control"], req, 5.0)
        assert reply is not None and reply["ok"], reply
        return reply

    def running(name: str) -> dict[str, dict[str, Any]]:
        return {c["key"]: c for c in worker(name, {"op": "status"})["consumers"]}

    configured = {name1: running(name1), name2: running(name2)}
    sim = plant.sims[0]
    extra = {"plc": "line1", "address": plant.addr(2), "udp_port": sim.udp_port, "tag": "Sine",
             "rpi_ms": 50}
    changed = {"plc": "line2", "address": plant.addr(3), "udp_port": plant.sims[1].udp_port,
               "tag": "Counter", "rpi_ms": 250}
    t0 = time.monotonic()
    worker(name1, {"op": "remove", "key": "line1/Counter"})
    worker(name1, {"op": "add", "consumer": extra})

    def change() -> bool:
        """Remove line2/Counter and add it with another RPI once its key is free (the
        supervisor may put the configured one back first: then again)."""
        request(workers[name2]["control"], {"op": "remove", "key": "line2/Counter"}, 5.0)
        wait_for(lambda: running(name2).get("line2/Counter", {}).get("state") != "CLOSING",
                 "line2/Counter closed", 10.0)  # fmt: skip
        reply = request(workers[name2]["control"], {"op": "add", "consumer": changed}, 5.0)
        return reply is not None and bool(reply["ok"])

    wait_for(change, "line2/Counter changed behind the supervisor's back", 30.0, 0.0)

    def restored() -> bool:
        one, two = running(name1), running(name2)
        return (set(one) == set(configured[name1]) and set(two) == set(configured[name2])
                and all(c["state"] == "RUNNING" for c in (*one.values(), *two.values()))
                and two["line2/Counter"]["def"] == configured[name2]["line2/Counter"]["def"])

    wait_for(restored, "the configured consumer set back on both workers", 20.0)
    took = time.monotonic() - t0
    assert took < 15.0, took
    errors = wait_for(lambda: (e := run.status()["last_errors"]) and all(
        "restored" in (e.get(k) or {}).get("message", "")
        for k in ("line1/Counter", "line1/Sine", "line2/Counter")) and e, "restore events")
    assert "line1/Counter was removed from " + name1 in errors["line1/Counter"]["message"]
    assert "line1/Sine was added to " + name1 in errors["line1/Sine"]["message"]
    assert "line2/Counter on " + name2 + " was changed" in errors["line2/Counter"]["message"]
    assert {errors[k]["publisher"] for k in errors if "restored" in errors[k]["message"]} == {
        "supervisor"}
    wait_for(lambda: {(p, t) for p, t in run.query(
        "SELECT plc, tag FROM events WHERE publisher = 'supervisor' AND kind = 'error'"
        " AND message LIKE '%restored%'")} == {("line1", "Counter"), ("line1", "Sine"),
                                               ("line2", "Counter")},
             "the three events in the database")  # fmt: skip
    log = run.log_text()
    assert "behind the supervisor's back" in log and "restoring the configured set" in log
    before = run.counts()[("line1", "Counter")]
    wait_for(lambda: run.counts()[("line1", "Counter")] >= before + 5, "rows again")
    assert run.stop() == 0, run.log_text()
    run.assert_children_gone()


def test_reload_changes_a_tag_in_place(plant: Plant, run_factory: Callable[..., Run]) -> None:
    """A reload that changes one tag: the worker keeps running, the old consumer is removed
    and the new definition added once its key is free; that is the supervisor's own doing, so
    no "behind the supervisor's back" line or event."""
    run = run_factory()
    wait_for(lambda: set(run.counts()) == EXPECTED, "first rows of every tag")
    name = f"worker-{plant.addr(1)}"
    st = wait_for(lambda: (s := run.status()) and s["workers"][name]["consumers_added"] and s,
                  "consumers added")  # fmt: skip
    pid = {c["name"]: c["pid"] for c in st["children"]}[name]
    run.config.write_text(plant.config().replace("rpi_ms = 50", "rpi_ms = 120", 1))
    run.proc.send_signal(signal.SIGHUP)

    def changed() -> bool:
        reply = request(st["workers"][name]["control"], {"op": "status"}, 5.0) or {}
        return any(c["key"] == "line1/Counter" and c["rpi_us"] == 120_000
                   and c["state"] == "RUNNING" for c in reply.get("consumers", []))

    wait_for(changed, "line1/Counter running at its new RPI", 20.0)
    st = run.status()
    assert {c["name"]: c["pid"] for c in st["children"]}[name] == pid
    assert "remove line1/Counter" in st["supervisor"]["last_reload"]["message"]
    assert "behind the supervisor's back" not in run.log_text()
    assert run.stop() == 0, run.log_text()
    run.assert_children_gone()


class BusListener:
    """A SUB socket on the public bus endpoint, connected before ``pyconpro run`` binds it."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 1_000_000)
        self.sub.setsockopt(zmq.RECONNECT_IVL, 10)  # connected moments after the bind
        self.sub.subscribe(b"event/")
        self.sub.connect(endpoint)
        self.events: list[wire.Event] = []

    def poll(self, timeout: float) -> None:
        if self.sub.poll(int(timeout * 1000)):
            while True:
                try:
                    topic, body = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
                msg = wire.decode(topic, body)
                assert isinstance(msg, wire.Event)
                self.events.append(msg)

    def chains(self, since: int = 0) -> dict[tuple[str, str], list[wire.Event]]:
        """Per consumer, its state events from index ``since`` on, up to the first RUNNING."""
        out: dict[tuple[str, str], list[wire.Event]] = {}
        for ev in self.events[since:]:
            if not ev.tag or ev.state_to is None:
                continue
            chain = out.setdefault((ev.plc, ev.tag), [])
            if not chain or chain[-1].state_to != "RUNNING":
                chain.append(ev)
        return out

    def wait_running(
        self, keys: set[tuple[str, str]], since: int = 0, timeout: float = WAIT_S
    ) -> dict[tuple[str, str], list[wire.Event]]:
        deadline = time.monotonic() + timeout
        while True:
            chains = self.chains(since)
            if all(k in chains and chains[k][-1].state_to == "RUNNING" for k in keys):
                return chains
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"not every consumer reported RUNNING on the bus within {timeout:g} s: {chains}"
                )
            self.poll(min(left, 0.2))

    def close(self) -> None:
        self.sub.close()
        self.ctx.term()


def assert_complete_from_idle(chains: dict[tuple[str, str], list[wire.Event]]) -> None:
    """Every consumer's first events, none missing: from IDLE, each one starting where the
    previous one ended, numbered from 0 by the (new) worker, up to RUNNING."""
    for key, chain in chains.items():
        states = [(e.state_from, e.state_to) for e in chain]
        assert chain[0].state_from == "IDLE", (key, states)
        assert chain[0].seq == 0, (key, states)  # the worker's first message on this topic
        assert all(a.state_to == b.state_from for a, b in itertools.pairwise(chain)), (key, states)
        assert chain[-1].state_to == "RUNNING", (key, states)
        assert [e.state_to for e in chain][:1] == ["RESOLVING"], (key, states)


def test_a_subscriber_there_before_start_sees_every_first_event(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    """No slow-joiner loss: workers get their consumers only once the bus subscription reached
    them, at the start and after a crash. Repeated, since a race shows only sometimes."""
    victim = f"worker-{plant.addr(1)}"
    line1 = {k for k in EXPECTED if k[0] == "line1"}
    for attempt in range(3):
        bus = BusListener(f"ipc://{plant.tmp}/bus")
        try:
            run = run_factory()
            assert_complete_from_idle(bus.wait_running(EXPECTED))
            if attempt == 0:
                # a crashed worker's successor: the same, from its first event on
                st = run.status()
                pid = next(c["pid"] for c in st["children"] if c["name"] == victim)
                mark = len(bus.events)
                os.kill(pid, signal.SIGKILL)
                chains = bus.wait_running(line1, since=mark)
                assert set(chains) == line1, chains
                assert_complete_from_idle(chains)
                assert all(e.publisher == victim for c in chains.values() for e in c)
            assert run.stop() == 0, run.log_text()
            run.assert_children_gone()
        finally:
            bus.close()


def _cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_fatal_worker_leaves_run_idle_and_says_which_key_to_change(tmp_path: Path) -> None:
    net = free_subnet(73, (2, 3))
    local = f"127.73.{net}.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((local, 0))  # the worker's UDP port, already in use
        port = taken.getsockname()[1]
        config = tmp_path / "pipeline.toml"
        config.write_text(f"""
[bus]
endpoint = "ipc://{tmp_path}/bus"
control_base = "ipc://{tmp_path}/ctl"
[worker]
udp_port = {port}
[supervisor]
start_s = 0.5
backoff_initial_s = 0.05
backoff_max_s = 0.1
max_quick_failures = 2
[[plc]]
name = "line1"
address = "127.73.{net}.2"
local_address = "{local}"
  [[plc.tag]]
  name = "Counter"
""")
        log = tmp_path / "run.log"
        proc = spawn([sys.executable, "-m", "pyconpro.cli", "run", str(config)],
                     stdout=log, stderr=log, cwd=REPO)  # fmt: skip
        try:
            control = f"ipc://{tmp_path}/ctl-supervisor"

            def fatal() -> bool:
                st = request(control, {"op": "status"}, 5.0)
                return bool(st) and all(c["state"] == "FATAL" for c in (st or {})["children"])

            wait_for(fatal, "the worker to become FATAL")
            cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
            # Measuring CPU use needs wall time to pass; this is not a wait for an event.
            time.sleep(1.0)
            cpu1, t1 = _cpu_s(proc.pid), time.monotonic()
            assert (cpu1 - cpu0) < 0.2 * (t1 - t0), f"supervisor used {cpu1 - cpu0:.2f} s CPU"
            text = log.read_text(errors="replace")
            line = next(x for x in text.splitlines() if f"cannot bind UDP {local}:{port}" in x)
            assert "set [worker].udp_port in the config" in line and "--udp-port" not in line
            assert line.rstrip().endswith("Address already in use"), line
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(20) == 0
            finally:
                proc.kill()  # when it is still running; reaps it
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_socket()) == []

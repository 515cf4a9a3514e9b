#!/usr/bin/env python3
"""Soak: run a whole pipeline for a long time with a fault injected every minute.

One simulated PLC (``--tags`` produced DINT counters at ``--rpi-ms``), ``pyconpro run`` with one
I/O worker and the SQLite sink, and an independent subscriber on the bus that sees everything
published. Every ``--fault-every`` seconds the next fault of ``--faults`` (in turn):

  plc_restart   the simulator restarts (new incarnation, TCP closed, every connection lost)
  loss_burst    the simulator drops half of its T->O datagrams for 5 s
  worker_kill   SIGKILL of the I/O worker (the supervisor restarts it)
  sink_kill     SIGKILL of the SQLite sink (the supervisor restarts it)
  disk_full     the sink's file system (a tmpfs this script mounts; root only) is filled for
                10 s, then freed

Recovery time of a fault: from its end until every tag's samples reach the subscriber again
and the database has caught up with what was published before the fault ended.

Printed at the end (``--json``: one object): faults injected / recovered, recovery time per kind
(max and median); the accounting of the acquisition: samples expected (tags x duration / RPI),
published (seen by the subscriber), recorded as lost in outages (the gaps table's outage rows)
and as CIP gaps within a connection (the samples' `gap` counters), unaccounted (expected -
published - outages - CIP gaps); of the sink: stored (rows), recorded as lost on
the bus (bus-gap rows), unaccounted (published - stored - bus gaps); duplicates in the
database; RSS and open file descriptors of the supervisor, worker and sink at start and at end.
Exit status 0 when every fault recovered, nothing is duplicated, the sink lost nothing it did
not record, and the acquisition's unaccounted samples are within 1 % of the expected (when an
outage began is known to a few samples).

    scripts/soak.py --minutes 30                     # what docs/reliability.md reports
    scripts/soak.py --minutes 3 --fault-every 20     # a quick look

Everything runs on loopback (127.77.N.x); every process is stopped by PID at the end, also on
Ctrl-C, and the tmpfs is unmounted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from pyconpro.acquisition import wire
from pyconpro.simulator.testing import SimulatorProcess, start_simulator
from pyconpro.workers import process

from pyconpro.status_cli import request

FAULTS = ("plc_restart", "loss_burst", "worker_kill", "sink_kill", "disk_full")
RECOVERY_LIMIT_S = 60.0


def _free_net() -> int:
    rng = random.Random()
    for _ in range(200):
        n = rng.randrange(2, 254)
        with socket.socket() as s:
            try:
                s.bind((f"127.77.{n}.2", 44818))
            except OSError:
                continue
        return n
    raise SystemExit("no free 127.77.N.2:44818 for the simulator")


def _free_udp(addr: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        port: int = s.getsockname()[1]
    return port


def tag_file(path: Path, tags: int, rpi_ms: float) -> Path:
    text = ['[controller]\nprogram_name = "SOAK"\n']
    for i in range(tags):
        text.append(f'\n[[tags]]\nname = "S{i:02d}"\ntype = "DINT"\nproduced = true\n'
                    f'generator = {{ kind = "counter", interval_s = {rpi_ms / 1000} }}\n')
    path.write_text("".join(text))
    return path


def config_text(d: Path, net: int, sim: SimulatorProcess, tags: int, rpi_ms: float,
                db: Path) -> str:  # fmt: skip
    tag_lines = "".join(f'  [[plc.tag]]\n  name = "S{i:02d}"\n' for i in range(tags))
    return f"""
[bus]
endpoint = "ipc://{d}/bus"
control_base = "ipc://{d}/ctl"
[logging]
file = "{d}/run.log"
[worker]
udp_port = {_free_udp(f"127.77.{net}.1")}
stats_interval_s = 1
[supervisor]
start_s = 0.5
backoff_initial_s = 0.2
backoff_max_s = 2
max_quick_failures = 1000
[defaults]
rpi_ms = {rpi_ms}
[[plc]]
name = "soak"
address = "127.77.{net}.2"
local_address = "127.77.{net}.1"
udp_port = {sim.udp_port}
{tag_lines}
[[sink]]
kind = "sqlite"
name = "db"
path = "{db}"
flush_interval_s = 0.2
"""


class Subscriber:
    """Counts what is published on the bus, per tag: samples, and when the last one came."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.count: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self.gap: dict[str, int] = {}  # the last sample's per-connection CIP gap counter
        self.cip_missed = 0  # datagrams the PLC sent and the worker never got (gap counters)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-subscriber", daemon=True)
        self.lock = threading.Lock()

    def _run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 1_000_000)
        sub.setsockopt(zmq.LINGER, 0)
        sub.subscribe(b"sample/")
        sub.connect(self.endpoint)
        try:
            while not self.stop.is_set():
                if not sub.poll(100):
                    continue
                topic, body = sub.recv_multipart()
                msg = wire.decode(topic, body)
                if isinstance(msg, wire.Sample):
                    with self.lock:
                        self.count[msg.tag] = self.count.get(msg.tag, 0) + 1
                        self.last[msg.tag] = time.monotonic()
                        before = self.gap.get(msg.tag, 0)
                        # a new connection starts its counter at 0 again
                        self.cip_missed += msg.gap - before if msg.gap >= before else msg.gap
                        self.gap[msg.tag] = msg.gap
        finally:
            sub.close()
            ctx.term()

    def total(self) -> int:
        with self.lock:
            return sum(self.count.values())

    def all_since(self, t: float, tags: int) -> bool:
        with self.lock:
            return len(self.last) >= tags and all(v > t for v in self.last.values())


def db_count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        return int(con.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def proc_usage(pid: int) -> dict[str, int]:
    try:
        rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status")
                   if line.startswith("VmRSS:"))  # fmt: skip
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return {}
    return {"rss_kib": rss, "fds": fds}


@dataclass
class Soak:
    args: argparse.Namespace
    d: Path
    db_dir: Path
    sim: SimulatorProcess
    run: process.Child
    control: str
    sub: Subscriber
    mounted: bool
    recoveries: dict[str, list[float]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        st = request(self.control, {"op": "status"}, 5.0)
        return st if st and st.get("ok") else {}

    def pids(self) -> dict[str, int]:
        st = self.status()
        out = {"supervisor": self.run.pid}
        for c in st.get("children", []):
            if c.get("pid"):
                out["worker" if c["kind"] == "worker" else "sink"] = int(c["pid"])
        return out

    def usage(self) -> dict[str, dict[str, int]]:
        return {name: proc_usage(pid) for name, pid in self.pids().items()}

    # ------------------------------------------------------------------ faults

    def inject(self, kind: str) -> None:
        if kind == "plc_restart":
            self.sim.control.restart(close_tcp=True)
        elif kind == "loss_burst":
            self.sim.control.faults(drop=0.5)
            time.sleep(5.0)  # the burst itself lasts 5 s
            self.sim.control.clear_faults()
        elif kind in ("worker_kill", "sink_kill"):
            pid = self.pids().get("worker" if kind == "worker_kill" else "sink")
            if pid:
                os.kill(pid, signal.SIGKILL)  # a grandchild; the supervisor reaps it
        elif kind == "disk_full":
            filler = self.db_dir / "filler"
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            time.sleep(10.0)  # the disk stays full for 10 s
            filler.unlink()

    def recover(self, kind: str) -> None:
        end = time.monotonic()
        published = self.sub.total()
        deadline = end + RECOVERY_LIMIT_S
        while time.monotonic() < deadline:
            if self.sub.all_since(end, self.args.tags) and db_count(self.db) >= published:
                self.recoveries.setdefault(kind, []).append(time.monotonic() - end)
                return
            time.sleep(0.05)
        self.failed.append(kind)

    @property
    def db(self) -> Path:
        return self.db_dir / "soak.sqlite3"


def report(s: Soak, flow_from: float, flow_to: float, usage0: dict[str, Any],
           usage1: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The accounting: every sample the PLC produced is published or inside a recorded
    outage (acquisition), and every published sample is stored or inside a recorded bus gap
    (the sink). A fuzz of a few samples per outage is timing (when exactly an outage began)."""
    con = sqlite3.connect(f"file:{s.db}?mode=ro", uri=True, timeout=10)
    try:
        stored = int(con.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        # A sample stored twice has the same topic, bus sequence and receive time (a restarted
        # worker numbers its messages from 1 again, at other times).
        dup = int(con.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM samples GROUP BY publisher, tag, seq, t_wall_ns"
            " HAVING COUNT(*) > 1)"
        ).fetchone()[0])
        rows = dict(con.execute("SELECT kind, COALESCE(SUM(missed), 0) FROM gaps GROUP BY kind"))
    finally:
        con.close()
    expected = round(s.args.tags * (flow_to - flow_from) * 1000 / s.args.rpi_ms)
    published = s.sub.total()
    outage_missed, bus_missed = int(rows.get("outage", 0)), int(rows.get("bus", 0))
    injected = sum(len(v) for v in s.recoveries.values()) + len(s.failed)
    return {
        "duration_s": round(flow_to - flow_from, 1),
        "faults_injected": injected,
        "faults_recovered": injected - len(s.failed),
        "not_recovered": s.failed,
        "recovery_s": {k: {"n": len(v), "max": round(max(v), 3),
                           "median": round(statistics.median(v), 3)}
                       for k, v in s.recoveries.items()},  # fmt: skip
        "samples_expected": expected,
        "samples_published": published,
        "recorded_lost_outages": outage_missed,
        "recorded_lost_cip_gaps": s.sub.cip_missed,
        "unaccounted_acquisition": expected - published - outage_missed - s.sub.cip_missed,
        "samples_stored": stored,
        "recorded_lost_bus": bus_missed,
        "unaccounted_sink": published - stored - bus_missed,
        "duplicates": dup,
        "usage_start": usage0,
        "usage_end": usage1,
    }


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[bool]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--fault-every", type=float, default=60.0, metavar="S")
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--tags", type=int, default=10)
    p.add_argument("--rpi-ms", type=float, default=50.0)
    p.add_argument("--db-size-mb", type=int, default=256, help="size of the tmpfs for the db")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(143)  # unwind: children stopped, tmpfs unmounted, directory removed

    signal.signal(signal.SIGTERM, on_term)
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        p.error(f"unknown fault(s) {unknown}; choose from {', '.join(FAULTS)}")
    with tempfile.TemporaryDirectory(prefix="pyconpro-soak-") as tmp:
        d = Path(tmp)
        with tmpfs(d / "db", args.db_size_mb) as mounted:
            if "disk_full" in kinds and not mounted:
                print("disk_full needs root (it mounts a tmpfs); left out", file=sys.stderr)
                kinds.remove("disk_full")
            return soak(args, d, d / "db", mounted, kinds)


def soak(args: argparse.Namespace, d: Path, db_dir: Path, mounted: bool, kinds: list[str]) -> int:
    net = _free_net()
    with start_simulator(f"127.77.{net}.2", tcp_port=44818,
                         config=tag_file(d / "tags.toml", args.tags, args.rpi_ms),
                         extra_args=["--seq16", "every"]) as sim:  # fmt: skip
        cfg = d / "soak.toml"
        cfg.write_text(config_text(d, net, sim, args.tags, args.rpi_ms, db_dir / "soak.sqlite3"))
        run = process.spawn([sys.executable, "-m", "pyconpro.cli", "run", str(cfg)],
                            stdout=d / "run.out", stderr=d / "run.out")  # fmt: skip
        sub = Subscriber(f"ipc://{d}/bus")
        s = Soak(args, d, db_dir, sim, run, f"ipc://{d}/ctl-supervisor", sub, mounted)
        try:
            sub.thread.start()
            deadline = time.monotonic() + 60
            while not sub.all_since(0.0, args.tags) or db_count(s.db) == 0:
                if time.monotonic() > deadline or not run.alive():
                    print((d / "run.out").read_text()[-3000:], file=sys.stderr)
                    raise SystemExit("the pipeline did not come up")
                time.sleep(0.1)
            started = time.monotonic()
            flow_from = started - (sub.total() / args.tags) * args.rpi_ms / 1000
            usage0 = s.usage()
            end = started + args.minutes * 60
            k = 0
            while time.monotonic() + args.fault_every <= end:
                time.sleep(args.fault_every)  # the quiet minute between faults is the point
                kind = kinds[k % len(kinds)]
                k += 1
                print(f"{time.monotonic() - started:7.1f} s  {kind}", flush=True)
                s.inject(kind)
                s.recover(kind)
            time.sleep(max(0.0, end - time.monotonic()))
            usage1 = s.usage()
            flow_to = time.monotonic()
            run.send_signal(signal.SIGTERM)  # graceful: workers close, the sink flushes
            run.wait(60)
            sub.stop.set()
            sub.thread.join(5)
            result = report(s, flow_from, flow_to, usage0, usage1)
        finally:
            sub.stop.set()
            run.stop(30)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    fuzz = 0.01 * result["samples_expected"]  # when exactly each outage began and ended
    ok = (not result["not_recovered"] and result["duplicates"] == 0
          and result["unaccounted_sink"] <= 0 and abs(result["unaccounted_acquisition"]) <= fuzz)

    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""End-to-end load benchmark on loopback: simulator -> I/O worker -> ZeroMQ subscriber.

One configuration = N produced tags of one shape consumed at RPI r for S seconds:

  1. a simulator process (``python -m pyconpro.simulator``) serves a generated TOML tag file of N
     produced tags on an unusual loopback address, with ``--seq16 every`` so the CIP 16-bit
     sequence count advances on every datagram it sends (a gap in it is a lost datagram);
  2. one I/O worker process (``python -m pyconpro.workers.io_worker``) on another loopback address
  gets
     the N consumers through its control socket once this script's SUB socket is connected;
  3. once every consumer is RUNNING and a warm-up has passed, this script counts for S seconds
     what arrives on the worker's PUB socket and reads, at both ends of the window, the worker's
     and the simulator's counters (control sockets) and the CPU time of the three processes
     (``/proc/<pid>/stat`` utime + stime, every thread included).

Reported per configuration:
  expected      N x 1000 / r samples/s
  sim sent      datagrams/s the simulator sent (its counter), and production slots it missed
  worker        datagrams/s read and samples/s published (its counters)
  received      samples/s that reached the subscriber, and received / expected
  loss          bus: gaps in the per-topic ``sq``; CIP: gaps in ``cs`` seen by the subscriber
                and the growth of the samples' ``gap`` counters; worker: ``drop_*`` and
                ``pub_drops`` counter deltas
  CPU           % of one core for the worker, the simulator and this subscriber, and the
                worker's CPU % per 1000 samples/s (compare that ratio across machines)
  RSS           worker VmRSS and VmHWM
  latency       worker receive time (``tw`` of the sample) -> subscriber receive
                (``time.time_ns()``), p50 / p99 / max

    scripts/bench_pipeline.py [--tags N] [--rpi-ms R] [--seconds S] [--shape dint|real100|udt|mix]
    scripts/bench_pipeline.py --sweep [--seconds S] [--shape ...]

Every process it starts is its own session (Ctrl-C in a terminal reaches only this script) and is
stopped by PID when the script ends, also on Ctrl-C or SIGTERM: the worker first (it sends
Forward_Close), then the simulator. All three processes share the machine's cores, so the
numbers are those of a whole pipeline on one host; docs/benchmarks.md has measured values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq
from pyconpro.simulator.control import SimulatorControl
from pyconpro.simulator.testing import simulator_command
from pyconpro.workers import process

# The checkout (children run from it, so a plain checkout without an install works too).
ROOT = Path(__file__).resolve().parent.parent

SIM_ADDRESS = "127.83.41.2"
WORKER_ADDRESS = "127.83.41.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SHAPES = ("dint", "real100", "udt", "mix")
SWEEP = ((10, 10.0), (50, 10.0), (200, 10.0), (50, 2.0))
STATS_INTERVAL_S = 0.5

_READY = re.compile(
    r"READY tcp=(?P<addr>[\d.]+):(?P<tcp>\d+) udp=[\d.]+:(?P<udp>\d+)"
    r" control=(?P<chost>[\d.]+):(?P<cport>\d+)"
)


class BenchError(RuntimeError):
    """A process did not start or a consumer did not reach RUNNING (the message says why)."""


# ====================================================================== tag file


_UDT = """\
[types.BenchUdt]
members = [
  { name = "Running", type = "BOOL" },
  { name = "Faulted", type = "BOOL" },
  { name = "Speed", type = "REAL" },
  { name = "Counts", type = "DINT", dims = 40 },
  { name = "Temps", type = "REAL", dims = 40 },
  { name = "Name", type = "STRING" },
]
"""

# (Logix type, bytes, tag file lines). Values move through cheap scalar generators only: the
# simulator ticks every tag's generators at every production wake-up, and a generator on a
# 100-element array would make the simulator, not the worker, the bottleneck. Samples are
# counted by the CIP sequence (--seq16 every), so unchanged values cost the pipeline the same.
_SHAPE_TAGS: dict[str, tuple[str, int, str]] = {
    "dint": ("DINT", 4, 'generator = { kind = "counter", interval_s = 0.01 }\n'),
    "real100": ("REAL[100]", 400, ""),
    "udt": (
        "BenchUdt",
        416,
        (
            '[tags.generators]\n"Speed" = { kind = "sine", amplitude = 100 }\n'
            '"Running" = { kind = "counter", interval_s = 0.5 }\n'
        ),
    ),
}


def tag_shapes(shape: str, n: int) -> list[str]:
    """The shape of each of the ``n`` tags (``mix`` cycles dint, real100, udt)."""
    if shape == "mix":
        return [("dint", "real100", "udt")[i % 3] for i in range(n)]
    return [shape] * n


def tag_name(i: int) -> str:
    return f"T{i:04d}"


def tag_file(shape: str, n: int, max_consumers: int = 2) -> str:
    """A simulator tag file (docs/simulator.md) with ``n`` produced tags named T0000..."""
    shapes = tag_shapes(shape, n)
    out = ['[controller]\nprogram_name = "PYCONPRO_BENCH"\n']
    if "udt" in shapes:
        out.append(_UDT)
    for i, s in enumerate(shapes):
        logix, _size, extra = _SHAPE_TAGS[s]
        out.append(
            f'\n[[tags]]\nname = "{tag_name(i)}"\ntype = "{logix}"\nproduced = true\n'
            f"max_consumers = {max_consumers}\n{extra}"
        )
    return "".join(out)


# ====================================================================== processes


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def udp_socket_drops(addresses: Sequence[str]) -> dict[str, int]:
    """Datagrams the kernel dropped on the UDP sockets bound to each address (receive buffer
    full): the ``drops`` column of /proc/net/udp, summed per local address."""
    want = {socket.inet_aton(a)[::-1].hex().upper(): a for a in addresses}
    out = dict.fromkeys(addresses, 0)
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            cols = line.split()
            ip = cols[1].split(":")[0]
            if ip in want:
                out[want[ip]] += int(cols[-1])
    return out


def system_cpu_s() -> float:
    """Busy CPU seconds of the whole machine, all cores (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def proc_mem_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


@dataclass
class Child:
    """A subprocess in its own process group, with stderr in a temporary log file
    (``process.spawn_with_log``)."""

    name: str
    proc: process.Child

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def first_line(self) -> str:
        return self.proc.first_line

    def log_tail(self, chars: int = 3000) -> str:
        return self.proc.stderr_text()[-chars:]

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (graceful: the worker Forward_Closes), then SIGKILL; by PID only; the log
        is deleted."""
        return self.proc.close(timeout)


def _any_line(line: str) -> dict[str, Any] | None:
    return {"line": line} if line else None


def spawn(name: str, cmd: Sequence[str], timeout: float) -> Child:
    """Start ``cmd`` and return once it printed its first stdout line (its ready line); a
    child that does not is killed (also on an interrupt while waiting)."""
    try:
        # Own process group: a terminal's Ctrl-C reaches only this script, which then stops
        # the children in order (worker first, so its Forward_Close still finds the simulator).
        proc = process.spawn_with_log(
            cmd, log_prefix=f"pyconpro-bench-{name}-", ready=_any_line, cwd=ROOT,
            env=process.source_env(ROOT), ready_timeout_s=timeout,
        )  # fmt: skip
    except process.SpawnError as err:  # its last lines are in the SpawnError
        raise BenchError(f"{name} did not start: {err}") from None
    return Child(name, proc)


class Processes:
    """Every child this script started; ``close()`` stops them newest first, by PID."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.extra: list[process.Child] = []  # helpers without a ready line (py-spy)

    def start(self, name: str, cmd: Sequence[str], timeout: float = 30.0) -> Child:
        child = spawn(name, cmd, timeout)
        self.children.append(child)
        return child

    def close(self) -> None:
        for proc in self.extra:
            proc.kill()
        self.extra.clear()
        while self.children:
            child = self.children.pop()
            try:
                child.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"warning: stopping {child.name} (pid {child.pid}): {exc}", file=sys.stderr)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM / SIGHUP raise KeyboardInterrupt, so ``finally`` blocks stop the children."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def start_simulator(
    procs: Processes,
    tags_path: Path,
    *,
    address: str = SIM_ADDRESS,
    max_connections: int = 250,
    extra: Sequence[str] = (),
) -> tuple[Child, dict[str, Any]]:
    cmd = simulator_command(
        address,
        config=tags_path,
        extra_args=[
            "--seq16",
            "every",
            "--max-connections",
            str(max_connections),
            "--log-level",
            "WARNING",
            *extra,
        ],
    )
    sim = procs.start("simulator", cmd)
    m = _READY.search(sim.first_line)
    if m is None:
        raise BenchError(
            f"unexpected simulator ready line {sim.first_line!r}; log:\n" + sim.log_tail()
        )
    info = {
        "address": m["addr"],
        "tcp_port": int(m["tcp"]),
        "udp_port": int(m["udp"]),
        "control": (m["chost"], int(m["cport"])),
    }
    return sim, info


def start_worker(
    procs: Processes,
    *,
    address: str = WORKER_ADDRESS,
    stats_interval: float = STATS_INTERVAL_S,
    extra: Sequence[str] = (),
) -> tuple[Child, dict[str, Any]]:
    cmd = [
        sys.executable,
        "-m",
        "pyconpro.workers.io_worker",
        "--local-address",
        address,
        "--udp-port",
        "0",
        "--pub",
        "tcp://127.0.0.1:0",
        "--control",
        "tcp://127.0.0.1:0",
        "--stats-interval",
        str(stats_interval),
        "--log-level",
        "WARNING",
        *extra,
    ]
    worker = procs.start("worker", cmd)
    try:
        info: dict[str, Any] = json.loads(worker.first_line)
    except ValueError:
        raise BenchError(
            f"unexpected worker ready line {worker.first_line!r}; log:\n" + worker.log_tail()
        ) from None
    return worker, info


class Control:
    """REQ client of the worker's control socket (docs/worker.md "Control protocol")."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, timeout: float = 30.0) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.timeout_ms = int(timeout * 1000)

    def __call__(self, op: str, **fields: Any) -> dict[str, Any]:
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        req.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        try:
            req.connect(self.endpoint)
            req.send(msgpack.packb({"op": op, **fields}))
            try:
                reply: dict[str, Any] = msgpack.unpackb(req.recv(), raw=False)
            except zmq.Again:
                raise BenchError(
                    f"worker control {op!r}: no reply within {self.timeout_ms / 1000:g} s"
                ) from None
            return reply
        finally:
            req.close()


def consumer_map(
    sim: dict[str, Any], i: int, shape: str, rpi_ms: float, learn_types: bool = False
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "plc": "bench",
        "address": sim["address"],
        "port": sim["tcp_port"],
        "udp_port": sim["udp_port"],
        "tag": tag_name(i),
        "rpi_us": round(rpi_ms * 1000),
    }
    if not learn_types and shape != "udt":  # a UDT is always learned from the controller
        spec["type"] = _SHAPE_TAGS[shape][0]
    return spec


def add_consumers(control: Control, specs: Sequence[dict[str, Any]]) -> None:
    for spec in specs:
        reply = control("add", consumer=spec)
        if not reply.get("ok"):
            raise BenchError(f"worker refused consumer {spec}: {reply.get('error')}")


def wait_running(
    control: Control, count: int, timeout: float, idle: Callable[[float], None] = time.sleep
) -> None:
    """Until ``count`` consumers are RUNNING; ``idle(seconds)`` between polls (drain the bus)."""
    deadline = time.monotonic() + timeout
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        consumers = control("list")["consumers"]
        states = {}
        for c in consumers:
            states[c["state"]] = states.get(c["state"], 0) + 1
        if states.get("RUNNING", 0) >= count:
            return
        failed = [c for c in consumers if c["state"] == "FAILED"]
        if failed:
            raise BenchError(f"consumer {failed[0]['key']} FAILED: {failed[0]['failure']}")
        idle(0.2)
    raise BenchError(f"{count} consumers not RUNNING within {timeout:g} s: {states}")


# ====================================================================== measuring


@dataclass
class TopicState:
    sq: int
    cs: int
    gap: int
    resync: bool = False  # the connection reopened: its next cs starts a new count


@dataclass
class Window:
    """What the subscriber counted while ``counting`` was on."""

    counting: bool = False
    samples: int = 0
    bus_lost: int = 0  # sq jumps
    cip_lost: int = 0  # cs jumps (every datagram advances cs: --seq16 every)
    reopens: int = 0  # samples after a connection state change: cs not compared
    gap_growth: int = 0  # growth of the samples' own gap counters
    other: dict[str, int] = field(default_factory=dict)  # events by kind, stats messages
    stats: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (received, counters)
    latencies_ns: list[int] = field(default_factory=list)
    topics: dict[bytes, TopicState] = field(default_factory=dict)


def drain(sub: zmq.Socket[Any], until: float, w: Window) -> None:
    """Receive and account every message until ``until`` (time.monotonic())."""
    unpackb = msgpack.unpackb
    topics = w.topics
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        if not sub.poll(max(1, int(left * 1000))):
            continue
        # A burst: take what is queued without polling again.
        for _ in range(1000):
            try:
                topic, body = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now_ns = time.time_ns()
            m = unpackb(body, raw=False)
            if topic.startswith(b"sample/"):
                sq, cs, gap = m["sq"], m["cs"], m["gap"]
                st = topics.get(topic)
                if st is None:
                    topics[topic] = TopicState(sq, cs, gap)
                else:
                    if w.counting:
                        w.samples += 1
                        w.bus_lost += max(0, sq - st.sq - 1)
                        if st.resync:
                            w.reopens += 1
                        elif cs != st.cs:
                            w.cip_lost += ((cs - st.cs) & 0xFFFF) - 1
                        w.gap_growth += gap - st.gap
                        w.latencies_ns.append(now_ns - m["tw"])
                    st.sq, st.cs, st.gap, st.resync = sq, cs, gap, False
            else:
                if topic.startswith(b"stats/"):
                    w.stats.append((time.monotonic(), m["c"]))
                elif topic.startswith(b"event/") and m.get("to"):
                    # A new triad starts a new CIP sequence count (the worker publishes the
                    # event before the first sample of the new connection).
                    st = topics.get(b"sample/" + topic[len(b"event/") :])
                    if st is not None:
                        st.resync = True
                if w.counting:
                    kind = "stats" if topic.startswith(b"stats/") else f"event:{m.get('k')}"
                    w.other[kind] = w.other.get(kind, 0) + 1


def percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[k])


@dataclass
class Config:
    tags: int
    rpi_ms: float
    seconds: float
    shape: str
    warmup_s: float = 1.0
    learn_types: bool = False
    profile: str | None = None  # py-spy raw (collapsed stacks) output of the worker


def start_profiler(procs: Processes, pid: int, cfg: Config) -> process.Child:
    """py-spy sampling the worker for the window (pip install py-spy; needs ptrace rights)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(exe):
        raise BenchError("--profile-worker needs py-spy: pip install py-spy")
    assert cfg.profile is not None
    proc = process.spawn(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(cfg.seconds))),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            cfg.profile,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs.extra.append(proc)
    return proc


def finish_profiler(proc: process.Child, timeout: float) -> None:
    """py-spy stops by itself after --duration; kill it only when it does not."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    proc.kill()


def run_config(
    cfg: Config, *, sim_address: str = SIM_ADDRESS, worker_address: str = WORKER_ADDRESS
) -> dict[str, Any]:
    """Start simulator + worker, measure one window, stop both. Returns the metrics."""
    procs = Processes()
    ctx: zmq.Context[Any] = zmq.Context()
    tmp = tempfile.TemporaryDirectory(prefix="pyconpro-bench-")
    try:
        tags_path = Path(tmp.name) / "tags.toml"
        tags_path.write_text(tag_file(cfg.shape, cfg.tags))
        sim, sim_info = start_simulator(
            procs, tags_path, address=sim_address, max_connections=max(250, cfg.tags + 10)
        )
        worker, winfo = start_worker(procs, address=worker_address)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)  # the sinks' default
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(winfo["pub"])
        control = Control(ctx, winfo["control"])
        w = Window()
        # Slow-joiner: the first stats message proves the subscription is live before any
        # consumer exists, so no sample of the window can be lost to the connect handshake.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not sub.poll(100):
            pass
        drain(sub, time.monotonic() + 0.05, w)
        shapes = tag_shapes(cfg.shape, cfg.tags)
        add_consumers(
            control,
            [
                consumer_map(sim_info, i, s, cfg.rpi_ms, cfg.learn_types)
                for i, s in enumerate(shapes)
            ],
        )
        wait_running(
            control,
            cfg.tags,
            20 + 0.1 * cfg.tags,
            idle=lambda s: drain(sub, time.monotonic() + s, w),
        )
        drain(sub, time.monotonic() + cfg.warmup_s, w)

        with SimulatorControl(sim_info["control"]) as sim_ctl:
            sc0 = sim_ctl.status()
            pids = {"worker": worker.pid, "sim": sim.pid, "subscriber": os.getpid()}
            cpu0 = {k: proc_cpu_s(pid) for k, pid in pids.items()}
            sys0 = system_cpu_s()
            udp0 = udp_socket_drops((sim_info["address"], worker_address))
            profiler = start_profiler(procs, worker.pid, cfg) if cfg.profile else None
            t0 = time.monotonic()
            w.counting = True
            drain(sub, t0 + cfg.seconds, w)
            w.counting = False
            t_end = time.monotonic()
            elapsed = t_end - t0
            cpu1 = {k: proc_cpu_s(pid) for k, pid in pids.items()}
            sys1 = system_cpu_s()
            udp1 = udp_socket_drops((sim_info["address"], worker_address))
            mem = proc_mem_kb(worker.pid)
            sc1 = sim_ctl.status()
        # The worker's counters come from its stats messages (no control request that could
        # stall its loop inside the window): the last one before the window and the first
        # one after it.
        until = time.monotonic() + 3 * STATS_INTERVAL_S + 2
        while time.monotonic() < until and not any(t >= t_end for t, _ in w.stats):
            drain(sub, min(until, time.monotonic() + STATS_INTERVAL_S / 4), w)
        before = [c for t, c in w.stats if t <= t0]
        after = [c for t, c in w.stats if t >= t_end]
        if not before or not after:
            raise BenchError(
                f"no worker stats message around the window ({len(w.stats)} in"
                " all); is --warmup at least the stats interval?"
            )
        wc0, wc1 = before[-1], after[0]
        if profiler is not None:
            finish_profiler(profiler, cfg.seconds + 10)
        sub.close()
        for child in (worker, sim):
            if child.proc.poll() is not None:
                raise BenchError(
                    f"{child.name} exited during the run ({child.proc.returncode});"
                    f" log:\n{child.log_tail()}"
                )
    finally:
        try:
            procs.close()
        finally:
            ctx.destroy(linger=0)
            tmp.cleanup()

    def wdelta(key: str) -> int:
        return int(wc1.get(key, 0)) - int(wc0.get(key, 0))

    lat = sorted(w.latencies_ns)
    cpu = {k: 100.0 * (cpu1[k] - cpu0[k]) / elapsed for k in cpu0}
    cpu["machine"] = 100.0 * (sys1 - sys0) / elapsed
    cpu["others"] = max(0.0, cpu["machine"] - cpu["worker"] - cpu["sim"] - cpu["subscriber"])
    w_elapsed = float(wc1["uptime_s"]) - float(wc0["uptime_s"])
    worker_samples_s = wdelta("samples") / w_elapsed
    expected = cfg.tags * 1000.0 / cfg.rpi_ms
    return {
        "config": cfg,
        "elapsed_s": elapsed,
        "expected_s": expected,
        "sim_sent_s": (sc1["target"]["datagrams_sent"] - sc0["target"]["datagrams_sent"]) / elapsed,
        "sim_slots_missed": (
            sc1["target"].get("production_slots_missed", 0)
            - sc0["target"].get("production_slots_missed", 0)
        ),
        "worker_datagrams_s": wdelta("datagrams") / w_elapsed,
        "worker_window_s": w_elapsed,
        "worker_samples_s": worker_samples_s,
        "received_s": w.samples / elapsed,
        "received": w.samples,
        "bus_lost": w.bus_lost,
        "cip_lost": w.cip_lost,
        "gap_growth": w.gap_growth,
        "reopens": w.reopens,
        "udp_drops_worker": udp1[worker_address] - udp0[worker_address],
        "udp_drops_sim": udp1[sim_info["address"]] - udp0[sim_info["address"]],
        "worker_drops": {
            k: wdelta(k) for k in sorted(wc1) if k.startswith("drop_") or k == "pub_drops"
        },
        "other": dict(w.other),
        "cpu": cpu,
        "cpu_per_1k": cpu["worker"] / (worker_samples_s / 1000)
        if worker_samples_s
        else float("nan"),
        "rss_kb": mem.get("VmRSS", 0),
        "hwm_kb": mem.get("VmHWM", 0),
        "lat_ms": {
            "p50": percentile(lat, 0.50) / 1e6,
            "p99": percentile(lat, 0.99) / 1e6,
            "max": (lat[-1] / 1e6) if lat else float("nan"),
        },
    }


# ====================================================================== output


def machine_line() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"machine: {os.cpu_count()} cores ({model or platform.machine()}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def print_table(r: dict[str, Any]) -> None:
    cfg: Config = r["config"]
    drops = ", ".join(f"{k} {v}" for k, v in r["worker_drops"].items() if v) or "none"
    other = ", ".join(f"{k} {v}" for k, v in sorted(r["other"].items())) or "none"
    rows = [
        ("expected", f"{r['expected_s']:,.0f} samples/s ({cfg.tags} x 1000 / {cfg.rpi_ms:g} ms)"),
        (
            "simulator sent",
            (
                f"{r['sim_sent_s']:,.0f} datagrams/s"
                f" ({r['sim_slots_missed']} production slots missed)"
            ),
        ),
        (
            "worker read",
            (
                f"{r['worker_datagrams_s']:,.0f} datagrams/s,"
                f" published {r['worker_samples_s']:,.0f} samples/s (its stats over"
                f" {r['worker_window_s']:.2f} s)"
            ),
        ),
        (
            "received",
            (
                f"{r['received_s']:,.0f} samples/s = {r['received_s'] / r['expected_s']:.3f}"
                f" x expected ({r['received']} in {r['elapsed_s']:.2f} s)"
            ),
        ),
        ("loss on the bus", f"{r['bus_lost']} (gaps in sq)"),
        (
            "loss before worker",
            (
                f"{r['cip_lost']} (gaps in cs), sample gap counters"
                f" +{r['gap_growth']}; kernel drops (receive buffer full):"
                f" worker UDP {r['udp_drops_worker']}, simulator UDP"
                f" {r['udp_drops_sim']} (heartbeats)"
            ),
        ),
        ("reconnections", f"{r['reopens']} samples after a connection state change"),
        ("worker drops", drops),
        ("other messages", other),
        (
            "CPU worker",
            (f"{r['cpu']['worker']:.1f} % of a core, {r['cpu_per_1k']:.2f} % per 1000 samples/s"),
        ),
        ("CPU simulator", f"{r['cpu']['sim']:.1f} %"),
        ("CPU subscriber", f"{r['cpu']['subscriber']:.1f} %"),
        (
            "CPU machine",
            (
                f"{r['cpu']['machine']:.1f} % of {os.cpu_count()} x 100 %, of which"
                f" other processes {r['cpu']['others']:.1f} %"
            ),
        ),
        ("worker memory", f"RSS {r['rss_kb'] / 1024:.1f} MiB, peak {r['hwm_kb'] / 1024:.1f} MiB"),
        (
            "latency tw -> SUB",
            (
                f"p50 {r['lat_ms']['p50']:.2f} ms, p99 {r['lat_ms']['p99']:.2f} ms,"
                f" max {r['lat_ms']['max']:.2f} ms"
            ),
        ),
    ]
    print(f"\n== {cfg.tags} x {cfg.shape} tags at RPI {cfg.rpi_ms:g} ms, {r['elapsed_s']:.1f} s ==")
    for k, v in rows:
        print(f"  {k:<19} {v}")


def print_summary(results: Sequence[dict[str, Any]]) -> None:
    print(
        "\nsummary (lost = gaps in sq + gaps in cs; tmo = connection timeouts; CPU in % of"
        " one core; per-1k = worker CPU % per 1000 samples/s; others = CPU of processes"
        " not in the benchmark)"
    )
    head = (
        f"{'tags':>5} {'shape':>7} {'rpi ms':>6} {'expect/s':>9} {'recv/s':>9} {'ratio':>6}"
        f" {'lost':>5} {'tmo':>4} {'wrk cpu':>7} {'per-1k':>6} {'sim cpu':>7} {'sub cpu':>7}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>7} {'others':>6}"
    )
    print(head)
    for r in results:
        cfg: Config = r["config"]
        lost = r["bus_lost"] + r["cip_lost"]
        print(
            f"{cfg.tags:>5} {cfg.shape:>7} {cfg.rpi_ms:>6g} {r['expected_s']:>9,.0f}"
            f" {r['received_s']:>9,.0f} {r['received_s'] / r['expected_s']:>6.3f} {lost:>5}"
            f" {r['other'].get('event:timeout', 0):>4}"
            f" {r['cpu']['worker']:>7.1f} {r['cpu_per_1k']:>6.2f} {r['cpu']['sim']:>7.1f}"
            f" {r['cpu']['subscriber']:>7.1f} {r['lat_ms']['p50']:>7.2f}"
            f" {r['lat_ms']['p99']:>7.2f} {r['rss_kb'] / 1024:>7.1f}"
            f" {r['cpu']['others']:>6.1f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="See docs/benchmarks.md."
    )
    ap.add_argument("--tags", type=int, default=50, help="produced tags consumed [50]")
    ap.add_argument("--rpi-ms", type=float, default=10.0, help="RPI in ms [10]")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring window [5]")
    ap.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds after every consumer is RUNNING before measuring [1]",
    )
    ap.add_argument(
        "--shape",
        choices=SHAPES,
        default="dint",
        help="DINT, REAL[100], a 416-byte UDT, or a mix of the three [dint]",
    )
    ap.add_argument(
        "--learn-types",
        action="store_true",
        help="let the worker learn every type from the simulator (a UDT always is)",
    )
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="run " + ", ".join(f"{n} tags at {r:g} ms" for n, r in SWEEP) + " and print a summary",
    )
    ap.add_argument(
        "--profile-worker",
        metavar="FILE",
        help="sample the worker with py-spy during the window; collapsed stacks to"
        " FILE (with --sweep: FILE.<tags>x<rpi>)",
    )
    ap.add_argument("--sim-address", default=SIM_ADDRESS, help=f"[{SIM_ADDRESS}]")
    ap.add_argument("--worker-address", default=WORKER_ADDRESS, help=f"[{WORKER_ADDRESS}]")
    args = ap.parse_args(argv)
    if args.tags < 1 or args.rpi_ms <= 0 or args.seconds <= 0:
        ap.error("--tags, --rpi-ms and --seconds must be positive")
    if args.warmup < STATS_INTERVAL_S:
        ap.error(f"--warmup must be at least the worker's stats interval ({STATS_INTERVAL_S} s)")
    plan = SWEEP if args.sweep else ((args.tags, args.rpi_ms),)
    print(machine_line())
    results = []
    with terminate_as_interrupt():
        try:
            for n, rpi in plan:
                profile = args.profile_worker
                if profile and args.sweep:
                    profile = f"{profile}.{n}x{rpi:g}"
                cfg = Config(
                    n, rpi, args.seconds, args.shape, args.warmup, args.learn_types, profile
                )
                r = run_config(
                    cfg, sim_address=args.sim_address, worker_address=args.worker_address
                )
                print_table(r)
                results.append(r)
                sys.stdout.flush()
        except KeyboardInterrupt:
            print("\ninterrupted; every process this script started is stopped", file=sys.stderr)
            return 130
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The processes a benchmark starts, and what /proc says about them.

Every child is started and stopped through ``workers.process`` (own process group, the
parent-death signal, a ready line with a deadline; SIGTERM, wait, SIGKILL), its stderr in a
temporary log file that is quoted when it fails. ``Processes`` stops them newest first, so a
worker still finds its simulator for the final Forward_Close. ``terminate_as_interrupt`` turns
SIGTERM and SIGHUP into KeyboardInterrupt so the ``finally`` blocks that stop the children run.

Measurements read /proc: a process's CPU time (every thread, so libzmq's I/O thread counts),
its memory, the machine's busy time, and the kernel's drop counter of UDP sockets ("receive
buffer full", ``/proc/net/udp``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from pyconpro.simulator.testing import simulator_command
from pyconpro.workers import process

CLK_TCK = os.sysconf("SC_CLK_TCK")

_SIM_READY = re.compile(
    r"READY tcp=(?P<addr>[\d.]+):(?P<tcp>\d+) udp=[\d.]+:(?P<udp>\d+)"
    r" control=(?P<chost>[\d.]+):(?P<cport>\d+)"
)


class BenchError(RuntimeError):
    """A benchmark cannot go on (a process did not start, a consumer did not reach RUNNING, a
    compiler is missing); the message says why and what to do."""


# ====================================================================== /proc


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


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


class CpuMeter:
    """CPU of some processes and of the whole machine between ``start()`` and ``stop()``."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._t0 = 0.0
        self._cpu0: dict[str, float] = {}
        self._sys0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {k: proc_cpu_s(pid) for k, pid in self.pids.items()}
        self._sys0 = system_cpu_s()

    def stop(self) -> dict[str, float]:
        """CPU seconds of each process, ``machine`` (busy seconds of all cores) and
        ``elapsed`` (wall seconds) since ``start()``."""
        out = {k: proc_cpu_s(pid) - self._cpu0[k] for k, pid in self.pids.items()}
        out["machine"] = system_cpu_s() - self._sys0
        out["elapsed"] = time.monotonic() - self._t0
        return out


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


def load_line() -> str:
    """The load average before a run: a machine busy with other work gives other numbers."""
    with contextlib.suppress(OSError):
        one, five, _rest = Path("/proc/loadavg").read_text().split(maxsplit=2)
        return f"load average before the run: {one} (1 min), {five} (5 min)"
    return "load average: unknown"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of already sorted values (nearest rank); NaN when there are none."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[k])


# ====================================================================== children


@dataclass
class Child:
    """A child process with its stderr in a temporary log file (``process.spawn_with_log``)."""

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

    def check_alive(self) -> None:
        """BenchError with the log tail when the child has exited."""
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} exited during the run"
                f" ({process.describe_status(self.proc.returncode or 0)}); log:\n"
                + self.log_tail()
            )

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (graceful: a worker Forward_Closes), then SIGKILL; by PID only; the log is
        deleted."""
        return self.proc.close(timeout)


def _any_line(line: str) -> dict[str, Any] | None:
    return {"line": line} if line else None


def spawn(
    name: str,
    cmd: Sequence[str],
    timeout: float,
    ready: process.ReadyParser | None = _any_line,
    stdout: process.Stream = None,
) -> Child:
    """Start ``cmd``; with ``ready`` return once it printed its first stdout line (a child that
    does not is killed, also on an interrupt while waiting), else at once."""
    try:
        # Own process group: a terminal's Ctrl-C reaches only the benchmark, which then stops
        # the children in order (worker first, so its Forward_Close still finds the simulator).
        proc = process.spawn_with_log(
            cmd, log_prefix=f"pyconpro-bench-{name}-", ready=ready, stdout=stdout,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), ready_timeout_s=timeout,
        )  # fmt: skip
    except process.SpawnError as err:  # its last lines are in the SpawnError
        raise BenchError(f"{name} did not start: {err}") from None
    return Child(name, proc)


class Processes:
    """Every child a benchmark started; ``close()`` stops them newest first, by PID."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.extra: list[process.Child] = []  # helpers without a ready line (py-spy)

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        timeout: float = 30.0,
        ready: process.ReadyParser | None = _any_line,
        stdout: process.Stream = None,
    ) -> Child:
        child = spawn(name, cmd, timeout, ready, stdout)
        self.children.append(child)
        return child

    def forget(self, child: Child) -> None:
        """``child`` was stopped by its user."""
        with contextlib.suppress(ValueError):
            self.children.remove(child)

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


# ====================================================================== simulator and worker


@dataclass(frozen=True)
class SimInfo:
    """Where a simulator listens (its ready line)."""

    address: str
    tcp_port: int
    udp_port: int
    control: tuple[str, int]


def start_simulator(
    procs: Processes,
    tags_path: Path,
    *,
    address: str,
    max_connections: int = 250,
    extra: Sequence[str] = (),
    name: str = "simulator",
) -> tuple[Child, SimInfo]:
    """``python -m pyconpro.simulator`` serving ``tags_path``, the CIP sequence count advancing
    on every datagram (``--seq16 every``: a gap in it is a lost datagram)."""
    cmd = simulator_command(
        address,
        config=tags_path,
        extra_args=[
            "--seq16", "every", "--max-connections", str(max_connections),
            "--log-level", "WARNING", *extra,
        ],
    )  # fmt: skip
    sim = procs.start(name, cmd)
    m = _SIM_READY.search(sim.first_line)
    if m is None:
        raise BenchError(
            f"unexpected simulator ready line {sim.first_line!r}; log:\n" + sim.log_tail()
        )
    return sim, SimInfo(m["addr"], int(m["tcp"]), int(m["udp"]), (m["chost"], int(m["cport"])))


def start_worker(
    procs: Processes,
    *,
    address: str,
    stats_interval: float = 0.5,
    extra: Sequence[str] = (),
) -> tuple[Child, dict[str, Any]]:
    """``python -m pyconpro.workers.io_worker`` on ``address`` (UDP port, PUB and control
    endpoints chosen by the OS); its ready line's fields."""
    cmd = [
        sys.executable, "-m", "pyconpro.workers.io_worker",
        "--local-address", address, "--udp-port", "0",
        "--pub", "tcp://127.0.0.1:0", "--control", "tcp://127.0.0.1:0",
        "--stats-interval", str(stats_interval), "--log-level", "WARNING", *extra,
    ]  # fmt: skip
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


def add_consumers(control: Control, specs: Sequence[dict[str, Any]]) -> None:
    for spec in specs:
        reply = control("add", consumer=spec)
        if not reply.get("ok"):
            raise BenchError(f"worker refused consumer {spec}: {reply.get('error')}")


def count_states(consumers: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    states: dict[str, int] = {}
    for c in consumers:
        states[c["state"]] = states.get(c["state"], 0) + 1
    return states


def wait_running(
    control: Control, count: int, timeout: float, idle: Callable[[float], None] = time.sleep,
    poll_s: float = 0.2,
) -> None:
    """Until ``count`` consumers are RUNNING; ``idle(seconds)`` between polls (drain the bus)."""
    deadline = time.monotonic() + timeout
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        consumers = control("list")["consumers"]
        states = count_states(consumers)
        if states.get("RUNNING", 0) >= count:
            return
        failed = [c for c in consumers if c["state"] == "FAILED"]
        if failed:
            raise BenchError(f"consumer {failed[0]['key']} FAILED: {failed[0]['failure']}")
        idle(poll_s)
    raise BenchError(f"{count} consumers not RUNNING within {timeout:g} s: {states}")


def wait_subscribed(control: Control, timeout: float = 10.0) -> None:
    """Until the worker's PUB socket has a subscription (docs/worker.md: subscribe first, then
    add consumers, or their first messages are dropped by ZeroMQ)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if control("status").get("bus_subscriptions", 0) > 0:
            return
        time.sleep(0.02)
    raise BenchError(f"the worker saw no bus subscription within {timeout:g} s")


# ====================================================================== tag files


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

# (Logix type, bytes, generator lines). Values move through cheap scalar generators only: the
# simulator ticks every tag's generators at every production wake-up, and a generator on a
# 100-element array would make the simulator, not the worker, the bottleneck. Samples are
# counted by the CIP sequence (--seq16 every), so unchanged values cost the pipeline the same.
SHAPE_TAGS: dict[str, tuple[str, int, str]] = {
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
SHAPES = ("dint", "real100", "udt", "mix")


def tag_shapes(shape: str, n: int) -> list[str]:
    """The shape of each of the ``n`` tags (``mix`` cycles dint, real100, udt)."""
    if shape == "mix":
        return [("dint", "real100", "udt")[i % 3] for i in range(n)]
    return [shape] * n


def tag_name(i: int) -> str:
    return f"T{i:04d}"


def tag_file(shape: str, n: int, max_consumers: int = 2, generators: bool = True) -> str:
    """A simulator tag file (docs/simulator.md) with ``n`` produced tags named T0000...;
    without ``generators`` every value stays as it starts (every datagram of a tag carries the
    same image, as a template sent by the native load source does)."""
    shapes = tag_shapes(shape, n)
    out = ['[controller]\nprogram_name = "PYCONPRO_BENCH"\n']
    if "udt" in shapes:
        out.append(_UDT)
    for i, s in enumerate(shapes):
        logix, _size, extra = SHAPE_TAGS[s]
        out.append(
            f'\n[[tags]]\nname = "{tag_name(i)}"\ntype = "{logix}"\nproduced = true\n'
            f"max_consumers = {max_consumers}\n{extra if generators else ''}"
        )
    return "".join(out)


def consumer_map(
    sim: SimInfo, i: int, shape: str, rpi_ms: float, learn_types: bool = False,
    *, plc: str = "bench", ot_rpi_ms: float | None = None,
) -> dict[str, Any]:
    """The worker's consumer of tag ``i`` of a simulator (docs/worker.md "Consumers")."""
    spec: dict[str, Any] = {
        "plc": plc,
        "address": sim.address,
        "port": sim.tcp_port,
        "udp_port": sim.udp_port,
        "tag": tag_name(i),
        "rpi_us": round(rpi_ms * 1000),
    }
    if ot_rpi_ms is not None:
        spec["ot_rpi_us"] = round(ot_rpi_ms * 1000)
    if not learn_types and shape != "udt":  # a UDT is always learned from the controller
        spec["type"] = SHAPE_TAGS[shape][0]
    return spec

"""End-to-end load benchmark on loopback: simulator -> I/O worker -> ZeroMQ subscriber
(``scripts/bench_pipeline.py``; docs/benchmarks.md describes its rows).

One configuration = N produced tags of one shape consumed at RPI r for S seconds:

  1. a simulator process (``python -m pyconpro.simulator``) serves a generated TOML tag file of N
     produced tags on an unusual loopback address, with ``--seq16 every`` so the CIP 16-bit
     sequence count advances on every datagram it sends (a gap in it is a lost datagram);
  2. one I/O worker process (``python -m pyconpro.workers.io_worker``) on another loopback address
     gets the N consumers through its control socket once this process's SUB socket is
     connected;
  3. once every consumer is RUNNING and a warm-up has passed, this process counts for S seconds
     what arrives on the worker's PUB socket and reads, at both ends of the window, the worker's
     and the simulator's counters (control sockets) and the CPU time of the three processes
     (``/proc/<pid>/stat`` utime + stime, every thread included).

Unlike ``pyconpro bench`` the load source is the pure-Python simulator itself, so the table is
the cost of a whole pipeline on one host, and the simulator is the limit of the fast
configurations (``production_slots_missed``).

    scripts/bench_pipeline.py [--tags N] [--rpi-ms R] [--seconds S] [--shape dint|real100|udt|mix]
    scripts/bench_pipeline.py --sweep [--seconds S] [--shape ...]

Every process it starts is its own process group (Ctrl-C in a terminal reaches only this
process) and is stopped by PID when it ends, also on Ctrl-C or SIGTERM: the worker first (it
sends Forward_Close), then the simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from pyconpro.bench.counting import Window, drain
from pyconpro.bench.procs import (
    SHAPES,
    BenchError,
    Control,
    Processes,
    add_consumers,
    consumer_map,
    machine_line,
    percentile,
    proc_cpu_s,
    proc_mem_kb,
    start_simulator,
    start_worker,
    system_cpu_s,
    tag_file,
    tag_shapes,
    terminate_as_interrupt,
    udp_socket_drops,
    wait_running,
)
from pyconpro.simulator.control import SimulatorControl
from pyconpro.workers import process

SIM_ADDRESS = "127.83.41.2"
WORKER_ADDRESS = "127.83.41.1"
SWEEP = ((10, 10.0), (50, 10.0), (200, 10.0), (50, 2.0))
STATS_INTERVAL_S = 0.5


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

        with SimulatorControl(sim_info.control) as sim_ctl:
            sc0 = sim_ctl.status()
            pids = {"worker": worker.pid, "sim": sim.pid, "subscriber": os.getpid()}
            cpu0 = {k: proc_cpu_s(pid) for k, pid in pids.items()}
            sys0 = system_cpu_s()
            udp0 = udp_socket_drops((sim_info.address, worker_address))
            profiler = start_profiler(procs, worker.pid, cfg) if cfg.profile else None
            t0 = time.monotonic()
            w.counting = True
            drain(sub, t0 + cfg.seconds, w)
            w.counting = False
            t_end = time.monotonic()
            elapsed = t_end - t0
            cpu1 = {k: proc_cpu_s(pid) for k, pid in pids.items()}
            sys1 = system_cpu_s()
            udp1 = udp_socket_drops((sim_info.address, worker_address))
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
            child.check_alive()
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
        "udp_drops_sim": udp1[sim_info.address] - udp0[sim_info.address],
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
        prog="scripts/bench_pipeline.py", description=(__doc__ or "").splitlines()[0],
        epilog="See docs/benchmarks.md.",
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

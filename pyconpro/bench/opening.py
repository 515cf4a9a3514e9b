"""Figure ``open``: how long one worker takes to open K connections across M simulated PLCs.

M simulators (one per address, ``Env.plc_address``), each serving K / M produced tags, and one
worker. The K consumers are added through the worker's control socket one request after the
other, as fast as it answers (what a supervisor starting a large configuration does); the
figure is the time from the first ``add`` until ``list`` shows all K RUNNING (polled every
20 ms), with the mean control round trip per ``add``. Then the connections run for a hold
period at the stated RPI (data and heartbeats), after which the worker's ``status`` gives the
watchdog timeouts of that period, and /proc the worker's CPU over it and its memory growth per
connection since before the first ``add``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pyconpro.bench.common import Env, Figure, stop_all
from pyconpro.bench.procs import (
    BenchError,
    Child,
    Control,
    CpuMeter,
    SimInfo,
    consumer_map,
    count_states,
    proc_mem_kb,
    start_simulator,
    start_worker,
    tag_file,
    wait_running,
)


@dataclass(frozen=True)
class OpenOptions:
    connections: int = 1000
    plcs: int = 10
    rpi_ms: float = 1000.0
    hold_s: float = 10.0


def _timeouts(control: Control) -> int:
    status = control("status")
    return sum(int(c["counters"].get("timeouts", 0)) for c in status["consumers"])


def measure(env: Env, opts: OpenOptions) -> Figure:
    if not 1 <= opts.plcs <= 200:
        raise BenchError(f"--open-plcs {opts.plcs}: give 1..200 (one loopback address each)")
    per_plc = math.ceil(opts.connections / opts.plcs)
    work = env.scratch("open")
    tags = work / "tags.toml"
    tags.write_text(tag_file("dint", per_plc, max_consumers=1, generators=False))
    env.progress(f"open: {opts.connections} connections across {opts.plcs} simulated PLCs,"
                 f" RPI {opts.rpi_ms:g} ms, hold {opts.hold_s:g} s")
    started: list[Child] = []
    try:
        sims: list[SimInfo] = []
        for i in range(opts.plcs):
            child, info = start_simulator(
                env.procs, tags, address=env.plc_address(i), max_connections=per_plc + 10,
                name=f"simulator-{i}",
            )
            started.append(child)
            sims.append(info)
        worker, winfo = start_worker(env.procs, address=env.worker_address, stats_interval=0,
                                     extra=env.worker_args)
        started.append(worker)
        control = Control(env.ctx, winfo["control"], timeout=60.0)
        specs = [
            consumer_map(sims[k % opts.plcs], k // opts.plcs, "dint", opts.rpi_ms,
                         plc=f"plc{k % opts.plcs}")
            for k in range(opts.connections)
        ]
        rss0 = proc_mem_kb(worker.pid).get("VmRSS", 0)
        t0 = time.monotonic()
        for spec in specs:
            reply = control("add", consumer=spec)
            if not reply.get("ok"):
                raise BenchError(f"worker refused consumer {spec}: {reply.get('error')}")
        t_added = time.monotonic()
        wait_running(control, opts.connections, 60 + 0.05 * opts.connections, poll_s=0.02)
        t_running = time.monotonic()
        cpu = CpuMeter({"worker": worker.pid})
        cpu.start()
        timeouts0 = _timeouts(control)
        time.sleep(opts.hold_s)
        timeouts = _timeouts(control) - timeouts0
        used = cpu.stop()
        states = count_states(control("list")["consumers"])
        rss1 = proc_mem_kb(worker.pid).get("VmRSS", 0)
        for child in started:
            child.check_alive()
    finally:
        stop_all(env, started)
    env.progress(f"  all RUNNING {t_running - t0:.2f} s after the first add"
                 f" ({1000 * (t_added - t0) / opts.connections:.2f} ms per add), {timeouts}"
                 f" timeouts in {opts.hold_s:g} s, states after it {states}")
    fig = Figure(conditions={
        "open_connections": opts.connections, "open_plcs": opts.plcs,
        "open_rpi_ms": opts.rpi_ms, "open_hold_s": opts.hold_s,
    })  # fmt: skip
    fig.values.update(
        open_all_running_s=t_running - t0,
        open_add_ms=1000 * (t_added - t0) / opts.connections,
        open_timeouts=float(timeouts),
        open_rss_kib_per_connection=(rss1 - rss0) / opts.connections,
        open_worker_cpu_pct=100.0 * used["worker"] / used["elapsed"],
    )
    if states.get("RUNNING", 0) != opts.connections:
        fig.notes.append(f"open: after the hold not every connection was RUNNING: {states}")
    return fig

"""Figures ``heartbeats`` and ``heartbeat_single``: how punctually the worker sends O->T
heartbeats, measured where they arrive.

A simulator serves N produced tags; one worker consumes them with data at 1 s and heartbeats at
the stated O->T RPI. Once every connection is RUNNING (and a warm-up has passed), the simulator
records every datagram its class-1 socket receives with the kernel's receive time
(``record_heartbeats``, ``SO_TIMESTAMPNS``: the time does not depend on how busy the simulator
is) for the stated number of seconds. ``analyse`` then compares each connection's heartbeats
with the ideal absolute schedule ``origin + k x RPI``:

* the schedule's phase is unknown to the receiver, but a sender that follows absolute deadlines
  is never early, only late by less than one period (later than that it skips the slot), and
  sends at most one heartbeat per slot: the heartbeats' phases (arrival time modulo the RPI) fill
  an arc of the circle that starts at the ideal phase, and two heartbeats less than a period
  apart have a slot boundary between them. The ideal phase is taken as the heartbeat phase that
  puts every heartbeat in a slot of its own (or as many as can be: a sender that drifts faster
  may not allow it) and, of those, makes the mean lateness smallest (``ideal_phase``);
* lateness = a heartbeat's phase minus the ideal phase; its slot k follows from its ideal time;
* skipped slots = slots between a connection's first and last heartbeat that none arrived in;
* achieved rate = heartbeats per second over each connection's first-to-last span, against
  1 / RPI (``rate_error_pct``: 0 = exactly nominal; -20 = a fifth of the slots missing).

A sender that drifts (waits a little too long every time) has phases all around the circle:
then the lateness says little and the rate error and skipped slots say it all.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyconpro.bench.common import Env, Figure, stop_all
from pyconpro.bench.procs import (
    Child,
    Control,
    CpuMeter,
    add_consumers,
    consumer_map,
    percentile,
    start_simulator,
    start_worker,
    tag_file,
    udp_socket_drops,
    wait_running,
)
from pyconpro.simulator.control import SimulatorControl
from pyconpro.simulator.server import HEARTBEAT_RECORD

DATA_RPI_MS = 1000.0


@dataclass(frozen=True)
class HeartbeatOptions:
    connections: int = 100
    rpi_ms: float = 10.0
    seconds: float = 10.0
    warmup_s: float = 1.0


@dataclass(frozen=True)
class HeartbeatStats:
    connections: int
    heartbeats: int
    lateness_ns: tuple[int, ...]  # sorted
    skipped: int  # slots without a heartbeat
    duplicates: int  # heartbeats beyond one per slot
    rate_ratio: float  # achieved / nominal rate

    @property
    def rate_error_pct(self) -> float:
        return 100.0 * (self.rate_ratio - 1.0)


def ideal_phase(ts: Sequence[int], period: int) -> int:
    """The phase (time modulo ``period``) of the ideal schedule, from one connection's
    heartbeat times ``ts`` (sorted): one of the heartbeats' phases.

    1. Two consecutive heartbeats less than a period apart are in slots of their own only if a
       slot starts between them: if the phase lies in the arc (phase of the first, phase of the
       second]. The real schedule satisfies every such pair (one heartbeat per slot, never early),
       so the candidates are the phases that satisfy the most pairs: all of them, unless the
       sender sent two in one slot (a drift faster than the period).
    2. Of those, the one that makes the mean lateness smallest. Taking sorted phase
       ``phases[j]`` as on time makes the lateness of the others ``(p - phases[j]) mod period``;
       their sum is ``sum(phases) - n * phases[j] + j * period``, so the best j minimises
       ``j * period - n * phases[j]``. A few very late heartbeats do not move it; a dense start
       of the arc does.

    Step 1 keeps the few heartbeats that arrive a little earlier than most (a quicker wake-up,
    a shorter path) at the start of the arc: by step 2 alone, counting one of n heartbeats as a
    whole period late costs only ``period / n`` of mean lateness, less than starting the arc a
    few microseconds earlier for all, and such a heartbeat was read as its previous slot's (one
    slot "skipped", one "extra" beside it)."""
    phases = sorted(t % period for t in ts)
    n = len(phases)
    # cover[j]: the close pairs that phases[j] puts in slots of their own (difference array).
    cover = [0] * (n + 1)
    for t1, t2 in itertools.pairwise(ts):
        if 0 < t2 - t1 < period:
            i = bisect.bisect_right(phases, t1 % period)
            k = bisect.bisect_right(phases, t2 % period)
            cover[i] += 1
            cover[k] -= 1
            if k < i:  # the arc wraps past phase 0
                cover[0] += 1
                cover[n] -= 1
    covered = list(itertools.accumulate(cover[:n]))
    most = max(covered)
    best = min((j for j in range(n) if covered[j] == most),
               key=lambda j: j * period - n * phases[j])
    return phases[best]


def analyse(records: Iterable[tuple[int, int, int]], period_ns: int) -> HeartbeatStats:
    """``records``: (receive time ns, connection id, sequence) of every heartbeat received."""
    times: dict[int, list[int]] = {}
    for t, cid, _seq in records:
        if cid:
            times.setdefault(cid, []).append(t)
    lateness: list[int] = []
    skipped = duplicates = intervals = span = 0
    for ts in times.values():
        ts.sort()
        start = ideal_phase(ts, period_ns)
        late = [(t - start) % period_ns for t in ts]
        slots = {(t - lt) // period_ns for t, lt in zip(ts, late, strict=True)}
        skipped += max(slots) - min(slots) + 1 - len(slots)
        duplicates += len(ts) - len(slots)
        lateness += late
        intervals += len(ts) - 1
        span += ts[-1] - ts[0]
    return HeartbeatStats(
        connections=len(times),
        heartbeats=sum(len(ts) for ts in times.values()),
        lateness_ns=tuple(sorted(lateness)),
        skipped=skipped,
        duplicates=duplicates,
        rate_ratio=intervals * period_ns / span if span else float("nan"),
    )


def read_records(path: Path) -> list[tuple[int, int, int]]:
    data = path.read_bytes()
    return list(HEARTBEAT_RECORD.iter_unpack(data[: len(data) - len(data) % HEARTBEAT_RECORD.size]))


def measure(env: Env, opts: HeartbeatOptions, key: str) -> Figure:
    """One heartbeat figure; its values are named ``<key>_...``."""
    work = env.scratch(key)
    tags = work / "tags.toml"
    tags.write_text(tag_file("dint", opts.connections, generators=False))
    fig = Figure(conditions={
        f"{key}_connections": opts.connections, f"{key}_rpi_ms": opts.rpi_ms,
        f"{key}_seconds": opts.seconds, f"{key}_data_rpi_ms": DATA_RPI_MS,
    })  # fmt: skip
    env.progress(f"{key}: {opts.connections} connections, O->T RPI {opts.rpi_ms:g} ms,"
                 f" {opts.seconds:g} s at the simulator")
    started: list[Child] = []
    try:
        sim, sim_info = start_simulator(env.procs, tags, address=env.sim_address,
                                        max_connections=opts.connections + 10)
        started.append(sim)
        worker, winfo = start_worker(env.procs, address=env.worker_address, stats_interval=0,
                                     extra=env.worker_args)
        started.append(worker)
        control = Control(env.ctx, winfo["control"])
        add_consumers(control, [
            consumer_map(sim_info, i, "dint", DATA_RPI_MS, ot_rpi_ms=opts.rpi_ms)
            for i in range(opts.connections)
        ])  # fmt: skip
        wait_running(control, opts.connections, 20 + 0.1 * opts.connections)
        time.sleep(opts.warmup_s)
        records = work / "heartbeats.bin"
        with SimulatorControl(sim_info.control) as sc:
            drops0 = udp_socket_drops([sim_info.address])[sim_info.address]
            timeouts0 = sc.status()["target"]["timeouts"]
            skipped0 = control("status")["counters"]["heartbeats_skipped"]
            cpu = CpuMeter({"worker": worker.pid, "sim": sim.pid})
            sc.record_heartbeats(str(records))
            cpu.start()
            time.sleep(opts.seconds)
            used = cpu.stop()
            sc.record_heartbeats(None)
            # The worker's own count of slots it let pass (late by a whole period), over the
            # same seconds give or take a control round trip.
            worker_skipped = control("status")["counters"]["heartbeats_skipped"] - skipped0
            drops = udp_socket_drops([sim_info.address])[sim_info.address] - drops0
            timeouts = sc.status()["target"]["timeouts"] - timeouts0
        worker.check_alive()
        sim.check_alive()
    finally:
        stop_all(env, started)
    stats = analyse(read_records(records), round(opts.rpi_ms * 1e6))
    lat = stats.lateness_ns
    fig.values.update({
        f"{key}_lateness_p50_ms": percentile(lat, 0.50) / 1e6,
        f"{key}_lateness_p99_ms": percentile(lat, 0.99) / 1e6,
        f"{key}_lateness_max_ms": (lat[-1] / 1e6) if lat else float("nan"),
        f"{key}_rate_error_pct": stats.rate_error_pct,
        f"{key}_skipped_slots": float(stats.skipped),
        f"{key}_extra_heartbeats": float(stats.duplicates),
        f"{key}_worker_skipped_slots": float(worker_skipped),
        f"{key}_worker_cpu_pct": 100.0 * used["worker"] / used["elapsed"],
    })  # fmt: skip
    expected = opts.connections * opts.seconds * 1000.0 / opts.rpi_ms
    env.progress(
        f"  {stats.heartbeats:,} heartbeats of {stats.connections} connections (about"
        f" {expected:,.0f} expected), {stats.skipped} slots skipped ({worker_skipped} by the"
        f" worker's count), {stats.duplicates} extra,"
        f" simulator CPU {100.0 * used['sim'] / used['elapsed']:.0f} %, kernel drops {drops},"
        f" connections the simulator timed out {timeouts}"
    )
    if timeouts:
        fig.notes.append(
            f"{key}: the simulator timed out {timeouts} connections (no heartbeat for O->T RPI x"
            " the timeout multiplier): the worker reopens them, with new connection ids"
        )
    if stats.connections < opts.connections:
        fig.notes.append(f"{key}: heartbeats of only {stats.connections} of {opts.connections}"
                         " connections arrived")
    if drops:
        fig.notes.append(f"{key}: the simulator's socket dropped {drops} datagrams: skipped slots"
                         " may be the receiver's, not the worker's")
    return fig

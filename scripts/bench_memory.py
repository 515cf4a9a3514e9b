#!/usr/bin/env python3
"""Memory per consumer connection: a real I/O worker's RSS, and the pure parts by tracemalloc.

Part 1, processes on loopback: one simulator serving enough produced tags (its connection pool,
``--max-connections``, raised to fit) and one I/O worker; the worker's VmRSS is read with 0
consumers, then after adding consumers through its control socket up to each count of
``--counts`` (default 0, 100, 500), every one RUNNING and data flowing at the RPI for
``--settle`` seconds. Prints RSS per count, bytes per connection relative to 0 consumers and
between consecutive counts (the marginal cost, without one-time allocations such as imported
decoders and the first TCP session). No subscriber is connected (nothing queues on the PUB).

Part 2, in this process: tracemalloc of what one consumer costs in the pure core, for
``--objects`` consumers at once, stage by stage:
  definition    acquisition.control.ConsumerDef (what the control socket builds)
  connection    acquisition.connection.ConsumerConnection, constructed (IDLE)
  running       the same after Forward_Open success (RUNNING: triad, granted APIs)
  recorder      the same after 8 T->O datagrams and 8 heartbeats (full flight recorder)
  demux route   acquisition.demux.Demux.add (one Route)
  publishing    wire.SampleStream and the compiled value decoder (what the worker adds)

    scripts/bench_memory.py [--counts 0,100,500] [--rpi-ms 100] [--shape dint] [--objects 1000]
    scripts/bench_memory.py --in-process-only

Every process it starts is stopped by PID when it ends, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq
from pyconpro.acquisition import class1, wire
from pyconpro.acquisition.connection import ConsumerConnection, SendForwardOpen, State
from pyconpro.acquisition.control import consumer_from_map
from pyconpro.acquisition.demux import Demux
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_types import AtomicType, DataTypeCode
from pyconpro.acquisition.originator import Originator

from pyconpro.bench.procs import (
    SHAPES,
    BenchError,
    Control,
    Processes,
    add_consumers,
    consumer_map,
    count_states,
    machine_line,
    proc_mem_kb,
    start_simulator,
    start_worker,
    tag_file,
    tag_shapes,
    terminate_as_interrupt,
    wait_running,
)

SIM_ADDRESS = "127.83.44.2"
WORKER_ADDRESS = "127.83.44.1"


# ====================================================================== part 1: processes


def measure_processes(counts: Sequence[int], rpi_ms: float, shape: str, settle_s: float,
                      sim_address: str, worker_address: str) -> list[dict[str, Any]]:
    top = max(counts)
    procs = Processes()
    ctx: zmq.Context[Any] = zmq.Context()
    tmp = tempfile.TemporaryDirectory(prefix="pyconpro-bench-")
    rows = []
    try:
        tags_path = Path(tmp.name) / "tags.toml"
        tags_path.write_text(tag_file(shape, max(top, 1)))
        sim, sim_info = start_simulator(procs, tags_path, address=sim_address,
                                        max_connections=top + 50)
        worker, winfo = start_worker(procs, address=worker_address, stats_interval=5.0)
        control = Control(ctx, winfo["control"], timeout=60)
        shapes = tag_shapes(shape, max(top, 1))
        added = 0
        for count in sorted(set(counts)):
            add_consumers(control, [consumer_map(sim_info, i, shapes[i], rpi_ms)
                                    for i in range(added, count)])
            added = count
            if count:
                wait_running(control, count, 30 + 0.2 * count)
            time.sleep(settle_s)
            for child in (worker, sim):
                child.check_alive()
            states = count_states(control("list")["consumers"])
            rows.append({"count": count, "worker": proc_mem_kb(worker.pid),
                         "sim": proc_mem_kb(sim.pid), "states": states})
    finally:
        try:
            procs.close()
        finally:
            ctx.destroy(linger=0)
            tmp.cleanup()
    return rows


def print_processes(rows: Sequence[dict[str, Any]], rpi_ms: float, shape: str) -> None:
    print(f"\nI/O worker RSS by consumer count ({shape} tags at RPI {rpi_ms:g} ms, all RUNNING)")
    print(f"{'consumers':>9} {'RSS KiB':>9} {'peak KiB':>9} {'B/conn vs 0':>12}"
          f" {'B/conn marginal':>16} {'sim RSS KiB':>12}  states")
    base = rows[0]
    prev = base
    for r in rows:
        rss = r["worker"]["VmRSS"]
        per0 = per_step = ""
        if r["count"] > base["count"]:
            per0 = f"{(rss - base['worker']['VmRSS']) * 1024 / (r['count'] - base['count']):,.0f}"
        if r["count"] > prev["count"] and r is not base:
            grown = (rss - prev['worker']['VmRSS']) * 1024 / (r['count'] - prev['count'])
            per_step = f"{grown:,.0f}"
        print(
            f"{r['count']:>9} {rss:>9,} {r['worker']['VmHWM']:>9,} {per0:>12} {per_step:>16}"
            f" {r['sim']['VmRSS']:>12,}  {r['states']}"
        )
        prev = r


# ====================================================================== part 2: tracemalloc


def _traced(label: str, make: Callable[[], Any], n: int) -> tuple[str, float, Any]:
    """Bytes per object allocated by ``make()`` called ``n`` times (kept alive)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = [make() for _ in range(n)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return label, size / n, kept


def measure_in_process(n: int) -> list[tuple[str, float]]:
    dint = AtomicType(DataTypeCode.DINT)
    originator = Originator(random.Random(1))
    now = 1000.0
    spec = {"plc": "bench", "address": "10.0.0.5", "tag": "Count", "rpi_ms": 10, "type": "DINT"}
    rows: list[tuple[str, float]] = []

    label, per, defs = _traced("definition (ConsumerDef)", lambda: consumer_from_map(spec), n)
    rows.append((label, per))
    params = [d.params() for d in defs]
    it = iter(params)
    label, per, conns = _traced(
        "connection (IDLE)", lambda: ConsumerConnection(next(it), originator), n
    )
    rows.append((label, per))

    from pyconpro.acquisition import cm

    def to_running(c: ConsumerConnection) -> ConsumerConnection:
        c.start(now)
        req = next(o.request for o in c.take_outputs() if isinstance(o, SendForwardOpen))
        reply = cm.ForwardOpenSuccess(
            0x11110001,
            req.to_connection_id,
            req.connection_serial,
            req.vendor_id,
            req.originator_serial,
            10_000,
            10_000,
        ).to_reply()
        c.on_forward_open_reply(now, req, reply)
        assert c.state is State.RUNNING, c.state
        c.take_outputs()
        return c

    itc = iter(conns)
    label, per, _ = _traced("+ running (Forward_Open done)", lambda: to_running(next(itc)), n)
    rows.append((label, per))

    def fill_recorder(c: ConsumerConnection) -> ConsumerConnection:
        t = now
        for k in range(8):
            t += 0.01
            c.recorder.record_in(
                t, "T->O", class1.Class1Datagram(0x1000, k + 1, k + 1, bytes(4)).encode()
            )
            c.on_data(t)
            c.on_timer(t)  # heartbeat due: recorded outgoing
            c.take_outputs()
        return c

    itc = iter(conns)
    label, per, _ = _traced(
        "+ flight recorder full (8 in, 8 out)", lambda: fill_recorder(next(itc)), n
    )
    rows.append((label, per))

    demux = Demux()
    ids = iter(range(0x1000, 0x1000 + n))
    source = ("10.0.0.5", 2222)
    label, per, _ = _traced(
        "demux route", lambda: demux.add(source, next(ids), 4, f"bench/T{len(demux)}"), n
    )
    rows.append((label, per))

    seq = wire.SeqCounter()
    names = iter(range(n))

    def publishing() -> tuple[Any, Any]:
        return (
            wire.SampleStream("worker-bench", "bench", f"T{next(names):05d}", "DINT", seq),
            compile_decoder(dint),
        )

    label, per, _ = _traced("publishing (SampleStream + decoder)", publishing, n)
    rows.append((label, per))
    return rows


def print_in_process(rows: Sequence[tuple[str, float]], n: int) -> None:
    print(f"\npure parts per consumer, tracemalloc over {n:,} consumers (DINT, RPI 10 ms)")
    for label, per in rows:
        print(f"  {label:<40} {per:>8,.0f} B")
    total = rows[0][1] + rows[1][1] + rows[2][1] + rows[3][1] + rows[4][1] + rows[5][1]
    print(f"  {'total':<40} {total:>8,.0f} B")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="See docs/benchmarks.md."
    )
    ap.add_argument(
        "--counts",
        default="0,100,500",
        help="consumer counts to measure, comma separated, ascending [0,100,500]",
    )
    ap.add_argument("--rpi-ms", type=float, default=100.0, help="RPI of every consumer [100]")
    ap.add_argument("--shape", choices=SHAPES, default="dint", help="tag shape [dint]")
    ap.add_argument(
        "--settle", type=float, default=2.0, help="seconds of data flow before reading RSS [2]"
    )
    ap.add_argument(
        "--objects",
        type=int,
        default=1000,
        help="consumers built in-process for tracemalloc [1000]",
    )
    ap.add_argument("--in-process-only", action="store_true", help="skip part 1 (processes)")
    ap.add_argument("--sim-address", default=SIM_ADDRESS, help=f"[{SIM_ADDRESS}]")
    ap.add_argument("--worker-address", default=WORKER_ADDRESS, help=f"[{WORKER_ADDRESS}]")
    args = ap.parse_args(argv)
    try:
        counts = [int(x) for x in args.counts.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--counts {args.counts!r}: give integers like 0,100,500")
    if not counts or min(counts) < 0 or counts != sorted(counts):
        ap.error("--counts: give ascending non-negative integers, e.g. 0,100,500")
    print(machine_line())
    with terminate_as_interrupt():
        try:
            if not args.in_process_only:
                rows = measure_processes(
                    counts,
                    args.rpi_ms,
                    args.shape,
                    args.settle,
                    args.sim_address,
                    args.worker_address,
                )
                print_processes(rows, args.rpi_ms, args.shape)
            print_in_process(measure_in_process(args.objects), args.objects)
        except KeyboardInterrupt:
            print("\ninterrupted; every process this script started is stopped", file=sys.stderr)
            return 130
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

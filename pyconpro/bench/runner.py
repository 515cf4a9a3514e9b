"""``pyconpro bench``: run the figures, print them as a table or one JSON record.

    pyconpro bench                         every figure, full length (a few minutes)
    pyconpro bench --quick --json          every figure in seconds each, JSON on stdout (CI)
    pyconpro bench --only ceiling,latency --repeat 3

Figures (docs/performance.md defines each): ``ceiling`` (the worker's zero-loss ceiling and a
bare recv loop's, their ratio, CPU per 1,000 samples/s), ``latency`` (datagram -> subscriber at
a stated rate), ``heartbeats`` (N connections at an O->T RPI) and ``heartbeat_single`` (one
connection at a short RPI), ``open`` (K connections across M simulated PLCs), ``sinks`` (each
sink against a bare loop of its store). With ``--repeat N`` every figure runs N times and each
value is the median, with min and max beside it. Progress goes to stderr. No threshold is
asserted: the numbers are measured and reported, docs/performance.md compares them with the
targets. Exit status 0, 1 when a figure could not be measured (the message says why), 130 on
Ctrl-C; every process started is stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import zmq

from pyconpro.bench import ceiling, heartbeats, opening, sinks
from pyconpro.bench.ceiling import CeilingOptions
from pyconpro.bench.common import Env, Figure
from pyconpro.bench.heartbeats import HeartbeatOptions
from pyconpro.bench.opening import OpenOptions
from pyconpro.bench.options import FIGURES, SINK_KINDS, add_arguments
from pyconpro.bench.procs import (
    BenchError,
    Processes,
    load_line,
    machine_line,
    terminate_as_interrupt,
)
from pyconpro.bench.sinks import SinkOptions

_HEARTBEAT_KEYS = ("lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms", "rate_error_pct",
                   "skipped_slots", "extra_heartbeats", "worker_skipped_slots", "worker_cpu_pct")
_SINK_KEYS = ("samples_s", "bare_samples_s", "ratio")


def figure_keys(figure: str, sink_kinds: Sequence[str] = SINK_KINDS) -> tuple[str, ...]:
    """The values a figure reports (the keys of the JSON record's ``figures``)."""
    keys = {
        "ceiling": ("worker_ceiling_samples_s", "bare_ceiling_datagrams_s", "ceiling_ratio",
                    "worker_cpu_per_1k", "bare_cpu_per_1k"),
        "latency": ("latency_p50_ms", "latency_p99_ms", "latency_max_ms", "latency_read_p99_ms",
                    "latency_cpu_per_1k", "latency_forwarded_p50_ms", "latency_forwarded_p99_ms",
                    "latency_forwarded_max_ms", "latency_forwarded_read_p99_ms"),
        "heartbeats": tuple(f"heartbeats_{k}" for k in _HEARTBEAT_KEYS),
        "heartbeat_single": tuple(f"heartbeat_single_{k}" for k in _HEARTBEAT_KEYS),
        "open": ("open_all_running_s", "open_add_ms", "open_timeouts",
                 "open_rss_kib_per_connection", "open_worker_cpu_pct", "open_sim_cpu_pct",
                 "open_source_cpu_pct", "open_source_rate_s", "open_samples_s",
                 "open_lost_samples", "open_switch_ms"),
        "sinks": tuple(f"sink_{kind}_{k}" for kind in sink_kinds for k in _SINK_KEYS),
    }  # fmt: skip
    return keys[figure]


@dataclass(frozen=True)
class Plan:
    figures: tuple[str, ...]
    ceiling: CeilingOptions
    heartbeats: HeartbeatOptions
    single: HeartbeatOptions
    open: OpenOptions
    sinks: SinkOptions


_T = TypeVar("_T")


def _given(options: _T, **fields: Any) -> _T:
    """``options`` with the fields that were given on the command line (not None)."""
    return replace(options, **{k: v for k, v in fields.items() if v is not None})  # type: ignore[type-var]


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The options of every figure: ``--quick`` defaults, then what was given."""
    quick = bool(args.quick)
    c = _given(
        CeilingOptions.quick() if quick else CeilingOptions(),
        streams=args.connections, shape=args.shape, step_s=args.step_s,
        start_rate=args.start_rate, latency_rate=args.latency_rate, latency_s=args.latency_s,
    )  # fmt: skip
    hb = _given(
        HeartbeatOptions(20, 10.0, 2.0, 0.5) if quick else HeartbeatOptions(),
        connections=args.hb_connections, rpi_ms=args.hb_rpi_ms, seconds=args.hb_seconds,
    )  # fmt: skip
    single = replace(hb, connections=1, rpi_ms=args.hb_single_rpi_ms or 1.0)
    op = _given(
        OpenOptions(40, 2, 100.0, 1.0) if quick else OpenOptions(),
        connections=args.open_connections, plcs=args.open_plcs, rpi_ms=args.open_rpi_ms,
        hold_s=args.open_hold_s,
    )  # fmt: skip
    sk = _given(SinkOptions(samples=5000) if quick else SinkOptions(),
                samples=args.sink_samples, kinds=args.sinks)
    return Plan(tuple(args.only or FIGURES), c, hb, single, op, sk)


def run_figures(env: Env, plan: Plan) -> Figure:
    """Every figure of the plan once, merged into one ``Figure``."""
    out = Figure()
    want = set(plan.figures)
    parts: list[Figure] = []
    if want & {"ceiling", "latency"}:
        parts.append(ceiling.measure(env, plan.ceiling, ceiling="ceiling" in want,
                                     latency="latency" in want))
    if "heartbeats" in want:
        parts.append(heartbeats.measure(env, plan.heartbeats, "heartbeats"))
    if "heartbeat_single" in want:
        parts.append(heartbeats.measure(env, plan.single, "heartbeat_single"))
    if "open" in want:
        parts.append(opening.measure(env, plan.open))
    if "sinks" in want:
        parts.append(sinks.measure(env, plan.sinks))
    if env.worker_priority:
        out.conditions["worker_realtime_priority"] = env.worker_priority
    if env.bus_priority:
        out.conditions["bus_realtime_priority"] = env.bus_priority
    for p in parts:
        out.values.update(p.values)
        out.conditions.update(p.conditions)
        out.notes += [n for n in p.notes if n not in out.notes]
    return out


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def record(runs: Sequence[Figure], plan: Plan, quick: bool, header: Sequence[str],
           seconds: float) -> dict[str, Any]:
    """The JSON record: ``figures`` (the median of each value over the runs), ``spread``
    (min, median, max: with --repeat), ``conditions``, ``notes`` and the machine."""
    keys = [k for f in plan.figures for k in figure_keys(f, plan.sinks.kinds)]
    figures: dict[str, float | None] = {}
    spread: dict[str, dict[str, float | None]] = {}
    for k in keys:
        values = [r.values[k] for r in runs if k in r.values]
        if not values:
            continue
        finite = [v for v in values if math.isfinite(v)]
        med = statistics.median(finite) if finite else float("nan")
        figures[k] = _number(med)
        if len(runs) > 1:
            spread[k] = {"min": _number(min(finite, default=math.nan)), "median": _number(med),
                         "max": _number(max(finite, default=math.nan))}
    notes: list[str] = []
    for r in runs:
        notes += [n for n in r.notes if n not in notes]
    return {
        "figures": figures,
        "spread": spread,
        "conditions": {**runs[0].conditions, "quick": quick, "repeat": len(runs)} if runs else {},
        "notes": notes,
        "machine": list(header),
        "seconds": round(seconds, 1),
    }


def _shown(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"


def print_table(rec: dict[str, Any], plan: Plan) -> None:
    for line in rec["machine"]:
        print(line)
    for fig in plan.figures:
        print(f"\n{fig}")
        for k in figure_keys(fig, plan.sinks.kinds):
            if k not in rec["figures"]:
                continue
            s = rec["spread"].get(k)
            rng = f"   [{_shown(s['min'])} .. {_shown(s['max'])}]" if s else ""
            print(f"  {k:<36} {_shown(rec['figures'][k]):>12}{rng}")
    print("\nconditions: " + ", ".join(f"{k}={v}" for k, v in rec["conditions"].items()))
    for n in rec["notes"]:
        print(f"note: {n}")
    print(f"({rec['seconds']:g} s)")


def run(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    header = [machine_line(), load_line()]
    progress(header[0])
    progress(header[1])
    runs: list[Figure] = []
    t0 = time.monotonic()
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="pyconpro-bench-") as tmp:
        procs = Processes()
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            for i in range(args.repeat):
                if args.repeat > 1:
                    progress(f"== run {i + 1} of {args.repeat}")
                env = Env(procs, ctx, Path(tmp) / f"run-{i}", args.addresses, progress,
                          args.worker_realtime_priority, args.bus_realtime_priority)
                runs.append(run_figures(env, plan))
        except KeyboardInterrupt:
            progress("interrupted; every process this benchmark started is stopped")
            return 130
        except BenchError as exc:
            progress(f"error: {exc}")
            return 1
        finally:
            try:
                procs.close()
            finally:
                ctx.destroy(linger=0)
    rec = record(runs, plan, bool(args.quick), header, time.monotonic() - t0)
    if args.json:
        print(json.dumps(rec, indent=1))
    else:
        print_table(rec, plan)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyconpro bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

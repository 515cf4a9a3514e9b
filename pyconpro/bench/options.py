"""The options of ``pyconpro bench`` (kept apart from the figures so that ``pyconpro --help``
does not import them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

FIGURES = ("ceiling", "latency", "heartbeats", "heartbeat_single", "open", "sinks")
SINK_KINDS = ("sqlite", "jsonl", "stdout")
CEILING_SHAPES = ("dint", "real100")


def _csv(choices: Sequence[str], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give one or more {what} separated by commas, from {', '.join(choices)}"
            )
        return items

    return parse


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number above 0")
        return value

    return parse


def _prefix(text: str) -> str:
    parts = text.split(".")
    if len(parts) != 3 or parts[0] != "127" or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the first three octets of a loopback /24, e.g. 127.83.41"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pos_int, pos_float = _positive(int), _positive(float)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few seconds per figure (CI); no threshold is asserted",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON record on stdout (one key per figure value)",
    )
    parser.add_argument(
        "--only",
        type=_csv(FIGURES, "figures"),
        metavar="FIGURE[,FIGURE]",
        help=f"run only these figures: {', '.join(FIGURES)}",
    )
    parser.add_argument(
        "--repeat",
        type=pos_int,
        default=1,
        metavar="N",
        help="run every figure N times: median, min and max [1]",
    )
    parser.add_argument(
        "--addresses",
        type=_prefix,
        default="127.83.41",
        metavar="127.X.Y",
        help="the loopback /24 to use: worker .1, simulator .2, PLCs .10.. [127.83.41]",
    )
    for section, runs in (("worker", "the I/O worker"),
                          ("bus", "the bus forwarder of the latency step's second half")):
        parser.add_argument(
            f"--{section}-realtime-priority",
            type=int,
            choices=range(100),
            default=0,
            metavar="0..99",
            help=f"run {runs} at this SCHED_FIFO priority ([{section}] realtime_priority; needs"
            " CAP_SYS_NICE) [0: normal scheduling]",
        )
    g = parser.add_argument_group("ceiling and latency")
    g.add_argument(
        "--connections", type=pos_int, metavar="N", help="connections fed by the load source [100]"
    )
    g.add_argument("--shape", choices=CEILING_SHAPES, help="tag type: DINT or REAL[100] [dint]")
    g.add_argument("--step-s", type=pos_float, metavar="S", help="seconds per offered rate [3]")
    g.add_argument(
        "--start-rate", type=pos_float, metavar="PER_S", help="first offered rate, samples/s [2000]"
    )
    g.add_argument(
        "--latency-rate",
        type=pos_float,
        metavar="PER_S",
        help="samples/s of the latency step [10000]",
    )
    g.add_argument(
        "--latency-s", type=pos_float, metavar="S", help="seconds of the latency step [5]"
    )
    g = parser.add_argument_group("heartbeats")
    g.add_argument("--hb-connections", type=pos_int, metavar="N", help="connections [100]")
    g.add_argument("--hb-rpi-ms", type=pos_float, metavar="MS", help="O->T RPI [10]")
    g.add_argument(
        "--hb-seconds", type=pos_float, metavar="S", help="seconds recorded, per figure [10]"
    )
    g.add_argument(
        "--hb-single-rpi-ms",
        type=pos_float,
        metavar="MS",
        help="O->T RPI of heartbeat_single (one connection) [1]",
    )
    g = parser.add_argument_group("open")
    g.add_argument("--open-connections", type=pos_int, metavar="N", help="connections K [1000]")
    g.add_argument("--open-plcs", type=pos_int, metavar="N", help="simulated PLCs M [10]")
    g.add_argument(
        "--open-rpi-ms", type=pos_float, metavar="MS", help="RPI of every connection [100]"
    )
    g.add_argument(
        "--open-hold-s",
        type=pos_float,
        metavar="S",
        help="seconds held after the open, fed by the native senders [60]",
    )
    g = parser.add_argument_group("sinks")
    g.add_argument(
        "--sink-samples", type=pos_int, metavar="N", help="samples into each sink [50000]"
    )
    g.add_argument(
        "--sinks",
        type=_csv(SINK_KINDS, "sink kinds"),
        metavar="KIND[,KIND]",
        help=f"sinks to measure [{','.join(SINK_KINDS)}]",
    )

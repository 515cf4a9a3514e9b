"""``pyconpro sink KIND --connect ENDPOINT [--connect ...] [--topic PREFIX ...] [options]``.

KIND is one of sqlite, jsonl, csv, stdout. Registered in ``pyconpro/cli.py`` as
``"sink": ("pyconpro.sinks.cli", "run a sink process")``; ``python -m pyconpro.sinks.cli KIND ...``
runs the same
thing without the front end (the tests do that).

Exit status: 0 after SIGTERM/SIGINT (everything received was flushed), 2 when the bus or
the output cannot be used (the message on stderr says what to fix), 1 for a crash.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

import zmq
from pyconpro.sinks.base import DEFAULT_TOPICS, LoopOptions, Sink, run_sink

log = logging.getLogger("pyconpro.sink")


def _make_sqlite(args: argparse.Namespace) -> Sink:
    from pyconpro.sinks.sqlite import SqliteSink

    return SqliteSink(args.db, synchronous=args.synchronous)


def _make_jsonl(args: argparse.Namespace) -> Sink:
    from pyconpro.sinks.files import JsonlSink

    return JsonlSink(
        args.dir,
        prefix=args.prefix,
        max_bytes=args.max_bytes,
        max_seconds=args.max_seconds,
        fsync=args.fsync,
    )


def _make_csv(args: argparse.Namespace) -> Sink:
    from pyconpro.sinks.files import CsvSink

    return CsvSink(
        args.dir,
        prefix=args.prefix,
        max_bytes=args.max_bytes,
        max_seconds=args.max_seconds,
        fsync=args.fsync,
    )


def _make_stdout(args: argparse.Namespace) -> Sink:
    from pyconpro.sinks.stdout import StdoutSink

    return StdoutSink(raw=args.raw, utc=args.utc)


# kind -> (factory, help, default flush interval in seconds)
KINDS: dict[str, tuple[Callable[[argparse.Namespace], Sink], str, float]] = {
    "sqlite": (_make_sqlite, "write to a SQLite database (WAL, batched transactions)", 1.0),
    "jsonl": (_make_jsonl, "write JSON Lines files, rotated by size/age", 1.0),
    "csv": (_make_csv, "write CSV files, rotated by size/age", 1.0),
    "stdout": (_make_stdout, "print human-readable live lines", 0.1),
}


def _common(parser: argparse.ArgumentParser, flush_default: float) -> None:
    g = parser.add_argument_group("bus")
    g.add_argument(
        "--connect",
        action="append",
        required=True,
        metavar="ENDPOINT",
        help="bus endpoint to subscribe to, e.g. tcp://127.0.0.1:5600 (repeatable)",
    )
    g.add_argument(
        "--topic",
        action="append",
        metavar="PREFIX",
        help="topic prefix filter, e.g. sample/plc1/ (repeatable; default: sample/ event/"
        " stats/). Names inside topics are escaped as docs/wire-format.md describes",
    )
    g.add_argument(
        "--rcvhwm",
        type=int,
        default=100_000,
        help="messages queued before ZeroMQ drops (loss is then counted) [%(default)s]",
    )
    g.add_argument(
        "--flush-interval",
        type=float,
        default=flush_default,
        metavar="SECONDS",
        help="longest a received record waits before it is written [%(default)s]",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="records that trigger a write regardless of time [%(default)s]",
    )
    g.add_argument(
        "--drain-max",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, longest time spent taking in what already arrived [%(default)s]",
    )
    g.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level [%(default)s]",
    )


def _rotation(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("files")
    g.add_argument("--dir", required=True, help="output directory (created if missing)")
    g.add_argument("--prefix", default="pyconpro", help="file name prefix [%(default)s]")
    g.add_argument(
        "--max-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="start a new file past this size, 0 = never [%(default)s]",
    )
    g.add_argument(
        "--max-seconds",
        type=float,
        default=3600.0,
        help="start a new file after this age, 0 = never [%(default)s]",
    )
    g.add_argument("--fsync", action="store_true", help="fsync files on every flush")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, (_factory, help_text, flush_default) in KINDS.items():
        p = sub.add_parser(kind, help=help_text, description=help_text)
        _common(p, flush_default)
        if kind == "sqlite":
            p.add_argument("--db", required=True, help="database file (created if missing)")
            p.add_argument(
                "--synchronous",
                default="NORMAL",
                choices=["OFF", "NORMAL", "FULL", "EXTRA"],
                help="SQLite synchronous pragma; NORMAL is safe with WAL [%(default)s]",
            )
        elif kind in ("jsonl", "csv"):
            _rotation(p)
        elif kind == "stdout":
            p.add_argument("--raw", action="store_true", help="also show the raw tag bytes")
            p.add_argument(
                "--utc", action="store_true", help="times in UTC (default: local time with offset)"
            )


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=getattr(logging, args.log_level),
            stream=sys.stderr,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )
    else:
        log.setLevel(getattr(logging, args.log_level))
    factory = KINDS[args.kind][0]
    for name in ("batch_size", "rcvhwm"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.flush_interval < 0 or args.drain_max < 0:
        print("error: --flush-interval and --drain-max must be >= 0", file=sys.stderr)
        return 2
    topics = tuple(t.encode("utf-8") for t in args.topic) if args.topic else DEFAULT_TOPICS
    options = LoopOptions(
        endpoints=list(args.connect),
        topics=topics,
        rcvhwm=args.rcvhwm,
        flush_interval=args.flush_interval,
        batch_size=args.batch_size,
        drain_max=args.drain_max,
    )
    try:
        sink = factory(args)
        return run_sink(sink, options)
    except zmq.ZMQError as exc:
        print(
            f"error: cannot subscribe to {', '.join(args.connect)}: {exc}; endpoints look like"
            " tcp://HOST:PORT or ipc:///path",
            file=sys.stderr,
        )
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {args.kind} sink: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyconpro sink", description="Subscribe to the pyconpro bus and write what arrives."
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""``pyconpro sink``: run one sink process, described in one of three ways.

- ``pyconpro sink KIND --connect ENDPOINT [--topic PREFIX ...] [options]``: by hand. KIND is a
  kind of ``sinks/registry.py``; its options are flags derived from the kind's schema (the same
  schema that validates a ``[[sink]]`` section: ``--db`` is ``path``, ``--max-bytes`` is
  ``rotate_bytes``, ...; ``pyconpro sink KIND --help`` lists them).
- ``pyconpro sink --section JSON --connect ENDPOINT``: the sink a ``[[sink]]`` section says,
  given as JSON with paths already resolved. ``pyconpro run`` starts its sinks so: the command
  carries the configuration the supervisor loaded, so a reload that changes a sink's options
  changes its command (and restarts it), and a crash restart runs the same section again.
- ``pyconpro sink --config FILE --sink NAME [--connect ENDPOINT]``: the ``[[sink]]`` named NAME
  in FILE (connecting to its ``[bus].endpoint`` unless ``--connect`` says otherwise).

All three become one validated ``SinkConfig`` (``acquisition.sink_config``) and one sink built
by its kind's factory. ``python -m pyconpro.sinks.cli ...`` runs the same without the front end.

Exit status: 0 after SIGTERM/SIGINT (everything received was flushed), 2 when the section, the
bus or the output cannot be used (the message on stderr says what to fix), 1 for a crash, 3
after SIGTERM/SIGINT while the output could not be written (disk full, read-only, ...): the
records still held in memory are lost, the log says how many. An output that stops taking
writes while the sink runs (or is not writable at start) is no reason to exit: the sink keeps
records in memory, retries and resumes by itself (``sinks/base.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import zmq
from pyconpro.acquisition.security import uses_curve
from pyconpro.acquisition.sink_config import (
    REPLAY_MODES,
    Option,
    SinkConfig,
    SinkSchema,
    parse_sink_section,
)
from pyconpro.acquisition.toml_check import ConfigError
from pyconpro.sinks.base import LoopOptions, run_sink
from pyconpro.sinks.registry import make_sink, sink_kinds, sink_schemas
from pyconpro.sinks.spool import spool_config
from pyconpro.workers.guard import (
    ClientKeys,
    CurveError,
    add_client_arguments,
    client_keys_from_args,
    load_key_pair,
)
from pyconpro.workers.logfmt import LOG_FORMAT

log = logging.getLogger("pyconpro.sink")

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
_OPTION_DEST = "option_"  # argparse dest of a schema option: option_<key>


def _bus(parser: argparse.ArgumentParser | Any, *, required: bool) -> None:
    parser.add_argument(
        "--connect",
        action="append",
        required=required,
        metavar="ENDPOINT",
        help="bus endpoint to subscribe to, e.g. tcp://127.0.0.1:5600 (repeatable)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=LOG_LEVELS,
        help="stderr log level [%(default)s]",
    )
    add_client_arguments(parser)
    parser.add_argument(
        "--report",
        metavar="ENDPOINT",
        help="a supervisor's control socket to send this sink's state to (writing or retrying"
        " and why, pending and dropped records), shown by `pyconpro status`; `pyconpro run`"
        " sets it",
    )
    parser.add_argument(
        "--report-curve-key",
        metavar="FILE",
        help="CURVE: the pipeline's secret key file ([security] server_key) when the --report"
        " socket uses CURVE; `pyconpro run` sets it",
    )
    parser.add_argument(
        "--replay",
        metavar="ENDPOINT",
        help="a supervisor's control socket to ask, at start, for the messages missed since"
        " the last one stored (the bus's replay buffer, [bus] replay_s); `pyconpro run` sets"
        " it, --config uses that file's. Live data waits until the replay has ended",
    )
    parser.add_argument(
        "--replay-curve-key",
        metavar="FILE",
        help="CURVE: the pipeline's secret key file when the --replay socket uses CURVE;"
        " `pyconpro run` sets it (else --curve-server-key/--curve-key apply to a tcp:// one)",
    )


def _common(parser: argparse.ArgumentParser, flush_default: float) -> None:
    g = parser.add_argument_group("bus")
    _bus(g, required=True)
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
        "--replay-mode",
        choices=REPLAY_MODES,
        default="stored",
        help="with --replay, what to ask for at start: what follows what the output stored,"
        " 'all' the buffer holds of the topics (a new sink too), or 'none' [%(default)s]",
    )
    _exception_flags(parser)


def _exception_flags(parser: argparse.ArgumentParser) -> None:
    """Report by exception (acquisition/rbe.py): the keys ``deadband``, ``max_interval_s``,
    ``min_spacing_s`` and ``by_tag`` of a section."""
    g = parser.add_argument_group(
        "report by exception (default: every sample is kept; docs/sinks.md)"
    )
    g.add_argument(
        "--deadband", type=float, metavar="VALUE",
        help="keep a sample when its number moved by more than VALUE from the last kept one"
        " (0: any change; a value that is not a number: any change) (key deadband)",
    )  # fmt: skip
    g.add_argument(
        "--max-interval", type=float, metavar="SECONDS",
        help="with --deadband, keep a sample anyway this long after the last kept one"
        " (key max_interval_s)",
    )  # fmt: skip
    g.add_argument(
        "--min-spacing", type=float, metavar="SECONDS",
        help="never keep two samples of a tag closer than this (key min_spacing_s)",
    )  # fmt: skip
    g.add_argument(
        "--by-tag", nargs=2, action="append", metavar=("PATTERN", "RULE"),
        help="another rule for the tags PATTERN matches (<plc>/<tag>, * and ? wildcards), e.g."
        " --by-tag 'press1/Temp*' deadband=0.5,max_interval_s=60 (deadband=false: none);"
        " repeatable, the first that matches wins (key by_tag)",
    )  # fmt: skip


def _by_tag(pairs: list[list[str]]) -> dict[str, dict[str, object]]:
    """``--by-tag PATTERN RULE`` flags as the ``by_tag`` table of a section (the values are
    checked with the section)."""
    out: dict[str, dict[str, object]] = {}
    for pattern, rule in pairs:
        entry: dict[str, object] = {}
        for item in filter(None, rule.split(",")):
            key, _, text = item.partition("=")
            value: object = text.strip()
            if text.strip().lower() == "false":
                value = False
            else:
                try:
                    value = float(text)
                except ValueError:
                    pass
            entry[key.strip()] = value
        out[pattern] = entry
    return out


_FLAG_TYPES: dict[str, Any] = {"string": str, "path": str, "integer": int, "number": float}


def _add_option(group: Any, o: Option) -> None:
    shown = str(o.default).lower() if isinstance(o.default, bool) else str(o.default)
    help_text = f"{o.help} (key {o.key})" + ("" if o.cli_required else f" [{shown}]")
    kw: dict[str, Any] = {
        "dest": _OPTION_DEST + o.key,
        "default": argparse.SUPPRESS,  # absent: the schema's default, as in the file
        "required": o.cli_required,
        "help": help_text.replace("%", "%%"),
    }
    if o.type == "boolean":
        action = argparse.BooleanOptionalAction if o.default else "store_true"
        group.add_argument(o.cli_flag, action=action, **kw)
    elif o.type == "choice":
        kind = str.upper if o.fold else str
        group.add_argument(o.cli_flag, type=kind, choices=o.choices, **kw)
    else:
        metavar = {"s": "SECONDS"}.get(o.unit, o.unit.upper()) or o.key.upper()
        group.add_argument(o.cli_flag, type=_FLAG_TYPES[o.type], metavar=metavar, **kw)


def add_option_flags(parser: argparse.ArgumentParser, schema: SinkSchema) -> None:
    """One flag per option of ``schema``."""
    group = parser.add_argument_group(f"{schema.kind} options")
    for o in schema.options:
        _add_option(group, o)


def section_from_args(args: argparse.Namespace, schema: SinkSchema) -> dict[str, Any]:
    """The ``[[sink]]`` section that the flags of ``pyconpro sink KIND`` describe."""
    section: dict[str, Any] = {"kind": schema.kind}
    if args.topic:
        section["topics"] = list(args.topic)
    section.update(
        rcvhwm=args.rcvhwm,
        batch_size=args.batch_size,
        flush_interval_s=args.flush_interval,
        drain_max_s=args.drain_max,
        replay=args.replay_mode,
    )
    for key, value in (("deadband", args.deadband), ("max_interval_s", args.max_interval),
                       ("min_spacing_s", args.min_spacing)):  # fmt: skip
        if value is not None:
            section[key] = value
    if args.by_tag:
        section["by_tag"] = _by_tag(args.by_tag)
    for o in schema.options:
        if hasattr(args, _OPTION_DEST + o.key):
            section[o.key] = getattr(args, _OPTION_DEST + o.key)
    return section


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("a sink described by a [[sink]] section (instead of KIND)")
    g.add_argument("--section", metavar="JSON", help="the section as a JSON object")
    g.add_argument("--config", metavar="FILE", help="a config file; with --sink")
    g.add_argument("--sink", metavar="NAME", help="the name of the [[sink]] in --config")
    _bus(g, required=False)
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    for kind, spec in sink_kinds().items():
        p = sub.add_parser(kind, help=spec.schema.help, description=spec.schema.help)
        _common(p, spec.schema.flush_interval_s)
        add_option_flags(p, spec.schema)


class _Unusable(Exception):
    """What was asked for cannot run; the message says why."""


class SinkRun(NamedTuple):
    """What the arguments ask for: the validated sink, the endpoints it subscribes to, and the
    CURVE client keys when the bus uses CURVE (None: plain); the replay endpoint and its keys
    (None: no replay)."""

    sink: SinkConfig
    endpoints: list[str]
    curve: ClientKeys | None = None
    replay: str | None = None
    replay_curve: ClientKeys | None = None


def _from_file(args: argparse.Namespace) -> SinkRun:
    from pyconpro.workers.forwarder import connectable

    from pyconpro.config_file import load_config

    path, name = args.config, args.sink
    config = load_config(path)
    names = [s.name for s in config.sinks]
    if name is None or name not in names:
        raise _Unusable(
            f"{path} has no [[sink]] named {name!r}; --sink takes one of: "
            f"{', '.join(names) or '(none)'}"
        )
    replay = replay_curve = None
    if config.bus.replay and args.replay is None:
        control = config.bus.control_endpoint("supervisor", 0)
        replay = connectable(control)
        if uses_curve(control, config.security):  # that socket is a CURVE server
            replay_curve = client_keys_from_args(args, config.security, control)
    return SinkRun(
        config.sinks[names.index(name)],
        list(args.connect or [connectable(config.bus.endpoint)]),
        client_keys_from_args(args, config.security, config.bus.endpoint),
        replay,
        replay_curve,
    )


def sink_from_args(args: argparse.Namespace) -> SinkRun:
    """The validated sink, the endpoints and the CURVE keys the arguments ask for;
    ``ConfigError`` when the section is not valid, ``_Unusable`` for arguments that do not fit
    together, ``CurveError`` for an unusable key file."""
    if args.kind is not None:
        if args.section is not None or args.config is not None:
            raise _Unusable("give either KIND with its flags or --section / --config, not both")
        section = section_from_args(args, sink_kinds()[args.kind].schema)
        sink = parse_sink_section(section, sink_schemas(), "pyconpro sink")
        return SinkRun(sink, list(args.connect), client_keys_from_args(args, None, None))
    if (args.section is None) == (args.config is None):
        raise _Unusable("give a sink KIND, --section JSON, or --config FILE --sink NAME")
    if args.config is not None:
        return _from_file(args)
    try:
        data = json.loads(args.section)
    except json.JSONDecodeError as exc:
        raise _Unusable(f"--section is not valid JSON: {exc}") from None
    if not args.connect:
        raise _Unusable("--section needs --connect ENDPOINT")
    sink = parse_sink_section(data, sink_schemas(), "--section")
    return SinkRun(sink, list(args.connect), client_keys_from_args(args, None, None))


def loop_options(
    sink: SinkConfig,
    endpoints: Sequence[str],
    curve: ClientKeys | None = None,
    report: str | None = None,
    report_curve: ClientKeys | None = None,
    *,
    replay: str | None = None,
    replay_curve: ClientKeys | None = None,
) -> LoopOptions:
    return LoopOptions(
        curve=curve,
        endpoints=list(endpoints),
        topics=tuple(t.encode("utf-8") for t in sink.topics),
        rcvhwm=sink.rcvhwm,
        flush_interval=sink.flush_interval_s,
        batch_size=sink.batch_size,
        drain_max=sink.drain_max_s,
        report=report,
        report_name=f"sink-{sink.name}",
        report_curve=report_curve,
        replay=None if sink.replay == "none" else replay,
        replay_curve=replay_curve,
        replay_new=sink.replay == "all",
        spool=spool_config(sink),
        exception=sink.exception,
    )


def report_keys(args: argparse.Namespace, flag: str = "report_curve_key") -> ClientKeys | None:
    """The pipeline's own key pair (``--report-curve-key`` or ``--replay-curve-key``), as the
    client of its own control socket."""
    path = getattr(args, flag)
    if path is None:
        return None
    pair = load_key_pair(path)
    return ClientKeys(pair, pair.public)


def replay_from_args(
    args: argparse.Namespace, run: SinkRun
) -> tuple[str | None, ClientKeys | None]:
    """The replay endpoint and its CURVE keys: ``--replay`` (with ``--replay-curve-key``, or
    the bus's ``--curve-*`` keys for a tcp:// endpoint), else what ``--config`` implies."""
    if args.replay is None:
        return run.replay, run.replay_curve
    keys = report_keys(args, "replay_curve_key")
    if keys is None and args.replay.startswith("tcp://"):
        keys = client_keys_from_args(args, None, None)
    return args.replay, keys


def _setup_logging(level: str) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=getattr(logging, level),
            stream=sys.stderr,
            format=LOG_FORMAT,
        )
    else:
        log.setLevel(getattr(logging, level))


def run(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    try:
        sink_run = sink_from_args(args)
        config, endpoints, curve = sink_run.sink, sink_run.endpoints, sink_run.curve
        report_curve = report_keys(args)
        replay, replay_curve = replay_from_args(args, sink_run)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 2
    except (_Unusable, CurveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        options = loop_options(
            config, endpoints, curve, args.report, report_curve,
            replay=replay, replay_curve=replay_curve,
        )  # fmt: skip
        return run_sink(make_sink(config), options)
    except zmq.ZMQError as exc:
        print(
            f"error: cannot subscribe to {', '.join(endpoints)}: {exc}; endpoints look like"
            " tcp://HOST:PORT or ipc:///path",
            file=sys.stderr,
        )
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {config.kind} sink: {exc}", file=sys.stderr)
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

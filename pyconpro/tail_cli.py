"""``pyconpro tail [TOPIC ...] [--connect EP | --config CONFIG] [--json]``: watch the bus live.

Subscribes to the pipeline's bus endpoint and prints every decoded message as it arrives: one
human-readable line per sample / event (the stdout sink's format), or with ``--json`` one JSON
object per line (the JSON Lines sink's records plus ``"stream"``: sample, event or stats) for other
programs.

TOPIC is a prefix as in docs/wire-format.md (``sample/``, ``sample/line1/``, ``event/``,
``stats/``) or a shorthand: ``line1`` means ``sample/line1/`` and ``event/line1/``, and
``line1/Counter`` means ``sample/line1/Counter/`` and ``event/line1/Counter/`` (names escaped as
in topics), so a tag that FAILED shows its error. With ``--config``, a shorthand PLC that the
file does not name is an error (exit 2, the known names listed). Default: ``sample/`` and
``event/``. While nothing arrives it says so on stderr every few seconds, with what to check:
whether the bus is up at all (tail also listens to ``stats/``, without printing it, to tell).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyconpro.workers.guard import ClientKeys

DEFAULT_CONNECT = "tcp://127.0.0.1:5555"
HINT_AFTER_S = 3.0  # quiet this long: say what to check
HINT_EVERY_S = 10.0  # ... and again this often while it stays quiet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "topics",
        nargs="*",
        metavar="TOPIC",
        help="topic prefix or PLC[/TAG] shorthand (default: sample/ event/)",
    )
    g = parser.add_mutually_exclusive_group()
    g.add_argument(
        "--connect",
        metavar="ENDPOINT",
        help=f"bus endpoint (default: the config's [bus].endpoint, else {DEFAULT_CONNECT})",
    )
    g.add_argument("--config", metavar="CONFIG", help="take the endpoint from this pipeline file")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--raw", action="store_true", help="also show raw tag bytes (text mode)")
    parser.add_argument(
        "--utc", action="store_true", help="show times in UTC (default: local time, text mode)"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="exit after N samples (default: run until Ctrl-C)",
    )
    parser.add_argument("--timeout", type=float, default=0.0, metavar="S",
                        help="exit with status 1 if no message arrives for S seconds (0 = wait)")
    from pyconpro.workers.guard import add_client_arguments

    add_client_arguments(parser)


def topic_filters(topics: list[str]) -> list[bytes]:
    """Prefixes for the SUB socket from the command line's TOPIC arguments."""
    from pyconpro.acquisition.wire import topic_prefix

    if not topics:
        return [b"sample/", b"event/"]
    out = []
    for t in topics:
        head = t.split("/", 1)[0]
        if head in ("sample", "event", "stats") or t == "":
            out.append(t.encode("utf-8"))
        else:
            names = [p for p in t.split("/") if p]
            out += [topic_prefix("sample", *names), topic_prefix("event", *names)]
    return out


def unknown_plcs(topics: list[str], known: list[str]) -> list[str]:
    """The PLC names of ``PLC[/TAG]`` shorthands that are not in ``known``."""
    out = []
    for t in topics:
        head = t.split("/", 1)[0]
        if t and head not in ("sample", "event", "stats") and head not in known:
            out.append(head)
    return out


def bus_endpoint(connect: str | None, config: str | None) -> str:
    """``--connect`` as given, else the config's bus endpoint (connectable), else the default."""
    return bus_target(connect, config)[0]


def bus_target(
    connect: str | None, config: str | None, args: argparse.Namespace | None = None
) -> tuple[str, ClientKeys | None]:
    """The endpoint to subscribe to and the CURVE client keys for it (the flags in ``args``,
    else the config's keys when its bus endpoint uses CURVE; None: plain)."""
    from pyconpro.workers.guard import client_keys_from_args

    args = args if args is not None else argparse.Namespace()
    if not config:
        return connect or DEFAULT_CONNECT, client_keys_from_args(args, None, None)
    from pyconpro.config_file import load_config
    from pyconpro.workers.forwarder import connectable

    cfg = load_config(config)
    endpoint = connect or connectable(cfg.bus.endpoint)
    return endpoint, client_keys_from_args(args, cfg.security, cfg.bus.endpoint)


def json_line(msg: Any) -> str:
    from pyconpro.acquisition.wire import Event, Sample
    from pyconpro.sinks.records import event_record, sample_record, stats_record

    if isinstance(msg, Sample):
        rec = {"stream": "sample", **sample_record(msg)}
    elif isinstance(msg, Event):
        rec = {"stream": "event", **event_record(msg)}
    else:
        rec = {"stream": "stats", **stats_record(msg)}
    return json.dumps(rec, separators=(",", ":"), allow_nan=False)


def text_line(msg: Any, raw: bool = False, utc: bool = False) -> str:
    from pyconpro.acquisition.wire import Event, Sample
    from pyconpro.sinks.stdout import format_event, format_sample, format_stats

    if isinstance(msg, Sample):
        return format_sample(msg, raw=raw, utc=utc)
    if isinstance(msg, Event):
        return format_event(msg, utc=utc)
    return format_stats(msg, utc=utc)


def run(args: argparse.Namespace) -> int:
    import zmq

    from pyconpro.acquisition.config import ConfigError
    from pyconpro.workers.guard import CurveError

    try:
        endpoint, curve = bus_target(args.connect, args.config, args)
        if args.config and not _plcs_known(args):
            return 2
    except (ConfigError, CurveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    filters = topic_filters(args.topics)
    # Stats too, unprinted unless asked for: they tell "the bus is up" from "nothing matches".
    hidden = [] if any(b"stats/".startswith(f) for f in filters) else [b"stats/"]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    try:
        for f in filters + hidden:
            sub.subscribe(f)
        if curve is not None:
            curve.apply(sub)
        sub.connect(endpoint)
    except zmq.ZMQError as exc:
        print(f"error: cannot subscribe to {endpoint}: {exc}; endpoints look like"
              " tcp://HOST:PORT or ipc:///path", file=sys.stderr)  # fmt: skip
        sub.close()
        ctx.term()
        return 2
    try:
        return _follow(sub, endpoint, filters, args)
    finally:
        sub.close()
        ctx.term()


def _plcs_known(args: argparse.Namespace) -> bool:
    """False (after saying which) when a topic names a PLC that is not in ``args.config``."""
    from pyconpro.config_file import load_config

    known = [p.name for p in load_config(args.config).plcs]
    missing = unknown_plcs(args.topics, known)
    if missing:
        print(f"error: PLC {', '.join(repr(m) for m in missing)} is not in {args.config};"
              f" its PLCs: {', '.join(known) or 'none'}", file=sys.stderr)  # fmt: skip
    return not missing


def _quiet_hint(endpoint: str, shown: str, heard_bus: bool, silent_s: float) -> str:
    if not heard_bus:
        return (
            f"tail: no data yet on {endpoint} after {silent_s:.0f} s: is `pyconpro run` up"
            " (`pyconpro status`), and is this its [bus].endpoint?"
        )
    return (
        f"tail: the bus is up (stats arrive) but nothing matched {shown} for"
        f" {silent_s:.0f} s: check the PLC/tag names and their states in `pyconpro status`"
    )


def _follow(sub: Any, endpoint: str, filters: list[bytes], args: argparse.Namespace) -> int:
    """Print what arrives on ``sub`` until the count, the timeout, Ctrl-C or a closed pipe."""
    from pyconpro.acquisition.errors import MalformedPacket
    from pyconpro.acquisition.wire import Sample, decode

    shown = ", ".join(f.decode("utf-8", "replace") or "(everything)" for f in filters)
    print(f"tail: subscribed to {shown} on {endpoint} (Ctrl-C to stop)", file=sys.stderr)
    samples = malformed = 0
    heard_bus = False  # anything at all arrived (stats included)
    last = time.monotonic()
    next_hint = 0.0
    code = 0
    try:
        while True:
            now = time.monotonic()
            if args.timeout and now - last >= args.timeout:
                print(f"tail: nothing received for {args.timeout:g} s", file=sys.stderr)
                code = 1
                break
            if now - last >= HINT_AFTER_S and now >= next_hint:
                next_hint = now + HINT_EVERY_S
                print(_quiet_hint(endpoint, shown, heard_bus, now - last), file=sys.stderr)
            if not sub.poll(500):
                continue
            frames = sub.recv_multipart()
            heard_bus = True
            if not any(frames[0].startswith(f) for f in filters):
                continue  # a hidden stats message
            last = time.monotonic()
            next_hint = 0.0
            try:
                msg = decode(frames[0], frames[1]) if len(frames) == 2 else None
            except MalformedPacket:
                msg = None
            if msg is None:
                malformed += 1
                continue
            line = json_line(msg) if args.json else text_line(msg, raw=args.raw, utc=args.utc)
            print(line, flush=True)
            if isinstance(msg, Sample):
                samples += 1
                if args.count and samples >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `pyconpro tail | head`
        sys.stderr.close()
    if malformed:
        print(f"tail: {malformed} malformed message(s) skipped", file=sys.stderr)
    return code

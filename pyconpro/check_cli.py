"""``pyconpro check CONFIG``: validate a pipeline config without starting anything.

Prints every problem as ``FILE:LINE: KEY: what is wrong; how to fix it`` (acquisition.config)
and exits 1 when there is any. A valid file gets a summary: the PLCs and tags, which I/O worker
(local address) would serve each PLC, the sinks and the bus endpoint. Finding the local address
asks the OS's routing table (a UDP ``connect()``, which sends nothing); ``--no-resolve`` skips it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="pipeline TOML file")
    parser.add_argument(
        "--no-resolve",
        action="store_true",
        help="do not ask the OS which local address reaches each PLC",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")


def check(path: str, *, resolve: bool = True, out: TextIO | None = None) -> int:
    """Validate ``path``; print problems or a summary to ``out``; 0 valid, 1 problems."""
    from acquisition.config import ConfigError, group_by_local_address, load_config
    from workers.supervisor import (
        interface_address,
        resolve_local_address,
        supervisor_control_endpoint,
    )

    out = out if out is not None else sys.stdout
    try:
        config = load_config(path)
        groups = (
            group_by_local_address(config, resolve_local_address, interface_address)
            if resolve
            else ()
        )
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=out)
        n = len(exc.issues)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}; nothing was started", file=out)
        return 1
    tags = sum(len(p.tags) for p in config.plcs)
    print(f"{path}: OK: {len(config.plcs)} PLC(s), {tags} tag(s), {len(config.sinks)} sink(s)",
          file=out)  # fmt: skip
    for plc in config.plcs:
        names = ", ".join(
            t.name if t.alias is None else f"{t.name} as {t.alias}" for t in plc.tags
        )
        print(f"  plc {plc.name} at {plc.address} slot {plc.slot}: {names}", file=out)
    for group in groups:
        print(f"  worker {group.name}: {', '.join(group.plcs)}", file=out)
    for sink in config.sinks:
        where = sink.path or sink.directory or "stdout"
        print(f"  sink {sink.name} ({sink.kind}) -> {where}; topics {', '.join(sink.topics)}",
              file=out)  # fmt: skip
    print(f"  bus {config.bus.endpoint}; control {supervisor_control_endpoint(config)}", file=out)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.quiet:
        import io

        buf = io.StringIO()
        code = check(args.config, resolve=not args.no_resolve, out=buf)
        if code:
            sys.stdout.write(buf.getvalue())
        return code
    return check(args.config, resolve=not args.no_resolve)

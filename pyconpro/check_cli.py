"""``pyconpro check CONFIG``: validate a pipeline config without starting anything.

Prints every problem as ``FILE:LINE: KEY: what is wrong; how to fix it`` (acquisition.config)
and exits 1 when there is any. A valid file gets a summary: the PLCs and tags, which I/O
worker (local address) would serve each PLC, the sinks, the bus endpoint and the live page.
Finding the local address asks the OS's routing table (a UDP ``connect()``, which sends
nothing); ``--no-resolve`` skips it.

Beyond the file's own rules it checks what ``pyconpro run`` would stop on here
(``config_file.run_issues``): the log file's directory, sink output directories, ipc socket
paths too long for the worker names the config produces (with ``--no-resolve``, for a file
written for another machine, the longest worker name is assumed and the file system is not
looked at).

Things that are legitimate in a file written for another machine but would stop the pipeline on
this one (an explicit ``local_address`` that is not an address of this host) are printed as
``WARNING: FILE:LINE: KEY: ...`` lines and do not change the exit status; ``--no-resolve``
skips those checks too.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pyconpro.acquisition.config import Config, ConfigIssue, WorkerGroup


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="pipeline TOML file")
    parser.add_argument(
        "--no-resolve",
        action="store_true",
        help="do not ask the OS which local address reaches each PLC, whether an explicit "
        "local_address is one of this host's, nor whether the log file and sink outputs can be "
        "written here (a file written for another machine)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print problems and warnings only"
    )


def is_local_address(address: str) -> bool:
    """True when ``address`` is one of this host's addresses: the OS lets us bind it.

    Binding asks the kernel the question the worker will meet (it binds its UDP socket on that
    address), including secondary and loopback addresses an interface listing can miss. An
    unexpected error answers True: warn only when sure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError as exc:
            return exc.errno != errno.EADDRNOTAVAIL
    return True


def local_address_warnings(
    config: Config, path: str, is_local: Callable[[str], bool] | None = None
) -> list[ConfigIssue]:
    """One issue per PLC or produced tag whose explicit ``local_address`` this host does not
    have (``is_local`` defaults to ``is_local_address``)."""
    from pyconpro.acquisition.config import ConfigIssue

    is_local = is_local or is_local_address
    # (key, the address given, what cannot run here, what else to do)
    given = [(f"plc[{i}]", plc.local_address, f"the worker for PLC {plc.name!r} cannot start",
              "remove local_address") for i, plc in enumerate(config.plcs)]
    given += [(f"produce[{i}]", placed.local_address, f"no worker can produce {spec.name!r}",
               "give consumer_address instead") for i, (spec, placed) in enumerate(config.produce)]
    issues = []
    for entry, address, what, other in given:
        if address is None or is_local(address):
            continue
        key = f"{entry}.local_address"
        issues.append(ConfigIssue(
            path, key, config.key_lines.get(key),
            f"{address} is not an address of this host, so {what} here",
            "if the file is for another machine that is fine, otherwise use one of this host's "
            f"addresses (`ip -4 addr`) or {other}",
        ))  # fmt: skip
    return issues


def check(
    path: str, *, resolve: bool = True, out: TextIO | None = None, quiet: bool = False
) -> int:
    """Validate ``path``; print problems, warnings and (unless ``quiet``) a summary to ``out``;
    0 valid (warnings or not), 1 problems."""
    from pyconpro.acquisition.config import ConfigError, group_by_local_address
    from pyconpro.config_file import load_config, run_issues, run_warnings
    from pyconpro.workers.supervisor import interface_address, resolve_local_address

    out = out if out is not None else sys.stdout
    try:
        config = load_config(path)
        groups = (
            group_by_local_address(config, resolve_local_address, interface_address)
            if resolve
            else ()
        )
        # What `run` would die of: files, directories, socket paths (config_file.run_issues).
        issues = run_issues(config, [g.name for g in groups] if resolve else None,
                            files=resolve)
        if issues:
            raise ConfigError(issues)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=out)
        n = len(exc.issues)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}; nothing was started", file=out)
        return 1
    warnings = [*config.warnings,
                *(local_address_warnings(config, path) + run_warnings(config) if resolve else [])]
    if not quiet:
        summary(config, path, groups, out)
    for warning in warnings:
        print(f"WARNING: {warning}", file=out)
    return 0


def summary(config: Config, path: str, groups: Iterable[WorkerGroup], out: TextIO) -> None:
    from pyconpro.sinks.registry import sink_schemas
    from pyconpro.workers.supervisor import supervisor_control_endpoint

    tags = sum(len(p.tags) for p in config.plcs)
    assemblies = sum(len(p.assemblies) for p in config.plcs)
    consumed = f"{tags} tag(s)" + (f", {assemblies} assembly(ies)" if assemblies else "")
    produced = f", {len(config.produce)} produced tag(s)" if config.produce else ""
    print(f"{path}: OK: {len(config.plcs)} PLC(s), {consumed}, {len(config.sinks)} sink(s)"
          f"{produced}", file=out)  # fmt: skip
    for plc in config.plcs:
        names = ", ".join(t.name if t.alias is None else f"{t.name} as {t.alias}" for t in plc.tags)
        if plc.tags or not plc.assemblies:
            print(f"  plc {plc.name} at {plc.address} slot {plc.slot}: {names}", file=out)
        for a in plc.assemblies:
            slot = f" slot {plc.assembly_slot}" if plc.assembly_slot is not None else ""
            layout = f", layout of {len(a.layout)} field(s)" if a.layout else ""
            fields = (f" (or its {len(a.output_layout)} output_layout field(s))"
                      if a.output_layout else "")
            fed = (f"; output image from output/{plc.name}/{a.name}/{fields}"
                   if a.exclusive_owner else "")
            print(f"  assembly {plc.name}/{a.name} at {plc.address}{slot}: {a.describe()},"
                  f" rpi {a.rpi_ms:g} ms{layout}{fed}", file=out)
    for spec, placed in config.produce:
        served = (placed.local_address or (placed.interface and f"interface {placed.interface}")
                  or f"the local address routing to {placed.consumer_address}")
        print(f"  produce {spec.name} ({spec.type}, at most {spec.max_consumers} consumer(s)) on"
              f" TCP {config.worker.tcp_port} of {served}", file=out)  # fmt: skip
    for group in groups:
        served_here = [*group.plcs, *(f"produce {s.name}" for s in group.produce)]
        print(f"  worker {group.name}: {', '.join(served_here)}", file=out)
    schemas = sink_schemas()
    for sink in config.sinks:
        where = schemas[sink.kind].where(sink.options)
        print(f"  sink {sink.name} ({sink.kind}) -> {where}; topics {', '.join(sink.topics)}",
              file=out)  # fmt: skip
    bus = config.bus
    replay = (f"replay buffer {bus.replay_s:g} s, {bus.replay_bytes / 2**20:g} MiB" if bus.replay
              else "no replay buffer")  # fmt: skip
    print(f"  bus {bus.endpoint}; control {supervisor_control_endpoint(config)}; {replay}",
          file=out)  # fmt: skip
    if config.web is not None:
        web = config.web
        auth = "token required" if web.authenticated else "no token"
        print(f"  web {web.url} (listening on {web.address}:{web.port}, {auth})", file=out)


def run(args: argparse.Namespace) -> int:
    return check(args.config, resolve=not args.no_resolve, quiet=args.quiet)

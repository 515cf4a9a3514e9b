"""The ``pyconpro`` command line: one entry point, one subcommand per task.

Each subcommand lives in its own module and registers itself through ``COMMANDS``;
this module only builds the parser and dispatches, so adding a command touches one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pyconpro import __version__

# name -> (module, one-line help). The module provides ``add_arguments(parser)`` and
# ``run(args) -> int``; it is imported only when its command runs, so `--help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "sink": ("pyconpro.sinks.cli", "run a sink process (sqlite, jsonl, csv, stdout)"),
    "run": ("pyconpro.run_cli", "run the pipeline of a config file (workers, sinks, bus)"),
    "check": ("pyconpro.check_cli", "validate a config file without starting anything"),
    "tail": ("pyconpro.tail_cli", "print decoded samples and events from the bus live"),
    "status": ("pyconpro.status_cli", "show the running pipeline's processes and connections"),
    "sim": ("pyconpro.simulator.cli", "run the Logix PLC simulator (produced tags over Class 1)"),
    "demo": ("pyconpro.demo", "simulated PLC -> worker -> SQLite, live values on screen"),
    "browse": ("pyconpro.discovery_cli", "list a PLC's tags: type, size, datasize, produced-ness"),
    "keygen": ("pyconpro.keygen_cli", "make a CURVE key pair for the bus and control sockets"),
    "discover": (
        "pyconpro.discover_cli",
        "find EtherNet/IP devices (ListIdentity on each interface)",
    ),
    "bench": ("pyconpro.bench_cli", "measure the speed figures on loopback (docs/performance.md)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyconpro",
        description="Consume Allen-Bradley Logix produced tags over EtherNet/IP Class 1.",
    )
    parser.add_argument("--version", action="version", version=f"pyconpro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


# What a shell reports for a process killed by SIGPIPE (128 + 13): `pyconpro ... | head` ends
# the way `cat big | head` does, quietly and with the status scripts expect.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not getattr(args, "command", None):
            parser.print_help()
            code = 0
        else:
            code = int(args._module.run(args) or 0)
        # Flush here, not at interpreter exit, so a reader that went away is seen below.
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (`| head`) closed the pipe. Point stdout at /dev/null so the flush of
        # whatever is still buffered at exit cannot raise a second time, and stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())

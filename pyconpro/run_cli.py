"""``pyconpro run CONFIG``: the launch supervisor in the foreground (workers.supervisor).

Starts one I/O worker per local address, every sink, and the bus endpoint; Ctrl-C / SIGTERM stop
it gracefully (workers Forward_Close first, sinks flush last), SIGHUP reloads the config.
``scripts/pyconpro-run`` and ``python -m pyconpro.workers.supervisor`` run the same thing.
Exit status: 0 after a graceful stop, 2 when the config or the bus endpoint cannot be used, or
when another ``pyconpro run`` already answers on the same ``[bus].control_base``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Here, not in workers.supervisor (which uses these), so `pyconpro --help` stays fast.
    parser.add_argument(
        "config", metavar="CONFIG", help="pipeline TOML file (docs/configuration.md)"
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="override [logging].level",
    )


def run(args: argparse.Namespace) -> int:
    from pyconpro.workers.supervisor import run_config

    return run_config(args.config, log_level=args.log_level)

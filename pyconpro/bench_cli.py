"""``pyconpro bench``: the speed figures of docs/performance.md, measured in one run on loopback
(``pyconpro.bench.runner`` runs them; the options are in ``pyconpro.bench.options``)."""

from __future__ import annotations

import argparse

from pyconpro.bench.options import add_arguments

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from pyconpro.bench.runner import run as run_bench

    return run_bench(args)

#!/usr/bin/env python3
"""End-to-end load benchmark on loopback: simulator -> I/O worker -> ZeroMQ subscriber.

The code is ``pyconpro.bench.pipeline`` (its docstring and docs/benchmarks.md describe the
table); ``pyconpro bench`` measures the figures of docs/performance.md with a native load
source instead of the Python simulator.

    scripts/bench_pipeline.py [--tags N] [--rpi-ms R] [--seconds S] [--shape dint|real100|udt|mix]
    scripts/bench_pipeline.py --sweep [--seconds S] [--shape ...]
"""

from __future__ import annotations

import sys

from pyconpro.bench.pipeline import main

if __name__ == "__main__":
    sys.exit(main())

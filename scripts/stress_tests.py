#!/usr/bin/env python3
"""Run the whole test suite several times while other processes keep cores busy.

The suite must be green on a busy machine, not only on a quiet one (tests wait on conditions
with generous deadlines, never on sleeps). This is the check: ``--busy`` processes spin at full
speed (one core each) for as long as the runs last, and the suite runs ``--runs`` times in a row
with the same command as ``./dev test``; it stops at the first failing run.

    scripts/stress_tests.py                    # 3 runs, 1 busy core
    scripts/stress_tests.py --runs 1 --busy 2 -- -x tests/integration
    .venv/bin/python scripts/stress_tests.py   # (from a checkout, with the test extras)

Prints one line per run (passed/failed, duration) and a summary; exit status 0 when every run
passed. The busy processes are this script's children and are stopped by PID at the end, also
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from pyconpro.workers import process

ROOT = Path(__file__).resolve().parent.parent
SPIN = "while True:\n    pass\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="suite runs in a row [%(default)s]")
    p.add_argument("--busy", type=int, default=1, help="cores kept busy [%(default)s]")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.busy < 0:
        p.error("--runs must be at least 1 and --busy at least 0")
    spinners = [process.spawn([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
    results: list[tuple[int, float]] = []
    try:
        for run in range(1, args.runs + 1):
            start = time.monotonic()
            code = subprocess.call(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 *args.pytest_args],
                cwd=ROOT,
            )  # fmt: skip
            took = time.monotonic() - start
            results.append((code, took))
            print(f"stress run {run}/{args.runs} with {args.busy} busy core(s): "
                  f"{'passed' if code == 0 else f'FAILED (pytest exit {code})'} in {took:.0f} s",
                  flush=True)  # fmt: skip
            if code != 0:
                break
    except KeyboardInterrupt:
        print("stress runs interrupted", file=sys.stderr)
        return 130
    finally:
        for child in spinners:
            child.stop(5.0)
    passed = sum(1 for code, _ in results if code == 0)
    print(f"stress: {passed} of {args.runs} run(s) passed with {args.busy} busy core(s)"
          + (f"; durations {', '.join(f'{t:.0f} s' for _, t in results)}" if results else ""))
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())

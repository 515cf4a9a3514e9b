"""Smoke tests of the benchmarks: ``pyconpro bench --quick --json`` and the scripts each run with
tiny parameters, exit 0 and print their figures or tables. Not a timed test: no number is
compared to a target (targets live in docs/performance.md and docs/benchmarks.md, measured as
ratios in one run).

The benchmarks run as subprocesses on their own loopback addresses (127.83.5x.y, different from
the defaults so a benchmark someone runs by hand does not meet this test); every port is chosen
by the OS and the benchmarks stop every process they start.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pyconpro.workers.process import Child, source_env, spawn

from pyconpro.bench.options import FIGURES
from pyconpro.bench.runner import figure_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def run_script(name: str, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=source_env(ROOT),
                          check=False)  # fmt: skip


def processes_using(address: str) -> list[str]:
    """Command lines of running processes that name ``address`` (the script's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if address in cmdline and "pytest" not in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.mark.parametrize("shape", ["dint", "mix"])
def test_bench_pipeline_prints_its_table(shape: str) -> None:
    res = run_script("bench_pipeline.py", "--tags", "2", "--rpi-ms", "20", "--seconds", "1",
                     "--shape", shape, "--sim-address", "127.83.51.2",
                     "--worker-address", "127.83.51.1")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert out.startswith("machine: ")
    assert f"== 2 x {shape} tags at RPI 20 ms" in out
    for row in ("expected", "simulator sent", "worker read", "received", "loss on the bus",
                "loss before worker", "worker drops", "CPU worker", "CPU simulator",
                "worker memory", "latency tw -> SUB"):
        assert re.search(rf"^  {re.escape(row)} +\S", out, re.MULTILINE), f"no {row!r} row:\n{out}"
    assert "100 samples/s (2 x 1000 / 20 ms)" in out
    # the summary has one data row for the one configuration, with numbers in it
    summary = out.split("summary", 1)[1].splitlines()
    rows = [line for line in summary if re.match(rf"\s+2\s+{shape}\s+20\s", line)]
    assert len(rows) == 1, out
    received = float(rows[0].split()[4].replace(",", ""))
    assert received > 0, f"no sample reached the subscriber:\n{out}"
    assert processes_using("127.83.51.") == []


def test_bench_pipeline_refuses_bad_parameters() -> None:
    res = run_script("bench_pipeline.py", "--tags", "0", timeout=30)
    assert res.returncode == 2 and "must be positive" in res.stderr


def test_bench_memory_prints_its_tables() -> None:
    res = run_script("bench_memory.py", "--counts", "0,2", "--settle", "0.5", "--objects", "20",
                     "--sim-address", "127.83.52.2", "--worker-address", "127.83.52.1")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "I/O worker RSS by consumer count" in out
    lines = {
        int(m.group(1)): m.group(0)
        for m in re.finditer(r"^\s+(\d+)\s+[\d,]+\s.*$", out, re.MULTILINE)
    }
    assert set(lines) >= {0, 2}, out
    assert "'RUNNING': 2" in lines[2]
    assert "pure parts per consumer" in out
    for row in ("connection (IDLE)", "demux route", "total"):
        m = re.search(rf"^  {re.escape(row)} +([\d,]+) B$", out, re.MULTILINE)
        assert m is not None and int(m.group(1).replace(",", "")) > 0, f"{row}:\n{out}"
    assert processes_using("127.83.52.") == []


@pytest.mark.parametrize("delay", [0.0, 2.5], ids=["while-starting", "while-measuring"])
def test_bench_pipeline_stops_its_processes_on_ctrl_c(delay: float) -> None:
    proc = spawn(
        [
            sys.executable,
            str(SCRIPTS / "bench_pipeline.py"),
            "--tags",
            "2",
            "--seconds",
            "60",
            "--sim-address",
            "127.83.53.2",
            "--worker-address",
            "127.83.53.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=source_env(ROOT),
    )
    try:
        deadline = time.monotonic() + 30
        while len(processes_using("127.83.53.")) < 2:  # simulator and worker are up
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate(5)
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(30)
    finally:
        proc.kill()  # when it is still running; reaps it and closes the pipes
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    assert processes_using("127.83.53.") == []


def bench(tmp_path: Path, *args: str) -> Child:
    """``pyconpro bench ARGS`` with stdout and stderr in files of ``tmp_path``; its cache
    directory (in ``tmp_path``) is in the environment of every process it starts."""
    return spawn(
        [sys.executable, "-m", "pyconpro.cli", "bench", *args],
        stdout=tmp_path / "out.txt", stderr=tmp_path / "err.txt",
        env=dict(os.environ, PYCONPRO_CACHE_DIR=str(tmp_path / "cache")),
    )


def descendants_of_bench(tmp_path: Path) -> list[str]:
    """Running processes started by a ``bench(tmp_path, ...)`` (they inherit its environment):
    simulators, workers, sinks, bare loops, the load source."""
    marker = f"PYCONPRO_CACHE_DIR={tmp_path / 'cache'}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
        except OSError:
            continue
    return found


def bench_record(tmp_path: Path, timeout: float, *args: str) -> tuple[dict[str, Any], str]:
    """``pyconpro bench --json ARGS`` to its end: its record and its progress (stderr). Skipped
    without a C compiler (failed in CI)."""
    child = bench(tmp_path, "--json", *args)
    try:
        code = child.wait(timeout)
    finally:
        child.stop()
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    if code != 0 and "needs a C compiler" in err:
        from tests.support.requirements import skip_or_fail

        skip_or_fail("gcc", err.strip())
    assert code == 0, out + err
    record: dict[str, Any] = json.loads(out)
    return record, err


def test_pyconpro_bench_quick_json_has_every_figure(tmp_path: Path) -> None:
    record, err = bench_record(tmp_path, 150, "--quick", "--addresses", "127.83.54")
    figures = record["figures"]
    for name in FIGURES:
        for key in figure_keys(name):
            value = figures.get(key)
            assert isinstance(value, int | float) and math.isfinite(value), (key, value, err)
    assert figures["worker_ceiling_samples_s"] > 0 and figures["bare_ceiling_datagrams_s"] > 0
    assert record["conditions"]["quick"] is True
    assert record["machine"][0].startswith("machine: ")
    assert "worker" in err and "sinks" in err  # the progress lines
    assert descendants_of_bench(tmp_path) == []


def test_pyconpro_bench_open_feeds_every_connection_from_the_native_senders(
    tmp_path: Path,
) -> None:
    # Two simulated PLCs, a few connections at the figure's RPI (100 ms): opened through the
    # simulators, then fed by a native sender per simulator for the hold.
    record, err = bench_record(tmp_path, 120, "--quick", "--only", "open", "--open-connections",
                               "12", "--open-hold-s", "2", "--addresses", "127.83.56")
    figures, conditions = record["figures"], record["conditions"]
    assert (conditions["open_connections"], conditions["open_plcs"]) == (12, 2)
    assert conditions["open_rpi_ms"] == 100.0
    # every connection RUNNING after the hold, each with a stream of the native senders
    assert not [n for n in record["notes"] if n.startswith("open:")], record["notes"]
    assert figures["open_timeouts"] == 0, err
    # the samples came from the senders (their cs continue the simulators'), none lost
    assert figures["open_samples_s"] > 0 and figures["open_source_rate_s"] > 0, err
    assert figures["open_lost_samples"] == 0, err
    m = re.search(r"([\d,]+) datagrams sent, ([\d,]+) samples, lost 0 ", err)
    assert m is not None and m.group(1) == m.group(2) and m.group(1) != "0", err
    assert descendants_of_bench(tmp_path) == []


def test_pyconpro_bench_stops_its_processes_on_ctrl_c(tmp_path: Path) -> None:
    child = bench(tmp_path, "--only", "heartbeats", "--hb-seconds", "60", "--addresses",
                  "127.83.55")
    try:
        deadline = time.monotonic() + 60
        while len(processes_using("127.83.55.")) < 2:  # simulator and worker are up
            assert time.monotonic() < deadline and child.alive(), (tmp_path / "err.txt").read_text()
            time.sleep(0.05)
        time.sleep(1.0)
        child.send_signal(signal.SIGINT)
        code = child.wait(30)
    finally:
        child.stop()
    err = (tmp_path / "err.txt").read_text()
    assert code == 130, err
    assert "interrupted" in err
    assert descendants_of_bench(tmp_path) == []

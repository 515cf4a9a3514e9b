"""``pyconpro demo --duration 5``: exits 0, wrote rows, says where they are and how to query them.

The demo gets its own unusual addresses (its fallback to a free 127.x.y.2 is for users; tests do
not rely on it) and a temporary directory; its simulator and supervisor are its children and it
stops them itself, which the test checks by PID afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from pyconpro.sinks.stdout import float32_text
from pyconpro.workers.process import regex_ready, spawn

from tests.support.ports import free_subnet
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


def _addresses() -> tuple[str, str]:
    """The simulator's address (TCP 44818 free there) and the worker's beside it."""
    n = free_subnet(74)
    return f"127.74.{n}.2", f"127.74.{n}.1"


def test_demo_writes_rows_and_explains_how_to_query(tmp_path: Path) -> None:
    sim, local = _addresses()
    out_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "pyconpro.cli", "demo", "--duration", "5", "--dir", str(out_dir),
         "--sim-address", sim, "--local-address", local],
        check=False, capture_output=True, text=True, timeout=150, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    db = out_dir / "demo.sqlite3"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        counts = dict(con.execute("SELECT tag, COUNT(*) FROM samples GROUP BY tag").fetchall())
        events = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        con.close()
    assert set(counts) == {"Counter", "Sine", "Array10", "Motor", "Message"}
    total = sum(counts.values())
    # Progress, live values, the stop, then where the data is and how to query it.
    assert f"starting the PLC simulator on {sim}" in text
    assert "live values from demo (for 5 s)" in text
    assert re.search(r"live page: http://127\.0\.0\.1:\d+/ \(Prometheus metrics: ", text), text
    assert re.search(r"Counter\s+DINT\s+\d+ samples", text)
    # a REAL in float32 digits, the shortest that reads back as the same float32, as the stdout
    # sink and tail show it (never the float64 digits of its Python float)
    sines = re.findall(r"Sine\s+REAL\s+\d+ samples .*= (\S+)$", text, re.MULTILINE)
    assert sines, text
    for shown_value in sines:
        as_f32 = struct.unpack("<f", struct.pack("<f", float(shown_value)))[0]
        assert float32_text(as_f32) == shown_value, shown_value
    shown = os.path.relpath(db, tmp_path)  # paths are shown relative to where it was started
    assert f"The data is in {shown}: {total} samples" in text
    assert f"and {events} events" in text
    assert (
        f'sqlite3 {shown} "SELECT tag, COUNT(*), MIN(value_real), MAX(value_real) FROM samples'
        ' GROUP BY tag"' in text
    )
    one_liner = re.search(r'^\s+(\S*python\S*) -c "(.+)"$', text, re.MULTILINE)
    assert one_liner is not None, text
    q = subprocess.run([sys.executable, "-c", one_liner.group(2)], check=False, capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)  # fmt: skip
    assert q.returncode == 0 and q.stdout.startswith("[("), q.stderr
    # Every process the demo started is gone (PIDs from its logs).
    pids = {int(p) for p in re.findall(r"pid (\d+)", (out_dir / "pyconpro.log").read_text())}
    assert pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_written_config_runs_after_the_demo(tmp_path: Path) -> None:
    sim, local = _addresses()
    out_dir = tmp_path / "demo"
    env = {**os.environ, "PYCONPRO_PROG": "./dev"}
    proc = subprocess.run(
        [sys.executable, "-m", "pyconpro.cli", "demo", "--duration", "1", "--dir", str(out_dir),
         "--sim-address", sim, "--local-address", local],
        check=False, capture_output=True, text=True, timeout=150, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = out_dir / "demo.toml"
    assert f"`./dev run {os.path.relpath(config, tmp_path)}`" in proc.stdout
    assert "`pyconpro " not in proc.stdout
    m = re.search(r'^control_base = "ipc://(.+)"$', config.read_text(), re.MULTILINE)
    assert m is not None
    base = Path(m.group(1))
    # its sockets live where the config is (the temporary directory of old was deleted)
    assert base.parent == out_dir.resolve() or str(base).startswith("/tmp/pyconpro-demo-")
    assert not any(p.is_socket() for p in base.parent.iterdir())  # removed at the stop
    from pyconpro.status_cli import request

    run = spawn(
        [sys.executable, "-m", "pyconpro.cli", "run", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        st = request(f"ipc://{base}-supervisor", {"op": "status"}, 10.0)
        assert st is not None and st["ok"], run.proc.stderr
        assert st["supervisor"]["pid"] == run.pid
        # ... with its live page where the demo said ([web] in demo.toml)
        port = re.search(r"^port = (\d+)$", config.read_text(), re.MULTILINE)
        assert port is not None and f"http://127.0.0.1:{port.group(1)}/" in proc.stdout

        def tags() -> set[str] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/api/status",
                                            timeout=5) as reply:  # fmt: skip
                    keys = {t["key"] for t in json.loads(reply.read())["tags"]}
            except OSError:
                return None
            return keys if keys >= {"demo/Counter", "demo/Motor", "demo/Sine"} else None

        wait_for(tags, "the demo's tags on its live page", 30.0)
    finally:
        run.send_signal(signal.SIGINT)
        try:
            assert run.wait(30) == 0
        finally:
            run.kill()  # when it is still running; reaps it and closes the pipe


def test_a_long_directory_gets_a_short_socket_path(tmp_path: Path) -> None:
    from pyconpro.demo import IPC_PATH_MAX, IPC_SUFFIX_MAX, control_base_for

    short = control_base_for(tmp_path)
    assert short == f"ipc://{tmp_path.resolve()}/ctl" or len(str(tmp_path)) > 60
    deep = tmp_path / ("d" * 90)
    base = control_base_for(deep)
    assert base.startswith("ipc:///tmp/pyconpro-demo-") and base.endswith("/ctl")
    assert len(base) - len("ipc://") + IPC_SUFFIX_MAX <= IPC_PATH_MAX
    assert control_base_for(deep) == base  # the same directory, the same sockets


def test_ctrl_c_before_the_first_sample_exits_130(tmp_path: Path) -> None:
    sim, local = _addresses()
    out_dir = tmp_path / "demo"
    # Any first line: the demo is under way (the assertion below says which line it must be).
    proc = spawn(
        [sys.executable, "-u", "-m", "pyconpro.cli", "demo", "--duration", "5", "--dir",
         str(out_dir), "--sim-address", sim, "--local-address", local],
        ready=regex_ready(r"^"), stderr=subprocess.STDOUT, cwd=tmp_path, ready_timeout_s=60,
    )  # fmt: skip
    try:
        first = proc.first_line  # the demo is under way: interrupt it now
        assert "[1/3]" in first, first
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(60)
    finally:
        proc.kill()  # when it is still running; reaps it and closes the pipe
    assert proc.returncode == 130, first + out
    assert "interrupted before the first sample" in out
    assert "no samples were written" not in out and "read " not in out

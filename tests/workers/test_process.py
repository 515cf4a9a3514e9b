"""The process helper (workers/process.py): spawn, ready lines, the graceful stop, and the
parent-death signal. Real child processes (small ``python -c`` programs); every wait has a
deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pyconpro.workers.process import (
    SpawnError,
    describe_status,
    json_ready,
    regex_ready,
    source_env,
    spawn,
    spawn_with_log,
    stop,
)

from tests.support.leaks import alive

PY = sys.executable
SLEEPER = "import time\nwhile True: time.sleep(1)\n"
READY_JSON = "import json, sys\nprint(json.dumps({'ready': True, 'port': 7}), flush=True)\n"


def _wait_until(cond: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_json_ready_line_and_graceful_stop() -> None:
    child = spawn([PY, "-c", READY_JSON + SLEEPER], ready=json_ready, ready_timeout_s=20)
    try:
        assert child.ready == {"ready": True, "port": 7}
        assert child.alive()
        assert os.getpgid(child.pid) == child.pid  # its own process group
    finally:
        code = child.stop(10)
    assert code == -signal.SIGTERM
    assert describe_status(code) == "killed by SIGTERM"
    assert child.stop() == code  # idempotent
    assert child.send_signal(signal.SIGTERM) is False  # a reaped pid is never signalled


def test_regex_ready_line_gives_the_named_groups() -> None:
    prog = "print('READY tcp=127.0.0.1:4000 pid=1', flush=True)\n" + SLEEPER
    with spawn([PY, "-c", prog], ready=regex_ready(r"READY tcp=(?P<addr>[\d.]+):(?P<tcp>\d+)"),
               ready_timeout_s=20) as child:
        assert child.ready == {"addr": "127.0.0.1", "tcp": "4000"}
    assert child.returncode == -signal.SIGTERM  # the context manager stopped it


def test_child_that_dies_before_ready_reports_status_and_stderr(tmp_path: Path) -> None:
    log = tmp_path / "child.err"
    prog = "import sys\nsys.stderr.write('first\\nthe real reason\\n')\nsys.exit(3)\n"
    with pytest.raises(SpawnError) as info:
        spawn([PY, "-c", prog], ready=json_ready, stderr=log, ready_timeout_s=20)
    err = info.value
    assert err.returncode == 3
    assert "exit status 3" in str(err)
    assert "the real reason" in str(err)
    assert err.stderr_tail.splitlines() == ["first", "the real reason"]


def test_child_that_prints_something_else_first_is_killed(tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as info:
        spawn([PY, "-c", "print('hello', flush=True)\n" + SLEEPER], ready=json_ready,
              stderr=tmp_path / "err", ready_timeout_s=20)
    assert info.value.first_line == "hello"
    assert info.value.returncode is None  # still running when we gave up: killed, reaped
    assert "'hello' instead of its ready line" in str(info.value)


def test_silent_child_times_out() -> None:
    t0 = time.monotonic()
    with pytest.raises(SpawnError, match="no ready line within 0.5 s"):
        spawn([PY, "-c", SLEEPER], ready=json_ready, stderr=os.devnull, ready_timeout_s=0.5)
    assert time.monotonic() - t0 < 10


def test_child_that_ignores_sigterm_is_killed() -> None:
    prog = ("import signal, json\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print(json.dumps({'ready': True}), flush=True)\n" + SLEEPER)
    child = spawn([PY, "-c", prog], ready=json_ready, ready_timeout_s=20)
    t0 = time.monotonic()
    assert stop(child, 0.5) == -signal.SIGKILL
    assert time.monotonic() - t0 >= 0.5
    assert child.proc.stdout is not None and child.proc.stdout.closed


def test_missing_program_raises_like_popen() -> None:
    with pytest.raises(FileNotFoundError):
        spawn(["pyconpro-no-such-program-here"])
    with pytest.raises(FileNotFoundError):
        spawn(["./no/such/program"])


def test_exit_status_without_a_ready_line_and_output_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    child = spawn([PY, "-c", "print('to the file')"], stdout=out, stderr=out)
    assert child.wait(20) == 0
    assert child.stop() == 0
    assert out.read_text() == "to the file\n"


def test_the_command_line_is_the_real_one_after_the_wrapper(tmp_path: Path) -> None:
    child = spawn([PY, "-c", READY_JSON + SLEEPER, "marker-arg"], ready=json_ready,
                  ready_timeout_s=20)
    try:
        cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[-2] == b"marker-arg"
        assert b"-S" not in cmdline[:2]  # the exec wrapper is gone (same pid)
    finally:
        child.stop()


# The parent: spawns a grandchild through the helper, says its pid, then waits to be killed.
PARENT = f"""
import json, sys
from pyconpro.workers.process import json_ready, spawn
child = spawn([sys.executable, "-c", {READY_JSON + SLEEPER!r}], ready=json_ready,
              ready_timeout_s=20)
print(json.dumps({{"ready": True, "child": child.pid}}), flush=True)
import time
while True:
    time.sleep(1)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_child_dies_with_its_parent() -> None:
    parent = spawn([PY, "-c", PARENT], ready=json_ready, ready_timeout_s=30)
    grandchild = int(parent.ready["child"])
    try:
        assert alive(grandchild)
        parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the parent
        assert parent.wait(10) == -signal.SIGKILL
        assert _wait_until(lambda: not alive(grandchild)), "the grandchild outlived its parent"
    finally:
        parent.kill()
        if alive(grandchild):  # pragma: no cover - only when the test fails
            os.kill(grandchild, signal.SIGKILL)


def test_pipes_read_to_the_exit_as_text() -> None:
    prog = "import sys\nprint('out ü')\nsys.stderr.write('err\\n')\nsys.exit(4)\n"
    child = spawn([PY, "-c", prog], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.communicate(20) == ("out ü\n", "err\n")
    assert child.returncode == 4
    assert child.stop() == 4


def test_communicate_times_out_and_kill_closes_both_pipes() -> None:
    child = spawn([PY, "-c", SLEEPER], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with pytest.raises(subprocess.TimeoutExpired):
        child.communicate(0.2)
    assert child.alive()  # still running: the caller decides
    assert child.kill() == -signal.SIGKILL
    assert child.proc.stdout is not None and child.proc.stdout.closed
    assert child.proc.stderr is not None and child.proc.stderr.closed


def test_rest_of_stdout_after_the_ready_line() -> None:
    prog = READY_JSON + "print('after')\nprint('and more')\n"
    child = spawn([PY, "-c", prog], ready=json_ready, ready_timeout_s=20)
    assert child.ready["port"] == 7
    assert child.communicate(20) == ("after\nand more\n", "")
    assert child.returncode == 0


def test_ready_line_on_stderr_after_a_warning() -> None:
    # as tshark does when run as root: a warning, then "Capturing on ..." (both on stderr)
    prog = ("import sys\nsys.stderr.write('Running as root: careful\\n')\n"
            "sys.stderr.write(\"Capturing on 'lo'\\n\")\nsys.stderr.flush()\n" + SLEEPER)
    with spawn([PY, "-c", prog], ready=regex_ready(r"Capturing on '(?P<dev>\w+)'"),
               stderr=subprocess.STDOUT, ready_lines=3, ready_timeout_s=20) as child:
        assert child.ready == {"dev": "lo"}
        assert child.first_line == "Running as root: careful"
    with pytest.raises(SpawnError) as info:  # one line allowed: the warning is not ready
        spawn([PY, "-c", prog], ready=regex_ready("Capturing on"), stderr=subprocess.STDOUT,
              ready_timeout_s=20)
    assert "'Running as root: careful' instead of its ready line" in str(info.value)
    assert "its stderr went to the same pipe as its stdout" in str(info.value)
    with pytest.raises(ValueError, match="ready_lines must be at least 1"):
        spawn([PY, "-c", "pass"], ready=json_ready, ready_lines=0)


def test_a_child_with_its_own_log_deletes_it_when_closed() -> None:
    prog = "import sys\nsys.stderr.write('logged\\n')\n" + READY_JSON + SLEEPER
    with spawn_with_log([PY, "-c", prog], log_prefix="pyconpro-test-", ready=json_ready,
                        ready_timeout_s=20) as child:
        log = child.stderr_path
        assert log is not None and log.name.startswith("pyconpro-test-")
        assert child.stderr_text() == "logged\n"
    assert child.returncode == -signal.SIGTERM
    assert not log.exists()
    assert child.stderr_text() == ""


def test_a_child_with_its_own_log_that_fails_leaves_no_file(tmp_path: Path) -> None:
    prog = "import sys\nsys.stderr.write('why it failed\\n')\nsys.exit(2)\n"
    before = set(Path(tempfile.gettempdir()).glob("pyconpro-test-fail-*"))
    with pytest.raises(SpawnError, match="why it failed"):
        spawn_with_log([PY, "-c", prog], log_prefix="pyconpro-test-fail-", ready=json_ready,
                       ready_timeout_s=20)
    assert set(Path(tempfile.gettempdir()).glob("pyconpro-test-fail-*")) == before


def test_source_env_puts_the_checkout_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = source_env(Path("/src/pyconpro"))
    assert env["PYTHONPATH"] == os.pathsep.join(["/src/pyconpro", "/elsewhere"])
    assert env["PYTHONUNBUFFERED"] == "1"
    monkeypatch.delenv("PYTHONPATH")
    assert source_env("/src/pyconpro")["PYTHONPATH"] == "/src/pyconpro"


def test_json_ready_accepts_only_ready_objects() -> None:
    assert json_ready('{"ready": true, "pub": "tcp://x"}') == {"ready": True, "pub": "tcp://x"}
    assert json_ready('{"ready": false}') is None
    assert json_ready("[1]") is None
    assert json_ready("READY") is None
    assert json.loads('{"ready": true}') == json_ready('{"ready": true}')

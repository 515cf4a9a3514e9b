"""scripts/stress_tests.py: runs pytest N times with busy cores, stops at the first failure,
and leaves no spinning process behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "stress_tests.py"

pytestmark = pytest.mark.timeout(300)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, check=False)  # fmt: skip


def test_every_run_passes() -> None:
    res = _run("--runs", "2", "--busy", "1", "--", "tests/acquisition/test_cpf.py")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stress run 1/2 with 1 busy core(s): passed" in res.stdout
    assert "stress run 2/2 with 1 busy core(s): passed" in res.stdout
    assert "stress: 2 of 2 run(s) passed" in res.stdout


def test_stops_at_the_first_failing_run(tmp_path: Path) -> None:
    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_no() -> None:\n    assert False\n")
    res = _run("--runs", "3", "--busy", "1", "--", str(failing))
    assert res.returncode == 1
    assert "stress run 1/3 with 1 busy core(s): FAILED (pytest exit 1)" in res.stdout
    assert "run 2/3" not in res.stdout and "stress: 0 of 3 run(s) passed" in res.stdout

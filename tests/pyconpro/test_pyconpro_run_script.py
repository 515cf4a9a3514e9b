"""scripts/pyconpro-run: runs the supervisor, or says how to get the environment it needs."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pyconpro-run"


def test_missing_dependencies_give_the_activate_hint_not_a_traceback(tmp_path: Path) -> None:
    # -S: no site-packages, like a bare python3 on PATH next to a .venv that is not activated.
    out = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), "plant.toml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("pyconpro-run: cannot import the pipeline (No module named ")
    assert ". .venv/bin/activate" in out.stderr and "pip install ." in out.stderr


def test_with_the_dependencies_it_is_the_supervisor(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: ") and "CONFIG" in out.stdout

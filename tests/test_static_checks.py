"""Type and lint checks run with the tests, so CI keeps the code mypy- and ruff-clean
(STYLE.md #15). Both tools come with the test extras."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["acquisition", "workers", "sinks", "simulator", "pyconpro"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy comes with the test extras: pip install -e '.[test]'")
    out = _run([sys.executable, "-m", "mypy", *PACKAGES])
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff comes with the test extras: pip install -e '.[test]'")
    out = _run([ruff, "check", "--output-format", "concise", *PACKAGES, "scripts", "tests"])
    assert out.returncode == 0, out.stdout + out.stderr

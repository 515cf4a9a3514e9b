"""Type and lint checks run with the tests, so CI keeps the code mypy- and ruff-clean
(STYLE.md #15). Both tools come with the test extras."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["acquisition", "workers", "sinks", "simulator", "web", "pyconpro"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy comes with the test extras: pip install -e '.[test]'")
    # The packages as installed (pyconpro.acquisition, ...): scripts/typecheck.py stages them.
    # pyproject.toml sets strict = true; the tests are held to it too.
    out = _run([sys.executable, str(ROOT / "scripts" / "typecheck.py"), "--tests"])
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff comes with the test extras: pip install -e '.[test]'")
    out = _run([ruff, "check", "--output-format", "concise", *PACKAGES, "scripts", "tests"])
    assert out.returncode == 0, out.stdout + out.stderr


def test_imports_use_the_pyconpro_namespace() -> None:
    """``acquisition`` and its siblings are installed as ``pyconpro.acquisition`` (and so on):
    an import by the bare folder name works only in a checkout, and would load a second copy
    of a module under another name."""
    from tests.support.imports import imports_of

    bare = {"acquisition", "workers", "sinks", "simulator", "web"}
    offenders = []
    for folder in [*PACKAGES, "scripts", "tests"]:
        for path in sorted((ROOT / folder).rglob("*.py")):
            offenders += [f"{path.relative_to(ROOT)}:{line}: {name}"
                          for line, name in imports_of(path) if name.split(".")[0] in bare]
    assert offenders == [], "import these as pyconpro.<name>:\n" + "\n".join(offenders)

#!/usr/bin/env python3
"""Run mypy over the whole tree as the installed ``pyconpro`` namespace sees it.

The checkout keeps ``acquisition/``, ``workers/``, ``sinks/`` and ``simulator/`` beside
``pyconpro/``, and setuptools installs them as ``pyconpro.acquisition`` and so on
(pyproject.toml ``package-dir``). mypy cannot follow the editable install's import hook, so this
builds the installed layout out of symbolic links under ``build/typecheck/`` and checks that,
then prints every message with the path of the real file. Exit status: mypy's.

    scripts/typecheck.py            # the packages and scripts/
    scripts/typecheck.py --tests    # and tests/ as well
    scripts/typecheck.py --tests --warn-return-any   # other arguments go to mypy
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Subpackage of ``pyconpro`` -> its folder in the checkout (mirrors pyproject.toml).
SUBPACKAGES = {"acquisition": "acquisition", "workers": "workers", "sinks": "sinks",
               "simulator": "simulator", "web": "web"}


def stage(dest: Path) -> dict[str, str]:
    """Build ``dest/pyconpro`` from links; returns staged path prefix -> real path prefix."""
    if dest.exists():
        shutil.rmtree(dest)
    pkg = dest / "pyconpro"
    pkg.mkdir(parents=True)
    back: dict[str, str] = {}
    for entry in sorted((ROOT / "pyconpro").iterdir()):
        if entry.suffix in (".py", ".pyi", ".typed"):
            (pkg / entry.name).symlink_to(entry)
        elif (entry / "__init__.py").is_file():  # a subpackage kept inside pyconpro/ (bench)
            (pkg / entry.name).symlink_to(entry, target_is_directory=True)
    back[str(pkg) + os.sep] = "pyconpro" + os.sep
    for name, folder in SUBPACKAGES.items():
        (pkg / name).symlink_to(ROOT / folder, target_is_directory=True)
        back[str(pkg / name) + os.sep] = folder + os.sep
    for name in ("tests", "scripts"):
        (dest / name).symlink_to(ROOT / name, target_is_directory=True)
        back[str(dest / name) + os.sep] = name + os.sep
    return back


def _real_paths(text: str, back: dict[str, str], dest: Path) -> str:
    # Longest prefix first: pyconpro/acquisition/ before pyconpro/.
    for staged in sorted(back, key=len, reverse=True):
        text = text.replace(staged, back[staged])
        rel = os.path.relpath(staged, dest) + os.sep
        text = text.replace(rel, back[staged])
    return text


def main(argv: list[str]) -> int:
    dest = ROOT / "build" / "typecheck"
    back = stage(dest)
    targets = [str(dest / "pyconpro")]
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.py"))
    targets += [str(dest / "scripts" / Path(p).name) for p in scripts]
    if "--tests" in argv:
        targets.append(str(dest / "tests"))
    env = dict(os.environ, MYPYPATH=str(dest))
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(ROOT / "build" / "mypy-cache"),
         *(a for a in argv if a != "--tests"), *targets],
        cwd=dest, capture_output=True, text=True, env=env, check=False,
    )
    sys.stdout.write(_real_paths(out.stdout, back, dest))
    sys.stderr.write(_real_paths(out.stderr, back, dest))
    return out.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

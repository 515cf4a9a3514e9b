"""The installed distribution is one import namespace, ``pyconpro`` (pyproject.toml
``package-dir``): build the sdist and the wheel with ``python -m build``, install the wheel
into a fresh virtual environment, check that nothing but ``pyconpro`` and its metadata landed
at the top level of site-packages, that every subpackage imports from there (not from this
checkout), and that the demo runs from it.

The fresh environment gets the runtime dependencies from this interpreter's site-packages
(a ``.pth`` line) instead of the network, so the test costs one wheel build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("acquisition", "workers", "sinks", "simulator", "bench", "web")


def _run(args: list[str], cwd: Path, timeout: float = 240, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False, env={**full, **(env or {})})


def _build_wheel(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str] | None = None,
                 ) -> tuple[Path, str]:
    """The wheel, and what the build said."""
    # From a copy of the checkout without what .gitignore keeps out of a clone; pip builds in
    # the source tree, so this also keeps build/ out of ours.
    src = tmp_path_factory.mktemp("src") / "pyconpro"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis",
        "pyconpro-demo", "*.sqlite3", "*.so"))
    out = tmp_path_factory.mktemp("wheel")
    # `python -m build` as a release is made: the sdist, then the wheel built from the sdist
    # (so a file missing from the sdist is missing from the wheel too), in an isolated build
    # environment with pyproject.toml's build requirements, as pip would.
    res = _run([sys.executable, "-m", "build", "--outdir", str(out), str(src)], cwd=out, env=env)
    if res.returncode != 0 and "No module named build" in res.stderr:
        pytest.fail("the `build` package is missing: pip install -e '.[test]'")
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(list(out.glob("pyconpro-*.tar.gz"))) == 1, sorted(out.iterdir())
    [whl] = out.glob("pyconpro-*.whl")
    return whl, res.stdout + res.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(tmp_path_factory)[0]


def test_wheel_holds_only_the_pyconpro_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        tops = {name.split("/")[0] for name in z.namelist()}
        names = set(z.namelist())
    assert {t for t in tops if not t.endswith(".dist-info")} == {"pyconpro"}
    for sub in SUBPACKAGES:
        assert f"pyconpro/{sub}/__init__.py" in names, sorted(names)
    assert "pyconpro/acquisition/connection.py" in names
    assert "pyconpro/bench/sender.c" in names  # package data: the benchmark's load source
    for static in ("index.html", "app.js", "app.css", "favicon.svg"):  # the live page
        assert f"pyconpro/web/static/{static}" in names, sorted(names)
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    # The compiled receive path is built into the wheel where there is a compiler (else the
    # build says so and the wheel is pure Python).
    built = [n for n in names if n.startswith("pyconpro/workers/_fastpath.")
             and n.endswith(".so")]
    if not built:
        from tests.support.requirements import skip_or_fail

        skip_or_fail("gcc", "the wheel was built without the compiled receive path (no gcc?)")
    assert len(built) == 1, built


def _venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    res = _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=env_dir.parent)
    assert res.returncode == 0, res.stderr
    py = env_dir / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=env_dir).stdout.strip())
    # Runtime dependencies from this interpreter, not from the network. A path line in a .pth
    # does not run the .pth files found there, so this checkout's editable hook stays out.
    (site / "zz_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    before = set(os.listdir(site))
    res = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                "--no-index", "--quiet", str(wheel)], cwd=env_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    added = set(os.listdir(site)) - before
    assert {a for a in added if not a.endswith(".dist-info")} == {"pyconpro"}, sorted(added)
    return env_dir


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(wheel, tmp_path_factory)


def test_without_a_compiler_the_install_says_so_and_the_worker_runs_python(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    whl, said = _build_wheel(tmp_path_factory, env={"CC": "false"})
    assert "the compiled receive path (workers/_fastpath.c) was not built" in said
    assert "apt-get install gcc" in said
    with zipfile.ZipFile(whl) as z:
        assert not [n for n in z.namelist() if n.endswith(".so")]
    py = _venv(whl, tmp_path_factory) / "bin" / "python"
    code = ("from pyconpro.workers import fastpath\n"
            "c = fastpath.choose()\n"
            "print(c.name, '|', c.reason)\n"
            "try:\n"
            "    fastpath.choose({'PYCONPRO_FASTPATH': '1'})\n"
            "except fastpath.FastPathError as exc:\n"
            "    print(exc)\n")
    res = _run([str(py), "-c", code], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    chosen, refused = res.stdout.splitlines()
    assert chosen.startswith("python | pure Python: the compiled receive path is not built")
    assert refused.startswith("PYCONPRO_FASTPATH=1: the compiled receive path is not built")


def test_every_subpackage_imports_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    code = ("import importlib, pyconpro\n"
            f"for sub in {SUBPACKAGES!r}:\n"
            "    m = importlib.import_module('pyconpro.' + sub)\n"
            "    print(m.__file__)\n"
            "import pyconpro.workers.io_worker, pyconpro.sinks.cli, pyconpro.simulator.cli\n"
            "import pyconpro.web.server\n"
            "from pyconpro.workers import fastpath\n"
            "print('receive path:', fastpath.choose().name)\n"
            "import sys\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in"
            f" {SUBPACKAGES!r}))\n")
    res = _run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    *files, path, stray = res.stdout.splitlines()
    assert len(files) == len(SUBPACKAGES)
    assert path in ("receive path: compiled", "receive path: python")
    assert all(str(venv) in f for f in files), files
    assert stray == "[]"


def test_the_load_source_builds_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from pyconpro.bench import native\n"
            "from importlib import resources\n"
            "print(resources.files('pyconpro.bench').joinpath('sender.c'))\n"
            "print(native.build_sender(Path(sys.argv[1])))\n")
    res = _run([str(venv / "bin" / "python"), "-c", code, str(tmp_path / "cache")], cwd=tmp_path)
    if res.returncode != 0 and "needs a C compiler" in res.stderr:
        from tests.support.requirements import skip_or_fail

        skip_or_fail("gcc", res.stderr.strip().splitlines()[-1])
    assert res.returncode == 0, res.stderr
    source, exe = res.stdout.splitlines()
    assert str(venv) in source
    assert Path(exe).parent == tmp_path / "cache" and os.access(exe, os.X_OK)


def _free_addresses() -> tuple[str, str]:
    """The simulator's address (TCP 44818 free there) and the worker's beside it."""
    from tests.support.ports import free_subnet

    n = free_subnet(73)
    return f"127.73.{n}.2", f"127.73.{n}.1"


def test_demo_runs_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    sim, local = _free_addresses()
    res = _run([str(venv / "bin" / "pyconpro"), "demo", "--duration", "3", "--dir",
                str(tmp_path / "demo"), "--sim-address", sim, "--local-address", local],
               cwd=tmp_path, timeout=150)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "demo" / "demo.sqlite3").is_file()
    assert "samples" in res.stdout

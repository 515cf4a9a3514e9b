"""acquisition/ is sans-IO (ARCHITECTURE.md, STYLE.md #1): importing any of its modules must not
load sockets, event loops, zmq, clocks, threads or processes."""

import pathlib
import subprocess
import sys

import acquisition

FORBIDDEN = ["socket", "asyncio", "zmq", "time", "threading", "multiprocessing", "select", "selectors"]

CORE = sorted(
    p.stem for p in pathlib.Path(acquisition.__file__).parent.glob("*.py") if p.stem != "__init__"
)


def test_core_modules_exist() -> None:
    assert {"encap", "cpf", "epath", "cip", "cm", "class1", "status", "errors"} <= set(CORE)


def test_no_core_module_imports_io_modules() -> None:
    # A fresh interpreter, so modules loaded by pytest itself do not hide an import.
    # "-S" and "-I" keep site customizations from importing anything on our behalf.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"mods = {CORE!r}\n"
        "import importlib\n"
        "for m in mods:\n"
        "    importlib.import_module('acquisition.' + m)\n"
        f"bad = sorted(set(sys.modules) - before & set({FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    root = pathlib.Path(acquisition.__file__).parent.parent
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"acquisition imports I/O modules: {out.stdout.strip()}"

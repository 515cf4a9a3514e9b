"""acquisition/ is sans-IO (ARCHITECTURE.md, STYLE.md #1): importing any of its modules must not
load sockets, event loops, zmq, clocks, threads or processes."""

import pathlib
import subprocess
import sys

import pyconpro.acquisition as acquisition

from tests.support.imports import imports_of

FORBIDDEN = [
    "socket",
    "asyncio",
    "zmq",
    "time",
    "threading",
    "multiprocessing",
    "select",
    "selectors",
]

SHELLS = ["sinks", "workers", "simulator", "config_file"]

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
        "    importlib.import_module('pyconpro.acquisition.' + m)\n"
        f"bad = sorted(set(sys.modules) - before & set({FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    root = pathlib.Path(acquisition.__file__).parent.parent
    out = subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"acquisition imports I/O modules: {out.stdout.strip()}"


def test_no_core_module_source_imports_io_modules() -> None:
    """The interpreter loads ``time`` (and others) at start-up, so the check above cannot see
    them; read every core module's imports from its source as well."""
    root = pathlib.Path(acquisition.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        for line, name in imports_of(path):
            if name.split(".")[0] in FORBIDDEN:
                offenders.append(f"{path.name}:{line} imports {name}")
            # The core is handed what it needs from the shells (the sink option schemas are
            # a parameter of parse_config), never imports them.
            if name.split(".")[:2] in (["pyconpro", p] for p in SHELLS):
                offenders.append(f"{path.name}:{line} imports {name}")
    assert offenders == []

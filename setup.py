"""The one compiled part of pyconpro, optional: the I/O worker's receive path and the bus
forwarder's loop in C (workers/_fastpath.c, docs/performance.md). Everything else is in
pyproject.toml.

Without a C compiler (or off Linux) the install goes on and the worker runs its pure-Python
path, which is the reference and does the same work slower; this says so once, plainly.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

_NOTE = (
    "\n*** pyconpro: the compiled receive path (workers/_fastpath.c) was not built: {why}\n"
    "*** The I/O worker and the bus forwarder run their pure-Python paths instead (the same\n"
    "*** behaviour, at more CPU per message; docs/performance.md). To build it: install a C\n"
    "*** compiler and the Python headers (Debian/Ubuntu: apt-get install gcc python3-dev),\n"
    "*** then reinstall pyconpro.\n"
)


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a missing compiler is a note, not an error."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            sys.stderr.write(_NOTE.format(why=exc))

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            sys.stderr.write(_NOTE.format(why=exc))


setup(
    ext_modules=[
        Extension(
            "pyconpro.workers._fastpath",
            sources=["workers/_fastpath.c"],
            libraries=["m"],
            extra_compile_args=["-O2"],
        )
    ]
    if sys.platform == "linux"  # recvmmsg, sendmmsg: elsewhere the pure-Python path runs
    else [],
    cmdclass={"build_ext": OptionalBuildExt},
)

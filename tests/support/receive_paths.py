"""The I/O worker's two receive paths, and the bus forwarder's two loops, for tests that run on
both (workers/fastpath.py): the pure-Python reference and the compiled one. Where the compiled
one was not built the tests of it skip, or fail where ``PYCONPRO_REQUIRE_FASTPATH=1`` (CI, which
installs gcc)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
from pyconpro.acquisition.demux import Demux
from pyconpro.workers.fastpath import ENV, Choice, CompiledDemux, choose, load

from tests.support.requirements import skip_or_fail

#: pytest parameters: run a test on both paths.
PATHS = ("python", "compiled")

AnyDemux = Demux | CompiledDemux
NewDemux = Callable[[], AnyDemux]


def compiled() -> ModuleType:
    """The compiled module, or skip (fail where it is required)."""
    module, reason = load()
    if module is None:
        skip_or_fail("fastpath", reason)
    return module


def demux_factory(path: str) -> NewDemux:
    """A maker of demultiplexers of receive path ``path`` ("python" or "compiled")."""
    if path == "python":
        return Demux
    module = compiled()
    return lambda: CompiledDemux(module)


def forwarding_path(path: str) -> Choice:
    """The forwarder's loop ``path`` ("python" or "compiled"), for ``Forwarder(path=...)``."""
    if path == "compiled":
        compiled()
    return choose({ENV: "1" if path == "compiled" else "0"})


def use_receive_path(path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make every worker the test starts run receive path ``path`` (a worker process inherits
    ``PYCONPRO_FASTPATH``; tests/workers/worker_process.py checks its ready line says so)."""
    if path == "compiled":
        compiled()
    monkeypatch.setenv(ENV, "1" if path == "compiled" else "0")
    return path

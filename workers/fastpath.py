"""Which receive path the I/O worker runs, and the compiled one's Python face.

The worker has two receive paths that do the same thing (docs/worker.md "Receive path"):

* **pure Python** (``acquisition.demux.Demux`` + the worker's loop): the reference, always
  there;
* **compiled** (``workers/_fastpath.c``, built by ``pip install`` when a C compiler is there):
  ``recvmmsg``, the same demultiplexing rules and counters, and for a consumer whose data is
  routine (connection RUNNING, no outage open, nothing missed) the flight recorder entry, the
  sample's MessagePack body (the bytes of ``wire.SampleStream.encode``) and the PUB send,
  without a Python object per datagram. Everything that needs a decision (a gap, the end of
  an outage, the first datagram of a connection) is handed to Python as it is.

The same module holds the supervisor's bus forwarding loop in C (``CompiledForwarding``: the
XSUB -> XPUB copy of workers/forwarder.py without the GIL, back to Python for every
subscription to judge); the forwarder's Python loop is its reference.

``PYCONPRO_FASTPATH`` chooses, for the worker's receive path and the forwarder's loop alike:
unset or ``auto`` = the compiled path when it was built and pyzmq's libzmq can be reached,
else pure Python with the reason in the log and in ``status``; ``1`` = the compiled path or
the worker (the supervisor) does not start (the error says why); ``0`` = pure Python.
tests/workers/test_fastpath.py feeds the same datagrams, hostile ones included, to both and
compares them sample by sample and counter by counter; the forwarder's tests run on both.
"""

from __future__ import annotations

import ctypes
import os
from array import array
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import zmq
from pyconpro.acquisition.class1 import PREFIX_SIZE, Class1Datagram
from pyconpro.acquisition.demux import Delivery, DropReason, Source
from pyconpro.acquisition.errors import UsageError

__all__ = [
    "CONTROL_READY",
    "ENV",
    "XPUB_READY",
    "XSUB_READY",
    "Choice",
    "CompiledDemux",
    "CompiledForwarding",
    "FastPathError",
    "choose",
    "load",
]

ENV = "PYCONPRO_FASTPATH"
_OFF = {"0", "off", "no", "false", "python"}
_ON = {"1", "on", "yes", "true", "compiled"}
_AUTO = {"", "auto"}
_RECEIVE_FUNCTIONS = ("zmq_send", "zmq_errno")
# What a forwarding step returns: which sockets had input (workers/_fastpath.c forward()).
XSUB_READY, XPUB_READY, CONTROL_READY = 1, 2, 4


class FastPathError(Exception):
    """``PYCONPRO_FASTPATH=1`` asked for the compiled path and it cannot run here."""


@dataclass(frozen=True, slots=True)
class Choice:
    """The receive path a worker runs: ``module`` is the compiled one (None: pure Python);
    ``reason`` says why, for the log and ``status``."""

    module: ModuleType | None
    reason: str

    @property
    def name(self) -> str:
        return "compiled" if self.module is not None else "python"


def load() -> tuple[ModuleType | None, str]:
    """The compiled module, bound to pyzmq's libzmq, or None and why not."""
    try:
        from pyconpro.workers import _fastpath
    except ImportError as exc:
        return None, (f"the compiled receive path is not built ({exc}): install a C compiler"
                      " (apt-get install gcc python3-dev) and reinstall pyconpro")
    forwarding = getattr(_fastpath, "FORWARDER_FUNCTIONS", None)
    if forwarding is None:
        return None, ("the compiled receive path was built from an older source: reinstall"
                      " pyconpro")
    functions = _libzmq_functions((*_RECEIVE_FUNCTIONS, *forwarding))
    if functions is None:
        return None, ("pyzmq's libzmq (zmq_send) cannot be reached from the compiled receive"
                      " path")
    _fastpath.bind_libzmq(*(functions[name] for name in _RECEIVE_FUNCTIONS))
    _fastpath.bind_forwarder(functions)
    return _fastpath, "compiled: recvmmsg, C demultiplexer and sample encoder"


def choose(env: Mapping[str, str] | None = None) -> Choice:
    """The receive path ``PYCONPRO_FASTPATH`` asks for (module docstring); FastPathError
    when it asks for the compiled one and that cannot run, UsageError for a value it does not
    know."""
    value = (os.environ if env is None else env).get(ENV, "auto").strip().lower()
    if value in _OFF:
        return Choice(None, f"pure Python ({ENV}={value})")
    if value not in _ON | _AUTO:
        raise UsageError(f"{ENV}={value!r}: give 1 (the compiled receive path), 0 (pure"
                         " Python) or auto (the compiled one when it is built)")
    module, reason = load()
    if module is None:
        if value in _ON:
            raise FastPathError(f"{ENV}={value}: {reason}")
        return Choice(None, f"pure Python: {reason}")
    return Choice(module, reason)


def _libzmq_functions(names: tuple[str, ...]) -> dict[str, int] | None:
    """Addresses of the functions ``names`` in the libzmq pyzmq loaded (the same library
    instance, so its sockets are ours to use), checked by its version."""
    want = zmq.zmq_version_info()
    for path in _loaded_libraries():
        try:
            lib = ctypes.CDLL(path)
            version = lib.zmq_version
            functions = [getattr(lib, name) for name in names]
        except (OSError, AttributeError):
            continue
        major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
        if (major.value, minor.value, patch.value) != want:
            continue
        found = {name: ctypes.cast(f, ctypes.c_void_p).value for name, f in
                 zip(names, functions, strict=True)}  # fmt: skip
        if all(found.values()):
            return {name: int(at) for name, at in found.items() if at}
    return None


def _loaded_libraries() -> list[str]:
    """Shared objects mapped in this process that may hold libzmq: a libzmq itself (pyzmq's
    bundled copy or the system's), then pyzmq's extension (when libzmq is linked into it)."""
    zmq_libs, backends = [], []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                name = os.path.basename(path)
                if name.startswith("libzmq") and path not in zmq_libs:
                    zmq_libs.append(path)
                elif "zmq" in path and name.startswith("_zmq") and path not in backends:
                    backends.append(path)
    except OSError:
        return []
    return zmq_libs + backends


class CompiledDemux:
    """``acquisition.demux.Demux``'s interface over the compiled demultiplexer (``c``), whose
    ``drain`` is the receive loop (the worker calls it directly)."""

    def __init__(self, module: ModuleType) -> None:
        self.c: Any = module.Demux()

    def add(self, source: Source, connection_id: int, data_size: int, owner: Hashable, *,
            max_jump: int | None = None) -> None:
        if max_jump is not None and max_jump < 1:
            raise UsageError(f"max_jump must be at least 1, not {max_jump}")
        problem = self.c._add(source, connection_id, data_size, owner, max_jump)
        if problem is not None:
            raise UsageError(problem)

    def remove(self, source: Source, connection_id: int, owner: Hashable) -> None:
        self.c.remove(source, connection_id, owner)

    def receive(self, data: bytes, source: Source) -> Delivery | None:
        """One datagram, as ``Demux.receive`` (tests; the worker uses ``c.drain``)."""
        got = self.c._receive(data, source)
        if got is None:
            return None
        owners, cid, seq, cseq, missed = got
        return Delivery(owners, Class1Datagram(cid, seq, cseq, bytes(data[PREFIX_SIZE:])),
                        missed)

    @property
    def drops(self) -> dict[DropReason, int]:
        counts, _ = self.c._drop_counts()
        return dict(zip(DropReason, counts, strict=True))

    @property
    def last_dropped(self) -> dict[DropReason, Source]:
        _, last = self.c._drop_counts()
        return {r: s for r, s in zip(DropReason, last, strict=True) if s is not None}

    @property
    def accepted(self) -> int:
        return int(self.c.accepted)

    def __len__(self) -> int:
        return len(self.c)

    def counters(self) -> dict[str, int]:
        out = {f"drop_{r.value}": n for r, n in self.drops.items()}
        out["accepted"] = self.accepted
        out["routes"] = len(self)
        return out


class CompiledForwarding:
    """The bus forwarder's step in C (``forward`` of workers/_fastpath.c) over the forwarder
    thread's own sockets: forward whole messages from ``xsub`` to ``xpub`` (and a copy to
    ``capture``) with the GIL released until ``xpub`` or ``control`` has a message or the
    time given is up; the frames and bytes taken in are added to ``counts`` (an
    ``array("Q")`` of two, read by other threads). Only the thread that owns the sockets
    calls ``step``; the sockets must outlive this object."""

    def __init__(self, module: ModuleType, xsub: zmq.Socket[Any], xpub: zmq.Socket[Any],
                 capture: zmq.Socket[Any] | None, control: zmq.Socket[Any],
                 counts: array[int], batch: int) -> None:  # fmt: skip
        self._forward = module.forward
        self._sockets = (xsub.underlying, xpub.underlying,
                         capture.underlying if capture is not None else 0, control.underlying)
        self._counts = counts
        self._batch = batch

    def step(self, timeout_ms: int) -> int:
        """Forward until something else needs attention: which sockets had input
        (``XSUB_READY`` | ``XPUB_READY`` | ``CONTROL_READY``, 0 when the time was up with
        nothing); pyzmq's error when libzmq failed (``zmq.ContextTerminated`` at its end)."""
        ready = int(self._forward(*self._sockets, timeout_ms, self._batch, self._counts))
        if ready < 0:
            if -ready == zmq.ETERM:
                raise zmq.ContextTerminated()
            raise zmq.ZMQError(-ready)
        return ready

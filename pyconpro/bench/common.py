"""What every figure of ``pyconpro bench`` gets (``Env``) and gives back (``Figure``)."""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zmq

from pyconpro.bench.native import build_sender
from pyconpro.bench.procs import BenchError, Child, Processes


@dataclass
class Env:
    """One benchmark run: its processes, ZeroMQ context, scratch directory and addresses.

    Every address is on loopback, in the /24 ``prefix`` (three octets): the worker and the
    bare loops on ``.1``, the simulator on ``.2``, the simulated PLCs of the opening figure
    from ``.10`` on. Figures run one after the other and stop their processes when they end.
    """

    procs: Processes
    ctx: zmq.Context[Any]
    workdir: Path
    prefix: str = "127.83.41"
    progress: Callable[[str], None] = print
    # The I/O worker's real-time priority (--realtime-priority; 0 = normal scheduling).
    worker_priority: int = 0
    # The bus forwarder's ([bus] realtime_priority), where a figure runs one.
    bus_priority: int = 0
    _sender: Path | None = None

    @property
    def worker_address(self) -> str:
        return f"{self.prefix}.1"

    @property
    def sim_address(self) -> str:
        return f"{self.prefix}.2"

    @property
    def worker_args(self) -> tuple[str, ...]:
        """Options of every worker a figure starts."""
        return ("--realtime-priority", str(self.worker_priority)) if self.worker_priority else ()

    def plc_address(self, i: int) -> str:
        return f"{self.prefix}.{10 + i}"

    def sender(self) -> Path:
        """The native load source, built on first use (BenchError naming the fix when no
        compiler is there)."""
        if self._sender is None:
            self._sender = build_sender()
        return self._sender

    def scratch(self, name: str) -> Path:
        """A fresh directory for one figure's files."""
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def stop_all(env: Env, started: list[Child]) -> None:
    """Stop what a figure started, newest first (a worker before its simulators, so its
    Forward_Closes still find them)."""
    for child in reversed(started):
        child.stop()
        env.procs.forget(child)


@dataclass
class Figure:
    """What one figure measured: ``values`` (one number per key, the record's figures),
    ``conditions`` (what it was measured under) and ``notes`` (what limits or explains it)."""

    values: dict[str, float] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class LineReader:
    """Lines a child prints on its stdout after its ready line, each with a deadline."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            raise BenchError("the child's stdout is not a pipe")
        self.fd = stream.fileno()
        self._buf = b""

    def line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise BenchError(f"no line from the child within {timeout:g} s")
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise BenchError("the child closed its stdout")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

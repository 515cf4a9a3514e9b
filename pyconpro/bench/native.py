"""The native load source: ``sender.c`` (package data) built with the machine's C compiler.

The pure-Python simulator cannot produce class-1 data faster than a Python receiver reads it, so
a benchmark of the receiver would measure the simulator. The benchmark therefore opens its
connections through the simulator (Forward_Open, T->O ids, heartbeats: the real thing), stops
the simulator's own production (its ``stop_producing`` fault) and lets a small C program send the
same datagrams for those connections with ``sendmmsg`` at a paced rate.

The datagrams are the simulator's bytes: ``template`` builds each stream's datagram with
``acquisition.class1`` from the T->O id and the tag image the simulator reports (its
``producers`` control command), and the C program writes only the two sequence numbers into it
(offset 10: the 32-bit encapsulation sequence, offset 18: the CIP sequence count).

The program is compiled once per source version into a cache directory
(``$PYCONPRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/pyconpro``, else ``~/.cache/pyconpro``) with
``$CC`` or ``gcc`` (``cc`` when there is no gcc).
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pyconpro.acquisition import class1
from pyconpro.bench.procs import BenchError
from pyconpro.workers import process

SOURCE_NAME = "sender.c"
COMPILE_TIMEOUT_S = 120.0
SEQ32_OFFSET = 10
SEQ16_OFFSET = 18
_PLAN_HEADER = "pyconpro-sender-plan 1"


def source() -> bytes:
    """The C source shipped with the package."""
    return resources.files("pyconpro.bench").joinpath(SOURCE_NAME).read_bytes()


def cache_dir() -> Path:
    explicit = os.environ.get("PYCONPRO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyconpro"


def compiler() -> str:
    """``$CC``, else gcc, else cc; BenchError naming the fix when there is none."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise BenchError(
            "pyconpro bench needs a C compiler to build its load source (a small C program,"
            " pyconpro/bench/sender.c) and found none: install gcc (apt-get install gcc), or"
            " set CC to a compiler"
        )
    return cc


def build_sender(cache: Path | None = None) -> Path:
    """The compiled sender, built now unless the cache has it for this source."""
    src = source()
    cache = cache or cache_dir()
    exe = cache / f"pyconpro-sender-{hashlib.sha256(src).hexdigest()[:16]}"
    if os.access(exe, os.X_OK):
        return exe
    cc = compiler()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(
            f"cannot create the cache directory {cache} for the load source: {exc};"
            " set PYCONPRO_CACHE_DIR to a writable directory"
        ) from None
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
        c_file, out, log = Path(tmp) / SOURCE_NAME, Path(tmp) / "sender", Path(tmp) / "cc.log"
        c_file.write_bytes(src)
        try:
            child = process.spawn(
                [cc, "-O2", "-Wall", "-o", str(out), str(c_file)], stdout=log, stderr=log
            )
        except OSError as exc:
            raise BenchError(
                f"cannot run the C compiler {cc!r}: {exc}; install gcc (apt-get install gcc)"
            ) from None
        try:
            code = child.wait(COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = child.stop()
        finally:
            child.kill()
        if code != 0 or not out.exists():
            raise BenchError(
                f"{cc} could not build the load source ({process.describe_status(code)}):\n"
                + log.read_text(errors="replace")[-3000:]
            )
        os.replace(out, exe)  # atomic: a concurrent run sees the whole file or none
    return exe


def template(to_id: int, image: bytes) -> bytes:
    """The datagram of one T->O stream with both sequence numbers 0 (the sender fills them)."""
    return class1.Class1Datagram(to_id, 0, 0, image).encode()


@dataclass
class Stream:
    """One T->O stream the sender produces: its template and the sequence numbers of its next
    datagram (advanced after every run by the datagrams it sent)."""

    template: bytes
    seq32: int
    seq16: int


@dataclass(frozen=True)
class SendResult:
    sent: int
    t_start_ns: int  # CLOCK_MONOTONIC, the clock of time.monotonic_ns()
    t_end_ns: int
    calls: int
    errors: int

    @property
    def seconds(self) -> float:
        return (self.t_end_ns - self.t_start_ns) / 1e9

    def achieved(self) -> float:
        """Datagrams per second actually sent (paced from the first to the last call)."""
        return self.sent / self.seconds if self.seconds > 0 else float("inf")


def rounds_for(rate: float, seconds: float, streams: int) -> int:
    """Whole rounds (one datagram per stream) of a run of ``seconds`` at ``rate``."""
    return max(1, round(rate * seconds / streams))


class Sender:
    """Runs the compiled sender for a set of streams, one run at a time, from ``bind`` to
    ``dest``. The worker believes T->O data only from its producer's address and class-1 port:
    ``bind_port`` with ``share_port`` sends from the simulator's class-1 port, which the
    simulator then shares (``--share-udp-port``) and still receives every heartbeat on."""

    def __init__(
        self, exe: Path, bind: str, dest: tuple[str, int], streams: Sequence[Stream],
        workdir: Path, *, bind_port: int = 0, share_port: bool = False,
    ) -> None:
        if not streams:
            raise BenchError("the load source needs at least one stream")
        self.exe = exe
        self.bind = bind
        self.dest = dest
        self.streams = list(streams)
        self.workdir = workdir
        self.bind_port = bind_port
        self.share_port = share_port
        self._n = 0
        self._running: process.Child | None = None
        self._out: Path | None = None
        self._rounds = 0

    def start(self, rate: float, rounds: int, *, timing: Path | None = None,
              end_marker: bool = False) -> None:
        """Send ``rounds`` datagrams per stream at ``rate`` datagrams/s in all; ``finish()``
        waits for the end."""
        if self._running is not None:
            raise BenchError("the load source is still running")
        self._n += 1
        plan = self.workdir / f"plan-{self._n}.txt"
        plan.write_text(
            f"{_PLAN_HEADER}\n{len(self.streams)}\n"
            + "".join(f"{s.seq32} {s.seq16} {s.template.hex()}\n" for s in self.streams)
        )
        self._out = self.workdir / f"sent-{self._n}.json"
        cmd = [
            str(self.exe), "--plan", str(plan), "--bind", self.bind, "--dest", self.dest[0],
            "--port", str(self.dest[1]), "--rate", f"{rate:.3f}",
            "--count", str(rounds * len(self.streams)),
        ]  # fmt: skip
        if self.bind_port:
            cmd += ["--bind-port", str(self.bind_port)]
        if self.share_port:
            cmd.append("--share-port")
        if timing is not None:
            cmd += ["--timing", str(timing)]
        if end_marker:
            cmd.append("--end-marker")
        self._rounds = rounds
        self._running = process.spawn(cmd, stdout=self._out, stderr=self._out.with_suffix(".log"))

    def running(self) -> bool:
        return self._running is not None and self._running.alive()

    def pid(self) -> int | None:
        """The process id of the run going on (its CPU is measured), None between runs."""
        return self._running.pid if self._running is not None else None

    def finish(self, timeout: float) -> SendResult:
        """Wait for the run started last; advance every stream's sequence numbers."""
        child, out = self._running, self._out
        if child is None or out is None:
            raise BenchError("the load source was not started")
        self._running = None
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            code = child.stop()
            raise BenchError(f"the load source did not finish within {timeout:g} s") from None
        finally:
            child.kill()
        log = out.with_suffix(".log").read_text(errors="replace")
        try:
            info: dict[str, Any] = json.loads(out.read_text())
        except ValueError:
            info = {}
        if code != 0 or "sent" not in info:
            raise BenchError(
                f"the load source failed ({process.describe_status(code)}): {log.strip()}"
            )
        sent = int(info["sent"])
        if sent != self._rounds * len(self.streams):
            raise BenchError(f"the load source sent {sent} datagrams, not {self._rounds} rounds")
        for s in self.streams:
            s.seq32 = (s.seq32 + self._rounds) & 0xFFFFFFFF
            s.seq16 = (s.seq16 + self._rounds) & 0xFFFF
        return SendResult(sent, int(info["t_start_ns"]), int(info["t_end_ns"]),
                          int(info["calls"]), int(info["errors"]))

    def stop(self) -> None:
        """Stop a run still going (on an error or an interrupt)."""
        child, self._running = self._running, None
        if child is not None:
            child.stop(1.0)


def read_timing(path: Path) -> tuple[array.array[int], array.array[int]]:
    """The sender's timing records: (monotonic ns before each sendmmsg call, index of the
    call's first datagram), both ascending."""
    raw = array.array("q")
    raw.frombytes(path.read_bytes())  # written and read in the machine's byte order
    return raw[0::2], raw[1::2]

"""Figure ``sinks``: each sink's ingest rate against a bare loop of the same store, same data.

The data: N samples of 100 DINT tags, encoded as the worker encodes them (``wire.SampleStream``),
built once per run. For each sink kind (sqlite, jsonl, stdout):

* the sink: ``python -m pyconpro.sinks.cli --section ...`` (what ``pyconpro run`` starts) with
  its output in a scratch directory (stdout: /dev/null). This process binds an XPUB socket
  (no high-water mark: nothing is dropped), waits until the sink's subscription arrives, sends
  the N samples as fast as it can and then SIGTERM: the sink takes in what is queued, flushes
  and exits after its stop path has seen the socket quiet for ``LoopOptions.drain_idle``. Its
  time is first message to exit, minus that quiet period. Its own counters (the "sink
  stopped" log line) must show N samples and no loss, and the output must hold N records. (A
  sink that stopped early, because the transfer itself paused for that long on a stalled
  machine, is measured again.)
* the bare loop (``bare sink KIND``): SUB + ``msgpack.unpackb`` + the same store, exits after N
  samples; its time is first message to exit.

Ingest rate = N / time; the figure is each rate and their ratio (sink / bare).
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from pyconpro.acquisition import wire
from pyconpro.acquisition.logix_codec import compile_encoder
from pyconpro.acquisition.logix_types import AtomicType, DataTypeCode
from pyconpro.bench.common import Env, Figure
from pyconpro.bench.options import SINK_KINDS
from pyconpro.bench.procs import BenchError, Child
from pyconpro.sinks.base import LoopOptions

TAGS = 100
ATTEMPTS = 3  # a sink that stopped on a quiet moment of the transfer is measured again
DRAIN_IDLE_S = LoopOptions(endpoints=["-"]).drain_idle
_STOPPED = re.compile(r"sink stopped: (?P<counters>.*)$", re.MULTILINE)


@dataclass(frozen=True)
class SinkOptions:
    samples: int = 50_000
    kinds: tuple[str, ...] = SINK_KINDS
    timeout_s: float = 120.0


def dataset(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` samples of ``TAGS`` DINT tags in turn, as a worker publishes them."""
    encode = compile_encoder(AtomicType(DataTypeCode.DINT))
    streams = [wire.SampleStream("worker-bench", "bench", f"T{i:04d}", "DINT") for i in range(TAGS)]
    t_wall, t_mono = time.time_ns(), time.monotonic_ns()
    out = []
    for k in range(n):
        s = streams[k % TAGS]
        value = k * 7 - 100_000
        out.append((s.topic, s.encode(t_wall + k * 10_000, t_mono + k * 10_000, k // TAGS & 0xFFFF,
                                      0, value, encode(value))))
    return out


class Publisher:
    """An XPUB socket that knows when a subscriber's subscription arrived."""

    def __init__(self, env: Env) -> None:
        self.sock: zmq.Socket[Any] = env.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:0")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def wait_subscribed(self, child: Child, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(50) and self.sock.recv() == b"\x01sample/":
                return
            child.check_alive()
        raise BenchError(f"{child.name} did not subscribe within {timeout:g} s")

    def send(self, data: Sequence[tuple[bytes, bytes]]) -> None:
        send = self.sock.send_multipart
        for frames in data:
            send(frames)

    def close(self) -> None:
        self.sock.close()


def _wait_exit(child: Child, timeout: float) -> float:
    """When ``child`` exited (time.monotonic()), polled every 2 ms."""
    deadline = time.monotonic() + timeout
    while child.proc.poll() is None:
        if time.monotonic() > deadline:
            raise BenchError(f"{child.name} did not finish within {timeout:g} s")
        time.sleep(0.002)
    return time.monotonic()


def _section(kind: str, out: Path) -> dict[str, Any]:
    section: dict[str, Any] = {"kind": kind, "drain_max_s": 3600.0}
    if kind == "sqlite":
        section["path"] = str(out / "sink.sqlite3")
    elif kind == "jsonl":
        section["directory"] = str(out / "jsonl")
    return section


def _output_records(kind: str, out: Path, bare: bool) -> int | None:
    """Samples in the output (None for stdout, which went to /dev/null)."""
    if kind == "sqlite":
        db = sqlite3.connect(out / ("bare.sqlite3" if bare else "sink.sqlite3"))
        try:
            return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
        finally:
            db.close()
    if kind == "jsonl":
        files = [out / "bare.jsonl"] if bare else sorted((out / "jsonl").glob("*-samples-*.jsonl"))
        return sum(f.read_bytes().count(b"\n") for f in files)
    return None


def _run_one(env: Env, kind: str, data: Sequence[tuple[bytes, bytes]], out: Path, bare: bool,
             timeout: float) -> float:
    """Seconds the sink (or the bare loop) took to ingest ``data``."""
    pub = Publisher(env)
    name = f"bare-{kind}" if bare else f"sink-{kind}"
    if bare:
        cmd = [sys.executable, "-m", "pyconpro.bench.bare", "sink", kind, "--connect",
               pub.endpoint, "--count", str(len(data)),
               "--out", str(out / ("bare.sqlite3" if kind == "sqlite" else "bare.jsonl"))]
    else:
        cmd = [sys.executable, "-m", "pyconpro.sinks.cli", "--section",
               json.dumps(_section(kind, out)), "--connect", pub.endpoint, "--log-level", "INFO"]
    child = env.procs.start(name, cmd, ready=None, stdout=subprocess.DEVNULL)
    try:
        pub.wait_subscribed(child)
        t0 = time.monotonic()
        pub.send(data)
        if not bare:
            child.proc.send_signal(signal.SIGTERM)
        t_exit = _wait_exit(child, timeout)
        log = child.log_tail(20_000)
        code = child.proc.returncode
    finally:
        pub.close()
        child.stop()
        env.procs.forget(child)
    if code != 0:
        raise BenchError(f"{name} exited with status {code}; log:\n{log[-3000:]}")
    _check(name, kind, out, bare, len(data), log)
    return t_exit - t0 - (0.0 if bare else DRAIN_IDLE_S)


class _StoppedEarly(BenchError):
    """The sink stopped before it had every sample: its stop path saw a quiet moment of the
    transfer (a stalled machine), not the end of the data."""


def _check(name: str, kind: str, out: Path, bare: bool, n: int, log: str) -> None:
    if not bare:
        m = _STOPPED.search(log)
        counters = dict(kv.split("=", 1) for kv in m["counters"].split()) if m else {}
        if counters.get("lost") != "0" or not counters.get("samples", "").isdigit():
            raise BenchError(f"{name} lost samples or did not say: {counters};"
                             f" log:\n{log[-3000:]}")
        if int(counters["samples"]) < n:
            raise _StoppedEarly(f"{name} stopped after {counters['samples']} of {n} samples")
    records = _output_records(kind, out, bare)
    if records is not None and records != n:
        raise BenchError(f"{name} wrote {records} samples, not {n}")


def measure(env: Env, opts: SinkOptions) -> Figure:
    data = dataset(opts.samples)
    fig = Figure(conditions={"sink_samples": opts.samples, "sink_tags": TAGS,
                             "sink_shape": "dint"})
    env.progress(f"sinks: {opts.samples:,} DINT samples of {TAGS} tags into each sink and its"
                 " bare loop")
    for kind in opts.kinds:
        for attempt in range(1, ATTEMPTS + 1):
            out = env.scratch(f"sink-{kind}-{time.monotonic_ns()}")
            try:
                sink_s = _run_one(env, kind, data, out, False, opts.timeout_s)
                break
            except _StoppedEarly as exc:
                env.progress(f"  {exc}: again ({attempt} of {ATTEMPTS})")
                if attempt == ATTEMPTS:
                    raise
        bare_s = _run_one(env, kind, data, out, True, opts.timeout_s)
        sink_rate, bare_rate = opts.samples / sink_s, opts.samples / bare_s
        env.progress(f"  {kind:<6} sink {sink_rate:>9,.0f} samples/s, bare {bare_rate:>9,.0f}"
                     f" samples/s, ratio {sink_rate / bare_rate:.2f}")
        fig.values.update({
            f"sink_{kind}_samples_s": sink_rate,
            f"sink_{kind}_bare_samples_s": bare_rate,
            f"sink_{kind}_ratio": sink_rate / bare_rate,
        })  # fmt: skip
    return fig

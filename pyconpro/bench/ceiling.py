"""Figures ``ceiling`` and ``latency``: how fast the I/O worker takes class-1 data, against a bare
Python recv loop on an identical socket, and how long a datagram takes to reach a subscriber.

Setup: a simulator on the benchmark's simulator address serves N produced tags with constant
values; one worker opens N consumers through it (Forward_Open, heartbeats: real connections)
while this process subscribes to the worker's PUB socket. Then the simulator stops producing
(its ``stop_producing`` fault) and the native sender sends the same datagrams for those
connections (``native``), from the simulator's address and class-1 port (the simulator shares
it, ``--share-udp-port``, and still receives the heartbeats), paced at an offered rate.

A *step* offers one rate for a few seconds and counts, with ``counting.StepCounter``, every
sample that reaches the subscriber. A step *holds* the rate when every datagram sent came out as
a sample (no CIP ``cs`` gap, no ``sq`` gap), no connection changed state, and the last sample
arrived at most ``max(0.2 s, 5 % of the step)`` after the last datagram was sent: otherwise the
receiver fell behind and only its socket buffer hid the loss. The *zero-loss ceiling* is the
highest held rate of a ladder that multiplies the rate by ``factor`` until a step fails, then
bisects (geometrically) between the last held and the first failed rate ``refine`` times.

The bare loop (``bare recv``: a socket bound to the worker's address with the same
``SO_RCVBUF``, read by ``recvfrom`` that counts) climbs the same ladder from the worker's
ceiling in the same run; it learns where a step ended from the sender's 1-byte end marker.

CPU per 1,000 samples/s: the receiver's CPU seconds over its highest held step, per sample,
times 1,000 (so 1 % means 10 us of CPU per sample). Latency: a step at a stated rate with the
sender's timing records (monotonic time of each ``sendmmsg`` call): each sample's receive time
minus the time its datagram was handed to the kernel; ``read`` is the worker's own read time
(the sample's ``tm``) minus the same, i.e. the time the datagram waited in the socket.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from pyconpro.acquisition import wire
from pyconpro.acquisition.config import UDP_RCVBUF_DEFAULT
from pyconpro.bench.common import Env, Figure, LineReader, stop_all
from pyconpro.bench.counting import StepCounter, receive_until
from pyconpro.bench.native import Sender, SendResult, Stream, read_timing, rounds_for, template
from pyconpro.bench.procs import (
    BenchError,
    Child,
    Control,
    CpuMeter,
    SimInfo,
    add_consumers,
    consumer_map,
    percentile,
    start_simulator,
    start_worker,
    tag_file,
    tag_name,
    udp_socket_drops,
    wait_running,
    wait_subscribed,
)
from pyconpro.simulator.control import SimulatorControl
from pyconpro.workers.process import json_ready

PLC = "bench"
# RPI of the consumers: the worker's T->O watchdog is RPI x 8, long enough for the pauses
# between steps; the O->T heartbeats at that RPI cost the worker nothing worth counting.
RPI_MS = 1000.0
SOURCE_SLACK = 0.97  # a sender below this share of the offered rate limits the figure
QUIET_S = 1.0  # after the sender ended: nothing more for this long = the step is over
MAX_RATE = 2_000_000.0


@dataclass
class CeilingOptions:
    streams: int = 100
    shape: str = "dint"
    step_s: float = 3.0
    start_rate: float = 2000.0
    factor: float = 1.5
    refine: int = 2
    latency_rate: float = 10_000.0
    latency_s: float = 5.0

    @classmethod
    def quick(cls) -> CeilingOptions:
        return cls(streams=20, step_s=0.5, factor=2.0, refine=0, latency_rate=2000.0,
                   latency_s=1.0)


@dataclass
class Step:
    """One offered rate, and what came out of it."""

    who: str
    rate: float
    expected: int
    sent: SendResult
    received: int
    cip_lost: int
    bus_lost: int
    kernel_drops: int
    drain_s: float  # the last delivery after the sender's last datagram
    allowed_drain_s: float
    cpu_s: float  # the receiver's CPU over the step
    subscriber_cpu_s: float = 0.0
    events: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def source_limited(self) -> bool:
        return self.sent.achieved() < SOURCE_SLACK * self.rate

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.cip_lost == 0
            and self.bus_lost == 0
            and self.drain_s <= self.allowed_drain_s
            and not any(k != "gap" for k in self.events)
        )

    @property
    def cpu_per_1k(self) -> float:
        """% of one core per 1,000 samples/s."""
        return 100.0 * 1000.0 * self.cpu_s / self.received if self.received else float("nan")

    def line(self) -> str:
        verdict = "held" if self.ok else "FAILED"
        if self.source_limited:
            verdict += f" (source sent only {self.sent.achieved():,.0f}/s)"
        extra = f", events {self.events}" if self.events else ""
        return (
            f"  {self.who:<6} {self.rate:>11,.0f}/s: {self.received:,}/{self.expected:,} samples,"
            f" lost {self.lost} (cs {self.cip_lost}, sq {self.bus_lost}, kernel"
            f" {self.kernel_drops}), last {self.drain_s * 1000:.0f} ms after the sender,"
            f" CPU {100 * self.cpu_s / max(self.sent.seconds, 1e-9):.0f} %{extra}: {verdict}"
        )


@dataclass
class Ladder:
    steps: list[Step] = field(default_factory=list)
    best: Step | None = None
    note: str = ""


def climb(
    step: Callable[[float], Step], start: float, factor: float, refine: int,
    progress: Callable[[str], None],
) -> Ladder:
    """The zero-loss ceiling: up by ``factor`` until a step fails, down if the first one
    does, then ``refine`` geometric bisections between the last held and the first failed."""
    ladder = Ladder()
    failed: Step | None = None

    def run(rate: float) -> Step:
        s = step(rate)
        ladder.steps.append(s)
        progress(s.line())
        return s

    rate = start
    while rate <= MAX_RATE:
        s = run(rate)
        if s.source_limited and s.ok:
            ladder.best = s
            ladder.note = (
                f"the load source reached its limit ({s.sent.achieved():,.0f} datagrams/s) before"
                f" the {s.who}: its ceiling is at least that"
            )
            return ladder
        if not s.ok:
            failed = s
            break
        ladder.best = s
        rate *= factor
    if ladder.best is None and failed is not None:
        for _ in range(4):
            rate /= factor
            s = run(rate)
            if s.ok:
                ladder.best = s
                break
            failed = s
    for _ in range(refine):
        if ladder.best is None or failed is None or failed.rate / ladder.best.rate < 1.1:
            break
        s = run(math.sqrt(ladder.best.rate * failed.rate))
        if s.ok:
            ladder.best = s
        else:
            failed = s
    return ladder


def _allowed_drain(seconds: float) -> float:
    return max(0.2, 0.05 * seconds)


# ====================================================================== the worker


class WorkerRig:
    """Simulator + worker + counting subscriber + native sender for N connections."""

    def __init__(self, env: Env, opts: CeilingOptions) -> None:
        self.env = env
        self.opts = opts
        self.worker: Child | None = None
        self.sim: Child | None = None
        self.forwarder: Child | None = None
        self.sub: zmq.Socket[Any] | None = None
        self.pub = ""  # the worker's PUB endpoint
        self.sender: Sender | None = None
        self.counter = StepCounter({})
        self.streams: list[Stream] = []
        self._lost_last = False

    def open(self) -> None:
        env, opts = self.env, self.opts
        work = env.scratch("ceiling")
        tags = work / "tags.toml"
        tags.write_text(tag_file(opts.shape, opts.streams, generators=False))
        self.sim, sim_info = start_simulator(
            env.procs, tags, address=env.sim_address, max_connections=opts.streams + 10,
            extra=["--share-udp-port"],
        )
        self.worker, winfo = start_worker(env.procs, address=env.worker_address,
                                          stats_interval=0, extra=env.worker_args)
        sub = self.sub = env.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)  # never drop here: a slow subscriber shows as lateness
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.pub = winfo["pub"]
        sub.connect(self.pub)
        control = Control(env.ctx, winfo["control"])
        wait_subscribed(control)
        add_consumers(control, [consumer_map(sim_info, i, opts.shape, RPI_MS, plc=PLC)
                                for i in range(opts.streams)])
        wait_running(control, opts.streams, 20 + 0.1 * opts.streams, idle=self._idle)
        self._take_over(sim_info, work)
        self.warm_up()

    def _idle(self, seconds: float) -> None:
        assert self.sub is not None
        receive_until(self.sub, time.monotonic() + seconds, lambda *_: None)

    def _take_over(self, sim_info: SimInfo, work: Path) -> None:
        """Stop the simulator's production; the sender produces the same datagrams."""
        with SimulatorControl(sim_info.control) as sc:
            sc.faults(stop_producing=True)
            producers = sc.producers()
        self._idle(0.3)  # what was in flight
        by_tag = {p["tag"]: p for p in producers}
        topics: dict[bytes, int] = {}
        for i in range(self.opts.streams):
            p = by_tag.get(tag_name(i))
            if p is None:
                raise BenchError(f"the simulator produces no stream of {tag_name(i)}")
            self.streams.append(Stream(template(p["to_id"], bytes.fromhex(p["image"])),
                                       (p["seq32"] + 1) & 0xFFFFFFFF, (p["seq16"] + 1) & 0xFFFF))
            topics[wire.topic_for_sample(PLC, tag_name(i))] = i
        dests = {tuple(p["dest"]) for p in producers}
        if len(dests) != 1:
            raise BenchError(f"the simulator sends to {sorted(dests)}, not to the worker alone")
        (dest,) = dests
        self.sender = Sender(self.env.sender(), sim_info.address, (str(dest[0]), int(dest[1])),
                             self.streams, work, bind_port=sim_info.udp_port, share_port=True)
        self.counter = StepCounter(topics)

    def through_forwarder(self, timeout: float = 20.0) -> None:
        """From now on the subscriber receives through the bus forwarder of ``pyconpro run``
        (``python -m pyconpro.bench.forward``), no longer from the worker's PUB directly."""
        assert self.sub is not None
        self.forwarder = self.env.procs.start(
            "forwarder", [sys.executable, "-m", "pyconpro.bench.forward", "--upstream", self.pub,
                          "--realtime-priority", str(self.env.bus_priority)],
            ready=json_ready,
        )  # fmt: skip
        self.sub.disconnect(self.pub)
        self.sub.connect(self.forwarder.proc.ready["public"])
        # The subscription travels SUB -> forwarder -> worker: until it has arrived, the
        # worker sends nothing; warm-up rounds until one comes through whole.
        deadline = time.monotonic() + timeout
        while self._step(len(self.streams) * 20.0, 0.1).received < len(self.streams) * 2:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing came through the bus forwarder within {timeout:g} s")
        self._lost_last = False

    def warm_up(self) -> None:
        """Two rounds at a low rate, not measured: the jump from the simulator's last sequence
        numbers to the sender's, or over the datagrams a failed step lost at its end (the
        worker drops the first datagram after a jump longer than the watchdog allows and
        resynchronises on its successor), happens here, not in a measured step."""
        self._step(len(self.streams) * 20.0, 0.1)
        self._lost_last = False

    def step(self, rate: float, seconds: float, *, timing: Path | None = None) -> Step:
        if self._lost_last:
            self.warm_up()
        s = self._step(rate, seconds, timing=timing)
        self._lost_last = s.lost > 0
        return s

    def _step(self, rate: float, seconds: float, *, timing: Path | None = None) -> Step:
        assert self.sender is not None and self.sub is not None and self.worker is not None
        sender, sub, counter, worker = self.sender, self.sub, self.counter, self.worker
        address = self.env.worker_address
        rounds = rounds_for(rate, seconds, len(self.streams))
        counter.begin([s.seq16 for s in self.streams], record=timing is not None)
        drops0 = udp_socket_drops([address])[address]
        cpu = CpuMeter({"worker": worker.pid, "subscriber": os.getpid()})
        cpu.start()
        sender.start(rate, rounds, timing=timing)
        try:
            while sender.running():
                receive_until(sub, time.monotonic() + 0.02, counter.handle)
        except BaseException:
            sender.stop()
            raise
        sent = sender.finish(30.0)
        expected = rounds * len(self.streams)
        deadline = time.monotonic() + max(5.0, 2 * seconds)
        while counter.received < expected and time.monotonic() < deadline:
            receive_until(sub, time.monotonic() + 0.05, counter.handle)
            if time.monotonic_ns() - max(counter.last_rx_ns, sent.t_end_ns) > QUIET_S * 1e9:
                break
        used = cpu.stop()
        worker.check_alive()
        drain = (counter.last_rx_ns - sent.t_end_ns) / 1e9 if counter.received else 0.0
        return Step(
            "worker", rate, expected, sent, counter.received, counter.cip_lost, counter.bus_lost,
            udp_socket_drops([address])[address] - drops0, drain, _allowed_drain(seconds),
            used["worker"], used["subscriber"], dict(counter.events),
        )

    def templates(self) -> list[bytes]:
        return [s.template for s in self.streams]

    def close(self) -> None:
        if self.sender is not None:
            self.sender.stop()
        if self.sub is not None:
            self.sub.close()
            self.sub = None
        stop_all(self.env, [c for c in (self.sim, self.worker, self.forwarder) if c is not None])


# ====================================================================== the bare loop


class BareRig:
    """``bare recv`` on the worker's address with the worker's receive buffer, fed by the
    native sender with the worker rig's datagrams."""

    def __init__(self, env: Env, templates: Sequence[bytes]) -> None:
        self.env = env
        self.templates = list(templates)
        self.child: Child | None = None
        self.sender: Sender | None = None
        self.reader: LineReader | None = None
        self.count = 0
        self.port = 0

    def open(self) -> None:
        env = self.env
        self.child = env.procs.start(
            "bare-recv",
            [sys.executable, "-m", "pyconpro.bench.bare", "recv", "--address",
             env.worker_address, "--rcvbuf", str(UDP_RCVBUF_DEFAULT)],
            ready=json_ready,
        )
        self.reader = LineReader(self.child.proc.proc.stdout)
        self.port = port = int(self.child.proc.ready["port"])
        streams = [Stream(t, 1, 1) for t in self.templates]
        self.sender = Sender(env.sender(), env.sim_address, (env.worker_address, port), streams,
                             env.scratch("bare"))

    def step(self, rate: float, seconds: float) -> Step:
        assert self.sender is not None and self.reader is not None and self.child is not None
        address = self.env.worker_address
        rounds = rounds_for(rate, seconds, len(self.templates))
        drops0 = udp_socket_drops([address])[address]
        cpu = CpuMeter({"bare": self.child.pid})
        cpu.start()
        self.sender.start(rate, rounds, end_marker=True)
        sent = self.sender.finish(30.0 + 2 * seconds)
        report = self._report()
        used = cpu.stop()
        received = int(report["count"]) - self.count
        self.count = int(report["count"])
        return Step(
            "bare", rate, rounds * len(self.templates), sent, received, 0, 0,
            udp_socket_drops([address])[address] - drops0,
            (int(report["t_ns"]) - sent.t_end_ns) / 1e9, _allowed_drain(seconds), used["bare"],
        )

    def _report(self) -> dict[str, Any]:
        """The bare loop's line for the sender's end marker. The kernel drops the marker too
        when the socket is full (the step failed then anyway): once the loop has had ample
        time to read what was queued, a marker sent from here stands in for it (the line is
        late, so the step still counts as failed)."""
        assert self.reader is not None
        try:
            return dict(json.loads(self.reader.line(3.0)))
        except BenchError:
            pass
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.sendto(b"\0", (self.env.worker_address, self.port))
        line = self.reader.line(30.0)
        while True:  # the marker itself, if it was only late, answers too: the last line counts
            try:
                line = self.reader.line(0.5)
            except BenchError:
                return dict(json.loads(line))

    def close(self) -> None:
        if self.sender is not None:
            self.sender.stop()
        if self.child is not None:
            stop_all(self.env, [self.child])


# ====================================================================== the figures


def _latency(rig: WorkerRig, opts: CeilingOptions, fig: Figure, ceiling: float | None) -> None:
    s = _latency_step(rig, opts, fig, "latency", "latency step")
    fig.values["latency_cpu_per_1k"] = s.cpu_per_1k
    fig.conditions.update(latency_rate_samples_s=opts.latency_rate, latency_s=opts.latency_s)
    if not s.ok:
        fig.notes.append(
            f"the latency step at {opts.latency_rate:,.0f} samples/s lost {s.lost} samples or fell"
            " behind: the latency is that of a saturated worker"
        )
    elif ceiling is not None and opts.latency_rate > ceiling:
        fig.notes.append("the latency rate is above the worker's zero-loss ceiling")
    rig.through_forwarder()
    s = _latency_step(rig, opts, fig, "latency_forwarded", "latency step, through the forwarder")
    if not s.ok:
        fig.notes.append(f"the latency step through the forwarder lost {s.lost} samples or fell"
                         " behind")  # fmt: skip


def _latency_step(rig: WorkerRig, opts: CeilingOptions, fig: Figure, key: str,
                  what: str) -> Step:
    """One step with the sender's timing records; its latencies as ``<key>_p50_ms`` ..."""
    timing_path = rig.env.scratch("ceiling") / "timing.bin"
    s = rig.step(opts.latency_rate, opts.latency_s, timing=timing_path)
    rig.env.progress(f"{s.line()}  ({what})")
    t_call, first = read_timing(timing_path)
    n = len(rig.streams)
    total, read = [], []
    for index, since, rx_ns, tm_ns in rig.counter.samples:
        j = bisect.bisect_right(first, since * n + index) - 1
        total.append(rx_ns - t_call[j])
        read.append(tm_ns - t_call[j])
    total.sort()
    read.sort()
    if total and (total[0] < 0 or read[0] < 0):  # a sample before its datagram: a bug here
        raise BenchError("latency: a sample arrived before its datagram was sent; the sample"
                         " -> datagram mapping is wrong (please report it)")
    fig.values.update({
        f"{key}_p50_ms": percentile(total, 0.50) / 1e6,
        f"{key}_p99_ms": percentile(total, 0.99) / 1e6,
        f"{key}_max_ms": (total[-1] / 1e6) if total else float("nan"),
        f"{key}_read_p99_ms": percentile(read, 0.99) / 1e6,
    })  # fmt: skip
    return s


def held_rate(ladder: Ladder) -> float:
    """The ceiling a ladder found: its highest held rate, or what the source achieved there
    when that was less (the source limited it)."""
    best = ladder.best
    return min(best.rate, best.sent.achieved()) if best is not None else 0.0


def _ceiling_values(fig: Figure, worker: Ladder, bare: Ladder) -> None:
    w, b = held_rate(worker), held_rate(bare)
    fig.values.update(
        worker_ceiling_samples_s=w,
        bare_ceiling_datagrams_s=b,
        ceiling_ratio=w / b if b else 0.0,
        worker_cpu_per_1k=worker.best.cpu_per_1k if worker.best else float("nan"),
        bare_cpu_per_1k=bare.best.cpu_per_1k if bare.best else float("nan"),
    )
    for ladder in (worker, bare):
        if ladder.note:
            fig.notes.append(ladder.note)
    if worker.best is not None and worker.best.subscriber_cpu_s > 0.9 * worker.best.sent.seconds:
        fig.notes.append("the counting subscriber used a whole core at the worker's ceiling:"
                         " it may be the limit")


def measure(env: Env, opts: CeilingOptions, *, ceiling: bool, latency: bool) -> Figure:
    """The ``ceiling`` and/or ``latency`` figures (they share the worker's setup)."""
    fig = Figure(conditions={"connections": opts.streams, "shape": opts.shape})
    if ceiling:
        fig.conditions.update(step_s=opts.step_s, factor=opts.factor, refine=opts.refine)
    rig = WorkerRig(env, opts)
    worker = Ladder()
    try:
        env.progress(f"worker: {opts.streams} {opts.shape} connections, steps of {opts.step_s:g} s")
        rig.open()
        if ceiling:
            worker = climb(lambda r: rig.step(r, opts.step_s), opts.start_rate, opts.factor,
                           opts.refine, env.progress)
        if latency:
            _latency(rig, opts, fig, worker.best.rate if worker.best else None)
        templates = rig.templates()
    finally:
        rig.close()
    if not ceiling:
        return fig
    bare_rig = BareRig(env, templates)
    try:
        bare_rig.open()
        start = worker.best.rate if worker.best else opts.start_rate
        bare = climb(lambda r: bare_rig.step(r, opts.step_s), start, opts.factor, opts.refine,
                     env.progress)
    finally:
        bare_rig.close()
    _ceiling_values(fig, worker, bare)
    return fig

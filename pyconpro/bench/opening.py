"""Figure ``open``: how long one worker takes to open K connections across M simulated PLCs,
and what it costs to keep them at the stated RPI.

M simulators, each on its own address (``Env.plc_address``) with K / M produced tags and its
class-1 port shared (``--share-udp-port``), one worker, and a counting subscriber on the
worker's PUB socket in this process. The K consumers are added the way ``pyconpro run`` adds a
configuration's consumers: once the worker has the bus subscription, one ``add`` after the
other on one control socket with one request in flight, in the configuration's order (PLC by
PLC); the control protocol has no request that adds several at once. The figure is the time
from the first ``add`` until ``list`` shows all K RUNNING (polled every 20 ms), with the mean
control round trip per ``add``.

The simulators produce while the connections open, as PLCs do. At the target's RPI (100 ms:
10,000 datagrams/s for 1,000 connections) ten Python simulators producing would need most of
both cores and the hold would measure them, so as soon as all K are RUNNING each simulator in
turn stops producing (its ``stop_producing`` fault: nothing is built any more, the sequence
numbers are held) and reports its streams (``producers``), and a native sender of its own
(``native.Sender``, one process per simulator, paced at that PLC's rate) sends the same
datagrams from the simulator's address and class-1 port, continuing the sequence numbers. A
simulator then only answers requests and receives the heartbeats (the sender steers them to
its socket). A stream's data pauses for at most one RPI plus its simulator's switch (a control
round trip and a process start, milliseconds), well inside the T->O watchdog (RPI x 16, the
multiplier a configuration file gives by default, which ``pyconpro run`` opens with; the same
watchdog guards the heartbeats at the simulator); timeouts are counted from the moment all were
RUNNING, so the switch is included.

The hold then runs for the stated seconds: the worker's ``status`` gives the watchdog timeouts,
the subscriber counts every sample of the native source (the ``cs`` each stream's first
datagram carries is known, so a datagram lost anywhere is a gap), and /proc gives the CPU of
the worker, the simulators, the senders and the subscriber over the hold, and the worker's
memory growth per connection since before the first ``add``. The senders' achieved rate is
compared with the offered one (a source that fell short is noted, as ``ceiling`` does).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from pyconpro.acquisition import wire
from pyconpro.bench.common import Env, Figure, stop_all
from pyconpro.bench.counting import StepCounter, receive_every
from pyconpro.bench.native import Sender, SendResult, Stream, template
from pyconpro.bench.procs import (
    BenchError,
    Child,
    Control,
    CpuMeter,
    SimInfo,
    consumer_map,
    count_states,
    proc_mem_kb,
    start_simulator,
    start_worker,
    tag_file,
    tag_name,
    wait_running,
    wait_subscribed,
)
from pyconpro.simulator.control import SimulatorControl

# ``[defaults] multiplier`` of a configuration file (acquisition/config.py ``Defaults``), what
# ``pyconpro run`` opens with; the control socket's own default is 8.
CONFIG_MULTIPLIER = 16
SOURCE_SLACK = 0.97  # senders below this share of the offered rate limited the figure
SETTLE_S = 1.0  # after the switch, before the hold: the senders' first rounds
TAIL_S = 1.0  # the senders run this much longer than the hold (its last status is read first)
QUIET_S = 0.5  # after the senders ended: nothing more for this long = every sample is in


@dataclass(frozen=True)
class OpenOptions:
    connections: int = 1000
    plcs: int = 10
    rpi_ms: float = 100.0
    hold_s: float = 60.0


@dataclass
class Plc:
    """One simulated PLC: its process, where it listens, the streams its sender took over."""

    child: Child
    info: SimInfo
    tags: int
    sender: Sender | None = None
    streams: list[Stream] = field(default_factory=list)
    stream_tags: list[int] = field(default_factory=list)  # the tag of each stream
    result: SendResult | None = None


def _timeouts(control: Control) -> int:
    status = control("status")
    return sum(int(c["counters"].get("timeouts", 0)) for c in status["consumers"])


def add_in_order(ctx: zmq.Context[Any], endpoint: str, specs: Sequence[dict[str, Any]],
                 timeout: float = 60.0) -> None:
    """``add`` every consumer as the supervisor does: one socket, one request in flight."""
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    req.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        req.connect(endpoint)
        for spec in specs:
            req.send(msgpack.packb({"op": "add", "consumer": spec}))
            try:
                reply = msgpack.unpackb(req.recv(), raw=False)
            except zmq.Again:
                raise BenchError(f"worker control 'add': no reply within {timeout:g} s") from None
            if not reply.get("ok"):
                raise BenchError(f"worker refused consumer {spec}: {reply.get('error')}")
    finally:
        req.close()


class OpenRig:
    """The simulators, the worker, the subscriber and the senders of the ``open`` figure."""

    def __init__(self, env: Env, opts: OpenOptions) -> None:
        self.env = env
        self.opts = opts
        self.per_plc = math.ceil(opts.connections / opts.plcs)
        self.work = env.scratch("open")
        self.plcs: list[Plc] = []
        self.worker: Child | None = None
        self.sub: zmq.Socket[Any] | None = None
        self.control: Control | None = None
        self.counter = StepCounter({})
        self.notes: list[str] = []

    # -------------------------------------------------------------- set-up

    def start(self) -> dict[str, Any]:
        env, opts = self.env, self.opts
        env.sender()  # built now (once per source version), not during the switch
        tags = self.work / "tags.toml"
        tags.write_text(tag_file("dint", self.per_plc, max_consumers=1, generators=False))
        for i in range(opts.plcs):
            child, info = start_simulator(
                env.procs, tags, address=env.plc_address(i), max_connections=self.per_plc + 10,
                extra=["--share-udp-port"], name=f"simulator-{i}",
            )  # fmt: skip
            share = opts.connections // opts.plcs + (i < opts.connections % opts.plcs)
            self.plcs.append(Plc(child, info, share))
        self.worker, winfo = start_worker(env.procs, address=env.worker_address, stats_interval=0,
                                          extra=env.worker_args)
        sub = self.sub = env.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)  # never drop here: a slow subscriber shows as lateness
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(winfo["pub"])
        self.control = Control(env.ctx, winfo["control"], timeout=60.0)
        wait_subscribed(self.control)
        return winfo

    def specs(self) -> list[dict[str, Any]]:
        """The consumers in a configuration's order (PLC by PLC, tag by tag), with a
        configuration's default timeout multiplier."""
        return [{**consumer_map(p.info, t, "dint", self.opts.rpi_ms, plc=f"plc{i}"),
                 "multiplier": CONFIG_MULTIPLIER}
                for i, p in enumerate(self.plcs) for t in range(p.tags)]

    def drain(self, seconds: float) -> None:
        assert self.sub is not None
        receive_every(self.sub, time.monotonic() + seconds, self.counter.handle)

    # -------------------------------------------------------------- the switch

    def take_over(self) -> None:
        """Each simulator stops producing; its sender sends its streams from then on, for the
        settling time, the hold and a tail."""
        seconds = SETTLE_S + self.opts.hold_s + TAIL_S
        rounds = max(1, math.ceil(seconds * 1000.0 / self.opts.rpi_ms))
        for i, plc in enumerate(self.plcs):
            self._take_over(i, plc, rounds)
        topics: dict[bytes, int] = {}
        first: list[int] = []
        for i, plc in enumerate(self.plcs):
            for t, s in zip(plc.stream_tags, plc.streams, strict=True):
                topics[wire.topic_for_sample(f"plc{i}", tag_name(t))] = len(first)
                first.append(s.seq16)
        # Nothing was read since the first sender started: its samples are counted too; the
        # simulators' earlier ones carry an older cs and are told apart (``stray``).
        self.counter = StepCounter(topics)
        self.counter.begin(first)

    def _take_over(self, i: int, plc: Plc, rounds: int) -> None:
        with SimulatorControl(plc.info.control, timeout=30.0) as sc:
            sc.faults(stop_producing=True)
            producers = sc.producers()
            counters = sc.status()["target"] if len(producers) < plc.tags else None
        by_tag = {p["tag"]: p for p in producers}
        for t in range(plc.tags):
            p = by_tag.get(tag_name(t))
            if p is None:
                continue
            plc.stream_tags.append(t)
            plc.streams.append(Stream(template(p["to_id"], bytes.fromhex(p["image"])),
                                      (p["seq32"] + 1) & 0xFFFFFFFF, (p["seq16"] + 1) & 0xFFFF))
        if counters is not None:
            # Not open at the simulator although the worker listed it RUNNING: the simulator
            # timed it out (its heartbeats late, or read late by a simulator short of CPU
            # while all produced); the worker's watchdog will time it out too.
            self.notes.append(
                f"open: simulator {i} had no stream for {plc.tags - len(plc.streams)} of its"
                f" {plc.tags} connections when the sender took over (its counters: {counters})"
            )
        dests = {tuple(p["dest"]) for p in producers}
        if len(dests) > 1:
            raise BenchError(f"simulator {i} sends to {sorted(dests)}, not to the worker alone")
        if not plc.streams:
            return
        ((host, port),) = dests
        work = self.work / f"sender-{i}"
        work.mkdir(exist_ok=True)
        plc.sender = Sender(self.env.sender(), plc.info.address, (str(host), int(port)),
                            plc.streams, work, bind_port=plc.info.udp_port, share_port=True)
        plc.sender.start(len(plc.streams) * 1000.0 / self.opts.rpi_ms, rounds)

    def sender_pids(self) -> dict[str, int]:
        pids = {f"sender-{i}": p.sender.pid() if p.sender else None
                for i, p in enumerate(self.plcs)}
        return {k: pid for k, pid in pids.items() if pid is not None}

    def finish_senders(self) -> int:
        """Wait for every sender (draining the bus meanwhile); the datagrams they sent."""
        deadline = time.monotonic() + TAIL_S + 30.0
        while any(p.sender is not None and p.sender.running() for p in self.plcs):
            if time.monotonic() > deadline:
                raise BenchError("the native senders did not finish 30 s after their time")
            self.drain(0.05)
        sent = 0
        for plc in self.plcs:
            if plc.sender is not None:
                plc.result = plc.sender.finish(10.0)
                sent += plc.result.sent
        return sent

    def drain_to_quiet(self, expected: int) -> None:
        end = time.monotonic() + 10.0
        while self.counter.received < expected and time.monotonic() < end:
            before = self.counter.received
            self.drain(QUIET_S)
            if self.counter.received == before:
                break

    def close(self) -> None:
        for plc in self.plcs:
            if plc.sender is not None:
                plc.sender.stop()
        if self.sub is not None:
            self.sub.close()
            self.sub = None
        started = [p.child for p in self.plcs] + ([self.worker] if self.worker else [])
        stop_all(self.env, started)


def _pct(used: dict[str, float], keys: Sequence[str]) -> float:
    return 100.0 * sum(used[k] for k in keys) / used["elapsed"]


def measure(env: Env, opts: OpenOptions) -> Figure:
    if not 1 <= opts.plcs <= 200:
        raise BenchError(f"--open-plcs {opts.plcs}: give 1..200 (one loopback address each)")
    if opts.plcs > opts.connections:
        raise BenchError(f"--open-plcs {opts.plcs} is more than --open-connections"
                         f" {opts.connections}: give at least one connection per PLC")
    offered = opts.connections * 1000.0 / opts.rpi_ms
    env.progress(f"open: {opts.connections} connections across {opts.plcs} simulated PLCs,"
                 f" RPI {opts.rpi_ms:g} ms ({offered:,.0f} samples/s), hold {opts.hold_s:g} s")
    rig = OpenRig(env, opts)
    try:
        winfo = rig.start()
        assert rig.worker is not None and rig.control is not None
        worker, control = rig.worker, rig.control
        sims = {f"simulator-{i}": p.child.pid for i, p in enumerate(rig.plcs)}
        rss0 = proc_mem_kb(worker.pid).get("VmRSS", 0)
        opening = CpuMeter({"worker": worker.pid, **sims})
        opening.start()
        t0 = time.monotonic()
        add_in_order(env.ctx, winfo["control"], rig.specs())
        t_added = time.monotonic()
        wait_running(control, opts.connections, 60 + 0.05 * opts.connections, idle=rig.drain,
                     poll_s=0.02)
        t_running = time.monotonic()
        opened = opening.stop()
        timeouts0 = _timeouts(control)
        rig.take_over()
        switch_s = time.monotonic() - t_running
        rig.drain(SETTLE_S)
        senders = rig.sender_pids()
        cpu = CpuMeter({"worker": worker.pid, **sims, **senders, "subscriber": os.getpid()})
        received0 = rig.counter.received
        cpu.start()
        rig.drain(opts.hold_s)
        timeouts = _timeouts(control) - timeouts0
        states = count_states(control("list")["consumers"])
        used = cpu.stop()
        received = rig.counter.received - received0
        rss1 = proc_mem_kb(worker.pid).get("VmRSS", 0)
        sent = rig.finish_senders()
        rig.drain_to_quiet(sent)
        for child in [p.child for p in rig.plcs] + [worker]:
            child.check_alive()
        results = [p.result for p in rig.plcs if p.result is not None]
    finally:
        rig.close()
    counter = rig.counter
    achieved = sum(r.achieved() for r in results)
    lost = sent - counter.received
    env.progress(
        f"  all RUNNING {t_running - t0:.2f} s after the first add"
        f" ({1000 * (t_added - t0) / opts.connections:.2f} ms per add); opening CPU: worker"
        f" {_pct(opened, ['worker']):.0f} %, simulators {_pct(opened, list(sims)):.0f} %,"
        f" machine {100 * opened['machine'] / opened['elapsed']:.0f} %"
    )
    env.progress(
        f"  switch to the native senders {1000 * switch_s:.0f} ms; hold {opts.hold_s:g} s:"
        f" {timeouts} timeouts, states {states}, {received / used['elapsed']:,.0f} samples/s"
        f" (senders {achieved:,.0f}/s of {offered:,.0f}), CPU worker"
        f" {_pct(used, ['worker']):.0f} %, simulators {_pct(used, list(sims)):.0f} %, senders"
        f" {_pct(used, list(senders)):.0f} %, subscriber {_pct(used, ['subscriber']):.0f} %,"
        f" machine {100 * used['machine'] / used['elapsed']:.0f} %; {sent:,} datagrams sent,"
        f" {counter.received:,} samples, lost {lost} (cs {counter.cip_lost}, sq"
        f" {counter.bus_lost})"
    )
    fig = Figure(conditions={
        "open_connections": opts.connections, "open_plcs": opts.plcs,
        "open_rpi_ms": opts.rpi_ms, "open_hold_s": opts.hold_s,
        "open_source": "native sender per simulator",
    })  # fmt: skip
    fig.values.update(
        open_all_running_s=t_running - t0,
        open_add_ms=1000 * (t_added - t0) / opts.connections,
        open_timeouts=float(timeouts),
        open_rss_kib_per_connection=(rss1 - rss0) / opts.connections,
        open_worker_cpu_pct=_pct(used, ["worker"]),
        open_sim_cpu_pct=_pct(used, list(sims)),
        open_source_cpu_pct=_pct(used, list(senders)),
        open_source_rate_s=achieved,
        open_samples_s=received / used["elapsed"],
        open_lost_samples=float(max(lost, 0) + counter.bus_lost),
        open_switch_ms=1000 * switch_s,
    )
    fig.notes += rig.notes
    if states.get("RUNNING", 0) != opts.connections:
        fig.notes.append(f"open: at the end of the hold not every connection was RUNNING: {states}")
    if achieved < SOURCE_SLACK * offered:
        fig.notes.append(
            f"open: the native senders sent {achieved:,.0f} datagrams/s of the {offered:,.0f}"
            " offered: the source, not the worker, limited the hold"
        )
    return fig

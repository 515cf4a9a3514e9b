#!/usr/bin/env python3
"""Throughput and CPU of the supervisor's bus forwarder vs libzmq's own proxy and a direct
PUB/SUB link, in the same run.

    scripts/bench_forwarder.py [--messages N] [--size BYTES] [--address 127.x.y.z]
                               [--replay-bytes N] [--rounds N] [--paths proxy,compiled,python]
                               [--replay off|on|both]

A publisher process sends N two-frame messages ``[topic, body]`` (a pyconpro sample's body of
about --size bytes) as fast as it can; a subscriber process receives them. The paths are
measured one after the other on loopback TCP with kernel-chosen ports:

  direct      PUB (bind) -> SUB                            what a per-worker endpoint would give
  proxy       PUB (connect) -> XSUB | zmq_proxy | XPUB -> SUB  libzmq's own proxy in a thread of
              this process: the reference (it passes every subscription upstream unchecked, so
              the forwarder does not use it)
  compiled    the same through workers.forwarder.Forwarder, what `pyconpro run` gives: its
              forwarding loop in C (workers/_fastpath.c), the subscription caps in Python
  python      the same with its pure-Python loop (PYCONPRO_FASTPATH=0, or no compiler)

each without and with the replay buffer ([bus] replay_s / replay_bytes: the capture socket
and the replay thread that keeps the copies; the proxy gets the same, through zmq_proxy's
capture). Every round measures every path, alternated, so all meet the same load; per path it
prints min / median / max of messages/s and of this process's CPU per message from the first
message to the last copy the replay thread took in (the forwarder's thread, the replay thread
and libzmq's I/O thread: everything but the publisher and the subscriber; per thread too),
and the median of each round's ratio to the proxy's. The forwarder's connection watcher of
the subscription caps (``bus-connections``, awake every 10 ms whatever the traffic) costs per
second, not per message: it is left out of the CPU per message and given in % of a core. With
the buffer, what it holds at the end and the memory this process grew by (``--replay-bytes``,
default 64 MiB).
HWMs are unlimited here so that nothing is dropped on the bus and the rate is the real
end-to-end rate; the capture keeps its own bound, and what the replay thread could not keep up
with is its ``lost`` count.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyconpro.acquisition.wire import SampleStream
from pyconpro.workers import fastpath
from pyconpro.workers.forwarder import Forwarder
from pyconpro.workers.replay import ReplayThread

TOPIC = b"sample/bench/Tag/"
WARM = b"warm/"
END = b"end/"


def _publisher(endpoint: str, bind: bool, n: int, size: int, go: mp.synchronize.Event) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.setsockopt(zmq.LINGER, 30_000)
    if bind:
        pub.bind(endpoint)
    else:
        pub.connect(endpoint)
    stream = SampleStream("worker-127.0.0.1", "bench", "Tag", "DINT")
    raw = b"x" * max(0, size - 100)  # the rest of a sample's body is about 100 bytes
    bodies = [stream.encode(i, i, 0, 0, i, raw) for i in range(n)]  # before the clock runs
    # Slow-joiner handshake: send warm-up messages until the subscriber has seen one.
    while not go.wait(0.01):
        pub.send_multipart([WARM, b""])
    for body in bodies:
        pub.send_multipart([TOPIC, body])
    for _ in range(10):
        pub.send_multipart([END, b""])
    pub.close()
    ctx.term()


def _subscriber(endpoint: str, go: Any, out: Any) -> None:
    """Receive until the end marker; put (seconds from first to last message, messages)."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 20_000)
    sub.subscribe(b"")
    sub.connect(endpoint)
    got = 0
    first = last = 0.0
    try:
        while True:
            try:
                topic, _body = sub.recv_multipart()
            except zmq.Again:
                print("  (timed out waiting for messages)", file=sys.stderr)
                break
            if topic == WARM:
                go.set()
                continue
            if topic == END:
                break
            if got == 0:
                first = time.perf_counter()
            got += 1
            last = time.perf_counter()
    finally:
        go.set()
        out.put((last - first, got))
        sub.close()
        ctx.term()


def _measure(pub_ep: str, pub_bind: bool, sub_ep: str, n: int, size: int,
             on_go: Callable[[], None] | None = None) -> tuple[float, int]:  # fmt: skip
    """Returns (seconds from first to last message, messages received). Publisher and
    subscriber are processes of their own, as workers and sinks are: this process holds only
    the forwarder (and its replay thread), as the supervisor does. ``on_go`` is called when
    the publisher starts sending (the processes have started and connected)."""
    go = mp.Event()
    out: Any = mp.Queue()
    sub = mp.Process(target=_subscriber, args=(sub_ep, go, out), daemon=True)
    sub.start()
    pub = mp.Process(target=_publisher, args=(pub_ep, pub_bind, n, size, go), daemon=True)
    pub.start()
    try:
        if on_go is not None and go.wait(120):
            on_go()
        result: tuple[float, int] = out.get(timeout=120)
        return result
    finally:
        for proc in (pub, sub):
            proc.join(30)
            if proc.is_alive():
                proc.kill()


PATHS = ("proxy", "compiled", "python")
_PROXIES = itertools.count()


class LibzmqProxy:
    """libzmq's ``zmq_proxy_steerable`` between an XSUB and an XPUB in a thread of this
    process, with a capture socket and a replay thread as the forwarder has (the reference;
    the forwarder's interface as far as this benchmark uses it)."""

    def __init__(self, host: str, hwm: int, replay_s: float, replay_bytes: int) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        n = next(_PROXIES)
        self._host, self._hwm = host, hwm
        self._control_ep = f"inproc://bench-proxy-{n}"
        self._capture_ep = f"inproc://bench-proxy-{n}-capture"
        self._input_ep = f"inproc://bench-proxy-{n}-input"
        self.replay: ReplayThread | None = None
        if replay_s > 0 and replay_bytes > 0:
            self.replay = ReplayThread(self._ctx, capture=self._capture_ep,
                                       marker=self._input_ep, max_age_s=replay_s,
                                       max_bytes=replay_bytes, hwm=hwm)  # fmt: skip
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-proxy", daemon=True)
        self.upstream_endpoint = self.public_endpoint = ""
        self._control = self._ctx.socket(zmq.PAIR)

    def start(self) -> None:
        self._control.bind(self._control_ep)
        self._thread.start()
        self._bound.wait(5)
        if self.replay is not None:
            self.replay.start()

    def _run(self) -> None:
        ctx = self._ctx
        xsub, xpub, ctl = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB), ctx.socket(zmq.PAIR)
        capture: zmq.Socket[bytes] | None = ctx.socket(zmq.PUB) if self.replay else None
        try:
            for sock in (xsub, xpub, ctl):
                sock.setsockopt(zmq.LINGER, 0)
            xsub.setsockopt(zmq.RCVHWM, self._hwm)
            xpub.setsockopt(zmq.SNDHWM, self._hwm)
            if capture is not None:
                capture.setsockopt(zmq.LINGER, 0)
                capture.setsockopt(zmq.SNDHWM, self._hwm or 100_000)
                capture.bind(self._capture_ep)
                xsub.bind(self._input_ep)
            xsub.bind(f"tcp://{self._host}:0")
            xpub.bind(f"tcp://{self._host}:0")
            self.upstream_endpoint = xsub.getsockopt_string(zmq.LAST_ENDPOINT)
            self.public_endpoint = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            ctl.connect(self._control_ep)
            self._bound.set()
            zmq.proxy_steerable(xsub, xpub, capture, ctl)  # until TERMINATE
        finally:
            self._bound.set()
            for closing in (xsub, xpub, ctl, capture):
                if closing is not None:
                    closing.close()

    def stop(self) -> None:
        if self.replay is not None:
            self.replay.stop()
        self._control.send(b"TERMINATE")
        self._thread.join(5)
        self._control.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=160, help="body bytes per message [160]")
    ap.add_argument("--address", default="127.0.0.1", help="loopback address to use")
    ap.add_argument("--replay-bytes", type=int, default=64 << 20,
                    help="the replay buffer's bound [64 MiB]")
    ap.add_argument("--rounds", type=int, default=3,
                    help="every path, alternated, this many times [3]")
    ap.add_argument("--paths", default=",".join(PATHS),
                    help=f"which of {', '.join(PATHS)} [all]")
    ap.add_argument("--replay", choices=("off", "on", "both"), default="both",
                    help="without the replay buffer, with it, or both [both]")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or any(p not in PATHS for p in paths):
        ap.error(f"--paths: give some of {', '.join(PATHS)}")
    if "compiled" in paths and fastpath.load()[0] is None:
        ap.error(f"--paths compiled: {fastpath.load()[1]}")
    replays = {"off": [False], "on": [True], "both": [False, True]}[args.replay]
    host = args.address

    # direct: the publisher binds, the subscriber connects.
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    probe = ctx.socket(zmq.PUB)
    probe.bind(f"tcp://{host}:0")
    direct_ep = probe.getsockopt_string(zmq.LAST_ENDPOINT)
    probe.close()  # the publisher process re-binds the same kernel-chosen port
    secs, got = _measure(direct_ep, True, direct_ep, args.messages, args.size)
    direct = _report("direct PUB -> SUB", secs, got, args.messages, args.size)

    runs: dict[tuple[str, bool], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for replay in replays:
            for path in paths:
                runs.setdefault((path, replay), []).append(_round(args, path, replay))
    print(f"\n{args.rounds} rounds, {args.messages} messages of {args.size} bytes; direct"
          f" PUB -> SUB {direct:,.0f} msgs/s. min / median / max:")
    for (path, replay), got_runs in runs.items():
        rates, cpus, watcher = ([run[i] for run in got_runs] for i in range(3))
        line = (f"  {path:8s} {'+ replay' if replay else '        '}  msgs/s"
                f" {_spread(rates, ',.0f')}   us CPU/msg {_spread(cpus, '.2f')}")
        ref = runs.get(("proxy", replay))
        if ref is not None and path != "proxy":
            rate_ratio = [a[0] / b[0] for a, b in zip(got_runs, ref, strict=True)]
            cpu_ratio = [a[1] / b[1] for a, b in zip(got_runs, ref, strict=True)]
            line += (f"   vs proxy: rate x{statistics.median(rate_ratio):.2f},"
                     f" CPU x{statistics.median(cpu_ratio):.2f};"
                     f" {WATCHER} {_spread(watcher, '.1f')} % of a core")
        print(line)
    return 0


def _spread(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values),
                                                max(values)))  # fmt: skip


# The forwarder's thread that watches the connections for the subscription caps: it costs per
# second (it wakes every 10 ms), not per message, and is reported apart.
WATCHER = "bus-connections"


def _round(args: argparse.Namespace, path: str, replay: bool) -> tuple[float, float, float]:
    """One measurement: (messages/s end to end, this process's µs of CPU per message but the
    watcher's, the watcher's % of a core), CPU from the publisher's first message to the last
    copy the replay thread took in."""
    host = args.address
    rss0 = _rss_bytes()
    replay_s = 3600 if replay else 0
    fwd: Forwarder | LibzmqProxy
    if path == "proxy":
        fwd = LibzmqProxy(host, 0, replay_s, args.replay_bytes)
    else:
        choice = fastpath.choose({fastpath.ENV: "1" if path == "compiled" else "0"})
        fwd = Forwarder(f"tcp://{host}:0", f"tcp://{host}:0", hwm=0, linger_ms=0,
                        replay_s=replay_s, replay_bytes=args.replay_bytes,
                        path=choice)  # fmt: skip
    fwd.start()
    try:
        start: list[tuple[float, dict[str, float]]] = []
        secs, got = _measure(
            fwd.upstream_endpoint, False, fwd.public_endpoint, args.messages, args.size,
            on_go=lambda: start.append((time.monotonic(), _cpu_by_thread())),
        )
        what = f"{path}{' + replay buffer' if replay else ''}"
        rate = _report(f"PUB -> {what} -> SUB", secs, got, args.messages, args.size)
        if fwd.replay is not None:
            _caught_up("bus-replay")
        t0, threads0 = start[0] if start else (time.monotonic(), _cpu_by_thread())
        wall = time.monotonic() - t0
        used = {name: t - threads0.get(name, 0.0) for name, t in _cpu_by_thread().items()}
        cpu = sum(used.values())
        per = (cpu - used.get(WATCHER, 0.0)) / max(1, got) * 1e6
        watcher = used.get(WATCHER, 0.0) / max(wall, 1e-9) * 100
        by_thread = ", ".join(f"{name} {t / max(1, got) * 1e6:.2f}"
                              for name, t in sorted(used.items()) if t > 0)  # fmt: skip
        print(f"  this process (the forwarder's threads): {cpu:.2f} s CPU in {wall:.2f} s; per"
              f" message {per:.2f} us but the caps' watcher ({WATCHER}: {watcher:.1f} % of a"
              f" core); by thread, us per message: {by_thread}")  # fmt: skip
        if fwd.replay is not None:
            st = _settled(fwd.replay)
            rss = _rss_bytes()
            print(f"  replay buffer: {st['messages']} messages, {st['bytes'] / 2**20:.1f} MiB"
                  f" counted (max {args.replay_bytes / 2**20:.0f}), {st['evicted']} evicted,"
                  f" {st['lost']} lost by the capture; this process: RSS {rss / 2**20:.0f}"
                  f" MiB, grew by {(rss - rss0) / 2**20:.0f} MiB")  # fmt: skip
        return rate, per, watcher
    finally:
        fwd.stop()


def _caught_up(thread: str) -> None:
    """Once ``thread`` of this process has stopped working (it used less than 1 ms of CPU in
    the last 100 ms): the replay thread has taken in every copy."""
    last = _cpu_by_thread().get(thread, 0.0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _cpu_by_thread().get(thread, 0.0)
        if now - last < 0.001:
            return
        last = now


def _settled(replay: ReplayThread) -> dict[str, int]:
    """The replay thread's counters once it has taken in every copy (they stop moving)."""
    last: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.1)  # the counters are refreshed every second
        st = replay.stats()
        if st == last:
            break
        last = st
    return last


def _cpu_by_thread() -> dict[str, float]:
    """Seconds of CPU of this process's Python threads by name, and of the rest (libzmq's I/O
    threads) as ``libzmq``: the threads' CPU clocks, to the nanosecond."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.ident is None:
            continue
        try:
            used = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except OSError:  # the thread ended meanwhile
            continue
        out[t.name] = out.get(t.name, 0.0) + used
    out["libzmq"] = time.process_time() - sum(out.values())
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _report(label: str, secs: float, got: int, n: int, size: int) -> float:
    rate = got / secs if secs > 0 else 0.0
    mb = rate * (size + len(TOPIC)) / 1e6
    lost = f", {n - got} lost" if got != n else ""
    print(f"{label:40s} {rate:12,.0f} msgs/s  {mb:7.1f} MB/s  ({got} msgs{lost})")
    return rate


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    sys.exit(main())

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
prints min / median / max of messages/s and of this process's CPU per message (the forwarder's
threads, the replay thread and libzmq's I/O thread: everything but the publisher and the
subscriber), and the median of each round's ratio to the proxy's. With the buffer, what it
holds at the end and the memory this process grew by (``--replay-bytes``, default 64 MiB).
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


def _measure(pub_ep: str, pub_bind: bool, sub_ep: str, n: int, size: int) -> tuple[float, int]:
    """Returns (seconds from first to last message, messages received). Publisher and
    subscriber are processes of their own, as workers and sinks are: this process holds only
    the forwarder (and its replay thread), as the supervisor does."""
    go = mp.Event()
    out: Any = mp.Queue()
    sub = mp.Process(target=_subscriber, args=(sub_ep, go, out), daemon=True)
    sub.start()
    pub = mp.Process(target=_publisher, args=(pub_ep, pub_bind, n, size, go), daemon=True)
    pub.start()
    try:
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
        capture = ctx.socket(zmq.PUB) if self.replay is not None else None
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
            for sock in (xsub, xpub, ctl, capture):
                if sock is not None:
                    sock.close()

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

    runs: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for replay in replays:
            for path in paths:
                runs.setdefault((path, replay), []).append(_round(args, path, replay))
    print(f"\n{args.rounds} rounds, {args.messages} messages of {args.size} bytes; direct"
          f" PUB -> SUB {direct:,.0f} msgs/s. min / median / max:")
    for (path, replay), got_runs in runs.items():
        rates = [r for r, _ in got_runs]
        cpus = [c for _, c in got_runs]
        line = (f"  {path:8s} {'+ replay' if replay else '        '}  msgs/s {_spread(rates, ',.0f')}"
                f"   us CPU/msg {_spread(cpus, '.2f')}")
        ref = runs.get(("proxy", replay))
        if ref is not None and path != "proxy":
            rate_ratio = [a / b for (a, _), (b, _) in zip(got_runs, ref, strict=True)]
            cpu_ratio = [a / b for (_, a), (_, b) in zip(got_runs, ref, strict=True)]
            line += (f"   vs proxy: rate x{statistics.median(rate_ratio):.2f},"
                     f" CPU x{statistics.median(cpu_ratio):.2f}")
        print(line)
    return 0


def _spread(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values),
                                                max(values)))  # fmt: skip


def _round(args: argparse.Namespace, path: str, replay: bool) -> tuple[float, float]:
    """One measurement: (messages/s end to end, this process's µs of CPU per message)."""
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
        cpu0 = time.process_time()
        secs, got = _measure(
            fwd.upstream_endpoint, False, fwd.public_endpoint, args.messages, args.size
        )
        what = f"{path}{' + replay buffer' if replay else ''}"
        rate = _report(f"PUB -> {what} -> SUB", secs, got, args.messages, args.size)
        if fwd.replay is not None:
            st = _settled(fwd.replay)
        cpu = time.process_time() - cpu0
        per = cpu / max(1, got) * 1e6
        print(f"  this process (the forwarder's threads): {cpu:.2f} s CPU, {per:.2f} us per"
              " message")
        if fwd.replay is not None:
            rss = _rss_bytes()
            print(f"  replay buffer: {st['messages']} messages, {st['bytes'] / 2**20:.1f} MiB"
                  f" counted (max {args.replay_bytes / 2**20:.0f}), {st['evicted']} evicted,"
                  f" {st['lost']} lost by the capture; this process: RSS {rss / 2**20:.0f}"
                  f" MiB, grew by {(rss - rss0) / 2**20:.0f} MiB")  # fmt: skip
        return rate, per
    finally:
        fwd.stop()


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

#!/usr/bin/env python3
"""Throughput of the supervisor's bus forwarder vs a direct PUB/SUB link, in the same run.

    scripts/bench_forwarder.py [--messages N] [--size BYTES] [--address 127.x.y.z]
                               [--replay-bytes N]

A publisher process sends N two-frame messages ``[topic, body]`` (a pyconpro sample's body of
about --size bytes) as fast as it can; a subscriber process receives them. The paths are
measured one after the other on loopback TCP with kernel-chosen ports:

  direct      PUB (bind) -> SUB                         what a per-worker endpoint would give
  forwarder   PUB (connect) -> XSUB | proxy | XPUB -> SUB  what `pyconpro run` gives
  (workers.forwarder), without and with the replay buffer ([bus] replay_s / replay_bytes: the
  proxy's capture socket and the replay thread that keeps the copies)

Prints messages/s and MB/s per path, the forwarder's cost relative to direct and the replay
buffer's relative to the forwarder without it, and what the buffer holds at the end with the
memory this process grew by while it filled (``--replay-bytes``, default 64 MiB: with enough
messages the buffer is full). HWMs are unlimited here so that nothing is dropped on the bus
and the rate is the real end-to-end rate; the capture keeps its own bound, and what the replay
thread could not keep up with is its ``lost`` count.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from typing import Any

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyconpro.acquisition.wire import SampleStream
from pyconpro.workers.forwarder import Forwarder

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=160, help="body bytes per message [160]")
    ap.add_argument("--address", default="127.0.0.1", help="loopback address to use")
    ap.add_argument("--replay-bytes", type=int, default=64 << 20,
                    help="the replay buffer's bound [64 MiB]")
    ap.add_argument("--rounds", type=int, default=3,
                    help="forwarder without / with the buffer, alternated, this many times;"
                         " medians are reported [3]")
    args = ap.parse_args(argv)
    host = args.address

    # direct: the publisher binds, the subscriber connects.
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    probe = ctx.socket(zmq.PUB)
    probe.bind(f"tcp://{host}:0")
    direct_ep = probe.getsockopt_string(zmq.LAST_ENDPOINT)
    probe.close()  # the publisher process re-binds the same kernel-chosen port
    secs, got = _measure(direct_ep, True, direct_ep, args.messages, args.size)
    direct = _report("direct PUB -> SUB", secs, got, args.messages, args.size)

    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for replay in (False, True):
            rates[replay].append(_forwarder_round(args, replay))
    plain, buffered = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"forwarder / direct = {plain / direct:.2f}")
    ratios = [b / a for a, b in zip(rates[False], rates[True], strict=True)]
    print(f"with replay buffer / without = {statistics.median(ratios):.2f} (median of"
          f" {', '.join(f'{r:.2f}' for r in ratios)}; {plain:,.0f} vs {buffered:,.0f} msgs/s)")
    return 0


def _forwarder_round(args: argparse.Namespace, replay: bool) -> float:
    host = args.address
    rss0 = _rss_bytes()
    fwd = Forwarder(f"tcp://{host}:0", f"tcp://{host}:0", hwm=0, linger_ms=0,
                    replay_s=3600 if replay else 0, replay_bytes=args.replay_bytes)  # fmt: skip
    fwd.start()
    try:
        cpu0 = time.process_time()
        secs, got = _measure(
            fwd.upstream_endpoint, False, fwd.public_endpoint, args.messages, args.size
        )
        what = "+ replay buffer" if replay else "(XSUB/XPUB proxy)"
        rate = _report(f"PUB -> forwarder {what} -> SUB", secs, got, args.messages, args.size)
        if fwd.replay is not None:
            st = _settled(fwd)
        cpu = time.process_time() - cpu0
        print(f"  this process (the forwarder's threads): {cpu:.2f} s CPU,"
              f" {cpu / max(1, got) * 1e6:.1f} us per message")  # fmt: skip
        if fwd.replay is not None:
            rss = _rss_bytes()
            print(f"  replay buffer: {st['messages']} messages, {st['bytes'] / 2**20:.1f} MiB"
                  f" counted (max {args.replay_bytes / 2**20:.0f}), {st['evicted']} evicted,"
                  f" {st['lost']} lost by the capture; this process: RSS {rss / 2**20:.0f}"
                  f" MiB, grew by {(rss - rss0) / 2**20:.0f} MiB")  # fmt: skip
        return rate
    finally:
        fwd.stop()


def _settled(fwd: Forwarder) -> dict[str, int]:
    """The replay thread's counters once it has taken in every copy (they stop moving)."""
    assert fwd.replay is not None
    last: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.1)  # the counters are refreshed every second
        st = fwd.replay.stats()
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
    print(f"{label:45s} {rate:12,.0f} msgs/s  {mb:7.1f} MB/s  ({got} msgs{lost})")
    return rate


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    sys.exit(main())
